package ec2

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	apitypes "k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/sources"
)

// Source runs the EC2 lookups every Interval on the elected leader.
type Source struct {
	API    API
	Kube   kubernetes.Interface
	Writer signals.Writer
	Clock  clock.Clock
	// PoolLabels are the labels that already name a node's pool; nodes
	// with one of them are not looked up.
	PoolLabels        []string
	DescribeInstances bool
	PollSpotRequests  bool
	Interval          time.Duration
	Metrics           *Metrics

	index sources.NodeIndex
	// looked caches lookups: instance id -> ASG ("" when it has none).
	looked map[string]string
}

// Metrics are the EC2 source's Prometheus metrics.
type Metrics struct {
	Calls *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{Calls: prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "spot_rebalancer_ec2_calls_total",
		Help: "EC2 lookups by kind (instances, spot-requests) and result (ok, error).",
	}, []string{"kind", "result"})}
	reg.MustRegister(m.Calls)
	// Every kind and result starts at 0 (rate() sees the first call).
	for _, kind := range []string{"instances", "spot-requests"} {
		for _, result := range []string{"ok", "error"} {
			m.Calls.WithLabelValues(kind, result)
		}
	}
	return m
}

// NeedLeaderElection: only the leader calls EC2.
func (s *Source) NeedLeaderElection() bool { return true }

// Start runs until ctx is done; failures (throttling included) double the
// wait up to ten intervals.
func (s *Source) Start(ctx context.Context) error {
	index, err := sources.StartNodeIndex(ctx, s.Kube)
	if err != nil {
		return err
	}
	s.index = index
	s.looked = map[string]string{}
	log := ctrllog.FromContext(ctx).WithName("ec2")
	wait := s.Interval
	for {
		if err := s.Once(ctx); err != nil {
			wait = min(2*wait, 10*s.Interval)
			log.Error(err, "EC2 lookup failed; backing off", "next", wait)
		} else {
			wait = s.Interval
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.Clock.After(wait):
		}
	}
}

// Once makes one round of lookups.
func (s *Source) Once(ctx context.Context) error {
	var errs []error
	if s.DescribeInstances {
		errs = append(errs, s.pools(ctx))
	}
	if s.PollSpotRequests {
		errs = append(errs, s.marked(ctx))
	}
	return errors.Join(errs...)
}

// pools annotates nodes whose labels name no pool with their ASG.
func (s *Source) pools(ctx context.Context) error {
	want := map[string]string{} // instance id -> node
	for _, obj := range s.index.Indexer.List() {
		n := obj.(*corev1.Node)
		if s.hasPool(n) {
			continue
		}
		id := sources.InstanceID(n)
		if _, done := s.looked[id]; id != "" && !done {
			want[id] = n.Name
		}
	}
	if len(want) == 0 {
		return nil
	}
	ids := make([]string, 0, len(want))
	for id := range want {
		ids = append(ids, id)
	}
	found, err := Instances(ctx, s.API, ids)
	if err != nil {
		s.Metrics.Calls.WithLabelValues("instances", "error").Inc()
		return err
	}
	s.Metrics.Calls.WithLabelValues("instances", "ok").Inc()
	var errs []error
	for id, node := range want {
		inst, ok := found[id]
		if !ok {
			continue // gone, or not yet visible: look again next time
		}
		s.looked[id] = inst.ASG
		// The lifecycle says whether an interruption notice for this node
		// is believed (only Spot instances are interrupted).
		annotations := map[string]string{signals.AnnotationLifecycle: lifecycle(inst.Lifecycle)}
		if inst.ASG != "" {
			annotations[signals.AnnotationPool] = inst.ASG
		}
		if err := s.annotate(ctx, node, annotations); err != nil {
			errs = append(errs, fmt.Errorf("annotating node %s with its pool and lifecycle: %w", node, err))
			delete(s.looked, id)
		}
	}
	return errors.Join(errs...)
}

func (s *Source) hasPool(n *corev1.Node) bool {
	for _, l := range s.PoolLabels {
		if _, ok := n.Labels[l]; ok {
			return true
		}
	}
	_, ok := n.Annotations[signals.AnnotationPool]
	return ok
}

// marked writes an interruption notice for every node whose Spot request
// is marked for termination or stop.
func (s *Source) marked(ctx context.Context) error {
	marked, err := MarkedInstances(ctx, s.API)
	if err != nil {
		s.Metrics.Calls.WithLabelValues("spot-requests", "error").Inc()
		return err
	}
	s.Metrics.Calls.WithLabelValues("spot-requests", "ok").Inc()
	var errs []error
	for _, m := range marked {
		node, ok := s.index.NodeFor(m.InstanceID)
		if !ok {
			continue
		}
		since := m.Since
		if since.IsZero() {
			since = s.Clock.Now()
		}
		// Only Spot instances have Spot requests: say so first, so that the
		// interruption is believed whatever the node's labels.
		if err := s.annotate(ctx, node, map[string]string{signals.AnnotationLifecycle: "spot"}); err != nil {
			errs = append(errs, fmt.Errorf("annotating node %s with its lifecycle: %w", node, err))
			continue
		}
		// Marked requests are reclaimed two minutes after the mark.
		if _, err := s.Writer.Interruption(ctx, node, since.Add(2*time.Minute), "SpotRequestMarked",
			fmt.Sprintf("Spot instance request of %s is %s (EC2 API)", m.InstanceID, m.Code)); err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func (s *Source) annotate(ctx context.Context, node string, annotations map[string]string) error {
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": annotations}})
	_, err := s.Kube.CoreV1().Nodes().Patch(ctx, node, apitypes.MergePatchType, patch, metav1.PatchOptions{})
	return err
}

// lifecycle is an instance's InstanceLifecycle as recorded on its node:
// EC2 leaves it empty for on-demand instances.
func lifecycle(l string) string {
	if l == "" {
		return "normal"
	}
	return l
}
