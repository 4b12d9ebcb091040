package decide

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// The interruption notice on autoscaled capacity: room asked for at the
// notice, each pod moved as soon as its room is there, each deleted at its
// own latest start, and a node Karpenter drains left to it.
func TestInterruptionOnAutoscaledCapacity(t *testing.T) {
	end := now.Add(100 * time.Second)
	// notice: the at-risk node got its notice 20 s ago; web has 2 pods of
	// 5 CPUs there and one on "other" (8 CPUs): no room for them.
	notice := func(s signals.State, r signals.Reason) func() *cluster {
		return func() *cluster {
			c := newCluster().interrupt(now.Add(-20*time.Second), end.Format(time.RFC3339)).deploy("web", 3, 2, fiveCPU)
			if s != "" {
				c.state(s, r)
			}
			return c
		}
	}
	draining := func() *cluster {
		c := notice(signals.StateDraining, signals.ReasonInterruption)()
		c.risky.Spec.Taints = []corev1.Taint{{Key: signals.TaintDraining, Value: "draining", Effect: corev1.TaintEffectNoSchedule}}
		c.risky.Spec.Unschedulable = true
		return c
	}
	// roomFor adds a new node "new" with room for n pods of 5 CPUs.
	roomFor := func(c *cluster, n int) *cluster {
		c.replacement("new", now)
		c.nodeNamed("new").Status.Allocatable[corev1.ResourceCPU] = resource.MustParse(map[int]string{1: "6", 2: "12"}[n])
		return c
	}
	karpenterDeletes := func(c *cluster) *cluster {
		c.risky.DeletionTimestamp = new(metav1.NewTime(now))
		c.risky.Finalizers = []string{planner.KarpenterTerminationFinalizer}
		return c
	}
	type want struct {
		Outcome outcome
		// Reserve are the pods reservations are created for; Unreserve the
		// reservations deleted.
		Reserve, Unreserve []string
		// Exclude: the transition labels the node for load balancers.
		Exclude bool
	}
	tests := map[string]struct {
		cluster func() *cluster
		config  func(*config.Rebalancer)
		at      time.Time
		want    want
	}{
		"at the notice, room is asked for every pod that fits nowhere, with the first taint": {
			cluster: notice("", ""),
			want: want{Outcome: outcome{State: signals.StateAtRisk, Reason: signals.ReasonSignalled, Taint: true},
				Reserve: []string{"shop/web-h-0", "shop/web-h-1"}},
		},
		"the node drains at once, keeping off load balancers, and keeps its reservations": {
			cluster: func() *cluster {
				return notice(signals.StateAtRisk, signals.ReasonSignalled)().reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "")
			},
			want: want{Outcome: outcome{State: signals.StateDraining, Reason: signals.ReasonInterruption, Taint: true, Cordon: true}, Exclude: true},
		},
		"excludeFromLoadBalancers false leaves load balancers alone": {
			cluster: notice(signals.StateAtRisk, signals.ReasonSignalled),
			config:  func(c *config.Rebalancer) { c.ExcludeFromLoadBalancers = ptr.To(false) },
			want: want{Outcome: outcome{State: signals.StateDraining, Reason: signals.ReasonInterruption, Taint: true, Cordon: true},
				Reserve: []string{"shop/web-h-0", "shop/web-h-1"}},
		},
		"while nothing has room, the node says it waits for room": {
			cluster: func() *cluster { return draining().reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "") },
			want: want{Outcome: outcome{State: signals.StateDraining, Reason: signals.ReasonWaitingForRoom, Taint: true, Cordon: true,
				RequeueIn: time.Second}, Exclude: true},
		},
		"one reservation runs on a new node: its pod is evicted there, and keeps the reservation until it is gone": {
			cluster: func() *cluster {
				return roomFor(draining(), 1).reserved("r0", "web-h-0", "new").reserved("r1", "web-h-1", "")
			},
			want: want{Outcome: outcome{Evict: []string{"web-h-0"}, RequeueIn: time.Second}},
		},
		"its pod gone, its reservation goes and the next pod takes the room it held": {
			cluster: func() *cluster {
				c := roomFor(draining(), 1).reserved("r0", "web-h-0", "new").reserved("r1", "web-h-1", "")
				c.pods = c.pods[1:] // web-h-0 is gone
				return c
			},
			want: want{Outcome: outcome{Evict: []string{"web-h-1"}, RequeueIn: time.Second}, Unreserve: []string{"r0"}},
		},
		"a pod whose latest start came while it could be evicted is deleted with its grace instead": {
			cluster: func() *cluster { return roomFor(draining(), 2) },
			at:      end.Add(-30 * time.Second),
			want:    want{Outcome: outcome{Delete: map[string]int64{"web-h-0": 30, "web-h-1": 30}, RequeueIn: time.Second}},
		},
		"a pod that fits elsewhere without a reservation is evicted and asks for nothing": {
			cluster: func() *cluster { return roomFor(draining(), 2) },
			want:    want{Outcome: outcome{Evict: []string{"web-h-0", "web-h-1"}, RequeueIn: time.Second}},
		},
		"a pod whose latest start has come is deleted with the grace period left before the termination time": {
			cluster: func() *cluster {
				c := draining().reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "")
				c.pods[0].Spec.TerminationGracePeriodSeconds = ptr.To[int64](60)
				return c
			},
			at: end.Add(-50 * time.Second),
			want: want{Outcome: outcome{State: signals.StateDraining, Reason: signals.ReasonWaitingForRoom, Taint: true, Cordon: true,
				Delete: map[string]int64{"web-h-0": 50}, RequeueIn: time.Second}, Exclude: true},
		},
		"forceAtDeadline false deletes nothing early either": {
			cluster: func() *cluster {
				c := draining().reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "")
				c.pods[0].Spec.TerminationGracePeriodSeconds = ptr.To[int64](60)
				return c
			},
			config: func(c *config.Rebalancer) { c.ForceAtDeadline = ptr.To(false) },
			at:     end.Add(-50 * time.Second),
			want: want{Outcome: outcome{State: signals.StateDraining, Reason: signals.ReasonWaitingForRoom, Taint: true, Cordon: true,
				RequeueIn: time.Second}, Exclude: true},
		},
		"at the deadline what is left goes and the reservations with it": {
			cluster: func() *cluster { return draining().reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "") },
			at:      end.Add(-15 * time.Second),
			want: want{Outcome: outcome{State: signals.StateDrained, Reason: signals.ReasonDeadline, Taint: true, Cordon: true,
				Delete: map[string]int64{"web-h-0": 15, "web-h-1": 15}}, Unreserve: []string{"r0", "r1"}, Exclude: true},
		},
		"Karpenter deletes the node: it is left to Karpenter, its reservations go, nothing is evicted": {
			cluster: func() *cluster {
				return karpenterDeletes(roomFor(draining(), 2)).reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "")
			},
			want: want{Outcome: outcome{State: signals.StateDraining, Reason: signals.ReasonDrainedByKarpenter, Taint: true, Cordon: true,
				RequeueIn: 30 * time.Second}, Unreserve: []string{"r0", "r1"}, Exclude: true},
		},
		"left to Karpenter, nothing is deleted at the deadline either": {
			cluster: func() *cluster {
				c := karpenterDeletes(draining()).state(signals.StateDraining, signals.ReasonDrainedByKarpenter)
				c.risky.Annotations[signals.AnnotationStateReason] = "karpenter drains the node (its NodeClaim is being deleted): its pods are left to it"
				return c
			},
			at:   end.Add(-10 * time.Second),
			want: want{Outcome: outcome{RequeueIn: 30 * time.Second}},
		},
		"Karpenter calls its drain off: the node drains as usual again": {
			cluster: func() *cluster {
				return roomFor(draining(), 2).state(signals.StateDraining, signals.ReasonDrainedByKarpenter)
			},
			want: want{Outcome: outcome{Evict: []string{"web-h-0", "web-h-1"}, RequeueIn: time.Second}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := tc.cluster()
			if tc.config != nil {
				tc.config(&c.config)
			}
			at := now
			if !tc.at.IsZero() {
				at = tc.at
			}
			d := Node(c.input(t, at))
			got := want{Outcome: summarize(d)}
			for _, r := range d.Reserve {
				got.Reserve = append(got.Reserve, r.Annotations[reserve.AnnotationPod])
			}
			for _, r := range d.Unreserve {
				got.Unreserve = append(got.Unreserve, r.Name)
			}
			slices.Sort(got.Unreserve)
			got.Exclude = d.Transition != nil && d.Transition.ExcludeFromLoadBalancers
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
		})
	}
}

