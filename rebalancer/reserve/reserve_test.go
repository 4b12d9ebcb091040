package reserve

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func TestReservationCarriesThePodsNeedsAndNothingThatLetsItStay(t *testing.T) {
	cpu := func(s string) corev1.ResourceList {
		return corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(s)}
	}
	hostname := corev1.NodeSelectorRequirement{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{"spot-a-1"}}
	zone := corev1.NodeSelectorRequirement{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{"eu-west-1a"}}
	spotToleration := corev1.Toleration{Key: "karpenter.sh/capacity-type", Operator: corev1.TolerationOpEqual, Value: "spot", Effect: corev1.TaintEffectNoSchedule}
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web"}},
		Spec: corev1.PodSpec{
			NodeSelector: map[string]string{"karpenter.sh/nodepool": "spot"},
			Affinity: &corev1.Affinity{
				NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{
					{MatchExpressions: []corev1.NodeSelectorRequirement{hostname}},
					{MatchExpressions: []corev1.NodeSelectorRequirement{zone, hostname}},
				}}},
				PodAntiAffinity: &corev1.PodAntiAffinity{},
			},
			Tolerations: []corev1.Toleration{spotToleration, {Operator: corev1.TolerationOpExists}, {Key: signals.TaintDraining, Operator: corev1.TolerationOpExists}},
			TopologySpreadConstraints: []corev1.TopologySpreadConstraint{
				{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.DoNotSchedule},
				{MaxSkew: 1, TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.DoNotSchedule},
				{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.ScheduleAnyway},
			},
			InitContainers: []corev1.Container{{Name: "init", Resources: corev1.ResourceRequirements{Requests: cpu("2")}}},
			Containers: []corev1.Container{{Name: "a", Resources: corev1.ResourceRequirements{Requests: cpu("500m")}},
				{Name: "b", Resources: corev1.ResourceRequirements{Requests: cpu("250m")}}},
			Overhead: cpu("100m"),
		},
	}
	got := For("spot-a-1", []*corev1.Pod{pod}, Options{Namespace: "spot-rebalancer"})
	if len(got) != 1 {
		t.Fatalf("%d reservations, want 1", len(got))
	}
	r := got[0]
	if r.Namespace != "spot-rebalancer" || r.Labels[LabelNode] != NodeLabel("spot-a-1") || r.Annotations[AnnotationNode] != "spot-a-1" ||
		r.Annotations[AnnotationPod] != "shop/web-1" || r.Annotations[signals.AnnotationKarpenterDoNotDisrupt] != "true" {
		t.Errorf("metadata: %+v", r.ObjectMeta)
	}
	if len(r.OwnerReferences) != 0 || r.Labels["app"] != "" {
		t.Errorf("a reservation has no owner and is no pod of the workload: %+v", r.ObjectMeta)
	}
	// The init container's 2 CPUs outweigh the 750m of the others; plus
	// the overhead.
	if q := r.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU]; q.Cmp(resource.MustParse("2100m")) != 0 {
		t.Errorf("requests %s, want 2100m", q.String())
	}
	if r.Spec.PriorityClassName != PriorityClass || r.Spec.PreemptionPolicy == nil || *r.Spec.PreemptionPolicy != corev1.PreemptNever ||
		r.Spec.Containers[0].Image != DefaultImage {
		t.Errorf("priority %q, preemption %v, image %q", r.Spec.PriorityClassName, r.Spec.PreemptionPolicy, r.Spec.Containers[0].Image)
	}
	wantAffinity := &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
		NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{zone}}}}}}
	if diff := cmp.Diff(wantAffinity, r.Spec.Affinity); diff != "" {
		t.Errorf("affinity without hostname terms nor pod affinities (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff([]corev1.Toleration{spotToleration}, r.Spec.Tolerations); diff != "" {
		t.Errorf("tolerations without those of the draining taint (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(pod.Spec.TopologySpreadConstraints[:1], r.Spec.TopologySpreadConstraints); diff != "" {
		t.Errorf("only the binding zone spread (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(pod.Spec.NodeSelector, r.Spec.NodeSelector); diff != "" {
		t.Errorf("node selector (-want +got):\n%s", diff)
	}
	if r2 := For("spot-a-1", []*corev1.Pod{pod}, Options{Image: "example.com/pause:1"})[0]; r2.Spec.Containers[0].Image != "example.com/pause:1" {
		t.Errorf("image %q", r2.Spec.Containers[0].Image)
	}
}

func TestDiff(t *testing.T) {
	res := func(name, pod string) *corev1.Pod {
		return &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{AnnotationPod: pod}}}
	}
	names := func(pods []*corev1.Pod) []string {
		var out []string
		for _, p := range pods {
			out = append(out, p.Name)
		}
		return out
	}
	tests := map[string]struct {
		want, have     []*corev1.Pod
		create, remove []string
	}{
		"nothing yet: create all":             {want: []*corev1.Pod{res("w1", "shop/a"), res("w2", "shop/b")}, create: []string{"w1", "w2"}},
		"all there: nothing":                  {want: []*corev1.Pod{res("w1", "shop/a")}, have: []*corev1.Pod{res("r1", "shop/a")}},
		"a pod gone: its reservation goes":    {want: []*corev1.Pod{res("w1", "shop/a")}, have: []*corev1.Pod{res("r1", "shop/a"), res("r2", "shop/b")}, remove: []string{"r2"}},
		"a duplicate (a retried create) goes": {want: []*corev1.Pod{res("w1", "shop/a")}, have: []*corev1.Pod{res("r1", "shop/a"), res("r2", "shop/a")}, remove: []string{"r2"}},
		"no longer wanted: all go":            {have: []*corev1.Pod{res("r1", "shop/a")}, remove: []string{"r1"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			create, remove := Diff(tc.want, tc.have)
			if diff := cmp.Diff(tc.create, names(create)); diff != "" {
				t.Errorf("create (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.remove, names(remove)); diff != "" {
				t.Errorf("remove (-want +got):\n%s", diff)
			}
		})
	}
}
