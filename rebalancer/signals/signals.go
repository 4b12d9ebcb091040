// Package signals owns how a node becomes at risk: the Node conditions set
// by the agent and the queue, AWS Node Termination Handler's taints, and the
// operator's annotation, plus the names the rebalancer records its progress
// under.
package signals

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
)

// Names on Nodes.
const (
	ConditionRebalance    corev1.NodeConditionType = "SpotRebalanceRecommended"
	ConditionInterruption corev1.NodeConditionType = "SpotInterruptionNotice"

	TaintNTHRebalance    = "aws-node-termination-handler/rebalance-recommendation"
	TaintNTHInterruption = "aws-node-termination-handler/spot-itn"

	// AnnotationAtRisk set to "true" by an operator marks a node at risk.
	AnnotationAtRisk = "spot-rebalancer.io/at-risk"
	// AnnotationTerminationTime is the interruption's RFC 3339 time.
	AnnotationTerminationTime = "spot-rebalancer.io/termination-time"
	// AnnotationSignalTime records when a signal that carries no time of its
	// own began: for the annotation, when it was written (from the Node's
	// managed fields), else when the rebalancer first saw it.
	AnnotationSignalTime = "spot-rebalancer.io/signal-time"
	// AnnotationInterruptionSeen records when the rebalancer first saw an
	// interruption notice that carries no time of its own (AWS Node
	// Termination Handler's taint): its deadline counts from then, never
	// from an earlier signal's time.
	AnnotationInterruptionSeen = "spot-rebalancer.io/interruption-seen"
	// AnnotationState and AnnotationStateReason record the rebalancer's
	// progress so that a restart resumes where it stopped.
	AnnotationState       = "spot-rebalancer.io/state"
	AnnotationStateReason = "spot-rebalancer.io/state-reason"
	// AnnotationStateReasonCode is the machine-readable Reason of the
	// state; AnnotationStateReason is its message for people.
	AnnotationStateReasonCode = "spot-rebalancer.io/state-reason-code"
	// AnnotationExcludedFromLoadBalancers records that the rebalancer
	// labelled the node node.kubernetes.io/exclude-from-external-load-balancers
	// when it began to drain, so that it removes only its own label.
	AnnotationExcludedFromLoadBalancers = "spot-rebalancer.io/excluded-from-load-balancers"
	// TaintDraining keeps new pods off a node while the rebalancer works.
	TaintDraining = "spot-rebalancer.io/draining"
	// AnnotationPool names a node's pool when no pool label does (written
	// from the instance's Auto Scaling group by the EC2 source).
	AnnotationPool = "spot-rebalancer.io/pool"
	// AnnotationDoNotEvict set to "true" on a pod makes it a blocker.
	AnnotationDoNotEvict = "spot-rebalancer.io/do-not-evict"
	// AnnotationKarpenterDoNotDisrupt set to "true" on a pod is honoured
	// like AnnotationDoNotEvict.
	AnnotationKarpenterDoNotDisrupt = "karpenter.sh/do-not-disrupt"
	// AnnotationLifecycle records an instance's EC2 lifecycle ("spot", or
	// "normal" for on-demand), written by the EC2 source for nodes whose
	// labels do not say.
	AnnotationLifecycle = "spot-rebalancer.io/lifecycle"
)

// Labels that say whether a node is Spot capacity, with the value that
// means Spot (compared case-insensitively): EKS managed node groups,
// Karpenter, and kops or eksctl's lifecycle label.
var SpotLabels = map[string]string{
	"eks.amazonaws.com/capacityType": "SPOT",
	"karpenter.sh/capacity-type":     "spot",
	"node.kubernetes.io/lifecycle":   "spot",
}

// IsSpot tells whether the node is known to run on Spot capacity: one of
// SpotLabels says so, or the lifecycle the EC2 source recorded.
func IsSpot(node *corev1.Node) bool {
	for label, spot := range SpotLabels {
		if strings.EqualFold(node.Labels[label], spot) {
			return true
		}
	}
	return strings.EqualFold(node.Annotations[AnnotationLifecycle], "spot")
}

