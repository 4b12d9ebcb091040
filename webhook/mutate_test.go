package webhook

import (
	"encoding/json"
	"testing"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

var (
	eksTol       = corev1.Toleration{Key: "eks.amazonaws.com/capacityType", Operator: corev1.TolerationOpEqual, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}
	karpenterTol = corev1.Toleration{Key: "karpenter.sh/capacity-type", Operator: corev1.TolerationOpEqual, Value: "spot", Effect: corev1.TaintEffectNoSchedule}
	preferSpot   = corev1.PreferredSchedulingTerm{Weight: 50, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
		{Key: "eks.amazonaws.com/capacityType", Operator: corev1.NodeSelectorOpIn, Values: []string{"SPOT"}}}}}
	profile = config.Profile{
		Tolerations:       []corev1.Toleration{eksTol, karpenterTol},
		PreferredAffinity: []corev1.PreferredSchedulingTerm{preferSpot},
		Spread:            []config.Spread{{TopologyKey: corev1.LabelTopologyZone, MaxSkew: 1}},
	}
)

func podWith(mod func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "web-1", Namespace: "shop", Labels: map[string]string{"app": "web", "pod-template-hash": "abc"}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "web", Image: "web:1"}}},
	}
	if mod != nil {
		mod(p)
	}
	return p
}

