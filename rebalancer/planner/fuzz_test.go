package planner

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// randomSnapshot builds a small random cluster from a seed.
func randomSnapshot(seed uint64) *snapshot.Snapshot {
	r := rand.New(rand.NewPCG(seed, seed>>7|1))
	var nodes []*corev1.Node
	for i := range 2 + r.IntN(6) {
		n := node(fmt.Sprintf("n%d", i), fmt.Sprintf("pool-%d", r.IntN(2)), now.Add(-time.Duration(r.IntN(120))*time.Minute))
		n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse(fmt.Sprintf("%dm", 500+r.IntN(4000)))
		if r.IntN(3) == 0 {
			n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionRebalance, Status: corev1.ConditionTrue,
				LastTransitionTime: metav1.NewTime(now.Add(-time.Minute))})
		}
		if r.IntN(8) == 0 {
			n.Spec.Taints = []corev1.Taint{{Key: signals.TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule}}
		}
		nodes = append(nodes, n)
	}
	var pods []*corev1.Pod
	var pdbs []*policyv1.PodDisruptionBudget
	for a := range 1 + r.IntN(5) {
		app := fmt.Sprintf("app%d", a)
		replicas := 1 + r.IntN(6)
		for i := range replicas {
			p := rsPod(app, i, nodes[r.IntN(len(nodes))].Name, func(p *corev1.Pod) {
				p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse(fmt.Sprintf("%dm", 50+r.IntN(900)))
				switch r.IntN(10) {
				case 0:
					p.OwnerReferences = nil
				case 1:
					p.Annotations = map[string]string{signals.AnnotationDoNotEvict: "true"}
				case 2:
					p.Spec.PriorityClassName = "system-node-critical"
				}
			})
			p.UID = types.UID(fmt.Sprintf("%s-%d-%d", app, i, seed))
			pods = append(pods, p)
		}
		for k := range r.IntN(3) {
			allowed := int32(r.IntN(3))
			pdbs = append(pdbs, pdb(fmt.Sprintf("%s-pdb%d", app, k), app, allowed, int32(replicas), int32(max(replicas-1-r.IntN(2), 0))))
		}
	}
	return snapshot.New(now, snapshot.Objects{Nodes: nodes, Pods: pods, PDBs: pdbs})
}

// On any cluster: every pod of a planned node gets exactly one decision,
// no pod is planned twice, evictions have a wave and a destination, and no
// first wave takes more pods of a PDB than it allows now.
func FuzzPlanInvariants(f *testing.F) {
	for _, s := range []uint64{1, 2, 3, 42, 2026} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, seed uint64) {
		snap := randomSnapshot(seed)
		plan, err := New(snap, Options{Config: cfg()})
		if err != nil {
			t.Fatal(err)
		}
		seen := map[string]bool{}
		firstWave := map[string]int{}
		for _, n := range plan.Nodes {
			if got, want := len(n.Pods), len(snap.PodsOn(n.Name)); got != want {
				t.Fatalf("node %s: %d decisions for %d pods", n.Name, got, want)
			}
			for _, p := range n.Pods {
				key := p.Namespace + "/" + p.Name
				if seen[key] {
					t.Fatalf("pod %s planned twice", key)
				}
				seen[key] = true
				// A pod's latest start exists only under a deadline, and never
				// falls after it; a skipped pod has none.
				switch {
				case p.LatestStart != nil && (n.Deadline == nil || p.LatestStart.After(*n.Deadline)):
					t.Fatalf("pod %s starts at %v, after the node's deadline %v", key, p.LatestStart, n.Deadline)
				case p.LatestStart != nil && p.Action == ActionSkip:
					t.Fatalf("skipped pod %s has a latest start", key)
				case p.WaitsForRoom && p.Destination != "":
					t.Fatalf("pod %s waits for room but has destination %s", key, p.Destination)
				}
				switch p.Action {
				case ActionEvict:
					if p.Wave < 1 || p.Destination == "" {
						t.Fatalf("eviction of %s without a wave or destination: %+v", key, p)
					}
					if p.Wave == 1 && len(p.PDBs) == 1 {
						firstWave[p.PDBs[0].Name]++
						if firstWave[p.PDBs[0].Name] > int(p.PDBs[0].DisruptionsAllowed) {
							t.Fatalf("wave 1 takes %d pods of PDB %s, which allows %d", firstWave[p.PDBs[0].Name], p.PDBs[0].Name, p.PDBs[0].DisruptionsAllowed)
						}
					}
					if len(p.PDBs) > 1 {
						t.Fatalf("pod %s under two PDBs is evicted", key)
					}
				case ActionSkip, ActionBlocked:
					if len(p.Reasons) == 0 {
						t.Fatalf("pod %s is %s without a reason", key, p.Action)
					}
				default:
					t.Fatalf("pod %s has action %q", key, p.Action)
				}
			}
		}
		if plan.Complete != func() bool {
			for _, n := range plan.Nodes {
				if len(n.Blockers) > 0 {
					return false
				}
			}
			return true
		}() {
			t.Fatal("complete disagrees with the blockers")
		}
	})
}
