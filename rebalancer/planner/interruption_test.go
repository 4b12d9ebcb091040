package planner

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// termination is when the interrupted node of these stories is reclaimed.
var termination = now.Add(100 * time.Second)

// interrupted gives a node an interruption notice ending at termination,
// received 20 s ago, of instance type c5.xlarge in zone z1.
func interrupted(n *corev1.Node) {
	n.Labels[corev1.LabelInstanceTypeStable], n.Labels[corev1.LabelTopologyZone] = "c5.xlarge", "z1"
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionInterruption, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.NewTime(now.Add(-20 * time.Second))})
	n.Annotations = map[string]string{signals.AnnotationTerminationTime: termination.Format(time.RFC3339)}
}

func stateOn(s signals.State) func(*corev1.Node) {
	return func(n *corev1.Node) { n.Annotations[signals.AnnotationState] = string(s) }
}

// karpenterDeletes is a node whose NodeClaim Karpenter deleted: the Node
// is deleted and held by Karpenter's termination finalizer.
func karpenterDeletes(n *corev1.Node) {
	n.DeletionTimestamp = new(metav1.NewTime(now))
	n.Finalizers = []string{KarpenterTerminationFinalizer}
}

func grace(seconds int64) func(*corev1.Pod) {
	return func(p *corev1.Pod) { p.Spec.TerminationGracePeriodSeconds = ptr.To(seconds) }
}

// An interruption notice asks for room at once for what fits nowhere and
// cannot surge, surges a Deployment even into capacity that is not there
// yet, and leaves a node Karpenter drains to Karpenter.
func TestInterruptionAsksAtTheNotice(t *testing.T) {
	web, webRS := deployment("web", 2)
	type podWant struct {
		Action       Action
		WaitsForRoom bool
	}
	tests := map[string]struct {
		nodes  []*corev1.Node
		pods   []*corev1.Pod
		surge  bool
		mutate func(*config.Rebalancer)
		// wantPods by name; wantReservations the pods room is asked for.
		wantPods         map[string]podWant
		wantReservations []Reservation
		wantSurges       int
		wantDrainedBy    string
	}{
		"a pod that fits nowhere and may not surge waits for room, and a reservation asks for it": {
			nodes:            []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted)},
			pods:             []*corev1.Pod{rsPod("web", 0, "a", withRequests("3"))},
			wantPods:         map[string]podWant{"web-h-0": {ActionBlocked, true}},
			wantReservations: []Reservation{{Pod: "shop/web-h-0"}},
		},
		"a pod that fits elsewhere is evicted and asks for nothing": {
			nodes:            []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted), node("old", "spot-a", now.Add(-time.Hour))},
			pods:             []*corev1.Pod{rsPod("web", 0, "a", withRequests("3"))},
			wantPods:         map[string]podWant{"web-h-0": {ActionEvict, false}},
			wantReservations: []Reservation{},
		},
		"once its reservation runs on a new node, the pod moves there and keeps it until it has": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted, stateOn(signals.StateDraining)),
				node("new", "spot-a", now, func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("3") })},
			pods:             []*corev1.Pod{rsPod("web", 0, "a", withRequests("3")), reservation("a", rsPod("web", 0, "a", withRequests("3")), "new")},
			wantPods:         map[string]podWant{"web-h-0": {ActionEvict, false}},
			wantReservations: []Reservation{{Pod: "shop/web-h-0", Name: "reservation-web-h-0", Node: "new", Fits: "new"}},
		},
		"a Deployment surges into capacity that is coming: its Pending pods ask, no reservation does": {
			nodes:            []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted)},
			pods:             []*corev1.Pod{rsPod("web", 0, "a", withRequests("3")), rsPod("web", 1, "a", withRequests("3"))},
			surge:            true,
			wantPods:         map[string]podWant{"web-h-0": {ActionSurge, true}, "web-h-1": {ActionSurge, true}},
			wantReservations: []Reservation{},
			wantSurges:       1,
		},
		"opted out of surges, its pods wait for room with a reservation each": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted)},
			pods:  []*corev1.Pod{rsPod("web", 0, "a", withRequests("3")), rsPod("web", 1, "a", withRequests("3"))},
			mutate: func(c *config.Rebalancer) {
				c.Surge.Enabled = ptr.To(false)
			},
			surge:            true,
			wantPods:         map[string]podWant{"web-h-0": {ActionBlocked, true}, "web-h-1": {ActionBlocked, true}},
			wantReservations: []Reservation{{Pod: "shop/web-h-0"}, {Pod: "shop/web-h-1"}},
		},
		"replacement mode none asks for nothing": {
			nodes:            []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted)},
			pods:             []*corev1.Pod{rsPod("web", 0, "a", withRequests("3"))},
			mutate:           func(c *config.Rebalancer) { c.Replacement.Mode = config.ReplacementNone },
			wantPods:         map[string]podWant{"web-h-0": {ActionBlocked, true}},
			wantReservations: []Reservation{},
		},
		"a node Karpenter deletes is left to it: its pods skipped, nothing asked, nothing surged": {
			nodes:            []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted, karpenterDeletes)},
			pods:             []*corev1.Pod{rsPod("web", 0, "a", withRequests("3")), rsPod("web", 1, "a", withRequests("3"))},
			surge:            true,
			wantPods:         map[string]podWant{"web-h-0": {ActionSkip, false}, "web-h-1": {ActionSkip, false}},
			wantReservations: []Reservation{},
			wantDrainedBy:    DrainerKarpenter,
		},
		"Karpenter's disrupted taint alone is not believed (the node can write it): the node drains as usual": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted, func(n *corev1.Node) {
				n.Spec.Taints = []corev1.Taint{{Key: "karpenter.sh/disrupted", Effect: corev1.TaintEffectNoSchedule}}
			})},
			pods:             []*corev1.Pod{rsPod("web", 0, "a", withRequests("3"))},
			wantPods:         map[string]podWant{"web-h-0": {ActionBlocked, true}},
			wantReservations: []Reservation{{Pod: "shop/web-h-0"}},
		},
		"a pod leaving keeps its reservation until it is gone (a StatefulSet makes its next pod only then)": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted, stateOn(signals.StateDraining)),
				node("new", "spot-a", now, func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("3") })},
			pods:             []*corev1.Pod{rsPod("web", 0, "a", withRequests("3"), terminating), reservation("a", rsPod("web", 0, "a", withRequests("3")), "new")},
			wantPods:         map[string]podWant{"web-h-0": {ActionSkip, false}},
			wantReservations: []Reservation{{Pod: "shop/web-h-0", Name: "reservation-web-h-0", Node: "new"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			objs := snapshot.Objects{Nodes: tc.nodes, Pods: tc.pods, Namespace: componentsNS}
			if tc.surge {
				objs.Deployments, objs.ReplicaSets = []*appsv1.Deployment{web}, []*appsv1.ReplicaSet{webRS}
			}
			c := cfg()
			if tc.mutate != nil {
				tc.mutate(c)
			}
			plan, err := New(snapshot.New(now, objs), Options{Config: c})
			if err != nil {
				t.Fatal(err)
			}
			np := plan.Nodes[0]
			got := map[string]podWant{}
			for _, pp := range np.Pods {
				if pp.Namespace != componentsNS { // not the reservations
					got[pp.Name] = podWant{pp.Action, pp.WaitsForRoom}
				}
			}
			if diff := cmp.Diff(tc.wantPods, got); diff != "" {
				t.Errorf("pods (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantReservations, np.Replacement.Reservations); diff != "" {
				t.Errorf("reservations (-want +got):\n%s", diff)
			}
			if len(plan.Surges) != tc.wantSurges {
				t.Errorf("%d surges, want %d", len(plan.Surges), tc.wantSurges)
			}
			if np.DrainedBy != tc.wantDrainedBy {
				t.Errorf("drained by %q, want %q", np.DrainedBy, tc.wantDrainedBy)
			}
			if !np.Replacement.Ready {
				t.Errorf("an interruption waits for its replacement: %s", np.Replacement.Reason)
			}
		})
	}
}

