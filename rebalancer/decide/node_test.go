package decide

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func doNotEvict(p *corev1.Pod) { p.Annotations[signals.AnnotationDoNotEvict] = "true" }

func bigCPU(p *corev1.Pod) {
	p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("9")
}

func surging(c *cluster, phase string, replicas int32, ready int) Surge {
	d := c.deployments[0]
	return Surge{Deployment: d, Replicas: replicas, ReadyElsewhere: ready, Marked: []string{"web-h-0", "web-h-1"},
		Record: &signals.SurgeState{Node: "risky", From: 4, To: 6, Phase: phase, Since: now.Add(-20 * time.Second), Pods: []string{"web-h-0", "web-h-1"}}}
}

func TestNode(t *testing.T) {
	signalled := now.Add(-time.Minute)
	// A drain whose PDB granted the eviction of web-h-1 20 s ago (it is in
	// status.disruptedPods), and whose delete never came.
	granted := func() *cluster {
		c := newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).
			deploy("web", 4, 3).pdb("web", 0, 4, 3).replacement("new", now)
		c.pdbs[0].Status.DisruptedPods = map[string]metav1.Time{"web-h-1": metav1.NewTime(now.Add(-20 * time.Second))}
		return c
	}
	tests := map[string]struct {
		cluster func() *cluster
		// edit changes what was gathered.
		edit func(*Input, *cluster)
		want outcome
	}{
		"a new signal is recorded as at-risk, tainted": {
			cluster: func() *cluster { return newCluster().rebalance(signalled) },
			want:    outcome{State: signals.StateAtRisk, Reason: signals.ReasonSignalled, Taint: true},
		},
		"an interruption never waits for a replacement": {
			cluster: func() *cluster {
				return newCluster().interrupt(now.Add(-10*time.Second), "").state(signals.StateAtRisk, signals.ReasonSignalled)
			},
			want: outcome{State: signals.StateDraining, Reason: signals.ReasonInterruption, Taint: true, Cordon: true},
		},
		"a rebalance waits for a new node of its pool and looks again within 2s": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateAtRisk, signals.ReasonSignalled).deploy("web", 2, 1)
			},
			want: outcome{State: signals.StateAwaitingReplacement, Reason: signals.ReasonAwaitingReplacement, Taint: true, RequeueIn: 2 * time.Second},
		},
		"waiting again for the same reason writes nothing": {
			cluster: func() *cluster {
				c := newCluster().rebalance(signalled).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).deploy("web", 2, 1)
				c.risky.Annotations[signals.AnnotationStateReason] = "waiting for a new Ready node in pool spot-a (0 of 1)"
				return c
			},
			want: outcome{RequeueIn: 2 * time.Second},
		},
		"a Ready replacement starts the drain": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).
					deploy("web", 2, 1).replacement("new", now)
			},
			want: outcome{State: signals.StateDraining, Reason: signals.ReasonReplacementReady, Taint: true, Cordon: true},
		},
		"a pool already draining maxConcurrentNodes queues the node": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).
					deploy("web", 2, 1).replacement("new", now)
			},
			edit: func(in *Input, _ *cluster) { in.Draining = 1 },
			want: outcome{State: signals.StateAwaitingReplacement, Reason: signals.ReasonQueued, Taint: true, RequeueIn: 2 * time.Second},
		},
		"after the timeout, a node whose pods fit elsewhere drains (drain-if-fits)": {
			cluster: func() *cluster {
				return newCluster().rebalance(now.Add(-11*time.Minute)).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).deploy("web", 2, 1)
			},
			want: outcome{State: signals.StateDraining, Reason: signals.ReasonFitsWithoutReplacement, Taint: true, Cordon: true},
		},
		"after the timeout, a node with pods that fit nowhere is blocked, still tainted": {
			cluster: func() *cluster {
				return newCluster().rebalance(now.Add(-11*time.Minute)).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).deploy("big", 1, 1, bigCPU)
			},
			want: outcome{State: signals.StateBlocked, Reason: signals.ReasonNoReplacement, Taint: true, RequeueIn: 30 * time.Second},
		},
		"after the timeout with onTimeout uncordon, the node is blocked and untainted": {
			cluster: func() *cluster {
				c := newCluster().rebalance(now.Add(-11*time.Minute)).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).deploy("big", 1, 1, bigCPU)
				c.config.Replacement.OnTimeout = config.OnTimeoutUncordon
				return c
			},
			want: outcome{State: signals.StateBlocked, Reason: signals.ReasonUncordoned},
		},
		"after the timeout with onTimeout keep-cordoned, the node is blocked, tainted": {
			cluster: func() *cluster {
				c := newCluster().rebalance(now.Add(-11*time.Minute)).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).deploy("web", 2, 1)
				c.config.Replacement.OnTimeout = config.OnTimeoutKeepCordoned
				return c
			},
			want: outcome{State: signals.StateBlocked, Reason: signals.ReasonKeptCordoned, Taint: true},
		},
		"a node blocked for want of a replacement resumes when one comes and every pod fits": {
			cluster: func() *cluster {
				return newCluster().rebalance(now.Add(-11*time.Minute)).state(signals.StateBlocked, signals.ReasonNoReplacement).
					deploy("web", 2, 1).replacement("new", now)
			},
			want: outcome{State: signals.StateDraining, Reason: signals.ReasonReplacementReady, Taint: true, Cordon: true},
		},
		"a node blocked for want of a replacement drains once every pod fits, even without one": {
			cluster: func() *cluster {
				return newCluster().rebalance(now.Add(-11*time.Minute)).state(signals.StateBlocked, signals.ReasonNoReplacement).deploy("web", 2, 1)
			},
			want: outcome{State: signals.StateDraining, Reason: signals.ReasonFitsWithoutReplacement, Taint: true, Cordon: true},
		},
		"a node kept cordoned after the timeout resumes when the replacement comes": {
			cluster: func() *cluster {
				return newCluster().rebalance(now.Add(-11*time.Minute)).state(signals.StateBlocked, signals.ReasonKeptCordoned).
					deploy("web", 2, 1).replacement("new", now)
			},
			want: outcome{State: signals.StateDraining, Reason: signals.ReasonReplacementReady, Taint: true, Cordon: true},
		},
		"a node blocked by pods resumes when they are gone": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateBlocked, signals.ReasonBlockedByPods).deploy("web", 2, 1)
			},
			want: outcome{State: signals.StateDraining, Reason: signals.ReasonBlockersGone, Taint: true, Cordon: true},
		},
		"a node blocked by pods, once they are gone, queues behind a pool already draining maxConcurrentNodes": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateBlocked, signals.ReasonBlockedByPods).deploy("web", 2, 1)
			},
			edit: func(in *Input, _ *cluster) { in.Draining = 1 },
			want: outcome{State: signals.StateAwaitingReplacement, Reason: signals.ReasonQueued, Taint: true, RequeueIn: 2 * time.Second},
		},
		"a blocked node whose message reads like blocking pods but whose code says otherwise stays blocked": {
			cluster: func() *cluster {
				c := newCluster().rebalance(signalled).state(signals.StateBlocked, signals.ReasonKeptCordoned).deploy("web", 2, 1)
				c.risky.Annotations[signals.AnnotationStateReason] = "blocked pods: made the node schedulable again"
				return c
			},
			want: outcome{RequeueIn: 30 * time.Second},
		},
		"draining evicts the first wave, as the PDB allows": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).
					deploy("web", 4, 2).pdb("web", 1, 4, 3).replacement("new", now)
			},
			want: outcome{Evict: []string{"web-h-0"}, RequeueIn: time.Second},
		},
		"a pod evicted a moment ago is not evicted again": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).
					deploy("web", 4, 2).pdb("web", 1, 4, 3).replacement("new", now)
			},
			edit: func(in *Input, _ *cluster) { in.Evicted.Insert("web-0") },
			want: outcome{RequeueIn: time.Second},
		},
		"a 429 holds the evictions for the rest of its backoff": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).
					deploy("web", 4, 2).pdb("web", 1, 4, 3).replacement("new", now)
			},
			edit: func(in *Input, _ *cluster) { in.Backoff = 800 * time.Millisecond },
			want: outcome{RequeueIn: 800 * time.Millisecond, Budgets: true},
		},
		"a pod whose eviction its PDB granted before a restart, with no delete after it, is deleted; the rest waits for the PDB": {
			cluster: granted,
			want:    outcome{Complete: []string{"web-h-1"}, RequeueIn: time.Second},
		},
		"a granted pod deleted a moment ago (the cache still shows it) is not deleted again": {
			cluster: granted,
			edit:    func(in *Input, _ *cluster) { in.Evicted.Insert("web-1") },
			want:    outcome{RequeueIn: time.Second},
		},
		"a workload without a PDB whose last evicted pod still starts elsewhere waits: the implicit budget holds over time": {
			cluster: func() *cluster {
				c := newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).
					deploy("web", 4, 2).replacement("new", now)
				c.pods[3].Status.Conditions = nil
				return c
			},
			want: outcome{RequeueIn: time.Second, Budgets: true},
		},
		"nothing left to evict: drained, cordoned": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).deploy("web", 2, 0)
			},
			want: outcome{State: signals.StateDrained, Reason: signals.ReasonDrained, Taint: true, Cordon: true},
		},
		"pods that cannot be evicted block a rebalance": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).deploy("solo", 1, 1, doNotEvict)
			},
			want: outcome{State: signals.StateBlocked, Reason: signals.ReasonBlockedByPods, Taint: true, RequeueIn: 30 * time.Second},
		},
		"under an interruption, pods that cannot be evicted wait for the deadline": {
			cluster: func() *cluster {
				return newCluster().interrupt(now.Add(-10*time.Second), now.Add(100*time.Second).Format(time.RFC3339)).
					state(signals.StateDraining, signals.ReasonInterruption).deploy("solo", 1, 1, doNotEvict)
			},
			want: outcome{State: signals.StateDraining, Reason: signals.ReasonWaitingForDeadline, Taint: true, Cordon: true, RequeueIn: time.Second},
		},
		"NTH's interruption taint, which has no time, is forced two minutes after it was added": {
			cluster: func() *cluster {
				c := newCluster().state(signals.StateDraining, signals.ReasonInterruption).deploy("solo", 1, 1, doNotEvict).deploy("web", 2, 1)
				c.risky.Spec.Taints = []corev1.Taint{{Key: signals.TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule,
					TimeAdded: ptr.To(metav1.NewTime(now.Add(-106 * time.Second)))}}
				return c
			},
			// 14 s left: each pod gets them, below its own 30 s.
			want: outcome{State: signals.StateDrained, Reason: signals.ReasonDeadline, Taint: true, Cordon: true,
				Delete: map[string]int64{"solo-h-0": 14, "web-h-0": 14}},
		},
		"a termination time from 1970 forces nothing at once": {
			cluster: func() *cluster {
				return newCluster().interrupt(now.Add(-10*time.Second), "1970-01-01T00:00:00Z").
					state(signals.StateDraining, signals.ReasonInterruption).deploy("web", 3, 2)
			},
			want: outcome{Evict: []string{"web-h-0", "web-h-1"}, RequeueIn: time.Second},
		},
		"pods deleted at the deadline get at least 5 s, never 0": {
			cluster: func() *cluster {
				return newCluster().interrupt(now.Add(-2*time.Minute), now.Add(time.Second).Format(time.RFC3339)).
					state(signals.StateDraining, signals.ReasonInterruption).deploy("solo", 1, 1, doNotEvict, func(p *corev1.Pod) {
					p.Spec.TerminationGracePeriodSeconds = ptr.To[int64](0)
				})
			},
			want: outcome{State: signals.StateDrained, Reason: signals.ReasonDeadline, Taint: true, Cordon: true,
				Delete: map[string]int64{"solo-h-0": 5}},
		},
		"under an interruption, evictions go on while a surge moves its pods": {
			cluster: func() *cluster {
				c := newCluster().interrupt(now.Add(-5*time.Second), now.Add(115*time.Second).Format(time.RFC3339)).
					state(signals.StateDraining, signals.ReasonInterruption).deploy("web", 4, 2).deploy("api", 2, 1)
				c.config.Surge.Enabled = ptr.To(true)
				c.deployments[1].Annotations[signals.AnnotationSurge] = "false"
				return c
			},
			want: outcome{Surges: []string{"web:start"}, Evict: []string{"api-h-0"}, RequeueIn: time.Second},
		},
		"under a rebalance too, evictions go on beside the surges": {
			cluster: func() *cluster {
				c := newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).
					deploy("web", 4, 2).deploy("api", 2, 1).replacement("new", now)
				c.config.Surge.Enabled = ptr.To(true)
				c.deployments[1].Annotations[signals.AnnotationSurge] = "false"
				return c
			},
			want: outcome{Surges: []string{"web:start"}, Evict: []string{"api-h-0"}, RequeueIn: time.Second},
		},
		"evictions go on while another node's surge moves pods of this one, which are not evicted": {
			cluster: func() *cluster {
				c := newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).
					deploy("web", 4, 2).deploy("api", 2, 1).replacement("new", now)
				c.config.Surge.Enabled = ptr.To(true)
				c.deployments[1].Annotations[signals.AnnotationSurge] = "false"
				c.records = append(c.records, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: signals.SurgeRecordName(c.deployments[0].UID), Namespace: componentsNS,
					Annotations: map[string]string{signals.AnnotationSurgeState: `{"node":"beside","nodes":["beside","risky"],"from":4,"to":7,"phase":"waiting","since":"2026-11-26T11:59:00Z","pods":["web-h-0","web-h-1","web-h-9"]}`}}})
				return c
			},
			want: outcome{Evict: []string{"api-h-0"}, RequeueIn: time.Second},
		},
		"a surge under way is stepped, not started again": {
			cluster: func() *cluster {
				c := newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).
					deploy("web", 4, 2).replacement("new", now)
				c.config.Surge.Enabled = ptr.To(true)
				return c
			},
			edit: func(in *Input, c *cluster) { in.Surges = []Surge{surging(c, signals.SurgeWaiting, 6, 4)} },
			want: outcome{Surges: []string{"web:scale-down"}, RequeueIn: time.Second},
		},
		"at the deadline, the pods are deleted and a surge under way goes on (scaling back now would remove its new pods)": {
			cluster: func() *cluster {
				c := newCluster().interrupt(now.Add(-2*time.Minute), now.Add(10*time.Second).Format(time.RFC3339)).
					state(signals.StateDraining, signals.ReasonInterruption).deploy("web", 4, 2)
				c.config.Surge.Enabled = ptr.To(true)
				return c
			},
			edit: func(in *Input, c *cluster) { in.Surges = []Surge{surging(c, signals.SurgeWaiting, 6, 2)} },
			want: outcome{State: signals.StateDrained, Reason: signals.ReasonDeadline, Taint: true, Cordon: true,
				Delete: map[string]int64{"web-h-0": 10, "web-h-1": 10}, Surges: []string{"web:wait"}},
		},
		"at the deadline with forceAtDeadline false, nothing is deleted and surges go on": {
			cluster: func() *cluster {
				c := newCluster().interrupt(now.Add(-2*time.Minute), now.Add(10*time.Second).Format(time.RFC3339)).
					state(signals.StateDraining, signals.ReasonInterruption).deploy("web", 4, 2)
				c.config.Surge.Enabled = ptr.To(true)
				c.config.ForceAtDeadline = ptr.To(false)
				return c
			},
			edit: func(in *Input, c *cluster) { in.Surges = []Surge{surging(c, signals.SurgeWaiting, 6, 2)} },
			want: outcome{State: signals.StateBlocked, Reason: signals.ReasonDeadlineNotForced, Taint: true, Surges: []string{"web:wait"}, RequeueIn: 30 * time.Second},
		},
		"a drain whose signal went away goes on": {
			cluster: func() *cluster {
				return newCluster().state(signals.StateDraining, signals.ReasonReplacementReady).deploy("web", 8, 2)
			},
			want: outcome{Evict: []string{"web-h-0", "web-h-1"}, RequeueIn: time.Second},
		},
		"a drain whose signal went away ends drained": {
			cluster: func() *cluster {
				return newCluster().state(signals.StateDraining, signals.ReasonReplacementReady).deploy("web", 2, 0)
			},
			want: outcome{State: signals.StateDrained, Reason: signals.ReasonDrained, Taint: true, Cordon: true},
		},
		"a signal gone while waiting for a replacement clears the node": {
			cluster: func() *cluster {
				return newCluster().state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement)
			},
			want: outcome{Clear: true},
		},
		"a signal gone from a drained node leaves it drained": {
			cluster: func() *cluster { return newCluster().state(signals.StateDrained, signals.ReasonDrained) },
		},
		"a surge that ends this round holds the node: whether it is drained is decided next time": {
			cluster: func() *cluster {
				c := newCluster().rebalance(signalled).state(signals.StateDraining, signals.ReasonReplacementReady).deploy("web", 4, 0)
				c.config.Surge.Enabled = ptr.To(true)
				return c
			},
			edit: func(in *Input, c *cluster) { in.Surges = []Surge{surging(c, signals.SurgeScalingDown, 4, 4)} },
			want: outcome{Surges: []string{"web:complete"}, RequeueIn: time.Second},
		},
		"a surge whose node's signal went away mid-drain goes on (the drain finishes, nothing is undone)": {
			cluster: func() *cluster {
				c := newCluster().state(signals.StateDraining, signals.ReasonReplacementReady).deploy("web", 4, 0)
				c.config.Surge.Enabled = ptr.To(true)
				return c
			},
			edit: func(in *Input, c *cluster) { in.Surges = []Surge{surging(c, signals.SurgeScalingUp, 6, 3)} },
			// The next step of the protocol, not a scale-back.
			want: outcome{Surges: []string{"web:record-waiting"}, RequeueIn: time.Second},
		},
		"an NTH interruption seen for the first time has that time recorded": {
			cluster: func() *cluster {
				c := newCluster().deploy("web", 2, 1)
				c.risky.Spec.Taints = []corev1.Taint{{Key: signals.TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule}}
				return c
			},
			want: outcome{State: signals.StateAtRisk, Reason: signals.ReasonSignalled, Taint: true, Seen: true},
		},
		"a signal gone from a node blocked by pods after it drained: cleared and uncordoned": {
			cluster: func() *cluster { return newCluster().state(signals.StateBlocked, signals.ReasonBlockedByPods) },
			want:    outcome{Clear: true, Uncordon: true},
		},
		"a blocked node without a reason code (an older version's) starts over": {
			cluster: func() *cluster { return newCluster().rebalance(signalled).state(signals.StateBlocked, "") },
			want:    outcome{State: signals.StateAtRisk, Reason: signals.ReasonUnknownState, Taint: true},
		},
		"an unknown state starts over": {
			cluster: func() *cluster { return newCluster().rebalance(signalled).state("evicting", "") },
			want:    outcome{State: signals.StateAtRisk, Reason: signals.ReasonUnknownState, Taint: true},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := tc.cluster()
			in := c.input(t, now)
			if tc.edit != nil {
				tc.edit(&in, c)
			}
			if diff := cmp.Diff(tc.want, summarize(Node(in))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestGrace(t *testing.T) {
	tests := map[string]struct {
		own  *int64
		left time.Duration
		want int64
	}{
		"the time left when the pod asks for more":     {own: ptr.To[int64](60), left: 20 * time.Second, want: 20},
		"the pod's own when it asks for less":          {own: ptr.To[int64](10), left: 90 * time.Second, want: 10},
		"30 s, Kubernetes' default, when it asks none": {left: 90 * time.Second, want: 30},
		"at least 5 s when no time is left":            {own: ptr.To[int64](30), left: 0, want: 5},
		"at least 5 s when the pod asks for 0":         {own: ptr.To[int64](0), left: 90 * time.Second, want: 5},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := &corev1.Pod{Spec: corev1.PodSpec{TerminationGracePeriodSeconds: tc.own}}
			if got := Grace(pod, tc.left); got != tc.want {
				t.Errorf("Grace = %d, want %d", got, tc.want)
			}
		})
	}
}

