package decide

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// reserved adds a reservation of the at-risk node for pod (namespace
// shop), named name, running on runsOn ("" pending).
func (c *cluster) reserved(name, pod, runsOn string, mods ...func(*corev1.Pod)) *cluster {
	var of *corev1.Pod
	for _, p := range c.pods {
		if p.Name == pod {
			of = p
		}
	}
	if of == nil { // a pod that is gone
		of = &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: pod, Namespace: "shop"}}
	}
	r := reserve.For(c.risky.Name, []*corev1.Pod{of}, reserve.Options{Namespace: componentsNS})[0]
	r.Name, r.UID, r.Spec.NodeName = name, types.UID(name), runsOn
	if runsOn != "" {
		r.Status.Phase = corev1.PodRunning
	}
	for _, m := range mods {
		m(r)
	}
	c.pods = append(c.pods, r)
	return c
}

func fiveCPU(p *corev1.Pod) {
	p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("5")
}

func TestReservationsFollowTheNode(t *testing.T) {
	signalled := now.Add(-time.Minute)
	// Two pods of 5 CPUs on the at-risk node; the other node (8 CPUs)
	// holds the third: no room for them.
	waiting := func() *cluster {
		return newCluster().rebalance(signalled).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).deploy("web", 3, 2, fiveCPU)
	}
	// big is a new node with room for both.
	big := func(c *cluster) *cluster {
		c.replacement("new", now)
		c.nodeNamed("new").Status.Allocatable[corev1.ResourceCPU] = resource.MustParse("16")
		return c
	}
	type want struct {
		State signals.State
		// Reserve are the pods reservations are created for; Unreserve the
		// reservations deleted.
		Reserve, Unreserve []string
	}
	tests := map[string]struct {
		cluster func() *cluster
		edit    func(*Input)
		want    want
	}{
		"a new signal asks for the room of the pods that must move at once": {
			cluster: func() *cluster { return newCluster().rebalance(signalled).deploy("web", 3, 2, fiveCPU) },
			want:    want{State: signals.StateAtRisk, Reserve: []string{"shop/web-h-0", "shop/web-h-1"}},
		},
		"while it waits, only the missing one is created": {
			cluster: func() *cluster { return waiting().reserved("r0", "web-h-0", "") },
			want:    want{Reserve: []string{"shop/web-h-1"}},
		},
		"one for a pod that left the node goes, and a duplicate": {
			cluster: func() *cluster {
				return waiting().reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "").reserved("r1b", "web-h-1", "").reserved("gone", "web-h-9", "")
			},
			want: want{Unreserve: []string{"gone", "r1b"}},
		},
		"one bound to the at-risk node itself holds nothing: removed and made again": {
			cluster: func() *cluster { return waiting().reserved("r0", "web-h-0", "risky").reserved("r1", "web-h-1", "") },
			want:    want{Reserve: []string{"shop/web-h-0"}, Unreserve: []string{"r0"}},
		},
		"one bound to another node that is going is made again": {
			cluster: func() *cluster {
				c := waiting().replacement("cordoned", now.Add(-time.Hour))
				c.nodeNamed("cordoned").Spec.Unschedulable = true
				return c.reserved("r0", "web-h-0", "cordoned").reserved("r1", "web-h-1", "")
			},
			want: want{Reserve: []string{"shop/web-h-0"}, Unreserve: []string{"r0"}},
		},
		"the wait times out with onTimeout uncordon: they go": {
			cluster: func() *cluster {
				c := waiting()
				c.config.Replacement.OnTimeout = "uncordon"
				c.risky.Status.Conditions[1].LastTransitionTime = metav1.NewTime(now.Add(-time.Hour))
				return c.reserved("r0", "web-h-0", "")
			},
			want: want{State: signals.StateBlocked, Unreserve: []string{"r0"}},
		},
		"a terminating one is neither counted nor deleted again": {
			cluster: func() *cluster {
				return waiting().reserved("r0", "web-h-0", "", func(p *corev1.Pod) { p.DeletionTimestamp = new(metav1.NewTime(now)) }).reserved("r1", "web-h-1", "")
			},
			want: want{Reserve: []string{"shop/web-h-0"}},
		},
		"running on a new node: the node drains and they go just before the pods move": {
			cluster: func() *cluster {
				return big(waiting()).reserved("r0", "web-h-0", "new").reserved("r1", "web-h-1", "new")
			},
			want: want{State: signals.StateDraining, Unreserve: []string{"r0", "r1"}},
		},
		"a create refused a moment ago: none is tried now, those there stay": {
			cluster: func() *cluster { return waiting().reserved("r0", "web-h-0", "") },
			edit:    func(in *Input) { in.HoldReservations = true },
			want:    want{},
		},
		"queued behind another drain of the pool, they stay": {
			cluster: func() *cluster {
				return big(waiting()).reserved("r0", "web-h-0", "new").reserved("r1", "web-h-1", "new")
			},
			edit: func(in *Input) { in.Draining = 1 },
			want: want{State: signals.StateAwaitingReplacement},
		},
		"the signal goes: they go": {
			cluster: func() *cluster {
				c := waiting().reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "")
				c.risky.Status.Conditions = c.risky.Status.Conditions[:1]
				return c
			},
			want: want{Unreserve: []string{"r0", "r1"}},
		},
		"the wait times out: they go": {
			cluster: func() *cluster {
				c := newCluster().rebalance(now.Add(-time.Hour)).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).deploy("web", 3, 2, fiveCPU)
				return c.reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "")
			},
			want: want{State: signals.StateBlocked, Unreserve: []string{"r0", "r1"}},
		},
		"a draining node keeps none": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).deploy("web", 3, 2, fiveCPU).reserved("r0", "web-h-0", "")
			},
			want: want{Unreserve: []string{"r0"}},
		},
		"a drained node keeps none": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateDrained, signals.ReasonDrained).reserved("late", "web-h-0", "")
			},
			want: want{Unreserve: []string{"late"}},
		},
		"provision none creates none and removes what an earlier setting left": {
			cluster: func() *cluster {
				c := waiting().reserved("r0", "web-h-0", "")
				c.config.Replacement.Provision = "none"
				return c
			},
			want: want{Unreserve: []string{"r0"}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := tc.cluster().input(t, now)
			if tc.edit != nil {
				tc.edit(&in)
			}
			d := Node(in)
			var got want
			if d.Transition != nil {
				got.State = d.Transition.State
			}
			for _, r := range d.Reserve {
				got.Reserve = append(got.Reserve, r.Annotations[reserve.AnnotationPod])
				if r.Namespace != componentsNS || !reserve.Holds(r, "risky") {
					t.Errorf("reservation %s/%s does not hold room for node risky in %s", r.Namespace, r.Annotations[reserve.AnnotationPod], componentsNS)
				}
			}
			for _, r := range d.Unreserve {
				got.Unreserve = append(got.Unreserve, r.Name)
			}
			if tc.want.State == "" {
				got.State = "" // only the reservations are compared
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}
