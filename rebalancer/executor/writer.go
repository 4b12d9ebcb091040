package executor

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/decide"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// EventRecorder is the part of client-go's record.EventRecorder we use.
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// Writer applies decisions.
type Writer struct {
	Kube     kubernetes.Interface
	Recorder EventRecorder
	Metrics  *Metrics
	Clock    clock.PassiveClock
	// RecordsNamespace holds the surge records (the controller's own
	// namespace).
	RecordsNamespace string
	// Dynamic deletes Karpenter's NodeClaims (retire).
	Dynamic dynamic.Interface
	// ASG raises and shrinks Auto Scaling groups (provision asg).
	ASG asg.API

	groupMu sync.Mutex
	// timesMu guards the per-node times of the time metrics.
	// drainingSince holds when this process wrote each node's draining
	// state, for the Draining histogram (a drain begun before a restart
	// is not observed: the node's annotations are not trusted for it);
	// budgetLook when each node was last seen waiting on budgets.
	timesMu       sync.Mutex
	drainingSince map[string]time.Time
	budgetLook    map[string]time.Time
}

// Result is what the API answered to a decision's writes.
type Result struct {
	// Evicted are the pods the Eviction API accepted; Deleted those
	// deleted at their latest start or the deadline.
	Evicted []types.UID
	Deleted []types.UID
	// Throttled: a PodDisruptionBudget refused an eviction (429).
	Throttled bool
	// Transitioned: the decision's transition was written.
	Transitioned bool
	// ReservationRefused: the API refused to create a reservation.
	ReservationRefused bool
}