// With provision asg an interruption notice asks the group for nothing:
// a raise would have to be undone after EC2 reclaims the instance, a race
// the decrement can lose; Auto Scaling replaces the reclaimed instance.
func TestInterruptionDoesNotRaiseTheGroup(t *testing.T) {
	end := now.Add(100 * time.Second).Format(time.RFC3339)
	c := newCluster().interrupt(now.Add(-20*time.Second), end).deploy("web", 3, 2, fiveCPU)
	c.config.Replacement.Provision = config.ProvisionASG
	in := c.input(t, now)
	if WantsGroup(in) {
		t.Errorf("an interruption reads its group")
	}
	in.Group = &asg.Group{Name: "spot-a", Desired: 3, Max: 5}
	if r := Node(in).Raise; r != nil {
		t.Errorf("an interruption raised its group: %+v", r)
	}
}

// A node Karpenter drains while a rebalance recommendation waits for its
// replacement waits on, holding nothing; if Karpenter calls its drain off,
// it waits for its replacement as before, and never drains without one.
func TestARebalanceLeftToKarpenterWaitsOn(t *testing.T) {
	waiting := func() *cluster {
		return newCluster().rebalance(now.Add(-time.Minute)).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).
			deploy("web", 3, 2, fiveCPU).reserved("r0", "web-h-0", "").reserved("r1", "web-h-1", "")
	}
	t.Run("Karpenter deletes it: awaiting-replacement, left to Karpenter, reservations gone", func(t *testing.T) {
		c := waiting()
		c.risky.DeletionTimestamp = new(metav1.NewTime(now))
		c.risky.Finalizers = []string{planner.KarpenterTerminationFinalizer}
		d := Node(c.input(t, now))
		got := summarize(d)
		want := outcome{State: signals.StateAwaitingReplacement, Reason: signals.ReasonDrainedByKarpenter, Taint: true, RequeueIn: 30 * time.Second}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("decision (-want +got):\n%s", diff)
		}
		if len(d.Unreserve) != 2 || len(d.Reserve) != 0 {
			t.Errorf("reservations: %d created, %d deleted; want none created and both deleted", len(d.Reserve), len(d.Unreserve))
		}
	})
	t.Run("Karpenter calls it off: it waits for its replacement again", func(t *testing.T) {
		c := waiting().state(signals.StateAwaitingReplacement, signals.ReasonDrainedByKarpenter)
		got := summarize(Node(c.input(t, now)))
		if got.State != signals.StateAwaitingReplacement || got.Reason != signals.ReasonAwaitingReplacement || len(got.Evict) > 0 {
			t.Errorf("decision %+v, want awaiting-replacement (AwaitingReplacement) and no eviction", got)
		}
	})
}

