// Package controller wires the rebalancer: on each change of a Node (or of
// a surge record, or of a Deployment that has one) it gathers a snapshot from the
// manager's caches, plans the node with the planner, asks the pure decide
// package for the node's next step and has the executor carry it out.
// Progress lives on the Node (annotations and a taint), so a restart or a
// new leader resumes where the last one stopped. What this package keeps
// in memory (429 backoffs, recent evictions, drains admitted but not yet
// in the cache) only spares the API work; losing it is safe.
package controller

import (
	"cmp"
	"context"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	"sigs.k8s.io/controller-runtime/pkg/handler"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/decide"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/executor"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
	"github.com/spot-rebalancer/spot-rebalancer/sources"
)

// Reconciler drives at-risk nodes. Client reads from the manager's caches;
// Kube is what the executor writes with (and the live reads of surges).
type Reconciler struct {
	Client   client.Client
	Kube     kubernetes.Interface
	Config   *config.Rebalancer
	Clock    clock.Clock
	Recorder executor.EventRecorder
	Metrics  *executor.Metrics
	// Name names the controller (default "rebalancer"); names are unique
	// per process.
	Name string
	// Namespace holds the surge records: the controller's own (the chart's
	// release namespace). The manager's cache must be made with
	// CacheOptions(Namespace).
	Namespace string
	// Dynamic reads and deletes Karpenter's NodeClaims (rebalancer.retire).
	Dynamic dynamic.Interface
	// ASG reads, raises and shrinks Auto Scaling groups (provision asg).
	ASG asg.API

	writer *executor.Writer
	memory memory
}

// SetupWithManager registers the reconciler; it runs on the leader only.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	if r.Namespace == "" {
		return fmt.Errorf("the reconciler needs the namespace of its surge records")
	}
	r.writer = &executor.Writer{Kube: r.Kube, Recorder: r.Recorder, Metrics: r.Metrics, Clock: r.Clock, RecordsNamespace: r.Namespace, Dynamic: r.Dynamic, ASG: r.ASG}
	if r.Config.Replacement.Provision == config.ProvisionASG && r.ASG == nil {
		return fmt.Errorf("rebalancer.replacement.provision asg needs an Auto Scaling client")
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &corev1.Pod{}, podNodeIndex, func(o client.Object) []string {
		if p, ok := o.(*corev1.Pod); ok && p.Spec.NodeName != "" {
			return []string{p.Spec.NodeName}
		}
		return nil
	}); err != nil {
		return fmt.Errorf("indexing pods by node: %w", err)
	}
	if err := mgr.GetFieldIndexer().IndexField(context.Background(), &coordinationv1.Lease{}, surgeNodeIndex, surgeNodeOf); err != nil {
		return fmt.Errorf("indexing surge records by node: %w", err)
	}
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Node{}).
		// A surge record wakes its node: at start-up and when the node is
		// gone too, so that no surge is left behind.
		Watches(&coordinationv1.Lease{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			return nodeRequests(surgeNodeOf(o))
		})).
		// So does a change of a Deployment with a surge under way (its
		// count, its pods' readiness as its status shows it).
		Watches(&appsv1.Deployment{}, handler.EnqueueRequestsFromMapFunc(func(ctx context.Context, o client.Object) []reconcile.Request {
			var record coordinationv1.Lease
			if err := r.Client.Get(ctx, client.ObjectKey{Namespace: r.Namespace, Name: signals.SurgeRecordName(o.GetUID())}, &record); err != nil {
				return nil
			}
			return nodeRequests(surgeNodeOf(&record))
		})).
		// A reservation wakes the node it holds room for: when it starts
		// running, and at start-up, so that one whose node is gone goes.
		Watches(&corev1.Pod{}, handler.EnqueueRequestsFromMapFunc(func(_ context.Context, o client.Object) []reconcile.Request {
			pod, ok := o.(*corev1.Pod)
			if !ok || pod.Namespace != r.Namespace || !reserve.Is(pod) {
				return nil
			}
			return nodeRequests([]string{pod.Annotations[reserve.AnnotationNode]})
		})).
		Named(cmp.Or(r.Name, "rebalancer")).
		WithOptions(ctrlcontroller.Options{MaxConcurrentReconciles: 4,
			// A plain FIFO queue, not controller-runtime's priority queue: that
			// one gives nodes from the initial list a low priority which every
			// requeue keeps, so under load (draining nodes requeue every
			// second) a node marked at risk before the controller started waited
			// minutes for its first reconcile (the soak found four).
			UsePriorityQueue: ptr.To(false),
			// Failures back off to 10 s at most, not the default 1000 s: after an
			// API server outage a drain, maybe under an interruption deadline,
			// must resume within seconds.
			RateLimiter: workqueue.NewTypedItemExponentialFailureRateLimiter[reconcile.Request](100*time.Millisecond, 10*time.Second),
		}).
		Complete(r)
}

