package webhook

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// InjectedAnnotation records, as JSON, what the webhook added to a pod.
const InjectedAnnotation = "spot-rebalancer.io/injected"

// Injected is the value of InjectedAnnotation.
type Injected struct {
	Profile           string   `json:"profile"`
	Tolerations       []string `json:"tolerations,omitempty"`
	PreferredAffinity int      `json:"preferredAffinity,omitempty"`
	Spread            []string `json:"spread,omitempty"`
}

// Mutation is what a profile adds to one pod, computed from the typed pod
// and applied to its raw JSON so that fields this build does not know
// survive.
type Mutation struct {
	Profile     string
	Tolerations []corev1.Toleration
	Preferred   []corev1.PreferredSchedulingTerm
	Spread      []corev1.TopologySpreadConstraint
}

// Empty tells whether the pod already has everything the profile adds.
func (m *Mutation) Empty() bool {
	return len(m.Tolerations) == 0 && len(m.Preferred) == 0 && len(m.Spread) == 0
}

// Plan returns what profile adds to pod under the merge rules: never remove
// or reorder; skip a toleration the pod already has one covering; skip an
// affinity preference the pod already has; add a spread constraint only for
// a topology key the pod does not spread on yet.
func Plan(pod *corev1.Pod, name string, profile config.Profile) *Mutation {
	m := &Mutation{Profile: name}
	for _, want := range profile.Tolerations {
		covered := slices.ContainsFunc(pod.Spec.Tolerations, func(have corev1.Toleration) bool { return covers(have, want) })
		if !covered {
			m.Tolerations = append(m.Tolerations, want)
		}
	}
	var existing []corev1.PreferredSchedulingTerm
	if a := pod.Spec.Affinity; a != nil && a.NodeAffinity != nil {
		existing = a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution
	}
	for _, want := range profile.PreferredAffinity {
		dup := slices.ContainsFunc(existing, func(have corev1.PreferredSchedulingTerm) bool {
			return equality.Semantic.DeepEqual(have.Preference, want.Preference)
		})
		if !dup {
			m.Preferred = append(m.Preferred, want)
		}
	}
	for _, s := range profile.Spread {
		has := slices.ContainsFunc(pod.Spec.TopologySpreadConstraints, func(c corev1.TopologySpreadConstraint) bool {
			return c.TopologyKey == s.TopologyKey
		})
		// A pod without labels cannot select its own replicas.
		if has || len(pod.Labels) == 0 {
			continue
		}
		m.Spread = append(m.Spread, corev1.TopologySpreadConstraint{
			MaxSkew:           s.MaxSkew,
			TopologyKey:       s.TopologyKey,
			WhenUnsatisfiable: corev1.ScheduleAnyway,
			LabelSelector:     &metav1.LabelSelector{MatchLabels: spreadLabels(pod.Labels)},
		})
	}
	return m
}

// spreadLabels are the pod's labels without the ones that differ between
// replicas, so the constraint counts all replicas of the workload.
func spreadLabels(labels map[string]string) map[string]string {
	out := maps.Clone(labels)
	delete(out, "pod-template-hash")
	delete(out, "controller-revision-hash")
	delete(out, "statefulset.kubernetes.io/pod-name")
	delete(out, "apps.kubernetes.io/pod-index")
	return out
}

// covers tells whether the toleration have already tolerates every taint
// that want tolerates.
func covers(have, want corev1.Toleration) bool {
	if have.Effect != "" && have.Effect != want.Effect {
		return false
	}
	haveExists := have.Operator == corev1.TolerationOpExists
	if have.Key == "" {
		return haveExists
	}
	if have.Key != want.Key {
		return false
	}
	if haveExists {
		return true
	}
	return want.Operator != corev1.TolerationOpExists && have.Value == want.Value
}

// Apply adds the mutation to the pod's raw JSON and returns the new JSON.
// Everything else in raw, unknown fields included, is left as it was.
func (m *Mutation) Apply(raw []byte) ([]byte, error) {
	var obj map[string]any
	if err := json.Unmarshal(raw, &obj); err != nil {
		return nil, fmt.Errorf("decoding pod: %w", err)
	}
	spec := child(obj, "spec")
	if len(m.Tolerations) > 0 {
		if err := appendTo(spec, "tolerations", m.Tolerations); err != nil {
			return nil, err
		}
	}
	if len(m.Preferred) > 0 {
		na := child(child(spec, "affinity"), "nodeAffinity")
		if err := appendTo(na, "preferredDuringSchedulingIgnoredDuringExecution", m.Preferred); err != nil {
			return nil, err
		}
	}
	if len(m.Spread) > 0 {
		if err := appendTo(spec, "topologySpreadConstraints", m.Spread); err != nil {
			return nil, err
		}
	}
	annotations := child(child(obj, "metadata"), "annotations")
	// A reinvocation adds to what an earlier pass recorded.
	var record Injected
	if prev, ok := annotations[InjectedAnnotation].(string); !ok || json.Unmarshal([]byte(prev), &record) != nil {
		record = Injected{}
	}
	record.Profile = m.Profile
	record.PreferredAffinity += len(m.Preferred)
	for _, t := range m.Tolerations {
		record.Tolerations = append(record.Tolerations, describeToleration(t))
	}
	for _, s := range m.Spread {
		record.Spread = append(record.Spread, s.TopologyKey)
	}
	value, err := json.Marshal(record)
	if err != nil {
		return nil, err
	}
	annotations[InjectedAnnotation] = string(value)
	return json.Marshal(obj)
}

func describeToleration(t corev1.Toleration) string {
	s := t.Key
	if t.Operator != corev1.TolerationOpExists {
		s += "=" + t.Value
	}
	if t.Effect != "" {
		s += ":" + string(t.Effect)
	}
	return s
}

// child returns obj[key] as an object, creating it when absent or null.
func child(obj map[string]any, key string) map[string]any {
	if c, ok := obj[key].(map[string]any); ok {
		return c
	}
	c := map[string]any{}
	obj[key] = c
	return c
}

// appendTo appends items to the list obj[key], keeping what is there.
func appendTo[T any](obj map[string]any, key string, items []T) error {
	list, _ := obj[key].([]any)
	for i := range items {
		u, err := runtime.DefaultUnstructuredConverter.ToUnstructured(&items[i])
		if err != nil {
			return fmt.Errorf("converting %s: %w", key, err)
		}
		list = append(list, u)
	}
	obj[key] = list
	return nil
}
