package signals

// State is the rebalancer's progress on a node, recorded in AnnotationState
// so that a restart or a new leader resumes where the last one stopped.
type State string

const (
	StateAtRisk              State = "at-risk"
	StateAwaitingReplacement State = "awaiting-replacement"
	StateDraining            State = "draining"
	StateDrained             State = "drained"
	StateBlocked             State = "blocked"
	// StateRetired: drained for a rebalance recommendation and given back
	// (rebalancer.retire): the instance is being terminated.
	StateRetired State = "retired"
)

// States are every state, in the order a node goes through them (the label
// values of the nodes-by-state gauge).
var States = []State{StateAtRisk, StateAwaitingReplacement, StateDraining, StateDrained, StateRetired, StateBlocked}

// StateOf returns the state recorded on a node's annotations ("" for none).
func StateOf(annotations map[string]string) State { return State(annotations[AnnotationState]) }

// Reason is the machine-readable code of why a node is in its state,
// recorded in AnnotationStateReasonCode beside the message for people in
// AnnotationStateReason. Decisions read the code, never the message.
type Reason string

const (
	// ReasonSignalled: a Spot signal arrived; nothing decided yet.
	ReasonSignalled Reason = "Signalled"
	// ReasonAwaitingReplacement: replacement capacity is not there yet.
	ReasonAwaitingReplacement Reason = "AwaitingReplacement"
	// ReasonQueued: the pool already drains rebalancer.maxConcurrentNodes.
	ReasonQueued Reason = "Queued"
	// ReasonReplacementReady: the capacity is there; draining.
	ReasonReplacementReady Reason = "ReplacementReady"
	// ReasonInterruption: an interruption notice drains at once.
	ReasonInterruption Reason = "InterruptionNotice"
	// ReasonFitsWithoutReplacement: no replacement in time, but every pod
	// fits on the nodes there are (onTimeout drain-if-fits).
	ReasonFitsWithoutReplacement Reason = "FitsWithoutReplacement"
	// ReasonNoReplacement: no replacement in time and some pods fit
	// nowhere; resumes when a replacement comes and every pod fits.
	ReasonNoReplacement Reason = "NoReplacement"
	// ReasonKeptCordoned: no replacement in time (onTimeout keep-cordoned).
	ReasonKeptCordoned Reason = "KeptCordoned"
	// ReasonUncordoned: no replacement in time (onTimeout uncordon): the
	// node is schedulable again.
	ReasonUncordoned Reason = "Uncordoned"
	// ReasonBlockedByPods: pods that cannot be evicted hold the node; lifted
	// when they are gone.
	ReasonBlockedByPods Reason = "BlockedByPods"
	// ReasonBlockersGone: the pods that blocked the node are gone.
	ReasonBlockersGone Reason = "BlockersGone"
	// ReasonWaitingForDeadline: only pods the deadline removes are left.
	ReasonWaitingForDeadline Reason = "WaitingForDeadline"
	// ReasonWaitingForRoom: at an interruption notice, the pods left fit
	// nowhere yet; they move as soon as there is room (asked for), else
	// the deadline removes them.
	ReasonWaitingForRoom Reason = "WaitingForRoom"
	// ReasonDrainedByKarpenter: Karpenter drains the node (its NodeClaim
	// is being deleted); the rebalancer leaves its pods to it.
	ReasonDrainedByKarpenter Reason = "DrainedByKarpenter"
	// ReasonDrained: every evictable pod has moved.
	ReasonDrained Reason = "Drained"
	// ReasonDeadline: the interruption deadline came; what was left was
	// deleted.
	ReasonDeadline Reason = "DeadlineReached"
	// ReasonDeadlineNotForced: the deadline came and forceAtDeadline is
	// false: the remaining pods are left.
	ReasonDeadlineNotForced Reason = "DeadlineNotForced"
	// ReasonRetired: the drained node's NodeClaim was deleted (Karpenter
	// terminates the instance).
	ReasonRetired Reason = "Retired"
	// ReasonPodsLeft: drained, but pods are still on the node (terminating,
	// or come since): it is retired once they are gone.
	ReasonPodsLeft Reason = "PodsLeft"
	// ReasonNotRetired: drained, and nothing of ours can give it back (not
	// a Karpenter node): it stays cordoned.
	ReasonNotRetired Reason = "NotRetired"
	// ReasonUnknownState: the recorded state was not one of ours.
	ReasonUnknownState Reason = "UnknownState"
)

// Reasons are every reason code the rebalancer records.
var Reasons = []Reason{ReasonSignalled, ReasonAwaitingReplacement, ReasonQueued, ReasonReplacementReady, ReasonInterruption,
	ReasonFitsWithoutReplacement, ReasonNoReplacement, ReasonKeptCordoned, ReasonUncordoned, ReasonBlockedByPods,
	ReasonBlockersGone, ReasonWaitingForDeadline, ReasonWaitingForRoom, ReasonDrainedByKarpenter, ReasonDrained, ReasonDeadline, ReasonDeadlineNotForced, ReasonRetired,
	ReasonPodsLeft, ReasonNotRetired, ReasonUnknownState}

// ReasonOf returns the reason code recorded on a node's annotations.
func ReasonOf(annotations map[string]string) Reason {
	return Reason(annotations[AnnotationStateReasonCode])
}
