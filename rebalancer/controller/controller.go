// Package controller runs the rebalancer's state machine on each at-risk
// node: at-risk -> awaiting-replacement -> draining -> drained (or blocked).
// Every step re-plans from a fresh snapshot with the planner and carries out
// only what the plan says: replacement first, then the first wave of
// evictions, never more than the PodDisruptionBudgets allow. Progress lives
// on the Node (annotations and a taint), so a restart or a new leader
// resumes where the last one stopped.
package controller

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	ctrl "sigs.k8s.io/controller-runtime"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrlcontroller "sigs.k8s.io/controller-runtime/pkg/controller"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/reconcile"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/executor"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// The states recorded in signals.AnnotationState.
const (
	StateAtRisk              = "at-risk"
	StateAwaitingReplacement = "awaiting-replacement"
	StateDraining            = "draining"
	StateDrained             = "drained"
	StateBlocked             = "blocked"
)

// Reasons of a blocked state that a later pass may lift.
const blockedByPods = "blocked pods: "

// EventRecorder is the part of client-go's record.EventRecorder we use.
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Reconciler drives at-risk nodes. Client reads from the manager's caches
// and writes Nodes; Kube evicts and deletes pods.
type Reconciler struct {
	Client   client.Client
	Kube     kubernetes.Interface
	Config   *config.Rebalancer
	Clock    clock.Clock
	Recorder EventRecorder
	Metrics  *Metrics
	// Name names the controller (default "rebalancer"); names are unique
	// per process.
	Name string

	mu sync.Mutex
	// backoff is the last wait after a 429 and until when it lasts, per
	// node: other events must not cut it short.
	backoff map[string]time.Duration
	until   map[string]time.Time
	// evicted remembers pods evicted in the last evictionMemory: the cache
	// can show them untouched for a moment after the eviction, and a
	// reconcile in that moment must not evict them again.
	evicted map[types.UID]time.Time
	// admitted are the nodes, by pool, this process let start draining.
	admitted map[string]sets.Set[string]
}

const evictionMemory = time.Minute

