package decide

import (
	"slices"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// step is a SurgeAction in a few words.
type step struct {
	Op       SurgeOp
	Phase    string
	Restore  bool
	Fallback bool
	Unmark   []string
	Delete   []string
	Why      string
}

func stepOf(a SurgeAction) step {
	s := step{Op: a.Op, Restore: a.Restore, Fallback: a.Fallback, Unmark: a.Unmark, Delete: a.Delete, Why: a.Why}
	if a.Record != nil {
		s.Phase = a.Record.Phase
	}
	return s
}

// record is a surge of web from 4 to 6 replicas off node risky, begun
// 20 s before now, at the given phase, with the live count and the pods
// Ready elsewhere.
func record(phase string, replicas int32, ready int) Surge {
	return Surge{Deployment: &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"}},
		Replicas: replicas, ReadyElsewhere: ready, Marked: []string{"web-h-0", "web-h-1"}, OnNode: []string{"web-h-0", "web-h-1", "web-h-7"},
		Record: &signals.SurgeState{Node: "risky", From: 4, To: 6, Phase: phase, Since: now.Add(-20 * time.Second), Pods: []string{"web-h-0", "web-h-1"}}}
}

var marked = []string{"web-h-0", "web-h-1"}

func stranded(s Surge, pods ...string) Surge {
	s.Stranded = pods
	return s
}

func leaving(s Surge, n int) Surge {
	s.Leaving = n
	return s
}

func TestSurgeStep(t *testing.T) {
	const timeout = 5 * time.Minute
	someoneElse := "its replica count was changed to 9 by someone else (expected 4 or 6)"
	tests := map[string]struct {
		surge Surge
		at    time.Time
		want  step
	}{
		"recorded but not scaled yet (a restart in between): mark and scale up": {
			surge: record(signals.SurgeScalingUp, 4, 4), want: step{Op: SurgeScaleUp, Phase: signals.SurgeScalingUp}},
		"scaled up: record that it waits": {
			surge: record(signals.SurgeScalingUp, 6, 4), want: step{Op: SurgeRecordWaiting, Phase: signals.SurgeWaiting}},
		"scaling up, the count changed by someone else: give up, restore nothing, evict instead": {
			surge: record(signals.SurgeScalingUp, 9, 4),
			want:  step{Op: SurgeAbandon, Phase: signals.SurgeScalingUp, Fallback: true, Unmark: marked, Why: someoneElse}},
		"waiting, new pods not Ready yet: wait": {
			surge: record(signals.SurgeWaiting, 6, 3), want: step{Op: SurgeWait, Phase: signals.SurgeWaiting}},
		"waiting, as many Ready elsewhere as it had replicas: record and scale down": {
			surge: record(signals.SurgeWaiting, 6, 4), want: step{Op: SurgeScaleDown, Phase: signals.SurgeScalingDown}},
		"waiting, the count changed by someone else: give up, restore nothing": {
			surge: record(signals.SurgeWaiting, 9, 4),
			want:  step{Op: SurgeAbandon, Phase: signals.SurgeWaiting, Fallback: true, Unmark: marked, Why: someoneElse}},
		"waiting past the surge timeout: scale back, evict instead": {
			surge: record(signals.SurgeWaiting, 6, 3), at: now.Add(timeout),
			want: step{Op: SurgeAbandon, Phase: signals.SurgeWaiting, Restore: true, Fallback: true, Unmark: marked,
				Why: "the new pods were not Ready within 5m0s: scaled back to 4"}},
		"scaling down, still at the surged count: scale down again": {
			surge: record(signals.SurgeScalingDown, 6, 4), want: step{Op: SurgeResumeScaleDown, Phase: signals.SurgeScalingDown}},
		"scaling down, back at its own count: done": {
			surge: record(signals.SurgeScalingDown, 4, 4), want: step{Op: SurgeComplete, Phase: signals.SurgeScalingDown}},
		"scaled back, the moved pods not removed yet: wait for the ReplicaSet controller": {
			surge: leaving(record(signals.SurgeScalingDown, 4, 4), 2), want: step{Op: SurgeWait, Phase: signals.SurgeScalingDown}},
		"scaled back, the moved pods still there past the surge timeout: done (they are planned again)": {
			surge: leaving(record(signals.SurgeScalingDown, 4, 4), 2), at: now.Add(timeout),
			want: step{Op: SurgeComplete, Phase: signals.SurgeScalingDown}},
		"scaling down, the count changed by someone else: give up, restore nothing": {
			surge: record(signals.SurgeScalingDown, 9, 4),
			want:  step{Op: SurgeAbandon, Phase: signals.SurgeScalingDown, Fallback: true, Unmark: marked, Why: someoneElse}},
		"an unknown phase: give up, restore nothing": {
			surge: record("jumping", 6, 4),
			want:  step{Op: SurgeAbandon, Phase: "jumping", Fallback: true, Unmark: marked, Why: `unknown phase "jumping"`}},
		"a record that does not parse: trust nothing in it, restore nothing": {
			surge: Surge{Deployment: &appsv1.Deployment{}, Unreadable: true, Replicas: 6},
			want:  step{Op: SurgeAbandon, Fallback: true, Why: "its surge record does not parse"}},
		"a record that is gone or another node's now: wait for the cache": {
			surge: func() Surge { s := record(signals.SurgeWaiting, 6, 4); s.Stale = true; return s }(),
			want:  step{Op: SurgeWait, Phase: signals.SurgeWaiting}},
		"a record whose Deployment is gone: remove the record, touch nothing else": {
			surge: Surge{Record: record(signals.SurgeWaiting, 6, 4).Record, NoDeployment: true},
			want:  step{Op: SurgeForget, Phase: signals.SurgeWaiting}},
		"a record that does not parse and names no Deployment: remove it": {
			surge: Surge{Unreadable: true, NoDeployment: true},
			want:  step{Op: SurgeForget}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			at := tc.at
			if at.IsZero() {
				at = now
			}
			if diff := cmp.Diff(tc.want, stepOf(Step(tc.surge, at, timeout))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestSurgeQuiet(t *testing.T) {
	const timeout = 5 * time.Minute
	tests := map[string]struct {
		surge Surge
		at    time.Time
		want  bool
	}{
		"waiting at the surged count with pods not Ready yet is quiet": {surge: record(signals.SurgeWaiting, 6, 3), want: true},
		"enough pods Ready elsewhere is not":                           {surge: record(signals.SurgeWaiting, 6, 4)},
		"a changed count is not":                                       {surge: record(signals.SurgeWaiting, 5, 3)},
		"past the timeout is not":                                      {surge: record(signals.SurgeWaiting, 6, 3), at: now.Add(timeout)},
		"another phase is not":                                         {surge: record(signals.SurgeScalingUp, 6, 3)},
		"scaled back, waiting for the moved pods to go, is quiet":      {surge: leaving(record(signals.SurgeScalingDown, 4, 4), 2), want: true},
		"scaled back with the moved pods gone is not":                  {surge: record(signals.SurgeScalingDown, 4, 4)},
		"scaling down, not scaled back yet, is not":                    {surge: leaving(record(signals.SurgeScalingDown, 6, 4), 2)},
		"scaled back past the timeout is not":                          {surge: leaving(record(signals.SurgeScalingDown, 4, 4), 2), at: now.Add(timeout)},
		"pods stranded on a node that is gone are not":                 {surge: stranded(record(signals.SurgeWaiting, 6, 3), "web-h-9")},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			at := tc.at
			if at.IsZero() {
				at = now
			}
			if got := Quiet(tc.surge, at, timeout); got != tc.want {
				t.Errorf("Quiet = %v, want %v", got, tc.want)
			}
		})
	}
}

func TestOrphanedSurgesGoOn(t *testing.T) {
	const timeout = 5 * time.Minute
	onNode := []string{"web-h-0", "web-h-1", "web-h-7"}
	stale := record(signals.SurgeWaiting, 6, 4)
	stale.Stale = true
	tests := map[string]struct {
		surge    Surge
		nodeGone bool
		want     step
	}{
		"a node gone: its pods there are deleted, marked or not, and the surge waits for its new pods": {
			surge: record(signals.SurgeWaiting, 6, 3), nodeGone: true,
			want: step{Op: SurgeWait, Phase: signals.SurgeWaiting, Delete: onNode}},
		"a node gone: once enough pods are Ready elsewhere, the surge scales back": {
			surge: record(signals.SurgeWaiting, 6, 4), nodeGone: true,
			want: step{Op: SurgeScaleDown, Phase: signals.SurgeScalingDown, Delete: onNode}},
		"a node drained at its deadline: the surge goes on as any, deleting nothing": {
			surge: record(signals.SurgeWaiting, 6, 4),
			want:  step{Op: SurgeScaleDown, Phase: signals.SurgeScalingDown}},
		"a node gone, the Deployment back at its count: complete": {
			surge: record(signals.SurgeScalingDown, 4, 4), nodeGone: true,
			want: step{Op: SurgeComplete, Phase: signals.SurgeScalingDown, Delete: onNode}},
		"a record that is gone or another node's now deletes nothing": {
			surge: stale, nodeGone: true,
			want: step{Op: SurgeWait, Phase: signals.SurgeWaiting}},
		"another node of the surge gone: its pods there are deleted too": {
			surge: stranded(record(signals.SurgeWaiting, 6, 3), "web-h-9"), nodeGone: true,
			want: step{Op: SurgeWait, Phase: signals.SurgeWaiting, Delete: append(slices.Clone(onNode), "web-h-9")}},
		"the owner drained, another node of the surge gone: the pods there are deleted": {
			surge: stranded(record(signals.SurgeWaiting, 6, 3), "web-h-9"),
			want:  step{Op: SurgeWait, Phase: signals.SurgeWaiting, Delete: []string{"web-h-9"}}},
		"a node gone with a Deployment gone too: the record goes": {
			surge: Surge{Record: record(signals.SurgeWaiting, 6, 4).Record, NoDeployment: true}, nodeGone: true,
			want: step{Op: SurgeForget, Phase: signals.SurgeWaiting}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if diff := cmp.Diff(tc.want, stepOf(Orphan(tc.surge, tc.nodeGone, now, timeout))); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
		})
	}
}

func TestOrphaned(t *testing.T) {
	withState := func(s signals.State) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{signals.AnnotationState: string(s)}}}
	}
	tests := map[string]struct {
		node *corev1.Node
		want bool
	}{
		"a node that is gone":                    {want: true},
		"a drained node":                         {node: withState(signals.StateDrained), want: true},
		"a node no longer at risk":               {node: &corev1.Node{}, want: true},
		"a draining node steps its surges":       {node: withState(signals.StateDraining)},
		"a node held at its deadline steps them": {node: withState(signals.StateBlocked)},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			if got := Orphaned(tc.node); got != tc.want {
				t.Errorf("Orphaned = %v, want %v", got, tc.want)
			}
		})
	}
}