func TestPlanMergeRules(t *testing.T) {
	zoneSpread := corev1.TopologySpreadConstraint{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.ScheduleAnyway,
		LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}
	tests := map[string]struct {
		pod  *corev1.Pod
		want *Mutation
	}{
		"a bare pod gets every toleration, the preference and the spread": {
			pod:  podWith(nil),
			want: &Mutation{Profile: "spot", Tolerations: []corev1.Toleration{eksTol, karpenterTol}, Preferred: []corev1.PreferredSchedulingTerm{preferSpot}, Spread: []corev1.TopologySpreadConstraint{zoneSpread}},
		},
		"a toleration the pod already has is not added again": {
			pod:  podWith(func(p *corev1.Pod) { p.Spec.Tolerations = []corev1.Toleration{eksTol} }),
			want: &Mutation{Profile: "spot", Tolerations: []corev1.Toleration{karpenterTol}, Preferred: []corev1.PreferredSchedulingTerm{preferSpot}, Spread: []corev1.TopologySpreadConstraint{zoneSpread}},
		},
		"an Exists toleration for the key covers the Equal one": {
			pod: podWith(func(p *corev1.Pod) {
				p.Spec.Tolerations = []corev1.Toleration{{Key: "eks.amazonaws.com/capacityType", Operator: corev1.TolerationOpExists}}
			}),
			want: &Mutation{Profile: "spot", Tolerations: []corev1.Toleration{karpenterTol}, Preferred: []corev1.PreferredSchedulingTerm{preferSpot}, Spread: []corev1.TopologySpreadConstraint{zoneSpread}},
		},
		"an empty-key Exists toleration tolerates everything": {
			pod:  podWith(func(p *corev1.Pod) { p.Spec.Tolerations = []corev1.Toleration{{Operator: corev1.TolerationOpExists}} }),
			want: &Mutation{Profile: "spot", Preferred: []corev1.PreferredSchedulingTerm{preferSpot}, Spread: []corev1.TopologySpreadConstraint{zoneSpread}},
		},
		"an Exists toleration for another effect does not cover": {
			pod: podWith(func(p *corev1.Pod) {
				p.Spec.Tolerations = []corev1.Toleration{{Key: "eks.amazonaws.com/capacityType", Operator: corev1.TolerationOpExists, Effect: corev1.TaintEffectNoExecute}}
			}),
			want: &Mutation{Profile: "spot", Tolerations: []corev1.Toleration{eksTol, karpenterTol}, Preferred: []corev1.PreferredSchedulingTerm{preferSpot}, Spread: []corev1.TopologySpreadConstraint{zoneSpread}},
		},
		"an Equal toleration with another value does not cover": {
			pod: podWith(func(p *corev1.Pod) {
				p.Spec.Tolerations = []corev1.Toleration{{Key: "eks.amazonaws.com/capacityType", Operator: corev1.TolerationOpEqual, Value: "ON_DEMAND", Effect: corev1.TaintEffectNoSchedule}}
			}),
			want: &Mutation{Profile: "spot", Tolerations: []corev1.Toleration{eksTol, karpenterTol}, Preferred: []corev1.PreferredSchedulingTerm{preferSpot}, Spread: []corev1.TopologySpreadConstraint{zoneSpread}},
		},
		"an identical preference is not added twice, whatever its weight": {
			pod: podWith(func(p *corev1.Pod) {
				term := preferSpot
				term.Weight = 10
				p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{term}}}
			}),
			want: &Mutation{Profile: "spot", Tolerations: []corev1.Toleration{eksTol, karpenterTol}, Spread: []corev1.TopologySpreadConstraint{zoneSpread}},
		},
		"a spread on the same topology key is left as the pod has it": {
			pod: podWith(func(p *corev1.Pod) {
				p.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 3, TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.DoNotSchedule}}
			}),
			want: &Mutation{Profile: "spot", Tolerations: []corev1.Toleration{eksTol, karpenterTol}, Preferred: []corev1.PreferredSchedulingTerm{preferSpot}},
		},
		"a pod without labels gets no spread, which could not select its replicas": {
			pod:  podWith(func(p *corev1.Pod) { p.Labels = nil }),
			want: &Mutation{Profile: "spot", Tolerations: []corev1.Toleration{eksTol, karpenterTol}, Preferred: []corev1.PreferredSchedulingTerm{preferSpot}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got := Plan(tc.pod, "spot", profile)
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestPatchKeepsWhatThePodHas(t *testing.T) {
	// The raw pod carries a field no Kubernetes version has, a required
	// affinity term and its own toleration; all must survive, in order.
	raw := []byte(`{
	  "apiVersion": "v1", "kind": "Pod",
	  "metadata": {"name": "web-1", "labels": {"app": "web"}, "annotations": {"team": "shop"}},
	  "spec": {
	    "futureField": {"keep": true},
	    "containers": [{"name": "web", "image": "web:1", "futureContainerField": 7}],
	    "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "shop", "effect": "NoSchedule"}],
	    "affinity": {"nodeAffinity": {
	      "requiredDuringSchedulingIgnoredDuringExecution": {"nodeSelectorTerms": [{"matchExpressions": [{"key": "arch", "operator": "In", "values": ["arm64"]}]}]},
	      "preferredDuringSchedulingIgnoredDuringExecution": [{"weight": 5, "preference": {"matchExpressions": [{"key": "disk", "operator": "In", "values": ["ssd"]}]}}]
	    }}
	  }
	}`)
	var pod corev1.Pod
	if err := json.Unmarshal(raw, &pod); err != nil {
		t.Fatal(err)
	}
	m := Plan(&pod, "spot", profile)
	out, err := patched(raw, m)
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatal(err)
	}
	spec := got["spec"].(map[string]any)
	if diff := cmp.Diff(map[string]any{"keep": true}, spec["futureField"]); diff != "" {
		t.Errorf("unknown spec field lost (-want +got):\n%s", diff)
	}
	if c := spec["containers"].([]any)[0].(map[string]any); c["futureContainerField"] != float64(7) {
		t.Errorf("unknown container field lost: %v", c)
	}
	tols := spec["tolerations"].([]any)
	if len(tols) != 3 || tols[0].(map[string]any)["key"] != "dedicated" {
		t.Errorf("tolerations = %v, want the pod's own first, then ours", tols)
	}
	na := spec["affinity"].(map[string]any)["nodeAffinity"].(map[string]any)
	if _, ok := na["requiredDuringSchedulingIgnoredDuringExecution"]; !ok {
		t.Error("the required node affinity was lost")
	}
	prefs := na["preferredDuringSchedulingIgnoredDuringExecution"].([]any)
	if len(prefs) != 2 || prefs[0].(map[string]any)["weight"] != float64(5) {
		t.Errorf("preferences = %v, want the pod's own first, then ours", prefs)
	}
	annotations := got["metadata"].(map[string]any)["annotations"].(map[string]any)
	if annotations["team"] != "shop" {
		t.Error("the pod's own annotation was lost")
	}
	var injected Injected
	if err := json.Unmarshal([]byte(annotations[InjectedAnnotation].(string)), &injected); err != nil {
		t.Fatalf("the injected annotation is not JSON: %v", err)
	}
	want := Injected{Profile: "spot", PreferredAffinity: 1, Spread: []string{corev1.LabelTopologyZone},
		Tolerations: []string{"eks.amazonaws.com/capacityType=SPOT:NoSchedule", "karpenter.sh/capacity-type=spot:NoSchedule"}}
	if diff := cmp.Diff(want, injected); diff != "" {
		t.Errorf("injected annotation (-want +got):\n%s", diff)
	}

	// Reinvocation: the mutated pod needs nothing more.
	var again corev1.Pod
	if err := json.Unmarshal(out, &again); err != nil {
		t.Fatal(err)
	}
	if m := Plan(&again, "spot", profile); !m.Empty() {
		t.Errorf("reinvocation would change the pod again: %+v", m)
	}
}

func TestSelectProfile(t *testing.T) {
	cfg := &config.Webhook{Namespace: "spot-rebalancer", ExcludedNamespaces: []string{"kube-system", "batch"},
		Profiles: map[string]config.Profile{"spot": profile, "tolerate": {}}}
	optedIn := map[string]string{ProfileKey: "spot"}
	tests := map[string]struct {
		namespace string
		nsLabels  map[string]string
		pod       *corev1.Pod
		wantName  string
		wantSkip  string
	}{
		"a pod in an opted-in namespace gets the namespace's profile": {
			namespace: "shop", nsLabels: optedIn, pod: podWith(nil), wantName: "spot",
		},
		"a pod annotation overrides the namespace's profile": {
			namespace: "shop", nsLabels: optedIn,
			pod:      podWith(func(p *corev1.Pod) { p.Annotations = map[string]string{ProfileKey: "tolerate"} }),
			wantName: "tolerate",
		},
		"a pod annotation opts a pod in where the namespace did not": {
			namespace: "shop",
			pod:       podWith(func(p *corev1.Pod) { p.Annotations = map[string]string{ProfileKey: "spot"} }),
			wantName:  "spot",
		},
		"a pod annotated none opts out": {
			namespace: "shop", nsLabels: optedIn,
			pod:      podWith(func(p *corev1.Pod) { p.Annotations = map[string]string{ProfileKey: "none"} }),
			wantSkip: SkipOptedOut,
		},
		"a namespace without the label is not opted in": {
			namespace: "shop", pod: podWith(nil), wantSkip: SkipNotOptedIn,
		},
		"kube-system is left alone even when labelled": {
			namespace: "kube-system", nsLabels: optedIn, pod: podWith(nil), wantSkip: SkipExcludedNamespace,
		},
		"the webhook's own namespace is left alone": {
			namespace: "spot-rebalancer", nsLabels: optedIn, pod: podWith(nil), wantSkip: SkipExcludedNamespace,
		},
		"a namespace excluded by configuration is left alone": {
			namespace: "batch", nsLabels: optedIn, pod: podWith(nil), wantSkip: SkipExcludedNamespace,
		},
		"a mirror pod is left alone": {
			namespace: "shop", nsLabels: optedIn,
			pod:      podWith(func(p *corev1.Pod) { p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"} }),
			wantSkip: SkipMirrorPod,
		},
		"a DaemonSet pod is left alone": {
			namespace: "shop", nsLabels: optedIn,
			pod: podWith(func(p *corev1.Pod) {
				p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "DaemonSet", Name: "agent", UID: "u", Controller: new(true)}}
			}),
			wantSkip: SkipDaemonSetPod,
		},
		"an unknown profile is reported, not guessed": {
			namespace: "shop", nsLabels: map[string]string{ProfileKey: "spto"}, pod: podWith(nil),
			wantName: "spto", wantSkip: SkipUnknownProfile,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			gotName, gotSkip := SelectProfile(tc.pod, tc.namespace, tc.nsLabels, cfg)
			if gotName != tc.wantName || gotSkip != tc.wantSkip {
				t.Errorf("got (%q, %q), want (%q, %q)", gotName, gotSkip, tc.wantName, tc.wantSkip)
			}
		})
	}
}

// patched applies the mutation's patch to raw, as the API server does.
func patched(raw []byte, m *Mutation) ([]byte, error) {
	doc, _, err := DecodePod(raw)
	if err != nil {
		return nil, err
	}
	ops, err := m.Patch(doc)
	if err != nil {
		return nil, err
	}
	data, err := json.Marshal(ops)
	if err != nil {
		return nil, err
	}
	patch, err := jsonpatchapply.DecodePatch(data)
	if err != nil {
		return nil, err
	}
	return patch.Apply(raw)
}