func nodeRequests(names []string) []reconcile.Request {
	var out []reconcile.Request
	for _, name := range names {
		if name != unreadableRecord {
			out = append(out, reconcile.Request{NamespacedName: client.ObjectKey{Name: name}})
		}
	}
	return out
}

// CacheOptions are the manager's cache options the reconciler needs: of
// all Leases, it watches only the surge records in namespace (it may read
// no others).
func CacheOptions(namespace string) cache.Options {
	return cache.Options{ByObject: map[client.Object]cache.ByObject{
		&coordinationv1.Lease{}: {
			Namespaces: map[string]cache.Config{namespace: {}},
			Label:      labels.SelectorFromSet(labels.Set{signals.LabelRecord: signals.SurgeRecordLabel}),
		},
	}}
}

// Reconcile advances one node by one step: gather, decide, apply.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (result ctrl.Result, err error) {
	var node corev1.Node
	if err := r.Client.Get(ctx, req.NamespacedName, &node); err != nil {
		if !apierrors.IsNotFound(err) || r.Config.DryRun {
			return ctrl.Result{}, client.IgnoreNotFound(err)
		}
		r.writer.Forget(req.Name)
		if err := r.unreserveGone(ctx, req.Name); err != nil {
			return ctrl.Result{}, err
		}
		running, err := r.sweepOrphans(ctx, req.Name, nil)
		return ctrl.Result{RequeueAfter: orphanPoll(running)}, err
	}
	if decide.Orphaned(&node) && !r.Config.DryRun {
		running, err := r.sweepOrphans(ctx, node.Name, &node)
		if err != nil {
			return ctrl.Result{}, err
		}
		if poll := orphanPoll(running); poll > 0 {
			defer func() {
				if result.RequeueAfter == 0 || poll < result.RequeueAfter {
					result.RequeueAfter = poll
				}
			}()
		}
	}
	now := r.Clock.Now()
	in := decide.Input{Now: now, Config: r.Config, Node: &node, Namespace: r.Namespace}
	if in.Reservations, err = r.reservationsOf(ctx, node.Name); err != nil {
		return ctrl.Result{}, err
	}
	in.Signal, in.AtRisk = signals.FromNode(&node, now)
	state := signals.StateOf(node.Annotations)
	if !in.AtRisk || state == signals.StateDrained || state == signals.StateRetired {
		if r.Config.DryRun {
			return ctrl.Result{}, nil
		}
		if decide.Retirable(in) {
			if in.Retirement, err = r.retirement(ctx, &node); err != nil {
				return ctrl.Result{}, err
			}
		}
		res, _, err := r.apply(ctx, &node, in, decide.Node(in))
		return res, err
	}
	snap, err := snapshot.Read(ctx, r.Client, now, 0, r.Namespace)
	if err != nil {
		return ctrl.Result{}, fmt.Errorf("reading the cache: %w", err)
	}
	plan, err := planner.New(snap, planner.Options{Config: r.Config, Among: drainingBeside(snap, node.Name)})
	if err != nil {
		return ctrl.Result{}, err
	}
	in.Plan, in.Snapshot, in.PlannedSurges = nodePlan(plan, node.Name), snap, plan.SurgesWith(node.Name)
	if in.Plan == nil {
		return ctrl.Result{}, fmt.Errorf("node %s is at risk but not in the plan", node.Name)
	}
	if r.Config.DryRun {
		return r.dryRun(ctx, &node, in)
	}
	if in.Surges, err = r.gatherSurges(ctx, &node, snap); err != nil {
		return ctrl.Result{}, err
	}
	in.Evicted, in.Backoff = r.memory.evictedRecently(now), r.memory.waitAfter429(node.Name, now)
	in.HoldReservations = r.memory.holdReservations(node.Name, now)
	if decide.WantsGroup(in) {
		if in.Group, err = r.groupOf(ctx, &node); err != nil {
			return ctrl.Result{}, err
		}
	}
	if state == signals.StateDraining {
		res, _, err := r.apply(ctx, &node, in, decide.Node(in))
		return res, err
	}
	// A node that may start draining: deciding it and recording it happen
	// under one lock, so that workers deciding at once never let a pool
	// drain past maxConcurrentNodes.
	unlock := r.memory.lockAdmission()
	in.Draining = r.memory.draining(snap, in.Plan.Pool, node.Name, r.Config.PoolLabels)
	d := decide.Node(in)
	if d.Transition == nil || d.Transition.State != signals.StateDraining {
		unlock()
		res, _, err := r.apply(ctx, &node, in, d)
		return res, err
	}
	defer unlock()
	res, applied, err := r.apply(ctx, &node, in, d)
	if applied.Transitioned {
		r.memory.admit(in.Plan.Pool, node.Name, node.ResourceVersion)
	}
	return res, err
}

