package planner

import (
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// KarpenterTerminationFinalizer holds a Node that Karpenter drains: its
// NodeClaim was deleted (its interruption handling does that at a notice),
// Karpenter deleted the Node and drains it before it lets it go.
const KarpenterTerminationFinalizer = "karpenter.sh/termination"

// DrainerKarpenter is NodePlan.DrainedBy for a node Karpenter drains.
const DrainerKarpenter = "karpenter"

// DrainedBy names who else drains node now, or "". Karpenter drains a
// node it has deleted and holds with its termination finalizer: its drain
// evicts every pod and it launches for them itself, so the rebalancer,
// which would only add evictions and reservations beside it, steps aside.
// Karpenter's karpenter.sh/disrupted taint alone is not believed: a node's
// own credentials can write its taints, and a node that says so would
// otherwise have its drain, and its deadline, called off.
func DrainedBy(node *corev1.Node) string {
	if node.DeletionTimestamp != nil && slices.Contains(node.Finalizers, KarpenterTerminationFinalizer) {
		return DrainerKarpenter
	}
	return ""
}

// GraceAtDeadline is the grace period an interruption's deadline leaves
// pod: its own terminationGracePeriodSeconds (30 s if unset), at most
// cfg.MaxGraceAtDeadline and at least config.MinGraceAtDeadline.
func GraceAtDeadline(pod *corev1.Pod, cfg *config.Rebalancer) time.Duration {
	own := time.Duration(corev1.DefaultTerminationGracePeriodSeconds) * time.Second
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		own = time.Duration(*g) * time.Second
	}
	return max(min(own, cfg.MaxGraceAtDeadline.Duration), config.MinGraceAtDeadline)
}

// LatestStart is when a pod still on a node reclaimed at termination is
// deleted: its grace period at the deadline before that time, and never
// later than the node's deadline (deadlineSafety before it). Pods that
// need long to stop go first, so each gets its own grace period instead
// of all being cut short at one moment.
func LatestStart(pod *corev1.Pod, termination time.Time, cfg *config.Rebalancer) time.Time {
	return termination.Add(-max(GraceAtDeadline(pod, cfg), cfg.DeadlineSafety.Duration))
}
