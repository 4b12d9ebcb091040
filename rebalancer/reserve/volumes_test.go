package reserve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func in(key string, values ...string) corev1.NodeSelectorRequirement {
	return corev1.NodeSelectorRequirement{Key: key, Operator: corev1.NodeSelectorOpIn, Values: values}
}

// A reservation asks for room where the pod's volumes are: each volume's
// selector is ANDed with the pod's own required node affinity (terms ORed,
// so the result is their cross product).
func TestReservationCarriesTheVolumesZone(t *testing.T) {
	zoneA := corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{in(corev1.LabelTopologyZone, "zone-a")}}}}
	spotOrOD := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{
			{MatchExpressions: []corev1.NodeSelectorRequirement{in("karpenter.sh/capacity-type", "spot")}},
			{MatchExpressions: []corev1.NodeSelectorRequirement{in("karpenter.sh/capacity-type", "on-demand")}},
		}}}}
	tests := map[string]struct {
		affinity *corev1.Affinity
		volumes  []corev1.NodeSelector
		want     []corev1.NodeSelectorTerm
	}{
		"no affinity of its own: the volume's zone": {
			volumes: []corev1.NodeSelector{zoneA},
			want:    []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{in(corev1.LabelTopologyZone, "zone-a")}}},
		},
		"two terms of its own: each also in the zone": {
			affinity: spotOrOD,
			volumes:  []corev1.NodeSelector{zoneA},
			want: []corev1.NodeSelectorTerm{
				{MatchExpressions: []corev1.NodeSelectorRequirement{in("karpenter.sh/capacity-type", "spot"), in(corev1.LabelTopologyZone, "zone-a")}},
				{MatchExpressions: []corev1.NodeSelectorRequirement{in("karpenter.sh/capacity-type", "on-demand"), in(corev1.LabelTopologyZone, "zone-a")}},
			},
		},
		"no volumes: the pod's own affinity alone": {
			affinity: spotOrOD,
			want:     spotOrOD.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "db-0", Namespace: "shop"}, Spec: corev1.PodSpec{Affinity: tc.affinity,
				Containers: []corev1.Container{{Name: "c"}}}}
			r := For("spot-a-1", []*corev1.Pod{p}, Options{Namespace: "spot-rebalancer",
				Volumes: func(*corev1.Pod) []corev1.NodeSelector { return tc.volumes }})[0]
			var got []corev1.NodeSelectorTerm
			if a := r.Spec.Affinity; a != nil && a.NodeAffinity != nil && a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
				got = a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("required terms (-want +got):\n%s", diff)
			}
			if tc.affinity != nil && len(tc.affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions) != 1 {
				t.Error("the pod's own affinity was changed")
			}
		})
	}
}