// SetupWithManager registers the reconciler; it runs on the leader only.
func (r *Reconciler) SetupWithManager(mgr ctrl.Manager) error {
	r.backoff, r.until = map[string]time.Duration{}, map[string]time.Time{}
	return ctrl.NewControllerManagedBy(mgr).
		For(&corev1.Node{}).
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

// Reconcile advances one node by one step.
func (r *Reconciler) Reconcile(ctx context.Context, req ctrl.Request) (ctrl.Result, error) {
	log := ctrllog.FromContext(ctx)
	var node corev1.Node
	if err := r.Client.Get(ctx, req.NamespacedName, &node); err != nil {
		return ctrl.Result{}, client.IgnoreNotFound(err)
	}
	now := r.Clock.Now()
	sig, atRisk := signals.FromNode(&node, now)
	state := node.Annotations[signals.AnnotationState]
	if !atRisk {
		return r.signalGone(ctx, &node, state)
	}
	if state == StateDrained {
		return ctrl.Result{}, nil
	}
	snap, err := r.snapshot(ctx, now)
	if err != nil {
		return ctrl.Result{}, err
	}
	r.countNodes(snap)
	// This node, with the nodes whose pods are moving now: their pods
	// compete for the same room. Nodes that wait move nothing yet.
	among := []string{node.Name}
	for _, n := range snap.Nodes {
		if n.Name != node.Name && n.Annotations[signals.AnnotationState] == StateDraining {
			among = append(among, n.Name)
		}
	}
	plan, err := planner.New(snap, planner.Options{Config: r.Config, Among: among})
	if err != nil {
		return ctrl.Result{}, err
	}
	np := nodePlan(plan, node.Name)
	if np == nil {
		return ctrl.Result{}, fmt.Errorf("node %s is at risk but not in the plan", node.Name)
	}
	if r.Config.DryRun {
		log.Info("Dry run: plan for an at-risk node", "node", klog.KObj(&node), "signal", sig.Kind,
			"replacementReady", np.Replacement.Ready, "summary", summary(np))
		r.Recorder.Eventf(&node, corev1.EventTypeNormal, "DryRunPlan", "dry run: %s; %s", np.Replacement.Reason, summary(np))
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	}
	if state == "" {
		return r.transition(ctx, &node, StateAtRisk, fmt.Sprintf("%s (from %s)", sig.Kind, sig.Source), 0)
	}
	switch state {
	case StateAtRisk, StateAwaitingReplacement:
		return r.awaitReplacement(ctx, &node, sig, np, snap)
	case StateDraining:
		return r.drain(ctx, &node, sig, np, snap)
	case StateBlocked:
		if reason := node.Annotations[signals.AnnotationStateReason]; strings.HasPrefix(reason, blockedByPods) && !hasBlocked(np) {
			return r.transition(ctx, &node, StateDraining, "the blocking pods are gone", 0)
		}
		if sig.Kind == signals.InterruptionNotice {
			return r.drain(ctx, &node, sig, np, snap)
		}
		return ctrl.Result{RequeueAfter: 30 * time.Second}, nil
	default:
		log.Info("Unknown state on node; starting over", "node", klog.KObj(&node), "state", state)
		return r.transition(ctx, &node, StateAtRisk, "unknown state "+state+" replaced", 0)
	}
}

func (r *Reconciler) awaitReplacement(ctx context.Context, node *corev1.Node, sig signals.Signal, np *planner.NodePlan, snap *snapshot.Snapshot) (ctrl.Result, error) {
	if sig.Kind == signals.InterruptionNotice {
		return r.transition(ctx, node, StateDraining, "interruption notice: draining at once", 0)
	}
	if np.Replacement.Ready {
		if busy, ok := r.admitDrain(snap, np.Pool, node.Name); !ok {
			return r.transition(ctx, node, StateAwaitingReplacement,
				fmt.Sprintf("queued: %d node(s) of pool %s already draining (maxConcurrentNodes %d)", busy, orNone(np.Pool), r.Config.MaxConcurrentNodes), 2*time.Second)
		}
		return r.transition(ctx, node, StateDraining, np.Replacement.Reason, 0)
	}
	waited := r.Clock.Since(sig.Since)
	timeout := r.Config.Replacement.Timeout.Duration
	if waited < timeout {
		return r.transition(ctx, node, StateAwaitingReplacement, np.Replacement.Reason, min(2*time.Second, timeout-waited))
	}
	switch r.Config.Replacement.OnTimeout {
	case config.OnTimeoutDrainIfFits:
		if np.Unplaceable == 0 {
			return r.transition(ctx, node, StateDraining, fmt.Sprintf("no replacement after %s, but every pod fits elsewhere", timeout), 0)
		}
		return r.transition(ctx, node, StateBlocked, fmt.Sprintf("no replacement after %s and some pods fit nowhere", timeout), 30*time.Second)
	case config.OnTimeoutUncordon:
		return r.transition(ctx, node, StateBlocked, fmt.Sprintf("no replacement after %s: gave up and made the node schedulable again", timeout), 0)
	default:
		return r.transition(ctx, node, StateBlocked, fmt.Sprintf("no replacement after %s: kept cordoned", timeout), 0)
	}
}

func (r *Reconciler) drain(ctx context.Context, node *corev1.Node, sig signals.Signal, np *planner.NodePlan, snap *snapshot.Snapshot) (ctrl.Result, error) {
	now := r.Clock.Now()
	if np.Deadline != nil && !now.Before(*np.Deadline) {
		return r.deadline(ctx, node, sig, np, snap)
	}
	// Surges first; the rest waits for them.
	if running, err := r.advanceSurges(ctx, node, np, snap); err != nil || running {
		return ctrl.Result{RequeueAfter: time.Second}, err
	}
	var wave []planner.PodPlan
	remaining := 0
	for _, p := range np.Pods {
		if p.Action == planner.ActionEvict {
			remaining++
			if p.Wave == 1 {
				wave = append(wave, p)
			}
		}
	}
	if len(wave) == 0 {
		switch {
		case remaining > 0:
			// The next waves wait for their PDBs to recover.
			return ctrl.Result{RequeueAfter: time.Second}, nil
		case hasBlocked(np) && np.Deadline != nil:
			// Left for the deadline.
			return r.transition(ctx, node, StateDraining, "waiting for the deadline to remove blocked pods", min(time.Second, np.Deadline.Sub(now)))
		case hasBlocked(np):
			return r.transition(ctx, node, StateBlocked, blockedByPods+blockerSummary(np), 30*time.Second)
		default:
			return r.transition(ctx, node, StateDrained, "every evictable pod has moved", 0)
		}
	}
	if wait := r.waitAfter429(node.Name); wait > 0 {
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	throttled := false
	for _, p := range wave {
		pod := findPod(snap, node.Name, p.Namespace, p.Name)
		if pod == nil || r.evictedRecently(pod.UID) {
			continue
		}
		outcome, err := executor.Evict(ctx, r.Kube, pod)
		r.Metrics.Evictions.WithLabelValues(string(outcome)).Inc()
		switch outcome {
		case executor.Evicted:
			r.rememberEviction(pod.UID)
			r.Recorder.Eventf(pod, corev1.EventTypeNormal, "Evicted", "evicted from at-risk node %s (wave 1 of the current plan, destination %s)", node.Name, p.Destination)
		case executor.BlockedByPDB:
			throttled = true
		case executor.MultiplePDBs:
			r.Recorder.Eventf(pod, corev1.EventTypeWarning, "EvictionBlocked", "cannot be evicted: %v", err)
		case executor.Failed:
			ctrllog.FromContext(ctx).Error(err, "Eviction failed", "pod", klog.KObj(pod))
		}
	}
	if throttled {
		wait := r.backoff429(node.Name)
		r.Recorder.Eventf(node, corev1.EventTypeNormal, "EvictionThrottled", "a PodDisruptionBudget refused an eviction (429); retrying in %s", wait)
		return ctrl.Result{RequeueAfter: wait}, nil
	}
	r.reset429(node.Name)
	return ctrl.Result{RequeueAfter: time.Second}, nil
}

// deadline removes what is left at an interruption's deadline.
func (r *Reconciler) deadline(ctx context.Context, node *corev1.Node, sig signals.Signal, np *planner.NodePlan, snap *snapshot.Snapshot) (ctrl.Result, error) {
	if err := r.undoSurges(ctx, node, snap, "the interruption deadline was reached"); err != nil {
		return ctrl.Result{}, err
	}
	if r.Config.ForceAtDeadline == nil || !*r.Config.ForceAtDeadline {
		return r.transition(ctx, node, StateBlocked, "deadline reached; forceAtDeadline is false, so the remaining pods are left", 0)
	}
	left := int64(0)
	if !sig.TerminationTime.IsZero() {
		left = max(int64(sig.TerminationTime.Sub(r.Clock.Now()).Seconds()), 0)
	}
	deleted := 0
	for _, p := range np.Pods {
		if p.Action == planner.ActionSkip {
			continue
		}
		pod := findPod(snap, node.Name, p.Namespace, p.Name)
		if pod == nil {
			continue
		}
		grace := left
		if g := pod.Spec.TerminationGracePeriodSeconds; g != nil && *g < grace {
			grace = *g
		}
		outcome, err := executor.Delete(ctx, r.Kube, pod, grace)
		r.Metrics.Evictions.WithLabelValues(string(outcome)).Inc()
		if err != nil && outcome == executor.Failed {
			return ctrl.Result{}, fmt.Errorf("deleting pod %s at the deadline: %w", klog.KObj(pod), err)
		}
		deleted++
		r.Recorder.Eventf(pod, corev1.EventTypeWarning, "DeletedAtDeadline", "deleted with a %ds grace period: node %s is reclaimed at %s", grace, node.Name, sig.TerminationTime.UTC().Format(time.RFC3339))
	}
	return r.transition(ctx, node, StateDrained, fmt.Sprintf("deadline reached: %d pod(s) deleted", deleted), 0)
}

// signalGone rolls back a node whose signal went away before draining.
func (r *Reconciler) signalGone(ctx context.Context, node *corev1.Node, state string) (ctrl.Result, error) {
	if state == StateDraining {
		// A drain goes on without its signal, but never with a Deployment
		// left scaled up.
		snap, err := r.snapshot(ctx, r.Clock.Now())
		if err != nil {
			return ctrl.Result{}, err
		}
		return ctrl.Result{}, r.undoSurges(ctx, node, snap, "the Spot signal went away")
	}
	switch state {
	case StateAtRisk, StateAwaitingReplacement, StateBlocked:
	default:
		return ctrl.Result{}, nil
	}
	updated := node.DeepCopy()
	for _, k := range []string{signals.AnnotationState, signals.AnnotationStateReason, signals.AnnotationSignalTime} {
		delete(updated.Annotations, k)
	}
	updated.Spec.Taints = withoutTaint(updated.Spec.Taints)
	if err := r.Client.Update(ctx, updated); err != nil {
		return ctrl.Result{}, err
	}
	r.Metrics.Transitions.WithLabelValues("cleared").Inc()
	r.Recorder.Eventf(node, corev1.EventTypeNormal, "RebalanceCancelled", "the Spot signal went away while %s: node schedulable again", state)
	return ctrl.Result{}, nil
}

// transition records state and reason on the node (annotations, taint,
// cordon) and requeues after the given time. Recording the same state and
// reason again writes nothing.
func (r *Reconciler) transition(ctx context.Context, node *corev1.Node, state, reason string, requeue time.Duration) (ctrl.Result, error) {
	old := node.Annotations[signals.AnnotationState]
	if old == state && node.Annotations[signals.AnnotationStateReason] == reason {
		return ctrl.Result{RequeueAfter: requeue}, nil
	}
	updated := node.DeepCopy()
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	updated.Annotations[signals.AnnotationState] = state
	updated.Annotations[signals.AnnotationStateReason] = reason
	if _, ok := updated.Annotations[signals.AnnotationSignalTime]; !ok {
		since := r.Clock.Now()
		if sig, ok := signals.FromNode(node, since); ok {
			since = sig.Since
		}
		updated.Annotations[signals.AnnotationSignalTime] = since.UTC().Format(time.RFC3339)
	}
	keepCordoned := !strings.Contains(reason, "made the node schedulable again")
	updated.Spec.Taints = withoutTaint(updated.Spec.Taints)
	if keepCordoned {
		updated.Spec.Taints = append(updated.Spec.Taints, corev1.Taint{Key: signals.TaintDraining, Value: state, Effect: corev1.TaintEffectNoSchedule})
	}
	if state == StateDraining || state == StateDrained {
		updated.Spec.Unschedulable = true
	}
	if err := r.Client.Update(ctx, updated); err != nil {
		if apierrors.IsConflict(err) {
			return ctrl.Result{Requeue: true}, nil
		}
		return ctrl.Result{}, fmt.Errorf("recording state %s on node %s: %w", state, node.Name, err)
	}
	if old != state {
		r.Metrics.Transitions.WithLabelValues(state).Inc()
		if since, ok := signalSince(node, r.Clock.Now()); ok {
			switch state {
			case StateDraining:
				r.Metrics.WaitForReplacement.Observe(r.Clock.Since(since).Seconds())
			case StateDrained:
				r.Metrics.SignalToDrained.Observe(r.Clock.Since(since).Seconds())
			}
		}
		eventType := corev1.EventTypeNormal
		if state == StateBlocked {
			eventType = corev1.EventTypeWarning
		}
		r.Recorder.Eventf(node, eventType, "Rebalance"+camel(state), "%s: %s", state, reason)
		ctrllog.FromContext(ctx).Info("Node state changed", "node", klog.KObj(node), "from", old, "to", state, "reason", reason)
	}
	return ctrl.Result{RequeueAfter: requeue}, nil
}

func (r *Reconciler) snapshot(ctx context.Context, now time.Time) (*snapshot.Snapshot, error) {
	var nodes corev1.NodeList
	var pods corev1.PodList
	var pdbs policyv1.PodDisruptionBudgetList
	var deployments appsv1.DeploymentList
	var replicaSets appsv1.ReplicaSetList
	var hpas autoscalingv2.HorizontalPodAutoscalerList
	if err := errors.Join(r.Client.List(ctx, &nodes), r.Client.List(ctx, &pods), r.Client.List(ctx, &pdbs),
		r.Client.List(ctx, &deployments), r.Client.List(ctx, &replicaSets), r.Client.List(ctx, &hpas)); err != nil {
		return nil, fmt.Errorf("listing from the cache: %w", err)
	}
	return snapshot.New(now, pointers(nodes.Items), pointers(pods.Items), pointers(pdbs.Items)).
		WithWorkloads(pointers(deployments.Items), pointers(replicaSets.Items), pointers(hpas.Items)), nil
}

// pointers returns a pointer to each element of items, in order (the
// snapshot takes pointers; the lists are ours, copied out of the cache).
func pointers[T any](items []T) []*T {
	out := make([]*T, len(items))
	for i := range items {
		out[i] = &items[i]
	}
	return out
}

// countNodes sets the nodes-by-state gauge from the snapshot.
func (r *Reconciler) countNodes(snap *snapshot.Snapshot) {
	counts := map[string]int{}
	for _, n := range snap.Nodes {
		if s := n.Annotations[signals.AnnotationState]; s != "" {
			counts[s]++
		}
	}
	for _, s := range States {
		r.Metrics.Nodes.WithLabelValues(s).Set(float64(counts[s]))
	}
}

func signalSince(node *corev1.Node, now time.Time) (time.Time, bool) {
	s, ok := signals.FromNode(node, now)
	return s.Since, ok
}

// admitDrain decides whether node may start draining in pool, for all
// workers at once: maxConcurrentNodes counts the pool's nodes draining in the
// snapshot and the ones this process admitted that the cache does not show
// draining yet (several workers deciding on one stale snapshot would each
// see room). It reports how many drain besides node.
func (r *Reconciler) admitDrain(snap *snapshot.Snapshot, pool, self string) (int, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.admitted == nil {
		r.admitted = map[string]sets.Set[string]{}
	}
	if r.admitted[pool] == nil {
		r.admitted[pool] = sets.New[string]()
	}
	draining := sets.New[string]()
	for _, n := range snap.Nodes {
		if n.Name != self && n.Annotations[signals.AnnotationState] == StateDraining && planner.Pool(n, r.Config.PoolLabels) == pool {
			draining.Insert(n.Name)
		}
	}
	for name := range r.admitted[pool] {
		n := snap.Node(name)
		switch {
		case n == nil:
			r.admitted[pool].Delete(name)
		case n.Annotations[signals.AnnotationState] != StateAtRisk && n.Annotations[signals.AnnotationState] != StateAwaitingReplacement:
			// Seen draining (counted above) or past it: the snapshot knows.
			r.admitted[pool].Delete(name)
		case name != self:
			draining.Insert(name)
		}
	}
	if draining.Len() >= int(r.Config.MaxConcurrentNodes) {
		return draining.Len(), false
	}
	r.admitted[pool].Insert(self)
	return draining.Len(), true
}

// evictedRecently tells whether this controller evicted the pod less than
// evictionMemory ago, and forgets older evictions.
func (r *Reconciler) evictedRecently(uid types.UID) bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	now := r.Clock.Now()
	for u, at := range r.evicted {
		if now.Sub(at) >= evictionMemory {
			delete(r.evicted, u)
		}
	}
	_, ok := r.evicted[uid]
	return ok
}

func (r *Reconciler) rememberEviction(uid types.UID) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.evicted == nil {
		r.evicted = map[types.UID]time.Time{}
	}
	r.evicted[uid] = r.Clock.Now()
}

