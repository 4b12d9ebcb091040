package reserve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
)

// A reservation keeps off the offering being reclaimed (its instance type
// in its zone) where the pod's own constraints leave another choice: the
// other instance types first, then the other zones, then (last, for an
// autoscaler that can launch nothing else) the offering itself, as
// Karpenter tries a pod's required terms in order.
func TestReservationKeepsOffTheReclaimedOffering(t *testing.T) {
	reclaimed := Offering{InstanceType: "c5.xlarge", Zone: "z1"}
	notType := corev1.NodeSelectorRequirement{Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpNotIn, Values: []string{"c5.xlarge"}}
	notZone := corev1.NodeSelectorRequirement{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpNotIn, Values: []string{"z1"}}
	isType := corev1.NodeSelectorRequirement{Key: corev1.LabelInstanceTypeStable, Operator: corev1.NodeSelectorOpIn, Values: []string{"c5.xlarge"}}
	isZone := corev1.NodeSelectorRequirement{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"z1"}}
	arm := corev1.NodeSelectorRequirement{Key: "kubernetes.io/arch", Operator: corev1.NodeSelectorOpIn, Values: []string{"arm64"}}
	req := func(terms ...[]corev1.NodeSelectorRequirement) func(*corev1.Pod) {
		return func(p *corev1.Pod) {
			sel := &corev1.NodeSelector{}
			for _, t := range terms {
				sel.NodeSelectorTerms = append(sel.NodeSelectorTerms, corev1.NodeSelectorTerm{MatchExpressions: t})
			}
			p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: sel}}
		}
	}
	in := func(key string, values ...string) corev1.NodeSelectorRequirement {
		return corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: values}
	}
	twoTypes, inZ1 := in(corev1.LabelInstanceTypeStable, "c5.xlarge", "m5.xlarge"), in(corev1.LabelTopologyZone, "z1")
	tests := map[string]struct {
		pod func(*corev1.Pod)
		// want are the reservation's required terms (nil: none).
		want [][]corev1.NodeSelectorRequirement
	}{
		"a pod free to go anywhere: another type, else another zone, else the same (where nothing else launches)": {
			pod:  func(*corev1.Pod) {},
			want: [][]corev1.NodeSelectorRequirement{{notType}, {notZone}, {isType, isZone}},
		},
		"its own terms are kept in each": {
			pod:  req([]corev1.NodeSelectorRequirement{arm}),
			want: [][]corev1.NodeSelectorRequirement{{arm, notType}, {arm, notZone}, {arm, isType, isZone}},
		},
		"pinned to the type by its node selector: only another zone": {
			pod: func(p *corev1.Pod) {
				p.Spec.NodeSelector = map[string]string{corev1.LabelInstanceTypeStable: "c5.xlarge"}
			},
			want: [][]corev1.NodeSelectorRequirement{{notZone}, {isZone}},
		},
		"pinned to the zone by its affinity: only another type": {
			pod:  req([]corev1.NodeSelectorRequirement{inZ1}),
			want: [][]corev1.NodeSelectorRequirement{{inZ1, notType}, {inZ1, isType}},
		},
		"allowed two types: the other one counts as a choice": {
			pod:  req([]corev1.NodeSelectorRequirement{twoTypes, inZ1}),
			want: [][]corev1.NodeSelectorRequirement{{twoTypes, inZ1, notType}, {twoTypes, inZ1, isType}},
		},
		"pinned to both: no choice, so nothing is added": {
			pod: func(p *corev1.Pod) {
				p.Spec.NodeSelector = map[string]string{corev1.LabelInstanceTypeStable: "c5.xlarge", corev1.LabelTopologyZone: "z1"}
			},
		},
		"one of its terms pins both, another leaves room: avoided through the other": {
			pod: req([]corev1.NodeSelectorRequirement{in(corev1.LabelInstanceTypeStable, "c5.xlarge"), inZ1}, []corev1.NodeSelectorRequirement{arm}),
			want: [][]corev1.NodeSelectorRequirement{
				{in(corev1.LabelInstanceTypeStable, "c5.xlarge"), inZ1, notType},
				{in(corev1.LabelInstanceTypeStable, "c5.xlarge"), inZ1, notZone},
				{in(corev1.LabelInstanceTypeStable, "c5.xlarge"), inZ1, isType, isZone},
				{arm, notType}, {arm, notZone}, {arm, isType, isZone}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "web-0", Namespace: "shop"},
				Spec: corev1.PodSpec{Containers: []corev1.Container{{Name: "c"}}}}
			tc.pod(pod)
			r := For("risky", []*corev1.Pod{pod}, Options{Namespace: "spot-rebalancer", Avoid: &reclaimed})[0]
			var got [][]corev1.NodeSelectorRequirement
			if a := r.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
				for _, term := range a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
					got = append(got, term.MatchExpressions)
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("required terms (-want +got):\n%s", diff)
			}
			if avoids := r.Annotations[AnnotationAvoids]; (avoids != "") != (tc.want != nil) {
				t.Errorf("annotation %s = %q with terms %v", AnnotationAvoids, avoids, tc.want)
			}
			// Together the terms match exactly the nodes the pod's own
			// constraints match: the scheduler may still use any room there is.
			for _, labels := range []map[string]string{
				{corev1.LabelInstanceTypeStable: "c5.xlarge", corev1.LabelTopologyZone: "z1", "kubernetes.io/arch": "arm64"},
				{corev1.LabelInstanceTypeStable: "m5.xlarge", corev1.LabelTopologyZone: "z1", "kubernetes.io/arch": "arm64"},
				{corev1.LabelInstanceTypeStable: "c5.xlarge", corev1.LabelTopologyZone: "z2", "kubernetes.io/arch": "arm64"},
				{corev1.LabelInstanceTypeStable: "c5.xlarge", corev1.LabelTopologyZone: "z1"},
				{"kubernetes.io/arch": "arm64"},
			} {
				n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: labels}}
				own, _ := nodeaffinity.GetRequiredNodeAffinity(pod).Match(n)
				reserved, _ := nodeaffinity.GetRequiredNodeAffinity(r).Match(n)
				if own != reserved {
					t.Errorf("node %v: the pod's constraints match it: %v, the reservation's: %v", labels, own, reserved)
				}
			}
			if got := CanAvoid(pod, reclaimed, Options{}); got != (tc.want != nil) {
				t.Errorf("CanAvoid = %v, want %v", got, tc.want != nil)
			}
		})
	}
	t.Run("a node without both labels has no offering", func(t *testing.T) {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{corev1.LabelTopologyZone: "z1"}}}
		if o := OfferingOf(n); o != nil {
			t.Errorf("offering %v, want none", o)
		}
	})
}
