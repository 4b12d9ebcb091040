package decide

import (
	"fmt"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/simulation"
)

// How often a node is looked at again while it waits or drains.
const (
	waitPoll    = 2 * time.Second
	drainPoll   = time.Second
	blockedPoll = 30 * time.Second
)

// MinGrace is the least grace period of a pod deleted at a deadline.
const MinGrace = config.MinGraceAtDeadline

// Node decides the node's next step.
func Node(in Input) Decision {
	d := nextStep(in)
	d.Reserve, d.Unreserve = reservations(in, d)
	d.Raise = raise(in, d)
	return d
}

// WantsGroup tells whether the node's Auto Scaling group is to be read:
// provision asg, a rebalance recommendation, the node waits for its
// replacement, and its group was not asked yet.
func WantsGroup(in Input) bool {
	_, recorded := in.Node.Annotations[asg.AnnotationRaised]
	return in.Config.Replacement.Provision == config.ProvisionASG && in.Config.Replacement.Mode != config.ReplacementNone &&
		in.AtRisk && asksGroup(in, signals.StateOf(in.Node.Annotations)) && !recorded
}

// asksGroup tells whether a node in state asks its group for an instance:
// while a rebalance recommendation waits for its replacement. Not at an
// interruption notice: the raise would have to be undone once EC2 has
// reclaimed the instance, a race the decrement can lose (the group would
// stay one larger for good); Auto Scaling replaces the reclaimed instance
// itself, and capacity rebalancing launches one at the recommendation.
func asksGroup(in Input, state signals.State) bool {
	return in.Signal.Kind == signals.RebalanceRecommendation && planner.Waits(state) && (in.Plan == nil || in.Plan.DrainedBy == "")
}

// raise asks the node's Auto Scaling group for one more instance, once:
// the record says so whatever the answer (in no group, at MaxSize).
func raise(in Input, d Decision) *asg.Record {
	state := signals.StateOf(in.Node.Annotations)
	if d.Transition != nil {
		state = d.Transition.State
	}
	if !WantsGroup(in) || d.Clear || !asksGroup(in, state) {
		return nil
	}
	if in.Group == nil {
		return &asg.Record{}
	}
	return &asg.Record{Group: in.Group.Name, From: in.Group.Desired, To: min(in.Group.Desired+1, max(in.Group.Max, in.Group.Desired))}
}

// reservations are what to create and delete so that the node holds
// exactly the reservations its plan asks for while it waits for its
// replacement, and none otherwise: once it drains (they go just before
// the pods move), is blocked, drained, or no longer at risk.
func reservations(in Input, d Decision) (create, remove []*corev1.Pod) {
	var have, misplaced []*corev1.Pod
	for _, r := range in.Reservations {
		switch {
		case r.DeletionTimestamp != nil:
		case r.Spec.NodeName == in.Node.Name || onNodeAtRisk(in, r.Spec.NodeName):
			// Bound to the at-risk node itself (created before its taint),
			// or to another that is going: it holds nothing; it is made
			// again.
			misplaced = append(misplaced, r)
		default:
			have = append(have, r)
		}
	}
	state := signals.StateOf(in.Node.Annotations)
	tainted := hasDrainingTaint(in.Node)
	if d.Transition != nil {
		state, tainted = d.Transition.State, d.Transition.Taint
	}
	holds := planner.Waits(state)
	if in.Signal.Kind == signals.InterruptionNotice {
		holds = holdsForInterruption(in, state)
	}
	if in.Signal.Kind == signals.InterruptionNotice && state == signals.StateDrained && in.AtRisk && !d.Clear && in.Retirement != nil {
		// Drained: a pod still terminating keeps its reservation until it
		// is gone, so that the room is there for its replacement.
		return nil, append(misplaced, notHeldFor(have, in.Retirement.PodsLeft)...)
	}
	if !in.AtRisk || d.Clear || !holds || in.Plan == nil {
		return nil, append(misplaced, have...)
	}
	var pods []*corev1.Pod
	for _, r := range in.Plan.Replacement.Reservations {
		namespace, name, _ := strings.Cut(r.Pod, "/")
		if pod := podNamed(in.Snapshot.PodsOn(in.Node.Name), namespace, name); pod != nil {
			pods = append(pods, pod)
		}
	}
	want := reserve.For(in.Node.Name, pods, reserve.Options{Namespace: in.Namespace, Image: in.Config.Replacement.ReservationImage,
		Volumes: func(p *corev1.Pod) []corev1.NodeSelector { return simulation.VolumeNodeSelectors(in.Snapshot, p) },
		Avoid:   reserve.OfferingOf(in.Node)})
	create, remove = reserve.Diff(want, have)
	if in.HoldReservations || !tainted {
		// Not before the taint that keeps them off this node (the executor
		// creates them after the transition that writes it).
		create = nil
	}
	return create, append(misplaced, remove...)
}

