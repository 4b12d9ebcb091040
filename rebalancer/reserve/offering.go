package reserve

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// AnnotationAvoids on a reservation names the offering it keeps off
// (Offering.String): the at-risk node's instance type in its zone.
const AnnotationAvoids = "spot-rebalancer.io/reservation-avoids"

// Offering is an instance type in a zone: what EC2 reclaims from a Spot
// node, and likely from another launched the same way.
type Offering struct {
	InstanceType string `json:"instanceType"`
	Zone         string `json:"zone"`
}

func (o Offering) String() string { return o.InstanceType + " in " + o.Zone }

// OfferingOf is the node's offering, from its well-known labels; nil
// when either is missing.
func OfferingOf(n *corev1.Node) *Offering {
	o := Offering{InstanceType: n.Labels[corev1.LabelInstanceTypeStable], Zone: n.Labels[corev1.LabelTopologyZone]}
	if o.InstanceType == "" || o.Zone == "" {
		return nil
	}
	return &o
}

// anyOther stands for a label value that no constraint names.
const anyOther = "spot-rebalancer.io/any-other"

// awayFrom is the node selector that keeps reservation r off offering o
// as far as r's own constraints (the pod's node selector and required
// node affinity, its volumes' zones) allow: another instance type first,
// else another zone, else (last) the offering itself. Its terms are ORed,
// so together they match every node and the scheduler may still place the
// reservation anywhere it fits; Karpenter tries them in order, relaxing a
// pod's required terms one at a time from the first, so it launches
// another offering where its NodePool allows one and the reclaimed one only
// where nothing else can be launched (a pool of one type in one zone). It
// is nil when r can only run on o.
func awayFrom(r *corev1.Pod, o Offering) *corev1.NodeSelector {
	var terms []corev1.NodeSelectorTerm
	var same corev1.NodeSelectorTerm
	for _, key := range offeringKeys {
		avoid := o.InstanceType
		if key == corev1.LabelTopologyZone {
			avoid = o.Zone
		}
		if allowsOther(r, o, key, avoid) {
			terms = append(terms, corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: key, Operator: corev1.NodeSelectorOpNotIn, Values: []string{avoid}}}})
			same.MatchExpressions = append(same.MatchExpressions, corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: []string{avoid}})
		}
	}
	if len(terms) == 0 {
		return nil
	}
	return &corev1.NodeSelector{NodeSelectorTerms: append(terms, same)}
}

// CanAvoid tells whether pod's reservation can keep off offering o.
func CanAvoid(pod *corev1.Pod, o Offering, opts Options) bool {
	opts.Avoid = nil
	return awayFrom(of("", pod, opts), o) != nil
}

// allowsOther tells whether r's required node constraints on the
// offering's keys (constraints on other keys are taken as met: they
// choose among other labels) match a node of offering o whose label key
// has a value other than avoid: one the constraints name, or one none
// names.
func allowsOther(r *corev1.Pod, o Offering, key, avoid string) bool {
	onOffering := offeringConstraints(r)
	candidates := []string{anyOther}
	for _, v := range namedValues(onOffering, key) {
		if v != avoid && !slices.Contains(candidates, v) {
			candidates = append(candidates, v)
		}
	}
	required := nodeaffinity.GetRequiredNodeAffinity(onOffering)
	for _, v := range candidates {
		labels := map[string]string{corev1.LabelInstanceTypeStable: o.InstanceType, corev1.LabelTopologyZone: o.Zone}
		labels[key] = v
		if ok, err := required.Match(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: labels}}); err == nil && ok {
			return true
		}
	}
	return false
}

// offeringKeys are the labels an offering is made of.
var offeringKeys = []string{corev1.LabelInstanceTypeStable, corev1.LabelTopologyZone}

// offeringConstraints is a pod with r's required node constraints on the
// offering's keys only.
func offeringConstraints(r *corev1.Pod) *corev1.Pod {
	out := &corev1.Pod{}
	for k, v := range r.Spec.NodeSelector {
		if slices.Contains(offeringKeys, k) {
			if out.Spec.NodeSelector == nil {
				out.Spec.NodeSelector = map[string]string{}
			}
			out.Spec.NodeSelector[k] = v
		}
	}
	if r.Spec.Affinity == nil || r.Spec.Affinity.NodeAffinity == nil || r.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return out
	}
	var terms []corev1.NodeSelectorTerm
	for _, t := range r.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		var kept corev1.NodeSelectorTerm
		for _, e := range t.MatchExpressions {
			if slices.Contains(offeringKeys, e.Key) {
				kept.MatchExpressions = append(kept.MatchExpressions, e)
			}
		}
		if len(kept.MatchExpressions) == 0 {
			// This term allows any offering: so does the whole selector.
			return out
		}
		terms = append(terms, kept)
	}
	out.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{
		RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: terms}}}
	return out
}

// namedValues are the values r's constraints name for key.
func namedValues(r *corev1.Pod, key string) []string {
	var out []string
	if v, ok := r.Spec.NodeSelector[key]; ok {
		out = append(out, v)
	}
	if r.Spec.Affinity == nil {
		return out
	}
	for _, t := range r.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		for _, e := range t.MatchExpressions {
			if e.Key == key {
				out = append(out, e.Values...)
			}
		}
	}
	return out
}