// Each pod still on the node at the end gets its own grace period before
// the termination time, within bounds, and none is deleted after the
// node's deadline.
func TestLatestStart(t *testing.T) {
	tests := map[string]struct {
		pod  func(*corev1.Pod)
		want time.Time
	}{
		"the default 30 s grace period: deleted 30 s before the termination time": {pod: func(*corev1.Pod) {}, want: termination.Add(-30 * time.Second)},
		"a 45 s grace period starts 45 s before":                                  {pod: grace(45), want: termination.Add(-45 * time.Second)},
		"a 10 minute grace period is capped at maxGraceAtDeadline (1m)":           {pod: grace(600), want: termination.Add(-time.Minute)},
		"a 2 s grace period still goes no later than the deadline (15 s before)":  {pod: grace(2), want: termination.Add(-15 * time.Second)},
		"a 0 s grace period gets the least, and the deadline":                     {pod: grace(0), want: termination.Add(-15 * time.Second)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			snap := snapshot.New(now, snapshot.Objects{Nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted)},
				Pods: []*corev1.Pod{rsPod("web", 0, "a", tc.pod)}})
			plan, err := New(snap, Options{Config: cfg()})
			if err != nil {
				t.Fatal(err)
			}
			got := plan.Nodes[0].Pods[0].LatestStart
			if got == nil || !got.Equal(tc.want) {
				t.Errorf("latest start %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("a rebalance recommendation has no deadline, so no latest start", func(t *testing.T) {
		snap := snapshot.New(now, snapshot.Objects{Nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition)},
			Pods: []*corev1.Pod{rsPod("web", 0, "a")}})
		plan, err := New(snap, Options{Config: cfg()})
		if err != nil {
			t.Fatal(err)
		}
		if got := plan.Nodes[0].Pods[0].LatestStart; got != nil {
			t.Errorf("latest start %v, want none", got)
		}
	})
}

// Reservations keep off the offering being reclaimed, and the plan says
// when a pod's own constraints leave no other.
func TestReservationsSayWhenTheyCannotAvoidTheOffering(t *testing.T) {
	pinned := func(p *corev1.Pod) {
		p.Spec.NodeSelector = map[string]string{corev1.LabelInstanceTypeStable: "c5.xlarge", corev1.LabelTopologyZone: "z1"}
	}
	snap := snapshot.New(now, snapshot.Objects{Nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), interrupted)},
		Pods: []*corev1.Pod{rsPod("free", 0, "a", withRequests("3")), rsPod("pinned", 0, "a", withRequests("3"), pinned)}})
	plan, err := New(snap, Options{Config: cfg()})
	if err != nil {
		t.Fatal(err)
	}
	r := plan.Nodes[0].Replacement
	want := []Reservation{{Pod: "shop/free-h-0"},
		{Pod: "shop/pinned-h-0", Note: "cannot keep off c5.xlarge in z1: the pod's own node constraints (or its volumes) allow only it"}}
	if diff := cmp.Diff(want, r.Reservations); diff != "" {
		t.Errorf("reservations (-want +got):\n%s", diff)
	}
	if diff := cmp.Diff(&reserve.Offering{InstanceType: "c5.xlarge", Zone: "z1"}, r.Avoid); diff != "" {
		t.Errorf("avoided offering (-want +got):\n%s", diff)
	}
}