// onNodeAtRisk tells whether node (as the snapshot shows it) carries the
// draining taint or is cordoned.
func onNodeAtRisk(in Input, node string) bool {
	if node == "" || in.Snapshot == nil {
		return false
	}
	n := in.Snapshot.Node(node)
	return n != nil && (n.Spec.Unschedulable || hasDrainingTaint(n))
}

func hasDrainingTaint(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == signals.TaintDraining {
			return true
		}
	}
	return false
}

func nextStep(in Input) Decision {
	state := signals.StateOf(in.Node.Annotations)
	if !in.AtRisk {
		switch state {
		case signals.StateAtRisk, signals.StateAwaitingReplacement, signals.StateBlocked:
			// A node blocked once it drained was cordoned by us: it is
			// uncordoned too.
			switch signals.ReasonOf(in.Node.Annotations) {
			case signals.ReasonBlockedByPods, signals.ReasonDeadlineNotForced:
				return Decision{Clear: true, ClearedFrom: state, Uncordon: true}
			}
			return Decision{Clear: true, ClearedFrom: state}
		}
		return Decision{}
	}
	var d Decision
	if in.Plan != nil && in.Plan.DrainedBy != "" && state != signals.StateDrained && state != signals.StateRetired {
		d = leaveTo(in, in.Plan.DrainedBy)
	} else {
		d = next(in, state)
	}
	if in.Signal.Unrecorded {
		// Its deadline counts from now: recorded, or it would move.
		d.InterruptionSeen = &in.Signal.Since
	}
	return d
}

func next(in Input, state signals.State) Decision {
	switch state {
	case "":
		msg := fmt.Sprintf("%s (from %s)", in.Signal.Kind, in.Signal.Source)
		if in.Signal.Note != "" {
			msg += ": " + in.Signal.Note
		}
		return in.to(signals.StateAtRisk, signals.ReasonSignalled, msg, 0)
	case signals.StateAtRisk, signals.StateAwaitingReplacement:
		return awaitReplacement(in)
	case signals.StateDraining:
		return untilNextDue(in, drain(in))
	case signals.StateBlocked:
		if signals.ReasonOf(in.Node.Annotations) == "" {
			// Blocked by a version that recorded no reason code: the
			// message is not read, the node starts over.
			return in.to(signals.StateAtRisk, signals.ReasonUnknownState, "blocked without a reason code: starting over", 0)
		}
		return blocked(in)
	case signals.StateDrained:
		return retire(in)
	case signals.StateRetired:
		return Decision{}
	}
	return in.to(signals.StateAtRisk, signals.ReasonUnknownState, fmt.Sprintf("unknown state %q replaced", state), 0)
}

func awaitReplacement(in Input) Decision {
	if in.Signal.Kind == signals.InterruptionNotice {
		return in.to(signals.StateDraining, signals.ReasonInterruption, "interruption notice: draining at once", 0)
	}
	np, cfg := in.Plan, in.Config
	if np.Replacement.Ready {
		return admit(in, np.Replacement.Reason)
	}
	waited := in.Now.Sub(in.Signal.Since)
	timeout := cfg.Replacement.Timeout.Duration
	if waited < timeout {
		return in.to(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement, np.Replacement.Reason, min(waitPoll, timeout-waited))
	}
	switch cfg.Replacement.OnTimeout {
	case config.OnTimeoutDrainIfFits:
		if np.Unplaceable == 0 {
			return admit(in, fmt.Sprintf("no replacement after %s, but every pod fits elsewhere", timeout))
		}
		return in.to(signals.StateBlocked, signals.ReasonNoReplacement, fmt.Sprintf("no replacement after %s and some pods fit nowhere", timeout), blockedPoll)
	case config.OnTimeoutUncordon:
		d := in.to(signals.StateBlocked, signals.ReasonUncordoned, fmt.Sprintf("no replacement after %s: gave up and made the node schedulable again", timeout), 0)
		if d.Transition != nil {
			d.Transition.Taint = false
		}
		return d
	default:
		return in.to(signals.StateBlocked, signals.ReasonKeptCordoned, fmt.Sprintf("no replacement after %s: kept cordoned", timeout), 0)
	}
}

