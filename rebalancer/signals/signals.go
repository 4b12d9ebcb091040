// Package signals owns how a node becomes at risk: the Node conditions set
// by the agent and the queue, AWS Node Termination Handler's taints, and the
// operator's annotation, plus the names the rebalancer records its progress
// under.
package signals

import (
	"bytes"
	"encoding/json"
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
	// AnnotationState and AnnotationStateReason record the rebalancer's
	// progress so that a restart resumes where it stopped.
	AnnotationState       = "spot-rebalancer.io/state"
	AnnotationStateReason = "spot-rebalancer.io/state-reason"
	// TaintDraining keeps new pods off a node while the rebalancer works.
	TaintDraining = "spot-rebalancer.io/draining"
	// AnnotationPool names a node's pool when no pool label does (written
	// from the instance's Auto Scaling group by the EC2 source).
	AnnotationPool = "spot-rebalancer.io/pool"
	// AnnotationDoNotEvict set to "true" on a pod makes it a blocker.
	AnnotationDoNotEvict = "spot-rebalancer.io/do-not-evict"
)

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
)

// Signal is why a node is at risk.
type Signal struct {
	Kind   Kind
	Source string
	// Since is when the risk was signalled; replacements must be newer.
	Since time.Time
	// TerminationTime is set for interruption notices when known.
	TerminationTime time.Time
}

// FromNode returns the node's signal, if any. An interruption notice wins
// over a rebalance recommendation. now stands in for signals that carry no
// time and have no recorded AnnotationSignalTime.
func FromNode(node *corev1.Node, now time.Time) (Signal, bool) {
	recorded := now
	if t, err := time.Parse(time.RFC3339, node.Annotations[AnnotationSignalTime]); err == nil {
		recorded = t
	}
	termination := time.Time{}
	if t, err := time.Parse(time.RFC3339, node.Annotations[AnnotationTerminationTime]); err == nil {
		termination = t
	}
	var rebalance *Signal
	for _, c := range node.Status.Conditions {
		if c.Status != corev1.ConditionTrue {
			continue
		}
		switch c.Type {
		case ConditionInterruption:
			return Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: c.LastTransitionTime.Time, TerminationTime: termination}, true
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
			return Signal{Kind: InterruptionNotice, Source: SourceNTHTaint, Since: since, TerminationTime: termination}, true
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
