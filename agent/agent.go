package agent

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
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

// apply writes what the poll saw and the node does not carry yet.
func (a *Agent) apply(ctx context.Context, obs Observation) error {
	if obs.Interruption == nil && obs.RebalanceSince == nil {
		return nil
	}
	if (obs.Interruption == nil || a.wroteInterruption) && (obs.RebalanceSince == nil || a.wroteRebalance) {
		return nil // already written: the metadata service's new times change nothing
	}
	node, err := a.Kube.CoreV1().Nodes().Get(ctx, a.Node, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading node %s: %w", a.Node, err)
	}
	if in := obs.Interruption; in != nil && !a.wroteInterruption {
		if hasTrue(node, signals.ConditionInterruption) {
			a.wroteInterruption = true
		} else {
			// The termination time first, so that whoever sees the
			// condition also sees the deadline.
			if _, ok := node.Annotations[signals.AnnotationTerminationTime]; !ok {
				if err := a.annotate(ctx, signals.AnnotationTerminationTime, in.Time.UTC().Format(time.RFC3339)); err != nil {
					return err
				}
			}
			msg := fmt.Sprintf("instance action %q at %s (from the instance metadata service)", in.Action, in.Time.UTC().Format(time.RFC3339))
			if in.Guessed {
				msg = fmt.Sprintf("instance action %q; no usable time, assumed %s", in.Action, in.Time.UTC().Format(time.RFC3339))
			}
			if err := a.setCondition(ctx, signals.ConditionInterruption, "SpotInterruptionNotice", msg); err != nil {
				return err
			}
			a.wroteInterruption = true
			a.Metrics.Written.WithLabelValues(string(signals.ConditionInterruption)).Inc()
			ctrllog.FromContext(ctx).Info("Wrote Spot interruption notice", "node", a.Node, "action", in.Action, "time", in.Time)
		}
	}
	if obs.RebalanceSince != nil && !a.wroteRebalance {
		if hasTrue(node, signals.ConditionRebalance) {
			a.wroteRebalance = true
		} else {
			msg := fmt.Sprintf("rebalance recommendation noticed at %s (from the instance metadata service)", obs.RebalanceSince.UTC().Format(time.RFC3339))
			if err := a.setCondition(ctx, signals.ConditionRebalance, "SpotRebalanceRecommendation", msg); err != nil {
				return err
			}
			a.wroteRebalance = true
			a.Metrics.Written.WithLabelValues(string(signals.ConditionRebalance)).Inc()
			ctrllog.FromContext(ctx).Info("Wrote Spot rebalance recommendation", "node", a.Node)
		}
	}
	return nil
}

func hasTrue(n *corev1.Node, t corev1.NodeConditionType) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == t {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func (a *Agent) annotate(ctx context.Context, key, value string) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]string{key: value}}})
	if _, err := a.Kube.CoreV1().Nodes().Patch(ctx, a.Node, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("annotating node %s: %w", a.Node, err)
	}
	return nil
}

// setCondition adds or replaces one condition by type (a strategic merge
// patch keyed by type, as the kubelet writes its own).
func (a *Agent) setCondition(ctx context.Context, t corev1.NodeConditionType, reason, message string) error {
	now := metav1.NewTime(a.Clock.Now())
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastTransitionTime: now, LastHeartbeatTime: now,
	}}}})
	if _, err := a.Kube.CoreV1().Nodes().PatchStatus(ctx, a.Node, patch); err != nil {
		return fmt.Errorf("writing condition %s on node %s: %w", t, a.Node, err)
	}
	return nil
}
