package planner

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// syntheticCluster builds a cluster of nodes nodes and about pods pods: three
// zones, Spot and on-demand pools, tainted Spot nodes, Deployments of 2 to
// 20 replicas with requests, some with zone spread or host anti-affinity,
// most with a PDB. The first atRisk nodes carry a rebalance recommendation
// and 110 pods each.
func syntheticCluster(nodes, pods, atRisk int) *snapshot.Snapshot {
	r := rand.New(rand.NewPCG(1, 2))
	zones := []string{"us-east-1a", "us-east-1b", "us-east-1c"}
	var ns []*corev1.Node
	for i := range nodes {
		spot := i%3 != 0
		pool := "on-demand"
		n := &corev1.Node{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("node-%05d", i), CreationTimestamp: metav1.NewTime(now.Add(-time.Hour)),
				Labels: map[string]string{corev1.LabelHostname: fmt.Sprintf("node-%05d", i), corev1.LabelTopologyZone: zones[i%3]}},
			Status: corev1.NodeStatus{
				Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("32"), corev1.ResourceMemory: resource.MustParse("128Gi"), corev1.ResourcePods: resource.MustParse("250")},
				Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
			},
		}
		if spot {
			pool = fmt.Sprintf("spot-%d", i%4)
			n.Spec.Taints = []corev1.Taint{{Key: "eks.amazonaws.com/capacityType", Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}}
		}
		n.Labels["eks.amazonaws.com/nodegroup"] = pool
		if i < atRisk {
			n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionRebalance, Status: corev1.ConditionTrue,
				LastTransitionTime: metav1.NewTime(now.Add(-time.Minute))})
		}
		ns = append(ns, n)
	}
	var ps []*corev1.Pod
	var pdbs []*policyv1.PodDisruptionBudget
	var pvcs []*corev1.PersistentVolumeClaim
	var pvs []*corev1.PersistentVolume
	var csiNodes []*storagev1.CSINode
	for _, n := range ns {
		csiNodes = append(csiNodes, &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: n.Name}, Spec: storagev1.CSINodeSpec{
			Drivers: []storagev1.CSINodeDriver{{Name: "ebs.csi.aws.com", NodeID: n.Name, Allocatable: &storagev1.VolumeNodeResources{Count: new(int32(25))}}}}})
	}
	spotTol := []corev1.Toleration{{Key: "eks.amazonaws.com/capacityType", Operator: corev1.TolerationOpEqual, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}}
	for app := 0; len(ps) < pods; app++ {
		name := fmt.Sprintf("app-%d", app)
		replicas := 2 + r.IntN(19)
		labels := map[string]string{"app": name, "pod-template-hash": "h"}
		cpu := resource.MustParse(fmt.Sprintf("%dm", 50+r.IntN(20)*25))
		mem := resource.MustParse(fmt.Sprintf("%dMi", 64+r.IntN(16)*64))
		spread, anti := r.IntN(10) == 0, r.IntN(20) == 0
		for k := range replicas {
			// Fill the at-risk nodes to 110 pods first, then spread.
			at := len(ps) % len(ns)
			if len(ps) < 110*atRisk {
				at = len(ps) / 110
			}
			node := ns[at].Name
			p := &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-h-%d", name, k), Namespace: "ns-" + fmt.Sprint(app%50),
					UID: types.UID(fmt.Sprintf("%s-%d", name, k)), Labels: labels,
					OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: name + "-h", UID: types.UID("rs-" + name), Controller: new(true)}}},
				Spec: corev1.PodSpec{NodeName: node, Tolerations: spotTol, Containers: []corev1.Container{{Name: "c",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: cpu, corev1.ResourceMemory: mem}}}}},
				Status: corev1.PodStatus{Phase: corev1.PodRunning},
			}
			if spread {
				p.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone,
					WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}
			}
			if anti {
				p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
					TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}}}}}
			}
			// A quarter of the pods keep data on a zonal volume in their
			// node's zone (EBS-like: CSI, node affinity on the zone).
			if len(ps)%4 == 0 {
				claim := p.Name + "-data"
				zone := zones[at%3]
				pvs = append(pvs, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: "pv-" + string(p.UID)}, Spec: corev1.PersistentVolumeSpec{
					PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{Driver: "ebs.csi.aws.com", VolumeHandle: "vol-" + string(p.UID)}},
					NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
						MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{zone}}}}}}}}})
				pvcs = append(pvcs, &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: claim, Namespace: p.Namespace,
					Annotations: map[string]string{"pv.kubernetes.io/bind-completed": "yes"}}, Spec: corev1.PersistentVolumeClaimSpec{VolumeName: "pv-" + string(p.UID)}})
				p.Spec.Volumes = []corev1.Volume{{Name: "data", VolumeSource: corev1.VolumeSource{PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: claim}}}}
			}
			ps = append(ps, p)
		}
		if r.IntN(4) != 0 {
			pdbs = append(pdbs, &policyv1.PodDisruptionBudget{
				ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "ns-" + fmt.Sprint(app%50), Generation: 1},
				Spec:       policyv1.PodDisruptionBudgetSpec{MaxUnavailable: new(intstr.FromInt(1)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}}},
				Status:     policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: 1, ExpectedPods: int32(replicas), DesiredHealthy: int32(replicas - 1)},
			})
		}
	}
	return snapshot.New(now, snapshot.Objects{Nodes: ns, Pods: ps, PDBs: pdbs, PVCs: pvcs, PVs: pvs, CSINodes: csiNodes})
}

func benchmarkPlan(b *testing.B, nodes, pods, atRisk int) {
	snap := syntheticCluster(nodes, pods, atRisk)
	c := cfg()
	// The first plan on a snapshot builds what every later plan on it
	// shares (BenchmarkPlanOneNodeFreshSnapshot measures that): build it
	// before timing, as the controller has by its second reconcile. And
	// building the synthetic cluster leaves garbage behind; collect it
	// now, or the first plans pay for scanning it.
	if _, err := New(snap, Options{Config: c}); err != nil {
		b.Fatal(err)
	}
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		plan, err := New(snap, Options{Config: c})
		if err != nil {
			b.Fatal(err)
		}
		if len(plan.Nodes) != atRisk {
			b.Fatalf("planned %d nodes, want %d", len(plan.Nodes), atRisk)
		}
	}
}

func BenchmarkPlanOneNode500Nodes10kPods(b *testing.B)  { benchmarkPlan(b, 500, 10_000, 1) }
func BenchmarkPlanOneNode5kNodes100kPods(b *testing.B)  { benchmarkPlan(b, 5_000, 100_000, 1) }
func BenchmarkPlan100Nodes5kNodes100kPods(b *testing.B) { benchmarkPlan(b, 5_000, 100_000, 100) }
func BenchmarkPlan100Nodes500Nodes10kPods(b *testing.B) { benchmarkPlan(b, 500, 10_000, 100) }

// The first plan on a snapshot also builds what later plans on it share
// (node usage, pod indexes, signals, replica counts): the cost of a plan
// from fresh object lists, as `spot-rebalancer plan` pays it.
func BenchmarkPlanOneNodeFreshSnapshot5kNodes100kPods(b *testing.B) {
	snap := syntheticCluster(5_000, 100_000, 1)
	c := cfg()
	runtime.GC()
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		fresh := snapshot.New(snap.Now, snapshot.Objects{Nodes: snap.Nodes, Pods: snap.Pods, PDBs: snap.PDBs, PVCs: snap.PVCs, PVs: snap.PVs, CSINodes: snap.CSINodes})
		if _, err := New(fresh, Options{Config: c}); err != nil {
			b.Fatal(err)
		}
	}
}