// admit starts draining for a rebalance recommendation, unless the pool
// already drains maxConcurrentNodes.
func admit(in Input, why string) Decision {
	reason := signals.ReasonReplacementReady
	if !in.Plan.Replacement.Ready {
		reason = signals.ReasonFitsWithoutReplacement
	}
	return admitAs(in, reason, why)
}

func admitAs(in Input, reason signals.Reason, why string) Decision {
	if in.Draining >= int(in.Config.MaxConcurrentNodes) {
		return in.to(signals.StateAwaitingReplacement, signals.ReasonQueued,
			fmt.Sprintf("queued: %d node(s) of pool %s already draining (maxConcurrentNodes %d)", in.Draining, orNone(in.Plan.Pool), in.Config.MaxConcurrentNodes), waitPoll)
	}
	return in.to(signals.StateDraining, reason, why, 0)
}

func blocked(in Input) Decision {
	np := in.Plan
	reason := signals.ReasonOf(in.Node.Annotations)
	switch {
	case in.Signal.Kind == signals.InterruptionNotice && reason == signals.ReasonDeadlineNotForced:
		return drain(in)
	case in.Signal.Kind == signals.InterruptionNotice:
		return in.to(signals.StateDraining, signals.ReasonInterruption, "interruption notice: draining at once", 0)
	case reason == signals.ReasonBlockedByPods && len(np.Blockers) == 0:
		// It left the pool's drains when it was blocked: it queues again.
		return admitAs(in, signals.ReasonBlockersGone, "the blocking pods are gone")
	case (reason == signals.ReasonNoReplacement || reason == signals.ReasonKeptCordoned) && np.Replacement.Ready && len(np.Blockers) == 0:
		// The replacement came late: the node resumes.
		return admit(in, np.Replacement.Reason)
	case reason == signals.ReasonNoReplacement && len(np.Blockers) == 0:
		// Blocked by drain-if-fits because some pods fit nowhere: now
		// they all fit (capacity came from elsewhere).
		return admit(in, "no replacement, but every pod fits elsewhere now")
	}
	return Decision{Requeue: blockedPoll}
}

func drain(in Input) Decision {
	np := in.Plan
	if np.Deadline != nil && !in.Now.Before(*np.Deadline) {
		return deadline(in)
	}
	// Surges and the waves run side by side. A surge spends no budget,
	// the evictions are the PDBs' to allow, and a surge scales back only
	// once as many pods are Ready off every draining node as the
	// Deployment had (gather). Holding a node's waves for its surges
	// would deadlock two nodes each waiting for the other's evictions.
	surges := stepSurges(in, true)
	// Pods whose latest start has come go now, each with its own grace
	// period, whatever they wait for.
	deletions := due(in)
	leaving := map[string]bool{}
	for _, del := range deletions {
		leaving[del.Pod.Namespace+"/"+del.Pod.Name] = true
	}
	var wave []planner.PodPlan
	remaining := 0
	for _, p := range np.Pods {
		if leaving[p.Namespace+"/"+p.Name] {
			continue
		}
		if p.Action == planner.ActionEvict {
			remaining++
			if p.Wave == 1 {
				wave = append(wave, p)
			}
		}
	}
	if len(wave) == 0 {
		switch {
		case remaining > 0 || len(surges) > 0 || np.Surges() > 0:
			// The next waves wait for their PDBs to recover, surges for
			// their pods; a surge that ends now is seen ended next time.
			return Decision{Surges: surges, Deletions: deletions, Requeue: drainPoll, WaitingOnBudgets: remaining > 0}
		case len(np.Blockers) > 0 && np.Deadline != nil:
			d := waitForDeadline(in)
			d.Surges, d.Deletions = surges, deletions
			return d
		case len(deletions) > 0:
			return Decision{Surges: surges, Deletions: deletions, Requeue: drainPoll}
		case len(np.Blockers) > 0:
			return in.to(signals.StateBlocked, signals.ReasonBlockedByPods, "blocked pods: "+blockerSummary(np), blockedPoll)
		default:
			return in.to(signals.StateDrained, signals.ReasonDrained, "every evictable pod has moved", 0)
		}
	}
	if in.Backoff > 0 {
		return Decision{Surges: surges, Deletions: deletions, Requeue: in.Backoff, WaitingOnBudgets: true}
	}
	d := Decision{Surges: surges, Deletions: deletions, Requeue: drainPoll}
	for _, p := range wave {
		pod := podNamed(in.Snapshot.PodsOn(in.Node.Name), p.Namespace, p.Name)
		if pod == nil || in.Evicted.Has(pod.UID) {
			continue
		}
		d.Evictions = append(d.Evictions, Eviction{Pod: pod, Destination: p.Destination, Granted: p.Granted})
	}
	return d
}

