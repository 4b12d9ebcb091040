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
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/simulation"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// fidelityScenarios is how many generated scenarios the test checks.
const fidelityScenarios = 40

// minSameNodePercent is how often the predicted destination must be the
// scheduler's own choice.
const minSameNodePercent = 90

type fidelity struct{ moving, placeable, sameNode int }

// The simulation must agree with the real kube-scheduler on which pods of
// a drained node can be placed. A seeded generator builds varied scenarios
// (taints, node selectors, anti-affinity, affinity, zone spread, host ports,
// tight CPU and pod counts); for each, the simulation predicts, then the
// test cordons the node, deletes its pods and creates them again (largest
// first, as the simulation places them) for the real scheduler, and
// compares. A failure names the seed: FIDELITY_SEED=<seed> replays it;
// FIDELITY_BASE=<seed> runs the 40 scenarios from another first seed.
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
	var sum fidelity
	for i := range scenarios {
		seed := base + uint64(i)
		t.Run(fmt.Sprintf("seed-%d", seed), func(t *testing.T) {
			f := runScenario(t, c, seed)
			sum.moving += f.moving
			sum.placeable += f.placeable
			sum.sameNode += f.sameNode
		})
	}
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
}

func generate(seed uint64, owner, ns string) *scenario {
	r := rand.New(rand.NewPCG(seed, seed^0x9e3779b97f4a7c15))
	zones := []string{"us-east-1a", "us-east-1b", "us-east-1c"}
	spotTaint := corev1.Taint{Key: "spot", Value: "true", Effect: corev1.TaintEffectNoSchedule}
	s := &scenario{risky: fmt.Sprintf("%s-risky", owner)}
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
	return fidelity{moving: len(moving), placeable: placeable, sameNode: sameNode}
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