// A draining node starts the plan's surges that move its pods, with the
// pods on the nodes draining beside it: the record names the node as its
// owner, first among the nodes the pods move off.
func TestADrainingNodeOwnsTheSurgesItStarts(t *testing.T) {
	c := newCluster().rebalance(now.Add(-time.Minute)).state(signals.StateDraining, signals.ReasonReplacementReady).
		deploy("web", 4, 2).replacement("new", now)
	c.config.Surge.Enabled = ptr.To(true)
	in := c.input(t, now)
	in.PlannedSurges = []planner.SurgePlan{{Namespace: c.deployments[0].Namespace, Deployment: "web",
		Nodes: []string{"beside", c.risky.Name}, Pods: []string{"web-h-9", "web-h-0", "web-h-1"}}}
	d := Node(in)
	if len(d.Surges) != 1 || d.Surges[0].Op != SurgeStart {
		t.Fatalf("surges %+v, want one start", summarize(d).Surges)
	}
	want := &signals.SurgeState{Node: c.risky.Name, Nodes: []string{c.risky.Name, "beside"}, Phase: signals.SurgeScalingUp, Since: now,
		Pods: []string{"web-h-9", "web-h-0", "web-h-1"}}
	if diff := cmp.Diff(want, d.Surges[0].Record); diff != "" {
		t.Errorf("record (-want +got):\n%s", diff)
	}
	// A surge of the Deployment under way off this node is stepped, not
	// started again.
	in.Surges = []Surge{surging(c, signals.SurgeWaiting, 6, 4)}
	if got := summarize(Node(in)).Surges; !slices.Equal(got, []string{"web:scale-down"}) {
		t.Errorf("with a surge under way: %v, want [web:scale-down]", got)
	}
}