// apply has the executor carry d out and remembers what the API said.
func (r *Reconciler) apply(ctx context.Context, node *corev1.Node, in decide.Input, d decide.Decision) (ctrl.Result, executor.Result, error) {
	applied, err := r.writer.Apply(ctx, node, in.Signal, d)
	now := r.Clock.Now()
	if applied.ReservationRefused {
		r.memory.reservationsFailed(node.Name, now)
	}
	// A pod deleted a moment ago may still look untouched in the cache:
	// it is neither evicted nor deleted again.
	for _, uid := range append(applied.Evicted, applied.Deleted...) {
		r.memory.rememberEviction(uid, now)
	}
	switch {
	case apierrors.IsConflict(err):
		return ctrl.Result{Requeue: true}, applied, nil // the node changed since read: decide again
	case err != nil:
		return ctrl.Result{}, applied, err
	case applied.Throttled:
		wait := r.memory.backoff429(node.Name, now)
		r.Recorder.Eventf(node, corev1.EventTypeNormal, "EvictionThrottled", "a PodDisruptionBudget refused an eviction (429); retrying in %s", wait)
		return ctrl.Result{RequeueAfter: wait}, applied, nil
	case len(d.Evictions) > 0:
		r.memory.reset429(node.Name)
	}
	return ctrl.Result{RequeueAfter: d.Requeue}, applied, nil
}

func (r *Reconciler) dryRun(ctx context.Context, node *corev1.Node, in decide.Input) (ctrl.Result, error) {
	np := in.Plan
	evict, blocked, _ := np.Tally()
	summary := fmt.Sprintf("%d pod(s) to evict, %d blocked", evict, blocked)
	ctrllog.FromContext(ctx).Info("Dry run: plan for an at-risk node", "node", klog.KObj(node), "signal", in.Signal.Kind,
		"replacementReady", np.Replacement.Ready, "summary", summary)
	r.Recorder.Eventf(node, corev1.EventTypeNormal, "DryRunPlan", "dry run: %s; %s", np.Replacement.Reason, summary)
	return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
}

// groupOf reads the Auto Scaling group of the node's instance (nil when it
// has no EC2 instance ID or is in no group).
func (r *Reconciler) groupOf(ctx context.Context, node *corev1.Node) (*asg.Group, error) {
	id := sources.InstanceID(node)
	if id == "" || r.ASG == nil {
		return nil, nil
	}
	// A node's credentials can register another Node with any provider
	// ID: an instance two Nodes claim is nobody's here (never raised for,
	// never terminated).
	var nodes corev1.NodeList
	if err := r.Client.List(ctx, &nodes); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	for i := range nodes.Items {
		if n := &nodes.Items[i]; n.Name != node.Name && n.Spec.ProviderID == node.Spec.ProviderID {
			return nil, nil
		}
	}
	return asg.Of(ctx, r.ASG, id)
}

