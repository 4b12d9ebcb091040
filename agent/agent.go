package agent

import (
	"context"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// Agent polls the metadata service and writes signals on one Node.
type Agent struct {
	Node     string
	Kube     kubernetes.Interface
	IMDS     MetadataClient
	Interval time.Duration
	Clock    clock.Clock
	Metrics  *Metrics

	// What this process has written (or found written): never twice.
	wroteInterruption, wroteRebalance bool
}

// Metrics are the agent's Prometheus metrics.
type Metrics struct {
	Polls   *prometheus.CounterVec
	Written *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Polls: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_agent_polls_total",
			Help: "Instance metadata polls by result (ok, malformed, unreachable).",
		}, []string{"result"}),
		Written: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_agent_signals_written_total",
			Help: "Signals written on the Node, by condition type.",
		}, []string{"condition"}),
	}
	reg.MustRegister(m.Polls, m.Written)
	// Every result and condition starts at 0 (rate() sees the first one).
	for _, r := range []string{"ok", "malformed", "unreachable"} {
		m.Polls.WithLabelValues(r)
	}
	for _, c := range []corev1.NodeConditionType{signals.ConditionInterruption, signals.ConditionRebalance} {
		m.Written.WithLabelValues(string(c))
	}
	return m
}

// maxBackoff caps the wait between polls while the metadata service or the
// API server fails.
const maxBackoff = 30 * time.Second

// Run polls until ctx is done. Failures are logged, counted and retried
// with backoff; they never end the agent.
func (a *Agent) Run(ctx context.Context) error {
	log := ctrllog.FromContext(ctx).WithValues("node", a.Node)
	wait := a.Interval
	for {
		obs, warnings, err := Poll(ctx, a.IMDS, a.Clock.Now())
		for _, w := range warnings {
			log.Info("Metadata service answered something unexpected; treating it as the event", "problem", w.Error())
			a.Metrics.Polls.WithLabelValues("malformed").Inc()
		}
		if err == nil {
			err = a.apply(ctx, obs)
		} else {
			a.Metrics.Polls.WithLabelValues("unreachable").Inc()
		}
		switch {
		case err != nil:
			wait = min(2*wait, maxBackoff)
			log.Error(err, "Polling for Spot signals failed; retrying", "in", wait)
		default:
			if len(warnings) == 0 {
				a.Metrics.Polls.WithLabelValues("ok").Inc()
			}
			wait = a.Interval
		}
		select {
		case <-ctx.Done():
			return nil
		case <-a.Clock.After(wait):
		}
	}
}

// apply writes what the poll saw and this process has not written yet;
// the Writer skips what the node already carries (after a restart).
func (a *Agent) apply(ctx context.Context, obs Observation) error {
	w := signals.Writer{Kube: a.Kube, Clock: a.Clock}
	if in := obs.Interruption; in != nil && !a.wroteInterruption {
		msg := fmt.Sprintf("instance action %q at %s (from the instance metadata service)", in.Action, in.Time.UTC().Format(time.RFC3339))
		if in.Guessed {
			msg = fmt.Sprintf("instance action %q; no usable time, assumed %s", in.Action, in.Time.UTC().Format(time.RFC3339))
		}
		wrote, err := w.Interruption(ctx, a.Node, in.Time, "SpotInterruptionNotice", msg)
		if err != nil {
			return err
		}
		a.wroteInterruption = true
		if wrote {
			a.Metrics.Written.WithLabelValues(string(signals.ConditionInterruption)).Inc()
			ctrllog.FromContext(ctx).Info("Wrote Spot interruption notice", "node", a.Node, "action", in.Action, "time", in.Time)
		}
	}
	if obs.RebalanceSince != nil && !a.wroteRebalance {
		msg := fmt.Sprintf("rebalance recommendation noticed at %s (from the instance metadata service)", obs.RebalanceSince.UTC().Format(time.RFC3339))
		wrote, err := w.Rebalance(ctx, a.Node, "SpotRebalanceRecommendation", msg)
		if err != nil {
			return err
		}
		a.wroteRebalance = true
		if wrote {
			a.Metrics.Written.WithLabelValues(string(signals.ConditionRebalance)).Inc()
			ctrllog.FromContext(ctx).Info("Wrote Spot rebalance recommendation", "node", a.Node)
		}
	}
	return nil
}