// NoticePeriod is how long EC2 gives a Spot instance after its
// interruption notice.
const NoticePeriod = 2 * time.Minute

// clockSkew is how far a termination time may lie outside the notice
// period around its signal (the writer's clock and EC2's differ) before it
// is not believed.
const clockSkew = 30 * time.Second

// Kind is the kind of risk.
type Kind string

const (
	// RebalanceRecommendation: elevated risk, no deadline.
	RebalanceRecommendation Kind = "rebalance-recommendation"
	// InterruptionNotice: reclaimed at TerminationTime.
	InterruptionNotice Kind = "interruption-notice"
)

// Sources of a signal.
const (
	SourceCondition  = "condition"
	SourceNTHTaint   = "nth-taint"
	SourceAnnotation = "annotation"
	// SourcePlan is a node named on `spot-rebalancer plan --nodes`.
	SourcePlan = "plan"
	// SourceDraining is a node whose signal went away while it drained:
	// the drain finishes as a rebalance recommendation.
	SourceDraining = "draining"
)

// Signal is why a node is at risk.
type Signal struct {
	Kind   Kind
	Source string
	// Since is when the risk was signalled; replacements must be newer.
	Since time.Time
	// TerminationTime is set for interruption notices: the time the node
	// reported, bounded to the notice period around Since.
	TerminationTime time.Time
	// Note says, for people, when a time was not believed or a signal was
	// handled as another kind.
	Note string
	// Unrecorded is an interruption whose Since is now only because
	// nothing recorded when it was first seen: the rebalancer records it
	// (AnnotationInterruptionSeen), or its deadline would move with every
	// look.
	Unrecorded bool
}

// FromNode returns the node's signal, if any. An interruption notice wins
// over a rebalance recommendation. now stands in for signals that carry no
// time and have no recorded AnnotationSignalTime. Times read from the node
// are not trusted: see bound.
func FromNode(node *corev1.Node, now time.Time) (Signal, bool) {
	sig, ok := fromNode(node, now)
	if !ok {
		if StateOf(node.Annotations) != StateDraining {
			return Signal{}, false
		}
		// A drain that lost its signal finishes (it never strands a node
		// cordoned in draining).
		sig = Signal{Kind: RebalanceRecommendation, Source: SourceDraining, Since: recordedTime(node, now),
			Note: "the signal went away while draining: the drain finishes"}
	}
	return bound(node, sig, now), true
}

func fromNode(node *corev1.Node, now time.Time) (Signal, bool) {
	recorded := recordedTime(node, now)
	var rebalance *Signal
	for _, c := range node.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case ConditionInterruption:
			return Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: c.LastTransitionTime.Time}, true
		case ConditionRebalance:
			rebalance = &Signal{Kind: RebalanceRecommendation, Source: SourceCondition, Since: c.LastTransitionTime.Time}
		}
	}
	for _, t := range node.Spec.Taints {
		since := recorded
		if t.TimeAdded != nil {
			since = t.TimeAdded.Time
		}
		switch t.Key {
		case TaintNTHInterruption:
			sig := Signal{Kind: InterruptionNotice, Source: SourceNTHTaint, Since: since}
			if t.TimeAdded == nil {
				seen, err := time.Parse(time.RFC3339, node.Annotations[AnnotationInterruptionSeen])
				sig.Since, sig.Unrecorded = seen, err != nil
				if sig.Unrecorded {
					sig.Since = now
				}
			}
			return sig, true
		case TaintNTHRebalance:
			if rebalance == nil {
				rebalance = &Signal{Kind: RebalanceRecommendation, Source: SourceNTHTaint, Since: since}
			}
		}
	}
	if rebalance != nil {
		return *rebalance, true
	}
	if node.Annotations[AnnotationAtRisk] == "true" {
		since := recorded
		if _, ok := node.Annotations[AnnotationSignalTime]; !ok {
			if t, ok := annotationWritten(node, AnnotationAtRisk); ok && t.Before(now) {
				since = t
			}
		}
		return Signal{Kind: RebalanceRecommendation, Source: SourceAnnotation, Since: since}, true
	}
	return Signal{}, false
}

