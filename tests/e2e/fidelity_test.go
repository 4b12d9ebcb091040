package e2e

import (
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/simulation"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// fidelityScenarios is how many generated scenarios the test checks.
const fidelityScenarios = 60

// minSameNodePercent is how often the predicted destination must be the
// scheduler's own choice.
const minSameNodePercent = 90

type fidelity struct {
	moving, placeable, sameNode int
	// cases counts the volume cases the scenarios held.
	cases map[string]int
}

// The simulation must agree with the real kube-scheduler on which pods of
// a drained node can be placed. A seeded generator builds varied scenarios
// (taints, node selectors, anti-affinity, affinity, zone spread, host ports,
// tight CPU and pod counts; claims bound to zonal volumes, to volumes
// labelled with their zone, local volumes to bind, ReadWriteOncePod claims
// in use, CSI attach limits, claims missing or unbound under Immediate
// binding); for each, the simulation predicts, then the
// test cordons the node, deletes its pods and creates them again (largest
// first, as the simulation places them) for the real scheduler, and
// compares. A failure names the seed: FIDELITY_SEED=<seed> replays it;
// FIDELITY_BASE=<seed> runs the 60 scenarios from another first seed.
func TestSimulationAgreesWithTheScheduler(t *testing.T) {
	c := cluster.Get(t)
	base := uint64(20261126)
	scenarios := fidelityScenarios
	if s := os.Getenv("FIDELITY_BASE"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FIDELITY_BASE: %v", err)
		}
		base = v
	}
	if s := os.Getenv("FIDELITY_SEED"); s != "" {
		v, err := strconv.ParseUint(s, 10, 64)
		if err != nil {
			t.Fatalf("FIDELITY_SEED: %v", err)
		}
		base, scenarios = v, 1
	}
	sum := fidelity{cases: map[string]int{}}
	for i := range scenarios {
		seed := base + uint64(i)
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			f := runScenario(t, c, seed)
			sum.moving += f.moving
			sum.placeable += f.placeable
			sum.sameNode += f.sameNode
			for k, v := range f.cases {
				sum.cases[k] += v
			}
		})
	}
	t.Logf("volume and preferred-affinity cases among the moving pods: %v", sum.cases)
	t.Logf("%d scenarios, %d moving pods (%d placeable, %d not) compared with the scheduler; the same node chosen for %d of %d placed pods (%.1f%%)",
		scenarios, sum.moving, sum.placeable, sum.moving-sum.placeable, sum.sameNode, sum.placeable, 100*float64(sum.sameNode)/float64(max(sum.placeable, 1)))
	// The scheduler breaks exact score ties at random, so the chosen node
	// may differ now and then; placeability may not.
	if scenarios == fidelityScenarios && sum.sameNode*100 < sum.placeable*minSameNodePercent {
		t.Errorf("the simulation chose the scheduler's node for only %d of %d pods, want at least %d%%", sum.sameNode, sum.placeable, minSameNodePercent)
	}
}

// scenario is one generated cluster fragment.
type scenario struct {
	nodes  []cluster.Node
	risky  string
	moving []*corev1.Pod
	stay   []*corev1.Pod
	// Storage: cluster-scoped objects are named after the test.
	classes  []*storagev1.StorageClass
	pvs      []*corev1.PersistentVolume
	pvcs     []*corev1.PersistentVolumeClaim
	csiNodes []*storagev1.CSINode
	// bound are the claims to wait for; cases count the volume cases.
	bound []string
	cases map[string]int
}

const fidelityDriver = "ebs.csi.aws.com"

