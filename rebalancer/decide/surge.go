package decide

import (
	"fmt"
	"slices"
	"time"

	corev1 "k8s.io/api/core/v1"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// The surge hand-off, per Deployment with pods on a draining node:
//
//  1. record the surge (phase scaling-up) in a Lease of the controller's
//     namespace named after the Deployment's UID (creating it claims the
//     Deployment), mark the pods there with the lowest pod-deletion-cost,
//     scale up by their number through the scale subresource;
//  2. record phase waiting once the Deployment is at the surged count;
//  3. wait until as many of its pods as it had replicas are Ready on other
//     nodes;
//  4. record phase scaling-down and scale back: the ReplicaSet controller
//     removes the pods with the lowest deletion cost, the ones on the node;
//  5. remove the record once the moved pods are gone (or terminating).
//
// Every step reads the live replica count first. If it is neither what the
// record expects nor what the step writes, someone else (an HPA, GitOps, a
// person) changed it: the surge gives up without restoring anything, and
// the pods fall back to eviction. If the new pods are not Ready within
// rebalancer.surge.timeout, the Deployment is scaled back and the pods fall
// back to eviction. A restart or a new leader resumes from the record.

// Quiet tells whether a surge seen in the cache can only go on waiting,
// within its timeout: in its waiting phase, at the surged count, fewer of
// its pods Ready elsewhere than it had replicas; or scaled back, its moved
// pods not removed yet. The controller reads nothing
// live for it then (a draining node is looked at every second, and reading
// each surge live was the controller's biggest use of its rate limit).
func Quiet(s Surge, now time.Time, timeout time.Duration) bool {
	st := s.Record
	if st == nil || s.Unreadable || now.Sub(st.Since) >= timeout || len(s.Stranded) > 0 {
		return false
	}
	switch st.Phase {
	case signals.SurgeWaiting:
		return s.Replicas == st.To && s.ReadyElsewhere < int(st.From)
	case signals.SurgeScalingDown:
		// Scaled back, waiting for the ReplicaSet controller.
		return s.Replicas == st.From && s.Leaving > 0
	}
	return false
}

// Step is the next step of a surge under way.
func Step(s Surge, now time.Time, timeout time.Duration) SurgeAction {
	a := SurgeAction{Deployment: s.Deployment, Lease: s.Lease, Record: s.Record}
	switch {
	case s.Stale:
		a.Op = SurgeWait
		return a
	case s.NoDeployment:
		a.Op = SurgeForget
		return a
	}
	// Pods on a node of the surge that is gone cannot run: deleted now,
	// not after the pod garbage collector's delay.
	a.Delete = s.Stranded
	if s.Unreadable {
		return abandon(a, s, "its surge record does not parse", false, true)
	}
	st, cur := s.Record, s.Replicas
	someoneElse := fmt.Sprintf("its replica count was changed to %d by someone else (expected %d or %d)", cur, st.From, st.To)
	switch st.Phase {
	case signals.SurgeScalingUp:
		switch cur {
		case st.From:
			a.Op = SurgeScaleUp
			return a
		case st.To:
			a.Op, a.Record = SurgeRecordWaiting, withPhase(st, signals.SurgeWaiting)
			return a
		}
		return abandon(a, s, someoneElse, false, true)
	case signals.SurgeWaiting:
		switch {
		case cur != st.To:
			return abandon(a, s, someoneElse, false, true)
		case now.Sub(st.Since) >= timeout:
			return abandon(a, s, fmt.Sprintf("the new pods were not Ready within %s: scaled back to %d", timeout, st.From), true, true)
		case s.ReadyElsewhere < int(st.From):
			a.Op = SurgeWait
			return a
		}
		a.Op, a.Record = SurgeScaleDown, withPhase(st, signals.SurgeScalingDown)
		return a
	case signals.SurgeScalingDown:
		switch cur {
		case st.To:
			a.Op = SurgeResumeScaleDown
			return a
		case st.From:
			a.Op = SurgeComplete
			if s.Leaving > 0 && now.Sub(st.Since) < timeout {
				// Scaled back; the ReplicaSet controller removes them.
				a.Op = SurgeWait
			}
			return a
		}
		return abandon(a, s, someoneElse, false, true)
	}
	return abandon(a, s, fmt.Sprintf("unknown phase %q", st.Phase), false, true)
}

// Orphaned tells whether a surge off node can no longer be stepped: the
// node is gone, or it is neither draining nor held at its deadline.
func Orphaned(node *corev1.Node) bool {
	if node == nil {
		return true
	}
	switch signals.StateOf(node.Annotations) {
	case signals.StateDraining, signals.StateBlocked:
		return false
	}
	return true
}

// Orphan steps a surge whose node is gone (nodeGone) or no longer draining
// (drained at an interruption's deadline, say): nothing else steps it, and
// a Deployment left at the surged count would stay there for good (and
// refuse every later surge). It goes on as any surge does: once as many
// pods as the Deployment had are Ready elsewhere it scales back, and the
// ReplicaSet controller removes the surplus, the pods that are not Ready
// first. Pods still bound to a node that is gone cannot run: they are
// deleted first. Scaling back at once instead would remove the new pods
// still starting on healthy nodes before anything else.
func Orphan(s Surge, nodeGone bool, now time.Time, timeout time.Duration) SurgeAction {
	a := Step(s, now, timeout)
	if nodeGone && !s.Stale {
		// All of them, marked or not: the cache may not show the marks yet.
		a.Delete, a.Unmark = append(slices.Clone(s.OnNode), s.Stranded...), nil
	}
	return a
}

func abandon(a SurgeAction, s Surge, why string, restore, fallback bool) SurgeAction {
	a.Op, a.Why, a.Restore, a.Fallback, a.Unmark = SurgeAbandon, why, restore && s.Record != nil, fallback, s.Marked
	return a
}

func withPhase(st *signals.SurgeState, phase string) *signals.SurgeState {
	out := *st
	out.Phase = phase
	return &out
}