// recordedTime is the signal time the rebalancer recorded, else now.
func recordedTime(node *corev1.Node, now time.Time) time.Time {
	if t, err := time.Parse(time.RFC3339, node.Annotations[AnnotationSignalTime]); err == nil {
		return t
	}
	return now
}

// bound keeps the signal's times plausible, whoever wrote them. A signal
// never starts in the future. An interruption ends NoticePeriod after its
// signal unless the node reports a termination time within that period
// (give or take clockSkew): a missing time (AWS Node Termination Handler's
// taint has none), one from an earlier notice left on the node, a delayed
// message's or a forged one all fall back to the signal's time plus the
// notice period. And an interruption is acted on as one only on a node
// known to be Spot; elsewhere it is handled as a rebalance recommendation,
// which waits for capacity, keeps to every budget and forces nothing.
func bound(node *corev1.Node, sig Signal, now time.Time) Signal {
	if sig.Since.After(now) {
		sig.Since = now
	}
	if sig.Kind != InterruptionNotice {
		return sig
	}
	if !IsSpot(node) {
		sig.Kind = RebalanceRecommendation
		sig.Note = "interruption notice on a node not known to be Spot (no Spot capacity label or EC2 lifecycle): handled as a rebalance recommendation"
		return sig
	}
	fallback := sig.Since.Add(NoticePeriod)
	value, ok := node.Annotations[AnnotationTerminationTime]
	t, err := time.Parse(time.RFC3339, value)
	raw := value
	if len(raw) > 40 {
		raw = raw[:40] + "..." // it goes into state reasons and Events
	}
	switch {
	case !ok:
		sig.TerminationTime, sig.Note = fallback, "no termination time: the signal's time plus "+NoticePeriod.String()
	case err != nil:
		sig.TerminationTime, sig.Note = fallback, fmt.Sprintf("termination time %q does not parse: the signal's time plus %s", raw, NoticePeriod)
	case t.Before(sig.Since.Add(-clockSkew)):
		sig.TerminationTime, sig.Note = fallback, fmt.Sprintf("termination time %s is before the signal (stale or forged): the signal's time plus %s", raw, NoticePeriod)
	case t.After(fallback.Add(clockSkew)):
		sig.TerminationTime, sig.Note = fallback, fmt.Sprintf("termination time %s is more than %s after the signal: the signal's time plus %s", raw, NoticePeriod, NoticePeriod)
	default:
		sig.TerminationTime = t
	}
	return sig
}

// annotationWritten returns when the annotation key was last written, as
// far as the Node's managed fields tell: the latest time of the field
// managers that own it (a manager's time moves with any field it changes,
// so this errs late, never early). A controller that starts after the
// operator's `kubectl annotate` then still counts the nodes that joined in
// between as replacements.
func annotationWritten(node *corev1.Node, key string) (time.Time, bool) {
	var latest time.Time
	for _, mf := range node.ManagedFields {
		if mf.Time == nil || mf.FieldsV1 == nil || !bytes.Contains(mf.FieldsV1.Raw, []byte(`"f:`+key+`"`)) {
			continue
		}
		var fields struct {
			Metadata struct {
				Annotations map[string]json.RawMessage `json:"f:annotations"`
			} `json:"f:metadata"`
		}
		if err := json.Unmarshal(mf.FieldsV1.Raw, &fields); err != nil {
			continue
		}
		if _, ok := fields.Metadata.Annotations["f:"+key]; ok && mf.Time.After(latest) {
			latest = mf.Time.Time
		}
	}
	return latest, !latest.IsZero()
}