// storageFor adds the scenario's StorageClasses and each candidate node's
// CSI attach limit, and returns helpers that give a pod a claim of a kind.
func (s *scenario) storageFor(r *rand.Rand, owner, ns string, zones []string) func(p *corev1.Pod, kind string) {
	local := storagev1.VolumeBindingWaitForFirstConsumer
	immediate := storagev1.VolumeBindingImmediate
	s.classes = []*storagev1.StorageClass{
		{ObjectMeta: metav1.ObjectMeta{Name: owner + "-local"}, Provisioner: "kubernetes.io/no-provisioner", VolumeBindingMode: &local},
		{ObjectMeta: metav1.ObjectMeta{Name: owner + "-immediate"}, Provisioner: "example.com/nobody", VolumeBindingMode: &immediate},
	}
	for _, n := range s.nodes[1:] {
		if r.IntN(2) == 0 {
			s.csiNodes = append(s.csiNodes, &storagev1.CSINode{ObjectMeta: metav1.ObjectMeta{Name: n.Name}, Spec: storagev1.CSINodeSpec{
				Drivers: []storagev1.CSINodeDriver{{Name: fidelityDriver, NodeID: n.Name, Allocatable: &storagev1.VolumeNodeResources{Count: ptr.To(int32(1 + r.IntN(2)))}}}}})
		}
	}
	serial := 0
	newPV := func(modes []corev1.PersistentVolumeAccessMode) *corev1.PersistentVolume {
		serial++
		return &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-pv-%d", owner, serial), Labels: map[string]string{}},
			Spec: corev1.PersistentVolumeSpec{
				Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
				AccessModes: modes, StorageClassName: "",
				PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
					Driver: fidelityDriver, VolumeHandle: fmt.Sprintf("vol-%s-%d", owner, serial)}},
			}}
	}
	claimFor := func(p *corev1.Pod, name string, class *string, modes []corev1.PersistentVolumeAccessMode) *corev1.PersistentVolumeClaim {
		c := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns}, Spec: corev1.PersistentVolumeClaimSpec{
			AccessModes: modes, StorageClassName: class,
			Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}}}}
		p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
			PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}})
		return c
	}
	// bindTo pre-binds a claim and a volume: the PV controller completes it.
	bindTo := func(c *corev1.PersistentVolumeClaim, pv *corev1.PersistentVolume) {
		c.Spec.VolumeName, c.Spec.StorageClassName = pv.Name, ptr.To("")
		pv.Spec.ClaimRef = &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: c.Name}
		s.pvs, s.pvcs, s.bound = append(s.pvs, pv), append(s.pvcs, c), append(s.bound, c.Name)
	}
	rwo := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}
	return func(p *corev1.Pod, kind string) {
		name := fmt.Sprintf("%s-%s", p.Name, kind)
		switch kind {
		case "zonal": // bound to a volume whose node affinity is one zone
			pv := newPV(rwo)
			pv.Spec.NodeAffinity = &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{zones[r.IntN(3)]}}}}}}}
			bindTo(claimFor(p, name, nil, rwo), pv)
		case "zone-labelled": // bound to a volume labelled with its zone
			pv := newPV(rwo)
			pv.Labels[corev1.LabelTopologyZone] = zones[r.IntN(3)]
			bindTo(claimFor(p, name, nil, rwo), pv)
		case "attach": // bound to a volume anywhere, counting against attach limits
			bindTo(claimFor(p, name, nil, rwo), newPV(rwo))
		case "local": // unbound, to bind one of the local volumes on a node
			c := claimFor(p, name, ptr.To(owner+"-local"), rwo)
			s.pvcs = append(s.pvcs, c)
			host := s.nodes[1+r.IntN(len(s.nodes)-1)].Name
			serial++
			s.pvs = append(s.pvs, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-local-%d", owner, serial)},
				Spec: corev1.PersistentVolumeSpec{
					Capacity: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("20Gi")}, AccessModes: rwo, StorageClassName: owner + "-local",
					PersistentVolumeSource: corev1.PersistentVolumeSource{Local: &corev1.LocalVolumeSource{Path: "/mnt/" + name}},
					NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
						MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelHostname, Operator: corev1.NodeSelectorOpIn, Values: []string{host}}}}}}}}})
		case "rwop-in-use": // a ReadWriteOncePod claim another pod holds
			rwop := []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOncePod}
			c := claimFor(p, name, nil, rwop)
			bindTo(c, newPV(rwop))
			holder := s.stay[r.IntN(len(s.stay))]
			holder.Spec.Volumes = append(holder.Spec.Volumes, corev1.Volume{Name: name, VolumeSource: corev1.VolumeSource{
				PersistentVolumeClaim: &corev1.PersistentVolumeClaimVolumeSource{ClaimName: name}}})
		case "missing": // a claim that does not exist
			claimFor(p, name, nil, rwo)
		case "immediate-unbound": // Immediate binding, nothing to bind or provision
			s.pvcs = append(s.pvcs, claimFor(p, name, ptr.To(owner+"-immediate"), rwo))
		case "emptydir": // no filter; its data is lost on moving
			p.Spec.Volumes = append(p.Spec.Volumes, corev1.Volume{Name: "scratch", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}})
		}
	}
}

