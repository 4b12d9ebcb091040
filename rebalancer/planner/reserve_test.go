package planner

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

const componentsNS = "spot-rebalancer"

// reservation is the reservation of at-risk node for pod, on runsOn
// ("" pending), with pod's requests.
func reservation(node string, pod *corev1.Pod, runsOn string) *corev1.Pod {
	r := reserve.For(node, []*corev1.Pod{pod}, reserve.Options{Namespace: componentsNS})[0]
	r.Name, r.UID = "reservation-"+pod.Name, types.UID("r-"+pod.Name)
	r.Spec.NodeName = runsOn
	if runsOn != "" {
		r.Status.Phase = corev1.PodRunning
	}
	return r
}

func withRequests(cpu string) func(*corev1.Pod) {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse(cpu)
	}
}

func TestReservations(t *testing.T) {
	web0 := rsPod("web", 0, "a", withRequests("3"))
	web1 := rsPod("web", 1, "a", withRequests("3"))
	draining := func(n *corev1.Node) { n.Annotations = map[string]string{signals.AnnotationState: "draining"} }
	tests := map[string]struct {
		nodes     []*corev1.Node
		pods      []*corev1.Pod
		namespace string
		mutate    func(*config.Rebalancer)
		among     []string
		want      []Reservation
		wantReady bool
		// wantReason, when set, is the start of the replacement's reason.
		wantReason string
		// wantSkipped are pods of node a planned as skip.
		wantSkipped []string
	}{
		"a waiting node with no room asks for both pods": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition)},
			pods:  []*corev1.Pod{web0, web1},
			want:  []Reservation{{Pod: "shop/web-h-0"}, {Pod: "shop/web-h-1"}},
		},
		"a pod that fits says where": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition), node("old", "spot-a", now.Add(-time.Hour))},
			pods:  []*corev1.Pod{web0, web1},
			want:  []Reservation{{Pod: "shop/web-h-0", Fits: "old"}, {Pod: "shop/web-h-1", Fits: "old"}},
		},
		"reservations running on a new node make it ready, their room counted free for their pods": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition), node("new", "spot-a", now)},
			pods:  []*corev1.Pod{web0, web1, reservation("a", web0, "new"), reservation("a", web1, "new")},
			want: []Reservation{{Pod: "shop/web-h-0", Name: "reservation-web-h-0", Node: "new", Fits: "new"},
				{Pod: "shop/web-h-1", Name: "reservation-web-h-1", Node: "new", Fits: "new"}},
			wantReady: true, wantReason: "2 reservation(s) running on new Ready node(s)",
		},
		"one reservation still pending: not ready through reservations, but one new node with room is": {
			nodes:     []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition), node("new", "spot-a", now)},
			pods:      []*corev1.Pod{web0, web1, reservation("a", web0, "new"), reservation("a", web1, "")},
			want:      []Reservation{{Pod: "shop/web-h-0", Name: "reservation-web-h-0", Node: "new", Fits: "new"}, {Pod: "shop/web-h-1", Name: "reservation-web-h-1", Fits: "new"}},
			wantReady: true,
		},
		"running on an old node is not a replacement": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition), node("old", "spot-a", now.Add(-time.Hour))},
			pods:  []*corev1.Pod{web0, reservation("a", web0, "old")},
			want:  []Reservation{{Pod: "shop/web-h-0", Name: "reservation-web-h-0", Node: "old", Fits: "old"}},
		},
		// The second node of a pool to drain needs two new nodes by count;
		// its reservations show the one new node holds its room.
		"reservations beat the count of new nodes": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition), node("b", "spot-a", now.Add(-time.Hour), rebalanceCondition, draining),
				node("new", "spot-a", now)},
			pods:      []*corev1.Pod{web0, reservation("a", web0, "new")},
			among:     []string{"a"},
			want:      []Reservation{{Pod: "shop/web-h-0", Name: "reservation-web-h-0", Node: "new", Fits: "new"}},
			wantReady: true, wantReason: "1 reservation(s) running on new Ready node(s)",
		},
		"another node's reservation holds its room": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition), node("b", "spot-a", now.Add(-time.Hour), rebalanceCondition),
				node("new", "spot-a", now, func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("4") })},
			pods:  []*corev1.Pod{web0, rsPod("api", 0, "b", withRequests("3")), reservation("b", rsPod("api", 0, "b", withRequests("3")), "new")},
			among: []string{"a"},
			want:  []Reservation{{Pod: "shop/web-h-0"}},
		},
		"a reservation outside the components' namespace is not trusted": {
			nodes:     []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition), node("new", "spot-a", now, func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("4") })},
			pods:      []*corev1.Pod{web0, reservation("a", web0, "new")},
			namespace: "elsewhere",
			want:      []Reservation{{Pod: "shop/web-h-0"}},
		},
		"a reservation on an at-risk node is skipped, not a blocker": {
			nodes:       []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition), node("old", "spot-a", now.Add(-time.Hour))},
			pods:        []*corev1.Pod{web0, reservation("b", web1, "a")},
			want:        []Reservation{{Pod: "shop/web-h-0", Fits: "old"}},
			wantSkipped: []string{"reservation-web-h-1"},
		},
		"provision none asks for nothing": {
			nodes:  []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition)},
			pods:   []*corev1.Pod{web0},
			mutate: func(c *config.Rebalancer) { c.Replacement.Provision = config.ProvisionNone },
			want:   []Reservation{},
		},
		"a draining node holds none": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition, draining)},
			pods:  []*corev1.Pod{web0},
			want:  []Reservation{},
		},
		"an interruption asks for room for the pod that fits nowhere at once, and never waits": {
			nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), func(n *corev1.Node) {
				n.Spec.Taints = []corev1.Taint{{Key: signals.TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule}}
			})},
			pods:      []*corev1.Pod{web0},
			want:      []Reservation{{Pod: "shop/web-h-0"}},
			wantReady: true, wantReason: "an interruption notice never waits for a replacement; 1 reservation(s) ask for room",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			objs := snapshot.Objects{Nodes: tc.nodes, Pods: tc.pods, Namespace: componentsNS}
			if tc.namespace != "" {
				objs.Namespace = tc.namespace
			}
			c := cfg()
			if tc.mutate != nil {
				tc.mutate(c)
			}
			plan, err := New(snapshot.New(now, objs), Options{Config: c, Among: tc.among})
			if err != nil {
				t.Fatal(err)
			}
			np := plan.Nodes[0]
			if np.Name != "a" {
				t.Fatalf("first node planned = %s, want a", np.Name)
			}
			if diff := cmp.Diff(tc.want, np.Replacement.Reservations); diff != "" {
				t.Errorf("reservations (-want +got):\n%s", diff)
			}
			if np.Replacement.Ready != tc.wantReady {
				t.Errorf("ready = %v (%s), want %v", np.Replacement.Ready, np.Replacement.Reason, tc.wantReady)
			}
			if !strings.HasPrefix(np.Replacement.Reason, tc.wantReason) {
				t.Errorf("reason %q, want it to start with %q", np.Replacement.Reason, tc.wantReason)
			}
			var skipped []string
			for _, p := range np.Pods {
				if p.Action == ActionSkip {
					skipped = append(skipped, p.Name)
				}
			}
			if diff := cmp.Diff(tc.wantSkipped, skipped); diff != "" {
				t.Errorf("skipped (-want +got):\n%s", diff)
			}
		})
	}
}
