package decide

import (
	"fmt"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// holdsForInterruption tells whether an interrupted node in state asks
// for room (reservations, its group): from the notice until it is
// drained, unless someone else drains it.
func holdsForInterruption(in Input, state signals.State) bool {
	return in.Signal.Kind == signals.InterruptionNotice && (planner.Waits(state) || state == signals.StateDraining) &&
		(in.Plan == nil || in.Plan.DrainedBy == "")
}

// leaveTo leaves a node to who else drains it (Karpenter, once its
// NodeClaim is deleted): the node is recorded draining for that reason,
// surges under way go on, nothing new starts, nothing is evicted or asked
// for, and nothing is deleted at the deadline. If that drain is called off
// (Karpenter removes its taint), the node drains as usual again.
//
// A rebalance recommendation still waiting for its replacement waits on
// (awaiting-replacement, not draining: it takes no place in its pool's
// drains), so that if Karpenter calls its drain off, the node waits for
// its replacement as before instead of draining without one.
func leaveTo(in Input, drainer string) Decision {
	state := signals.StateDraining
	if in.Signal.Kind == signals.RebalanceRecommendation && planner.Waits(signals.StateOf(in.Node.Annotations)) {
		state = signals.StateAwaitingReplacement
	}
	d := in.to(state, signals.ReasonDrainedByKarpenter,
		fmt.Sprintf("%s drains the node (its NodeClaim is being deleted): its pods are left to it", drainer), blockedPoll)
	d.Surges = stepSurges(in, false)
	return d
}

// untilNextDue looks at an interrupted node again no later than the next
// pod's latest start.
func untilNextDue(in Input, d Decision) Decision {
	if in.Plan == nil {
		return d
	}
	for _, p := range in.Plan.Pods {
		if p.Action == planner.ActionSkip || p.LatestStart == nil || !p.LatestStart.After(in.Now) {
			continue
		}
		if wait := p.LatestStart.Sub(in.Now); d.Requeue == 0 || wait < d.Requeue {
			d.Requeue = wait
		}
	}
	return d
}

// notHeldFor are the reservations whose pod is not among pods
// (namespace/name).
func notHeldFor(have []*corev1.Pod, pods []string) []*corev1.Pod {
	var out []*corev1.Pod
	for _, r := range have {
		if !slices.Contains(pods, r.Annotations[reserve.AnnotationPod]) {
			out = append(out, r)
		}
	}
	return out
}

// due are the pods whose latest start has come (an interruption's
// per-pod deadline): deleted now, each with the grace period left to it.
func due(in Input) []Deletion {
	if in.Config.ForceAtDeadline == nil || !*in.Config.ForceAtDeadline {
		return nil
	}
	left := max(in.Signal.TerminationTime.Sub(in.Now), 0)
	var out []Deletion
	for _, p := range in.Plan.Pods {
		if p.Action == planner.ActionSkip || p.LatestStart == nil || in.Now.Before(*p.LatestStart) {
			continue
		}
		if pod := podNamed(in.Snapshot.PodsOn(in.Node.Name), p.Namespace, p.Name); pod != nil && !in.Evicted.Has(pod.UID) {
			out = append(out, Deletion{Pod: pod, Grace: Grace(pod, left)})
		}
	}
	return out
}

// waitForDeadline records what an interrupted node with nothing to evict
// now waits for: room for the pods that fit nowhere (asked for), or the
// deadline for pods that cannot be evicted.
func waitForDeadline(in Input) Decision {
	np := in.Plan
	var room, other []string
	for _, b := range np.Blockers {
		if waitsForRoom(np, b) {
			room = append(room, b.Namespace+"/"+b.Name)
		} else {
			other = append(other, b.Namespace+"/"+b.Name)
		}
	}
	requeue := min(drainPoll, np.Deadline.Sub(in.Now))
	if len(other) == 0 {
		msg := fmt.Sprintf("%d pod(s) fit nowhere yet and move as soon as there is room", len(room))
		if n := len(np.Replacement.Reservations); n > 0 {
			msg += fmt.Sprintf(" (%d reservation(s) ask for it)", n)
		}
		return in.to(signals.StateDraining, signals.ReasonWaitingForRoom, msg+"; what is left is deleted from "+np.Deadline.UTC().Format("15:04:05"), requeue)
	}
	msg := "waiting for the deadline to remove blocked pods"
	if len(room) > 0 {
		msg += fmt.Sprintf(" (%s); %d more wait for room", strings.Join(other, ", "), len(room))
	}
	return in.to(signals.StateDraining, signals.ReasonWaitingForDeadline, msg, requeue)
}

func waitsForRoom(np *planner.NodePlan, b planner.Blocker) bool {
	for _, p := range np.Pods {
		if p.Namespace == b.Namespace && p.Name == b.Name {
			return p.WaitsForRoom
		}
	}
	return false
}