// An interrupted node is looked at again by the next pod's latest start,
// even while a PodDisruptionBudget's 429 holds its evictions longer.
func TestAnInterruptedNodeIsLookedAtByTheNextLatestStart(t *testing.T) {
	end := now.Add(100 * time.Second)
	c := newCluster().interrupt(now.Add(-20*time.Second), end.Format(time.RFC3339)).state(signals.StateDraining, signals.ReasonInterruption).
		deploy("web", 3, 2)
	c.risky.Spec.Taints = []corev1.Taint{{Key: signals.TaintDraining, Value: "draining", Effect: corev1.TaintEffectNoSchedule}}
	// The pods' latest start: 30 s before the end, 3 s from the look.
	at := end.Add(-33 * time.Second)
	in := c.input(t, at)
	in.Backoff = 10 * time.Second
	if got := Node(in).Requeue; got != 3*time.Second {
		t.Errorf("looked at again in %s, want 3s (the next latest start)", got)
	}
}

// Drained at an interruption, a pod still terminating keeps its
// reservation until it is gone; the others go.
func TestADrainedInterruptedNodeKeepsTheReservationsOfPodsStillThere(t *testing.T) {
	c := newCluster().interrupt(now.Add(-20*time.Second), now.Add(100*time.Second).Format(time.RFC3339)).
		state(signals.StateDrained, signals.ReasonDrained).deploy("web", 3, 2, fiveCPU).
		reserved("r0", "web-h-0", "new").reserved("r1", "web-h-1", "new")
	in := c.input(t, now)
	in.Retirement = &Retirement{PodsLeft: []string{"shop/web-h-0"}}
	var removed []string
	for _, r := range Node(in).Unreserve {
		removed = append(removed, r.Name)
	}
	if diff := cmp.Diff([]string{"r1"}, removed); diff != "" {
		t.Errorf("reservations deleted (-want +got):\n%s", diff)
	}
}
