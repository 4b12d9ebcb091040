package webhook

import (
	"encoding/json"
	"fmt"
	"maps"
	"slices"
	"strings"

	"gomodules.xyz/jsonpatch/v2"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

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
// and patched into its raw JSON so that fields this build does not know
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

// PodDocument is a pod's JSON decoded once, case sensitively as the API
// server decodes it; nil pointers are parts the JSON does not have (or has
// as null).
type PodDocument struct {
	Metadata *MetadataFields `json:"metadata"`
	Spec     *PodSpecFields  `json:"spec"`
}

// MetadataFields are the parts of an object's metadata the webhook reads
// (profile selection, spread labels, a workload's name in its warning); the
// rest (managed fields, times) is skipped, never decoded.
type MetadataFields struct {
	Name            string                  `json:"name"`
	Labels          map[string]string       `json:"labels"`
	Annotations     map[string]string       `json:"annotations"`
	OwnerReferences []metav1.OwnerReference `json:"ownerReferences"`
}

// PodSpecFields are the parts of a pod's spec the webhook reads and adds
// to; the rest (containers, volumes) is skipped, never decoded.
type PodSpecFields struct {
	Tolerations               []corev1.Toleration               `json:"tolerations"`
	Affinity                  *corev1.Affinity                  `json:"affinity"`
	TopologySpreadConstraints []corev1.TopologySpreadConstraint `json:"topologySpreadConstraints"`
}

// DecodePod decodes the parts of a pod's raw JSON the webhook reads: its
// metadata and PodSpecFields.
func DecodePod(raw []byte) (*PodDocument, *corev1.Pod, error) {
	o := DecodeObject(raw)
	if o.Err != nil {
		return nil, nil, o.Err
	}
	doc, pod := o.Pod()
	return doc, pod, nil
}

// Patch returns the JSON patch that adds the mutation to the pod: additions
// only, each at a path the JSON is known to have, so nothing else changes
// (fields this build does not know included) and the API server can always
// apply it. A decoded slice, map or pointer is non-nil exactly when the
// JSON has that array or object. It fails for a pod without a spec.
func (m *Mutation) Patch(doc *PodDocument) ([]jsonpatch.JsonPatchOperation, error) {
	if doc.Spec == nil {
		return nil, fmt.Errorf("the pod has no spec object")
	}
	spec := doc.Spec
	var ops []jsonpatch.JsonPatchOperation
	if len(m.Tolerations) > 0 {
		ops = appendOps(ops, "/spec/tolerations", spec.Tolerations != nil, m.Tolerations)
	}
	if len(m.Preferred) > 0 {
		preferred := map[string]any{"preferredDuringSchedulingIgnoredDuringExecution": m.Preferred}
		switch {
		case spec.Affinity == nil:
			ops = append(ops, add("/spec/affinity", map[string]any{"nodeAffinity": preferred}))
		case spec.Affinity.NodeAffinity == nil:
			ops = append(ops, add("/spec/affinity/nodeAffinity", preferred))
		default:
			ops = appendOps(ops, "/spec/affinity/nodeAffinity/preferredDuringSchedulingIgnoredDuringExecution",
				spec.Affinity.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution != nil, m.Preferred)
		}
	}
	if len(m.Spread) > 0 {
		ops = appendOps(ops, "/spec/topologySpreadConstraints", spec.TopologySpreadConstraints != nil, m.Spread)
	}

	// A reinvocation adds to what an earlier pass recorded.
	var annotations map[string]string
	if doc.Metadata != nil {
		annotations = doc.Metadata.Annotations
	}
	var record Injected
	if prev, ok := annotations[InjectedAnnotation]; !ok || json.Unmarshal([]byte(prev), &record) != nil {
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
	return append(ops, annotationOp(doc.Metadata != nil, annotations, InjectedAnnotation, string(value))), nil
}

// annotationOp sets one annotation, creating metadata.annotations (or
// metadata) when the object has none.
func annotationOp(hasMetadata bool, annotations map[string]string, key, value string) jsonpatch.JsonPatchOperation {
	switch {
	case !hasMetadata:
		return add("/metadata", map[string]any{"annotations": map[string]string{key: value}})
	case annotations == nil:
		return add("/metadata/annotations", map[string]string{key: value})
	}
	return add("/metadata/annotations/"+escapePointer(key), value)
}

func add(path string, value any) jsonpatch.JsonPatchOperation {
	return jsonpatch.JsonPatchOperation{Operation: "add", Path: path, Value: value}
}

// appendOps appends items to the list at path: one add at the end per item
// when the list exists, else one add of the whole list (which also
// replaces a null).
func appendOps[T any](ops []jsonpatch.JsonPatchOperation, path string, exists bool, items []T) []jsonpatch.JsonPatchOperation {
	if !exists {
		return append(ops, add(path, items))
	}
	for _, item := range items {
		ops = append(ops, add(path+"/-", item))
	}
	return ops
}

// escapePointer escapes a key for a JSON pointer (RFC 6901).
func escapePointer(key string) string {
	return strings.NewReplacer("~", "~0", "/", "~1").Replace(key)
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