// waitAfter429 is how long the node still waits after a 429.
func (r *Reconciler) waitAfter429(node string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return max(r.until[node].Sub(r.Clock.Now()), 0)
}

// backoff429 doubles the node's wait after a 429, from 100 ms to 10 s.
func (r *Reconciler) backoff429(node string) time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	d := r.backoff[node]
	switch {
	case d == 0:
		d = 100 * time.Millisecond
	default:
		d = min(2*d, 10*time.Second)
	}
	r.backoff[node] = d
	r.until[node] = r.Clock.Now().Add(d)
	return d
}

func (r *Reconciler) reset429(node string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	delete(r.backoff, node)
	delete(r.until, node)
}

func nodePlan(p *planner.Plan, name string) *planner.NodePlan {
	for i := range p.Nodes {
		if p.Nodes[i].Name == name {
			return &p.Nodes[i]
		}
	}
	return nil
}

func findPod(snap *snapshot.Snapshot, node, namespace, name string) *corev1.Pod {
	for _, p := range snap.PodsOn(node) {
		if p.Namespace == namespace && p.Name == name {
			return p
		}
	}
	return nil
}

func hasBlocked(np *planner.NodePlan) bool { return len(np.Blockers) > 0 }

func blockerSummary(np *planner.NodePlan) string {
	var parts []string
	for _, b := range np.Blockers {
		parts = append(parts, fmt.Sprintf("%s/%s (%s)", b.Namespace, b.Name, b.Reason))
	}
	s := strings.Join(parts, "; ")
	if len(s) > 500 {
		s = s[:497] + "..."
	}
	return s
}

func summary(np *planner.NodePlan) string {
	evict, blocked, _ := np.Tally()
	return fmt.Sprintf("%d pod(s) to evict, %d blocked", evict, blocked)
}

func withoutTaint(taints []corev1.Taint) []corev1.Taint {
	out := taints[:0:0]
	for _, t := range taints {
		if t.Key != signals.TaintDraining {
			out = append(out, t)
		}
	}
	return out
}

func camel(state string) string {
	var b strings.Builder
	for _, part := range strings.Split(state, "-") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