func generate(seed uint64, owner, ns string) *scenario {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	zones := []string{"us-east-1a", "us-east-1b", "us-east-1c"}
	spotTaint := corev1.Taint{Key: "spot", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	s := &scenario{risky: fmt.Sprintf("%s-risky", owner), cases: map[string]int{}}
	s.nodes = append(s.nodes, cluster.Node{Name: s.risky, Zone: zones[r.IntN(3)], CPU: "8", Pods: "20"})
	candidates := 3 + r.IntN(4)
	for i := range candidates {
		n := cluster.Node{
			Name: fmt.Sprintf("%s-n%d", owner, i), Zone: zones[r.IntN(3)],
			CPU: fmt.Sprintf("%dm", 1000+500*r.IntN(6)), Pods: strconv.Itoa(3 + r.IntN(8)),
			// Distinct memory sizes keep the scheduler's scores apart: on
			// a tie it picks at random, and no prediction can follow.
			Memory: fmt.Sprintf("%dMi", 8192+1536*i+r.IntN(512)),
			Labels: map[string]string{},
		}
		if r.IntN(3) == 0 {
			n.Taints = []corev1.Taint{spotTaint}
		}
		if r.IntN(2) == 0 {
			n.Labels["disk"] = "ssd"
		}
		if r.IntN(4) == 0 {
			n.Taints = append(n.Taints, corev1.Taint{Key: "busy", Value: "true", Effect: corev1.TaintEffectPreferNoSchedule})
		}
		s.nodes = append(s.nodes, n)
	}
	pod := func(name, node, app string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": app}},
			Spec: corev1.PodSpec{
				NodeName:     node,
				NodeSelector: map[string]string{cluster.OwnerLabel: owner},
				Containers: []corev1.Container{{Name: "c", Image: "registry.example/app:1", Resources: corev1.ResourceRequirements{
					Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(fmt.Sprintf("%dm", 100*(1+r.IntN(10))))}}}},
				TerminationGracePeriodSeconds: ptr.To[int64](0),
			},
		}
	}
	hostPort := func(p *corev1.Pod, port int32) {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: port, HostPort: port}}
	}
	// Pods that stay: caches (targets of affinity), host ports, loners.
	for i, n := range s.nodes[1:] {
		for j := range r.IntN(3) {
			app := []string{"cache", "db", "web"}[r.IntN(3)]
			p := pod(fmt.Sprintf("stay-%d-%d", i, j), n.Name, app)
			p.Spec.Tolerations = []corev1.Toleration{{Key: "spot", Operator: corev1.TolerationOpExists}}
			if r.IntN(4) == 0 {
				hostPort(p, 8080)
			}
			if r.IntN(6) == 0 {
				p.Spec.Affinity = &corev1.Affinity{PodAntiAffinity: &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
					TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}}}}}
			}
			s.stay = append(s.stay, p)
		}
	}
	// Volumes: stay pods fill some nodes' attach slots.
	withVolume := s.storageFor(r, owner, ns, zones)
	for _, p := range s.stay {
		if r.IntN(3) == 0 {
			withVolume(p, "attach")
			s.cases["attach (staying pods)"]++
		}
	}
	if len(s.stay) == 0 {
		// A holder for ReadWriteOncePod claims.
		p := pod("stay-holder", s.nodes[1].Name, "db")
		p.Spec.Tolerations = []corev1.Toleration{{Key: "spot", Operator: corev1.TolerationOpExists}}
		s.stay = append(s.stay, p)
	}
	volumeKinds := []string{"zonal", "zone-labelled", "attach", "local", "rwop-in-use", "missing", "immediate-unbound", "emptydir"}
	// Pods that must move, with one feature or more each.
	movers := 2 + r.IntN(5)
	for i := range movers {
		app := []string{"web", "api", "batch"}[r.IntN(3)]
		p := pod(fmt.Sprintf("move-%d", i), s.risky, app)
		if r.IntN(2) == 0 {
			p.Spec.Tolerations = []corev1.Toleration{{Key: "spot", Operator: corev1.TolerationOpEqual, Value: "true", Effect: corev1.TaintEffectNoSchedule}}
		}
		if r.IntN(4) == 0 {
			p.Spec.NodeSelector["disk"] = "ssd"
		}
		if r.IntN(5) == 0 {
			hostPort(p, 8080)
		}
		var affinity corev1.Affinity
		if r.IntN(4) == 0 {
			affinity.PodAntiAffinity = &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}}}
		}
		if r.IntN(5) == 0 {
			affinity.PodAffinity = &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{{
				TopologyKey: corev1.LabelTopologyZone, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "cache"}}}}}
		}
		if r.IntN(3) == 0 {
			affinity.NodeAffinity = &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
				Weight: int32(1 + r.IntN(100)), Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{
					{Key: "disk", Operator: corev1.NodeSelectorOpIn, Values: []string{"ssd"}}}}}}}
		}
		if r.IntN(4) == 0 { // preferred pod affinity, scored by InterPodAffinity
			key := []string{corev1.LabelHostname, corev1.LabelTopologyZone}[r.IntN(2)]
			if affinity.PodAffinity == nil {
				affinity.PodAffinity = &corev1.PodAffinity{}
			}
			affinity.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution = []corev1.WeightedPodAffinityTerm{{Weight: int32(1 + r.IntN(100)),
				PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: key, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": []string{"cache", "db"}[r.IntN(2)]}}}}}
			s.cases["preferred-affinity"]++
		}
		if r.IntN(4) == 0 { // preferred anti-affinity from its own kind
			if affinity.PodAntiAffinity == nil {
				affinity.PodAntiAffinity = &corev1.PodAntiAffinity{}
			}
			affinity.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution = []corev1.WeightedPodAffinityTerm{{Weight: int32(1 + r.IntN(100)),
				PodAffinityTerm: corev1.PodAffinityTerm{TopologyKey: corev1.LabelHostname, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}}}
			s.cases["preferred-anti-affinity"]++
		}
		if affinity.PodAffinity != nil || affinity.PodAntiAffinity != nil || affinity.NodeAffinity != nil {
			p.Spec.Affinity = &affinity
		}
		if r.IntN(4) == 0 {
			p.Spec.TopologySpreadConstraints = []corev1.TopologySpreadConstraint{{MaxSkew: 1, TopologyKey: corev1.LabelTopologyZone,
				WhenUnsatisfiable: corev1.DoNotSchedule, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}}}
		}
		if r.IntN(5) == 0 {
			p.Spec.TopologySpreadConstraints = append(p.Spec.TopologySpreadConstraints, corev1.TopologySpreadConstraint{MaxSkew: 1,
				TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.ScheduleAnyway,
				LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}})
		}
		// Half the movers carry a volume, the rarer kinds less often.
		if r.IntN(2) == 0 {
			kind := volumeKinds[r.IntN(len(volumeKinds))]
			if (kind == "missing" || kind == "immediate-unbound" || kind == "rwop-in-use") && r.IntN(2) == 0 {
				kind = "zonal"
			}
			withVolume(p, kind)
			s.cases[kind]++
		}
		s.moving = append(s.moving, p)
	}
	return s
}