// deadline removes what is left at an interruption's deadline.
func deadline(in Input) Decision {
	if in.Config.ForceAtDeadline == nil || !*in.Config.ForceAtDeadline {
		surges := stepSurges(in, false)
		d := in.to(signals.StateBlocked, signals.ReasonDeadlineNotForced, "deadline reached; forceAtDeadline is false, so the remaining pods are left", blockedPoll)
		d.Surges = surges
		return d
	}
	left := max(in.Signal.TerminationTime.Sub(in.Now), 0)
	var deletions []Deletion
	for _, p := range in.Plan.Pods {
		if p.Action == planner.ActionSkip {
			continue
		}
		if pod := podNamed(in.Snapshot.PodsOn(in.Node.Name), p.Namespace, p.Name); pod != nil {
			deletions = append(deletions, Deletion{Pod: pod, Grace: Grace(pod, left)})
		}
	}
	// Surges go on: scaling back now would make the ReplicaSet controller
	// remove the new pods still starting on healthy nodes before anything
	// else. Once the node is drained they are stepped as orphans.
	surges := stepSurges(in, false)
	d := in.to(signals.StateDrained, signals.ReasonDeadline, fmt.Sprintf("deadline reached: %d pod(s) deleted", len(deletions)), 0)
	d.Deletions, d.Surges = deletions, surges
	return d
}

// Grace is the grace period of a pod deleted at a deadline: the time left
// before the instance goes, at most the pod's own, never under MinGrace.
func Grace(pod *corev1.Pod, left time.Duration) int64 {
	own := int64(corev1.DefaultTerminationGracePeriodSeconds)
	if g := pod.Spec.TerminationGracePeriodSeconds; g != nil {
		own = *g
	}
	return max(min(own, int64(left/time.Second)), int64(MinGrace/time.Second))
}

// stepSurges steps every surge off the node and, when start is set,
// starts those the plan asks for.
func stepSurges(in Input, start bool) []SurgeAction {
	var out []SurgeAction
	inProgress := map[string]bool{}
	timeout := in.Config.Surge.Timeout.Duration
	for _, s := range in.Surges {
		if s.Deployment != nil {
			inProgress[s.Deployment.Namespace+"/"+s.Deployment.Name] = true
		}
		out = append(out, Step(s, in.Now, timeout))
	}
	if !start {
		return out
	}
	for _, g := range in.PlannedSurges {
		d := in.Snapshot.Deployment(g.Namespace, g.Deployment)
		if d == nil || inProgress[g.Namespace+"/"+g.Deployment] {
			continue
		}
		// This node owns it: first among the nodes it moves pods off.
		nodes := append([]string{in.Node.Name}, slices.DeleteFunc(slices.Clone(g.Nodes), func(n string) bool { return n == in.Node.Name })...)
		out = append(out, SurgeAction{Op: SurgeStart, Deployment: d,
			Record: &signals.SurgeState{Node: in.Node.Name, Nodes: nodes, Phase: signals.SurgeScalingUp, Since: in.Now.UTC(), Pods: slices.Clone(g.Pods)}})
	}
	return out
}