// podNodeIndex indexes pods by the node they are bound to.
const podNodeIndex = "spec.nodeName"

// retirement gathers what retiring a drained node depends on: the pods
// still on it (from the cache) and the NodeClaim whose status names both
// its provider ID and its name (read live; none where Karpenter is not
// installed).
func (r *Reconciler) retirement(ctx context.Context, node *corev1.Node) (*decide.Retirement, error) {
	var pods corev1.PodList
	if err := r.Client.List(ctx, &pods, client.MatchingFields{podNodeIndex: node.Name}); err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", node.Name, err)
	}
	on := make([]*corev1.Pod, len(pods.Items))
	for i := range pods.Items {
		on[i] = &pods.Items[i]
	}
	ret := &decide.Retirement{PodsLeft: decide.PodsLeft(on, r.Namespace)}
	if rec, ok, err := asg.RecordOf(node.Annotations); ok && err == nil && rec.Raised() && r.ASG != nil {
		// Only the group raised for this node, and only while the instance
		// is still in it.
		g, err := r.groupOf(ctx, node)
		if err != nil {
			return nil, err
		}
		if g != nil && g.Name == rec.Group {
			ret.Instance, ret.Group, ret.Terminating = sources.InstanceID(node), g.Name, g.Terminating()
		}
	}
	if r.Dynamic == nil || node.Spec.ProviderID == "" {
		return ret, nil
	}
	claims, err := r.Dynamic.Resource(executor.NodeClaims).List(ctx, metav1.ListOptions{})
	switch {
	case apierrors.IsNotFound(err):
		return ret, nil // Karpenter's CRDs are not installed
	case err != nil:
		return nil, fmt.Errorf("listing NodeClaims: %w", err)
	}
	for _, c := range claims.Items {
		providerID, _, _ := unstructured.NestedString(c.Object, "status", "providerID")
		nodeName, _, _ := unstructured.NestedString(c.Object, "status", "nodeName")
		if providerID == node.Spec.ProviderID && nodeName == node.Name {
			ret.NodeClaim = &decide.NodeClaim{Name: c.GetName(), UID: c.GetUID()}
			break
		}
	}
	return ret, nil
}

// reservationsOf lists, from the cache, the reservations that hold room
// for node's pods.
func (r *Reconciler) reservationsOf(ctx context.Context, node string) ([]*corev1.Pod, error) {
	var list corev1.PodList
	if err := r.Client.List(ctx, &list, client.InNamespace(r.Namespace), client.MatchingLabels{reserve.LabelNode: reserve.NodeLabel(node)}); err != nil {
		return nil, fmt.Errorf("listing the reservations of node %s: %w", node, err)
	}
	var out []*corev1.Pod
	for i := range list.Items {
		if reserve.Holds(&list.Items[i], node) {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

// unreserveGone deletes the reservations of a node that is gone.
func (r *Reconciler) unreserveGone(ctx context.Context, node string) error {
	have, err := r.reservationsOf(ctx, node)
	if err != nil || len(have) == 0 {
		return err
	}
	return r.writer.Reservations(ctx, nil, nil, have)
}

// orphanPoll is how soon to look again at a node whose orphaned surges go
// on (Deployment changes wake it too).
func orphanPoll(running bool) time.Duration {
	if running {
		return time.Second
	}
	return 0
}

// drainingBeside is this node with the nodes whose pods are moving now:
// their pods compete for the same room. Nodes that wait move nothing yet.
func drainingBeside(snap *snapshot.Snapshot, name string) []string {
	among := []string{name}
	for _, n := range snap.Nodes {
		if n.Name != name && signals.StateOf(n.Annotations) == signals.StateDraining {
			among = append(among, n.Name)
		}
	}
	return among
}

func nodePlan(p *planner.Plan, name string) *planner.NodePlan {
	for i := range p.Nodes {
		if p.Nodes[i].Name == name {
			return &p.Nodes[i]
		}
	}
	return nil
}