// runScenario returns how many pods moved, how many were placeable, and
// for how many the simulation chose the scheduler's node.
func runScenario(t *testing.T, c *cluster.Cluster, seed uint64) fidelity {
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	owner := cluster.Owner(t)
	s := generate(seed, owner, ns)
	for _, n := range s.nodes {
		c.AddNode(t, n)
	}
	createStorage(t, c, s)
	pods := c.Client.CoreV1().Pods(ns)
	for _, p := range append(append([]*corev1.Pod{}, s.stay...), s.moving...) {
		if _, err := pods.Create(ctx, p, metav1.CreateOptions{}); err != nil {
			t.Fatalf("seed %d: creating pod %s: %v", seed, p.Name, err)
		}
	}

	// Predict.
	snap := c.Snapshot(t)
	moving := snap.PodsOn(s.risky)
	if len(moving) != len(s.moving) {
		t.Fatalf("seed %d: snapshot has %d pods on %s, want %d", seed, len(moving), s.risky, len(s.moving))
	}
	predicted := map[string]simulation.Result{}
	for _, r := range simulation.New(snap, sets.New(s.risky), moving).Place(moving) {
		predicted[r.Pod.Name] = r
	}

	// Let the real scheduler do it, in the simulation's order.
	cordon(t, c, s.risky)
	for _, p := range moving {
		if err := pods.Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
			t.Fatal(err)
		}
	}
	for _, p := range moving {
		c.WaitFor(t, 30*time.Second, "pod "+p.Name+" to be gone", func(ctx context.Context) (bool, error) {
			_, err := pods.Get(ctx, p.Name, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
	}
	// The pods come back under new names: kwok may still delete the old
	// ones by name, and would take a namesake with them.
	renamed := func(name string) string { return name + "-again" }
	for _, p := range simulation.Order(moving) {
		again := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: renamed(p.Name), Namespace: ns, Labels: p.Labels}, Spec: *p.Spec.DeepCopy()}
		again.Spec.NodeName = ""
		if _, err := pods.Create(ctx, again, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		c.WaitFor(t, 30*time.Second, "the scheduler to decide on "+again.Name, func(ctx context.Context) (bool, error) {
			got, err := pods.Get(ctx, again.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return got.Spec.NodeName != "" || unschedulable(got), nil
		})
	}

	// Compare.
	placeable, sameNode := 0, 0
	var mismatches, otherNode []string
	for _, p := range moving {
		got, err := pods.Get(ctx, renamed(p.Name), metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		want := predicted[p.Name]
		if want.Node != "" {
			placeable++
			if want.Node == got.Spec.NodeName {
				sameNode++
			} else {
				otherNode = append(otherNode, fmt.Sprintf("%s: simulation %s, scheduler %s", p.Name, want.Node, got.Spec.NodeName))
			}
		}
		if (want.Node != "") != (got.Spec.NodeName != "") {
			mismatches = append(mismatches, fmt.Sprintf("pod %s: simulation said node %q (%s), scheduler said node %q (%s)",
				p.Name, want.Node, want.Reason, got.Spec.NodeName, scheduledMessage(got)))
		}
	}
	if len(mismatches) > 0 && os.Getenv("FIDELITY_DEBUG") != "" {
		for _, n := range snap.Nodes {
			t.Logf("node %s taints=%v cpu=%v pods=%v zone=%v disk=%v", n.Name, n.Spec.Taints, n.Status.Allocatable.Cpu(), n.Status.Allocatable.Pods(), n.Labels[corev1.LabelTopologyZone], n.Labels["disk"])
		}
		for _, p := range snap.Pods {
			if p.Namespace == ns {
				t.Logf("pod %s node=%s labels=%v sel=%v req=%v spread=%v aff=%v ports=%v", p.Name, p.Spec.NodeName, p.Labels, p.Spec.NodeSelector, p.Spec.Containers[0].Resources.Requests.Cpu(), p.Spec.TopologySpreadConstraints, p.Spec.Affinity, p.Spec.Containers[0].Ports)
			}
		}
	}
	if len(mismatches) > 0 {
		t.Errorf("seed %d (replay with FIDELITY_SEED=%d): the simulation disagrees with the scheduler:\n%s",
			seed, seed, strings.Join(mismatches, "\n"))
	}
	if len(otherNode) > 0 {
		t.Logf("seed %d: another node than the scheduler's: %s", seed, strings.Join(otherNode, "; "))
	}
	return fidelity{moving: len(moving), placeable: placeable, sameNode: sameNode, cases: s.cases}
}

// createStorage creates the scenario's classes, CSI limits, volumes and
// claims, deletes the cluster-scoped ones when the test ends, and waits
// until the PV controller has bound the claims it binds.
func createStorage(t *testing.T, c *cluster.Cluster, s *scenario) {
	ctx := cluster.Context(t)
	storage := c.Client.StorageV1()
	for _, sc := range s.classes {
		if _, err := storage.StorageClasses().Create(ctx, sc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = storage.StorageClasses().Delete(context.Background(), sc.Name, metav1.DeleteOptions{}) })
	}
	for _, n := range s.csiNodes {
		if _, err := storage.CSINodes().Create(ctx, n, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { _ = storage.CSINodes().Delete(context.Background(), n.Name, metav1.DeleteOptions{}) })
	}
	for _, pv := range s.pvs {
		if _, err := c.Client.CoreV1().PersistentVolumes().Create(ctx, pv, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() {
			_ = c.Client.CoreV1().PersistentVolumes().Delete(context.Background(), pv.Name, metav1.DeleteOptions{})
		})
	}
	for _, pvc := range s.pvcs {
		if _, err := c.Client.CoreV1().PersistentVolumeClaims(pvc.Namespace).Create(ctx, pvc, metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, name := range s.bound {
		c.WaitFor(t, 60*time.Second, "claim "+name+" to be bound", func(ctx context.Context) (bool, error) {
			pvc, err := c.Client.CoreV1().PersistentVolumeClaims(s.pvcs[0].Namespace).Get(ctx, name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			_, completed := pvc.Annotations["pv.kubernetes.io/bind-completed"]
			return pvc.Status.Phase == corev1.ClaimBound && completed, nil
		})
	}
}

func unschedulable(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled && c.Status == corev1.ConditionFalse && c.Reason == corev1.PodReasonUnschedulable {
			return true
		}
	}
	return false
}

func scheduledMessage(p *corev1.Pod) string {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodScheduled {
			return c.Message
		}
	}
	return "scheduled"
}