// Retirable tells whether the node is one to give back now: drained by
// this controller for a Spot signal, with rebalancer.retire auto.
func Retirable(in Input) bool {
	reason := signals.ReasonOf(in.Node.Annotations)
	if in.Config.Retire != config.RetireAuto || !in.AtRisk || signals.StateOf(in.Node.Annotations) != signals.StateDrained {
		return false
	}
	switch in.Signal.Kind {
	case signals.RebalanceRecommendation:
		return reason == signals.ReasonDrained || reason == signals.ReasonPodsLeft
	case signals.InterruptionNotice:
		// EC2 reclaims it anyway; given back first, it leaves the cluster
		// once empty, and a group raised for it is decremented (else it
		// would replace the reclaimed instance too).
		return reason == signals.ReasonDrained || reason == signals.ReasonPodsLeft || reason == signals.ReasonDeadline
	}
	return false
}

// retire gives a drained node back: never one with pods left, and only
// through its own NodeClaim.
func retire(in Input) Decision {
	if !Retirable(in) || in.Retirement == nil {
		return Decision{}
	}
	r := in.Retirement
	switch {
	case len(r.PodsLeft) > 0:
		left := strings.Join(r.PodsLeft, ", ")
		if len(left) > 300 {
			left = left[:297] + "..."
		}
		return in.to(signals.StateDrained, signals.ReasonPodsLeft, fmt.Sprintf("drained; retired once these pods are gone: %s", left), blockedPoll)
	case r.NodeClaim == nil && r.Instance != "":
		d := in.to(signals.StateRetired, signals.ReasonRetired,
			fmt.Sprintf("instance %s terminated in Auto Scaling group %s, desired capacity decremented", r.Instance, r.Group), 0)
		if !r.Terminating {
			d.Terminate = r.Instance
		}
		return d
	case r.NodeClaim == nil:
		return in.to(signals.StateDrained, signals.ReasonNotRetired,
			"drained; neither a Karpenter node (no NodeClaim names it) nor one whose Auto Scaling group was raised for it, so it stays cordoned for you to remove", 0)
	}
	d := in.to(signals.StateRetired, signals.ReasonRetired, fmt.Sprintf("NodeClaim %s deleted: Karpenter terminates the instance", r.NodeClaim.Name), 0)
	d.Retire = r.NodeClaim
	return d
}

// PodsLeft names the pods on a drained node that a drain moves: not
// DaemonSet, mirror or finished pods, nor reservations of the components'
// namespace (another waiting node's, bound before this one was tainted:
// that node makes it again elsewhere).
func PodsLeft(pods []*corev1.Pod, namespace string) []string {
	var out []string
	for _, p := range pods {
		owner := metav1.GetControllerOfNoCopy(p)
		switch {
		case owner != nil && owner.Kind == "DaemonSet", p.Annotations[corev1.MirrorPodAnnotationKey] != "",
			reserve.Is(p) && p.Namespace == namespace,
			p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed:
			continue
		}
		out = append(out, p.Namespace+"/"+p.Name)
	}
	return out
}

// to records state with its reason; recording what the node already
// records writes nothing.
func (in Input) to(state signals.State, reason signals.Reason, message string, requeue time.Duration) Decision {
	a := in.Node.Annotations
	if signals.StateOf(a) == state && signals.ReasonOf(a) == reason && a[signals.AnnotationStateReason] == message {
		return Decision{Requeue: requeue}
	}
	cordon := state == signals.StateDraining || state == signals.StateDrained || state == signals.StateRetired
	return Decision{Transition: &Transition{State: state, Reason: reason, Message: message, Taint: true, Cordon: cordon,
		ExcludeFromLoadBalancers: cordon && in.Config.ExcludeFromLoadBalancers != nil && *in.Config.ExcludeFromLoadBalancers}, Requeue: requeue}
}

func podNamed(pods []*corev1.Pod, namespace, name string) *corev1.Pod {
	for _, p := range pods {
		if p.Namespace == namespace && p.Name == name {
			return p
		}
	}
	return nil
}

func blockerSummary(np *planner.NodePlan) string {
	parts := make([]string, 0, len(np.Blockers))
	for _, b := range np.Blockers {
		parts = append(parts, fmt.Sprintf("%s/%s (%s)", b.Namespace, b.Name, b.Reason))
	}
	s := strings.Join(parts, "; ")
	if len(s) > 500 {
		s = s[:497] + "..."
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "(none)"
	}
	return s
}
