package webhook

import (
	"strings"
	"testing"

	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
)

func pdb(name string, sel map[string]string, minAvailable, maxUnavailable *intstr.IntOrString) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop"},
		Spec:       policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: sel}, MinAvailable: minAvailable, MaxUnavailable: maxUnavailable},
	}
}

func TestHint(t *testing.T) {
	web := map[string]string{"app": "web"}
	i := func(v int) *intstr.IntOrString { x := intstr.FromInt(v); return &x }
	s := func(v string) *intstr.IntOrString { x := intstr.FromString(v); return &x }
	tests := map[string]struct {
		replicas int32
		pdbs     []*policyv1.PodDisruptionBudget
		want     PDBHint
	}{
		"no PDB at all": {
			replicas: 3, want: PDBHint{HintMissing, "missing; suggest maxUnavailable=1"},
		},
		"a PDB for other pods does not count": {
			replicas: 3, pdbs: []*policyv1.PodDisruptionBudget{pdb("db", map[string]string{"app": "db"}, i(1), nil)},
			want: PDBHint{HintMissing, "missing; suggest maxUnavailable=1"},
		},
		"maxUnavailable 0 blocks every eviction": {
			replicas: 3, pdbs: []*policyv1.PodDisruptionBudget{pdb("web", web, nil, i(0))},
			want: PDBHint{HintBlocking, "blocking: web allows 0 disruptions at 3 replicas"},
		},
		"minAvailable equal to replicas blocks every eviction": {
			replicas: 3, pdbs: []*policyv1.PodDisruptionBudget{pdb("web", web, i(3), nil)},
			want: PDBHint{HintBlocking, "blocking: web allows 0 disruptions at 3 replicas"},
		},
		"minAvailable 100% blocks every eviction": {
			replicas: 5, pdbs: []*policyv1.PodDisruptionBudget{pdb("web", web, s("100%"), nil)},
			want: PDBHint{HintBlocking, "blocking: web allows 0 disruptions at 5 replicas"},
		},
		"minAvailable 90% rounds up and blocks at 3 replicas": {
			replicas: 3, pdbs: []*policyv1.PodDisruptionBudget{pdb("web", web, s("90%"), nil)},
			want: PDBHint{HintBlocking, "blocking: web allows 0 disruptions at 3 replicas"},
		},
		"two PDBs make every eviction fail": {
			replicas: 3, pdbs: []*policyv1.PodDisruptionBudget{pdb("web-extra", web, i(1), nil), pdb("web", web, nil, i(1))},
			want: PDBHint{HintMultiple, "multiple: web, web-extra (evictions will fail)"},
		},
		"a PDB that allows one is ok": {
			replicas: 3, pdbs: []*policyv1.PodDisruptionBudget{pdb("web", web, nil, i(1))},
			want: PDBHint{HintOK, "ok: web allows 1"},
		},
		"maxUnavailable 25% rounds up to 1 at 3 replicas": {
			replicas: 3, pdbs: []*policyv1.PodDisruptionBudget{pdb("web", web, nil, s("25%"))},
			want: PDBHint{HintOK, "ok: web allows 1"},
		},
		"an empty selector covers every pod of the namespace": {
			replicas: 2, pdbs: []*policyv1.PodDisruptionBudget{pdb("all", map[string]string{}, i(1), nil)},
			want: PDBHint{HintOK, "ok: all allows 1"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Hint(tc.replicas, web, tc.pdbs); got != tc.want {
				t.Errorf("got %+v, want %+v", got, tc.want)
			}
		})
	}
}

func TestWarningFitsOnOneLine(t *testing.T) {
	h := PDBHint{HintMultiple, "multiple: " + strings.Repeat("a-very-long-pdb-name, ", 10) + "(evictions will fail)"}
	w := h.Warning("Deployment", "web")
	if len(w) > 120 || !strings.HasPrefix(w, "spot-rebalancer: deployment web PDB multiple") {
		t.Errorf("warning %q (%d characters)", w, len(w))
	}
	if (PDBHint{HintOK, "ok: web allows 1"}).Warning("Deployment", "web") != "" {
		t.Error("an ok hint must not warn")
	}
}