// Apply carries d out for node, in a safe order: reservations that go
// first (the room they hold is the moving pods'), then deletions at a
// deadline (so a surge scaled back after them removes nothing that runs),
// the surges, the evictions, the node's state, and last new reservations
// (once the node's taint keeps them off it). node is the
// Node as read; sig its signal (for Event texts and the time metrics).
func (w *Writer) Apply(ctx context.Context, node *corev1.Node, sig signals.Signal, d decide.Decision) (Result, error) {
	var res Result
	w.budgetWait(node.Name, sig, d.WaitingOnBudgets)
	if err := w.Reservations(ctx, node, nil, d.Unreserve); err != nil {
		return res, err
	}
	if d.InterruptionSeen != nil && d.Transition == nil && !d.Clear {
		value := d.InterruptionSeen.UTC().Format(time.RFC3339)
		if _, err := w.Kube.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType,
			signals.AnnotationPatch(signals.AnnotationInterruptionSeen, &value, ""), metav1.PatchOptions{}); err != nil {
			return res, fmt.Errorf("recording when the interruption of node %s was first seen: %w", node.Name, err)
		}
	}
	for _, del := range d.Deletions {
		if err := w.delete(ctx, node, sig, del); err != nil {
			return res, err
		}
		res.Deleted = append(res.Deleted, del.Pod.UID)
	}
	for _, a := range d.Surges {
		if err := w.Surge(ctx, node, a); err != nil {
			return res, err
		}
	}
	var errs []error
	for _, e := range d.Evictions {
		evict := Evict
		if e.Granted {
			evict = Complete
		}
		outcome, err := evict(ctx, w.Kube, e.Pod)
		w.Metrics.Evictions.WithLabelValues(string(outcome)).Inc()
		switch {
		case outcome == Evicted && e.Granted:
			res.Evicted = append(res.Evicted, e.Pod.UID)
			w.Recorder.Eventf(e.Pod, corev1.EventTypeNormal, "Evicted", "deleted from at-risk node %s: its PodDisruptionBudget had already granted its eviction, whose delete never came (destination %s)", node.Name, e.Destination)
		case outcome == Evicted:
			res.Evicted = append(res.Evicted, e.Pod.UID)
			w.Recorder.Eventf(e.Pod, corev1.EventTypeNormal, "Evicted", "evicted from at-risk node %s (wave 1 of the current plan, destination %s)", node.Name, e.Destination)
		case outcome == BlockedByPDB:
			res.Throttled = true
		case outcome == Failed && e.Granted:
			errs = append(errs, fmt.Errorf("deleting pod %s, whose eviction its PDB granted: %w", klog.KObj(e.Pod), err))
		case outcome == Failed:
			errs = append(errs, fmt.Errorf("evicting pod %s: %w", klog.KObj(e.Pod), err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		// Logged, not returned: the other evictions went through, and the
		// next look decides again.
		ctrllog.FromContext(ctx).Error(err, "Eviction failed", "node", klog.KObj(node))
	}
	if d.Retire != nil {
		if err := w.retire(ctx, d.Retire); err != nil {
			return res, err
		}
	}
	if d.Terminate != "" {
		if w.ASG == nil {
			return res, fmt.Errorf("retiring through an Auto Scaling group needs an Auto Scaling client")
		}
		if err := asg.Terminate(ctx, w.ASG, d.Terminate); err != nil {
			return res, err
		}
	}
	switch {
	case d.Clear:
		return res, w.clear(ctx, node, d.ClearedFrom, d.Uncordon)
	case d.Transition != nil:
		if err := w.transition(ctx, node, sig, *d.Transition, d.InterruptionSeen); err != nil {
			return res, err
		}
		res.Transitioned = true
	}
	if d.Raise != nil {
		if err := w.raise(ctx, node, *d.Raise); err != nil {
			return res, err
		}
	}
	// New reservations last: after the taint that keeps them off the node.
	// One refused is remembered, not an error of the decision.
	var refused *ReservationError
	if err := w.Reservations(ctx, node, d.Reserve, nil); errors.As(err, &refused) {
		res.ReservationRefused = true
	} else if err != nil {
		return res, err
	}
	return res, nil
}

func (w *Writer) delete(ctx context.Context, node *corev1.Node, sig signals.Signal, del decide.Deletion) error {
	outcome, err := Delete(ctx, w.Kube, del.Pod, del.Grace)
	w.Metrics.Evictions.WithLabelValues(string(outcome)).Inc()
	if outcome == Failed {
		return fmt.Errorf("deleting pod %s at the deadline: %w", klog.KObj(del.Pod), err)
	}
	w.Recorder.Eventf(del.Pod, corev1.EventTypeWarning, "DeletedAtDeadline", "deleted with a %ds grace period: node %s is reclaimed at %s",
		del.Grace, node.Name, sig.TerminationTime.UTC().Format(time.RFC3339))
	return nil
}

// transition records the state, its reason code and message, the draining
// taint and the cordon, as one merge patch that fails if the node changed
// since it was read.
func (w *Writer) transition(ctx context.Context, node *corev1.Node, sig signals.Signal, t decide.Transition, interruptionSeen *time.Time) error {
	old := signals.StateOf(node.Annotations)
	updated := node.DeepCopy()
	if updated.Annotations == nil {
		updated.Annotations = map[string]string{}
	}
	updated.Annotations[signals.AnnotationState] = string(t.State)
	updated.Annotations[signals.AnnotationStateReasonCode] = string(t.Reason)
	updated.Annotations[signals.AnnotationStateReason] = t.Message
	if _, ok := updated.Annotations[signals.AnnotationSignalTime]; !ok {
		updated.Annotations[signals.AnnotationSignalTime] = sig.Since.UTC().Format(time.RFC3339)
	}
	if interruptionSeen != nil {
		updated.Annotations[signals.AnnotationInterruptionSeen] = interruptionSeen.UTC().Format(time.RFC3339)
	}
	updated.Spec.Taints = withoutDrainingTaint(updated.Spec.Taints)
	if t.Taint {
		updated.Spec.Taints = append(updated.Spec.Taints, corev1.Taint{Key: signals.TaintDraining, Value: string(t.State), Effect: corev1.TaintEffectNoSchedule})
	}
	if t.Cordon {
		updated.Spec.Unschedulable = true
	}
	if _, labelled := updated.Labels[corev1.LabelNodeExcludeBalancers]; t.ExcludeFromLoadBalancers && !labelled {
		// Someone else's value (Karpenter writes its own) is left alone,
		// and so is the label when the node goes back to normal.
		if updated.Labels == nil {
			updated.Labels = map[string]string{}
		}
		updated.Labels[corev1.LabelNodeExcludeBalancers] = "true"
		updated.Annotations[signals.AnnotationExcludedFromLoadBalancers] = "true"
	}
	if err := patchNode(ctx, w.Kube, node, updated); err != nil {
		return fmt.Errorf("recording state %s on node %s: %w", t.State, node.Name, err)
	}
	// Karpenter may take over a node this controller drains already: the
	// state stays, the reason changes.
	if t.Reason == signals.ReasonDrainedByKarpenter && signals.ReasonOf(node.Annotations) != t.Reason {
		w.Metrics.LeftToOthers.WithLabelValues("karpenter").Inc()
		w.Recorder.Eventf(node, corev1.EventTypeNormal, "DrainedByKarpenter", "Karpenter drains this node (its NodeClaim is being deleted); spot-rebalancer evicts nothing and asks for nothing here")
	}
	if old == t.State {
		return nil
	}
	w.Metrics.Transitions.WithLabelValues(string(t.State)).Inc()
	switch t.State {
	case signals.StateDraining:
		w.drainBegan(node.Name)
		w.Metrics.WaitForReplacement.WithLabelValues(string(sig.Kind)).Observe(w.Clock.Since(sig.Since).Seconds())
	case signals.StateDrained:
		w.Metrics.SignalToDrained.WithLabelValues(string(sig.Kind)).Observe(w.Clock.Since(sig.Since).Seconds())
		if began, ok := w.drainEnded(node.Name); ok {
			w.Metrics.Draining.WithLabelValues(string(sig.Kind)).Observe(w.Clock.Since(began).Seconds())
		}
	default:
		w.drainEnded(node.Name)
	}
	eventType := corev1.EventTypeNormal
	if t.State == signals.StateBlocked {
		eventType = corev1.EventTypeWarning
	}
	w.Recorder.Eventf(node, eventType, "Rebalance"+camel(string(t.State)), "%s: %s", t.State, t.Message)
	ctrllog.FromContext(ctx).Info("Node state changed", "node", klog.KObj(node), "from", old, "to", t.State, "reason", t.Reason, "message", t.Message)
	return nil
}

// drainBegan remembers that node began draining now.
func (w *Writer) drainBegan(node string) {
	w.timesMu.Lock()
	defer w.timesMu.Unlock()
	if w.drainingSince == nil {
		w.drainingSince = map[string]time.Time{}
	}
	w.drainingSince[node] = w.Clock.Now()
}

// drainEnded forgets when node began draining, and says when that was if
// this process saw it.
func (w *Writer) drainEnded(node string) (time.Time, bool) {
	w.timesMu.Lock()
	defer w.timesMu.Unlock()
	began, ok := w.drainingSince[node]
	delete(w.drainingSince, node)
	return began, ok
}

// Forget drops what the writer remembers of a node that is gone.
func (w *Writer) Forget(node string) {
	w.timesMu.Lock()
	defer w.timesMu.Unlock()
	delete(w.drainingSince, node)
	delete(w.budgetLook, node)
}

// budgetWait adds the time since the node's last look to the budget-wait
// metric when it waited on budgets then and now.
func (w *Writer) budgetWait(node string, sig signals.Signal, waiting bool) {
	w.timesMu.Lock()
	defer w.timesMu.Unlock()
	if !waiting {
		delete(w.budgetLook, node)
		return
	}
	now := w.Clock.Now()
	if last, ok := w.budgetLook[node]; ok && now.After(last) {
		w.Metrics.BudgetWait.WithLabelValues(string(sig.Kind)).Add(now.Sub(last).Seconds())
	}
	if w.budgetLook == nil {
		w.budgetLook = map[string]time.Time{}
	}
	w.budgetLook[node] = now
}

// clear removes the rebalancer's state and taint from a node whose signal
// went away before it drained.
func (w *Writer) clear(ctx context.Context, node *corev1.Node, from signals.State, uncordon bool) error {
	updated := node.DeepCopy()
	for _, k := range []string{signals.AnnotationState, signals.AnnotationStateReason, signals.AnnotationStateReasonCode,
		signals.AnnotationSignalTime, signals.AnnotationInterruptionSeen} {
		delete(updated.Annotations, k)
	}
	updated.Spec.Taints = withoutDrainingTaint(updated.Spec.Taints)
	if uncordon {
		updated.Spec.Unschedulable = false
	}
	if updated.Annotations[signals.AnnotationExcludedFromLoadBalancers] == "true" && updated.Labels[corev1.LabelNodeExcludeBalancers] == "true" {
		delete(updated.Labels, corev1.LabelNodeExcludeBalancers)
	}
	delete(updated.Annotations, signals.AnnotationExcludedFromLoadBalancers)
	if err := patchNode(ctx, w.Kube, node, updated); err != nil {
		return fmt.Errorf("clearing the state of node %s: %w", node.Name, err)
	}
	w.drainEnded(node.Name)
	w.Metrics.Transitions.WithLabelValues("cleared").Inc()
	w.Recorder.Eventf(node, corev1.EventTypeNormal, "RebalanceCancelled", "the Spot signal went away while %s: node schedulable again", from)
	return nil
}

func withoutDrainingTaint(taints []corev1.Taint) []corev1.Taint {
	out := taints[:0:0]
	for _, t := range taints {
		if t.Key != signals.TaintDraining {
			out = append(out, t)
		}
	}
	return out
}

// camel names an Event reason after a state: awaiting-replacement ->
// AwaitingReplacement.
func camel(state string) string {
	var b strings.Builder
	for _, part := range strings.Split(state, "-") {
		if part != "" {
			b.WriteString(strings.ToUpper(part[:1]) + part[1:])
		}
	}
	return b.String()
}
