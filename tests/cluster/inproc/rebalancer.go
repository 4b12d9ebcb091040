// Package inproc runs the rebalancer inside a test or benchmark process,
// against a cluster from package cluster, the way `spot-rebalancer
// controller` runs it (minus leader election and the HTTP endpoints).
package inproc

import (
	"context"
	"errors"
	"fmt"
	"sync"

	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	schedulingv1 "k8s.io/api/scheduling/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/dynamic"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
	"k8s.io/client-go/tools/record"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/controller"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/executor"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// Rebalancer is a running in-process rebalancer.
type Rebalancer struct {
	// Metrics are the reconciler's own, on a private registry.
	Metrics *executor.Metrics

	name   string
	cancel context.CancelFunc
	done   chan error
	once   sync.Once
	err    error
}

// Start runs a rebalancer named name with cfg, its surge records in
// namespace, until ctx ends or Stop is called. It logs to the logr.Logger
// in ctx, if any.
func Start(ctx context.Context, c *cluster.Cluster, cfg config.Rebalancer, name, namespace string, opts ...Option) (*Rebalancer, error) {
	if err := EnsurePriorityClass(ctx, c); err != nil {
		return nil, err
	}
	mgr, err := manager.New(c.Config, manager.Options{
		Metrics:                metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress: "0",
		Cache:                  controller.CacheOptions(namespace),
	})
	if err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	broadcaster := record.NewBroadcaster()
	r := &Rebalancer{Metrics: executor.NewMetrics(prometheus.NewRegistry()), name: name, done: make(chan error, 1)}
	rec := &controller.Reconciler{
		Client: mgr.GetClient(), Kube: c.Client, Config: &cfg, Clock: clock.RealClock{},
		Recorder: broadcaster.NewRecorder(mgr.GetScheme(), corev1.EventSource{Component: "spot-rebalancer"}),
		Metrics:  r.Metrics, Name: name, Namespace: namespace, Dynamic: dyn,
	}
	for _, o := range opts {
		o(rec)
	}
	if err := rec.SetupWithManager(mgr); err != nil {
		return nil, err
	}
	broadcaster.StartRecordingToSink(&typedcorev1.EventSinkImpl{Interface: c.Client.CoreV1().Events("")})
	ctx, r.cancel = context.WithCancel(ctx)
	go func() {
		err := mgr.Start(ctx)
		broadcaster.Shutdown()
		r.done <- err
	}()
	return r, nil
}

// Option changes the reconciler before it starts.
type Option func(*controller.Reconciler)

// WithASG gives the rebalancer an Auto Scaling client (provision asg).
func WithASG(api asg.API) Option { return func(r *controller.Reconciler) { r.ASG = api } }

// EnsurePriorityClass creates the reservations' PriorityClass as the chart
// does, unless it exists. It is left in the cluster: the chart's test
// deletes it before installing the chart, which owns it there.
func EnsurePriorityClass(ctx context.Context, c *cluster.Cluster) error {
	pc := &schedulingv1.PriorityClass{ObjectMeta: metav1.ObjectMeta{Name: reserve.PriorityClass}, Value: -1,
		PreemptionPolicy: ptr.To(corev1.PreemptNever), Description: "spot-rebalancer reservations (tests)"}
	if _, err := c.Client.SchedulingV1().PriorityClasses().Create(ctx, pc, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating PriorityClass %s: %w", reserve.PriorityClass, err)
	}
	return nil
}

// Settled reports whether the rebalancer has reconciled and has nothing
// queued or in progress: every node of its first list has been looked at.
// It reads controller-runtime's metrics for this rebalancer's controller.
func (r *Rebalancer) Settled() (bool, error) {
	families, err := ctrlmetrics.Registry.Gather()
	if err != nil {
		return false, err
	}
	value := func(family, label string) (float64, bool) {
		total, found := 0.0, false
		for _, f := range families {
			if f.GetName() != family {
				continue
			}
			for _, m := range f.GetMetric() {
				for _, l := range m.GetLabel() {
					if l.GetName() == label && l.GetValue() == r.name {
						total += m.GetCounter().GetValue() + m.GetGauge().GetValue()
						found = true
					}
				}
			}
		}
		return total, found
	}
	reconciles, _ := value("controller_runtime_reconcile_total", "controller")
	depth, ok1 := value("workqueue_depth", "name")
	active, ok2 := value("controller_runtime_active_workers", "controller")
	return reconciles > 0 && ok1 && ok2 && depth == 0 && active == 0, nil
}

// Stop stops the rebalancer and waits for it; it returns the manager's
// error, if it failed for another reason than being stopped. Calling it
// again returns the same.
func (r *Rebalancer) Stop() error {
	r.once.Do(func() {
		r.cancel()
		if err := <-r.done; err != nil && !errors.Is(err, context.Canceled) {
			r.err = err
		}
	})
	return r.err
}
