package webhook

import (
	"fmt"
	"slices"
	"strings"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/intstr"
)

// PDBHintAnnotation tells, on a Deployment or StatefulSet, whether a
// PodDisruptionBudget protects it during a Spot hand-off.
const PDBHintAnnotation = "spot-rebalancer.io/pdb-hint"

// maxWarning is the longest admission warning we return; kubectl prints
// each on its own line.
const maxWarning = 120

// HintState is the first word of a hint, and a metric label.
type HintState string

// The hint states.
const (
	HintOK       HintState = "ok"
	HintMissing  HintState = "missing"
	HintBlocking HintState = "blocking"
	HintMultiple HintState = "multiple"
)

// PDBHint is the verdict on one workload.
type PDBHint struct {
	State HintState
	// Text is the annotation's value.
	Text string
}

// Warning is what a person should see in kubectl's output, or "" when the
// workload is fine.
func (h PDBHint) Warning(kind, name string) string {
	if h.State == HintOK {
		return ""
	}
	return truncate(fmt.Sprintf("spot-rebalancer: %s %s PDB %s", strings.ToLower(kind), name, h.Text))
}

// Hint judges the PDBs in a workload's namespace against its pod template
// labels and replica count.
func Hint(replicas int32, podLabels map[string]string, pdbs []*policyv1.PodDisruptionBudget) PDBHint {
	var matching []*policyv1.PodDisruptionBudget
	for _, pdb := range pdbs {
		sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
		// A nil selector matches nothing in policy/v1; an empty one
		// matches every pod in the namespace.
		if err != nil || pdb.Spec.Selector == nil || !sel.Matches(labels.Set(podLabels)) {
			continue
		}
		matching = append(matching, pdb)
	}
	slices.SortFunc(matching, func(a, b *policyv1.PodDisruptionBudget) int { return strings.Compare(a.Name, b.Name) })
	switch len(matching) {
	case 0:
		return PDBHint{State: HintMissing, Text: "missing; suggest maxUnavailable=1"}
	case 1:
	default:
		var names []string
		for _, p := range matching {
			names = append(names, p.Name)
		}
		return PDBHint{State: HintMultiple, Text: fmt.Sprintf("multiple: %s (evictions will fail)", strings.Join(names, ", "))}
	}
	pdb := matching[0]
	allowed, err := AllowedDisruptions(pdb.Spec, replicas)
	if err != nil {
		return PDBHint{State: HintBlocking, Text: fmt.Sprintf("blocking: %s is invalid (%v)", pdb.Name, err)}
	}
	if allowed <= 0 && replicas > 0 {
		return PDBHint{State: HintBlocking, Text: fmt.Sprintf("blocking: %s allows 0 disruptions at %d replicas", pdb.Name, replicas)}
	}
	return PDBHint{State: HintOK, Text: fmt.Sprintf("ok: %s allows %d", pdb.Name, max(allowed, 0))}
}

// AllowedDisruptions is what the disruption controller would allow for a
// budget when all replicas are healthy. Percentages round up, as the
// disruption controller rounds them.
func AllowedDisruptions(spec policyv1.PodDisruptionBudgetSpec, replicas int32) (int32, error) {
	switch {
	case spec.MaxUnavailable != nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(spec.MaxUnavailable, int(replicas), true)
		if err != nil {
			return 0, err
		}
		return min(int32(v), replicas), nil
	case spec.MinAvailable != nil:
		v, err := intstr.GetScaledValueFromIntOrPercent(spec.MinAvailable, int(replicas), true)
		if err != nil {
			return 0, err
		}
		return replicas - int32(v), nil
	default:
		// Neither set: the disruption controller desires no healthy pod.
		return replicas, nil
	}
}
