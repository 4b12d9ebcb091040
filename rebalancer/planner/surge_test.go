package planner

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// deployment app with its ReplicaSet app-h, settled at replicas.
func deployment(app string, replicas int32, mods ...func(*appsv1.Deployment)) (*appsv1.Deployment, *appsv1.ReplicaSet) {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "shop", UID: types.UID("deploy-" + app), Generation: 2, Annotations: map[string]string{}},
		Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(replicas)},
		Status:     appsv1.DeploymentStatus{ObservedGeneration: 2, Replicas: replicas, UpdatedReplicas: replicas, ReadyReplicas: replicas},
	}
	for _, m := range mods {
		m(d)
	}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: app + "-h", Namespace: "shop", UID: types.UID("rs-" + app),
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: app, UID: d.UID, Controller: ptr.To(true)}}}}
	return d, rs
}

func TestSurgeOnlyWhereTheDeploymentAllows(t *testing.T) {
	tests := map[string]struct {
		mod func(*appsv1.Deployment)
		// record is the annotation of the Deployment's surge record.
		record   string
		hpa      bool
		withHPA  bool
		fallback bool
		disabled bool
		// interruptIn, when set, interrupts the node instead, with its
		// termination that far ahead.
		interruptIn time.Duration
		want        Action
		reason      string
	}{
		"a settled Deployment surges":        {want: ActionSurge, reason: "Deployment web scales up by 2, then back"},
		"surges can be turned off":           {disabled: true, want: ActionEvict},
		"an opted-out Deployment is evicted": {mod: func(d *appsv1.Deployment) { d.Annotations[signals.AnnotationSurge] = "false" }, want: ActionEvict, reason: "no surge: opted out"},
		"a rollout in progress is evicted": {mod: func(d *appsv1.Deployment) { d.Status.UpdatedReplicas = 1 },
			want: ActionEvict, reason: "no surge: a rollout is in progress"},
		"a spec not yet observed is evicted": {mod: func(d *appsv1.Deployment) { d.Generation = 3 }, want: ActionEvict, reason: "a rollout is in progress"},
		"a paused Deployment is evicted":     {mod: func(d *appsv1.Deployment) { d.Spec.Paused = true }, want: ActionEvict, reason: "no surge: paused"},
		"an HPA target is evicted":           {hpa: true, want: ActionEvict, reason: "no surge: a HorizontalPodAutoscaler scales it"},
		"an HPA target surges with withHPA":  {hpa: true, withHPA: true, want: ActionSurge},
		"a given-up surge is not retried":    {fallback: true, want: ActionEvict, reason: "no surge: a surge off this node was given up"},
		"one surge at a time per Deployment": {record: `{"node":"elsewhere","from":4,"to":5,"phase":"waiting","since":"2026-11-26T12:00:00Z","pods":["x"]}`,
			want: ActionEvict, reason: "no surge: already surging off node elsewhere"},
		"a surge under way is followed even if the Deployment opted out since": {
			mod:    func(d *appsv1.Deployment) { d.Annotations[signals.AnnotationSurge] = "false" },
			record: `{"node":"risky","from":4,"to":6,"phase":"waiting","since":"2026-11-26T12:00:00Z","pods":["web-h-0","web-h-1"]}`, want: ActionSurge,
			reason: "moving in the surge of Deployment web off node risky (scaled from 4 to 6)"},
		"a record of an older version on the Deployment is left to the migration": {mod: func(d *appsv1.Deployment) {
			d.Annotations[signals.AnnotationSurgeState] = `{"node":"risky","from":4,"to":6,"phase":"waiting","since":"2026-11-26T12:00:00Z","pods":["web-h-0","web-h-1"]}`
		}, want: ActionEvict, reason: "no surge: it carries a surge record of a version before 0.2"},
		"under an interruption with time to finish, a Deployment surges": {interruptIn: 2 * time.Minute, want: ActionSurge},
		"under an interruption too close to its deadline, a Deployment is evicted": {interruptIn: 70 * time.Second,
			want: ActionEvict, reason: "no surge: less than 1m0s to the interruption deadline"},
		"a surge off this node already under way goes on near the deadline": {interruptIn: 70 * time.Second,
			record: `{"node":"risky","from":4,"to":6,"phase":"waiting","since":"2026-11-26T12:00:00Z","pods":["web-h-0","web-h-1"]}`, want: ActionSurge},
		"an unreadable record is not trusted": {record: "{", want: ActionEvict, reason: "does not parse"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			risky := node("risky", "spot-a", now.Add(-time.Hour), rebalanceCondition)
			if tc.fallback {
				risky.Annotations = map[string]string{signals.AnnotationSurgeFallback: "shop/other,shop/web"}
			}
			if tc.interruptIn != 0 {
				risky.Status.Conditions = []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue},
					{Type: signals.ConditionInterruption, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(now)}}
				risky.Annotations = map[string]string{signals.AnnotationTerminationTime: now.Add(tc.interruptIn).Format(time.RFC3339)}
			}
			nodes := []*corev1.Node{risky, node("other", "spot-a", now.Add(-time.Hour))}
			var mods []func(*appsv1.Deployment)
			if tc.mod != nil {
				mods = append(mods, tc.mod)
			}
			d, rs := deployment("web", 4, mods...)
			var hpas []*autoscalingv2.HorizontalPodAutoscaler
			if tc.hpa {
				hpas = append(hpas, &autoscalingv2.HorizontalPodAutoscaler{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
					Spec: autoscalingv2.HorizontalPodAutoscalerSpec{ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "web"}}})
			}
			pods := []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky"), rsPod("web", 2, "other"), rsPod("web", 3, "other")}
			var records []*coordinationv1.Lease
			if tc.record != "" {
				records = append(records, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: signals.SurgeRecordName(d.UID), Namespace: "spot-rebalancer",
					Annotations: map[string]string{signals.AnnotationSurgeState: tc.record}}})
			}
			snap := snapshot.New(now, snapshot.Objects{Nodes: nodes, Pods: pods, PDBs: nil, Deployments: []*appsv1.Deployment{d}, ReplicaSets: []*appsv1.ReplicaSet{rs},
				HPAs: hpas, SurgeRecords: records})
			c := cfg()
			c.Surge.WithHPA = tc.withHPA
			if tc.disabled {
				c.Surge.Enabled = ptr.To(false)
			}
			plan, err := New(snap, Options{Config: c})
			if err != nil {
				t.Fatal(err)
			}
			np := plan.Nodes[0]
			for _, pp := range np.Pods {
				if pp.Action != tc.want {
					t.Errorf("pod %s: action %s, want %s (reasons %q)", pp.Name, pp.Action, tc.want, pp.Reasons)
				}
				if tc.reason != "" && !strings.Contains(strings.Join(pp.Reasons, "; "), tc.reason) {
					t.Errorf("pod %s: reasons %q lack %q", pp.Name, pp.Reasons, tc.reason)
				}
				if tc.want == ActionSurge && (pp.Wave != 0 || pp.Workload != "Deployment/web" || pp.Destination == "") {
					t.Errorf("surge pod %s: wave %d, workload %q, destination %q", pp.Name, pp.Wave, pp.Workload, pp.Destination)
				}
			}
			if tc.want == ActionSurge && np.Surges() != 2 {
				t.Errorf("Surges() = %d, want 2", np.Surges())
			}
		})
	}
}

// A Deployment with a pod the simulation cannot place is evicted, not
// surged: a surge needs room for every pod it moves.
func TestNoSurgeWhenSomePodFitsNowhere(t *testing.T) {
	d, rs := deployment("big", 2)
	snap := snapshot.New(now, snapshot.Objects{Nodes: []*corev1.Node{node("risky", "spot-a", now, rebalanceCondition), node("other", "x", now)}, Pods: []*corev1.Pod{rsPod("big", 0, "risky", bigCPU), rsPod("big", 1, "risky", bigCPU)},
		Deployments: []*appsv1.Deployment{d}, ReplicaSets: []*appsv1.ReplicaSet{rs}})
	plan, err := New(snap, Options{Config: cfg()})
	if err != nil {
		t.Fatal(err)
	}
	for _, pp := range plan.Nodes[0].Pods {
		if pp.Action == ActionSurge {
			t.Errorf("pod %s surges although its sibling fits nowhere", pp.Name)
		}
	}
}

// A Deployment's pods on several planned nodes move in one surge: one
// record, one scale-up by all of them. A node where the surge may not run
// (too close to its deadline) keeps its pods out; a surge under way takes
// only the pods its record names.
func TestOneSurgePerDeploymentAcrossTheNodesDrainingTogether(t *testing.T) {
	interrupted := func(in time.Duration) func(*corev1.Node) {
		return func(n *corev1.Node) {
			n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionInterruption, Status: corev1.ConditionTrue,
				LastTransitionTime: metav1.NewTime(now)})
			n.Annotations = map[string]string{signals.AnnotationTerminationTime: now.Add(in).Format(time.RFC3339)}
		}
	}
	tests := map[string]struct {
		// a and b are the two at-risk nodes' signals (a: a rebalance
		// recommendation when nil).
		a, b   func(*corev1.Node)
		record string
		// want is the action of each pod by name; surge the plan's surge.
		want  map[string]Action
		surge *SurgePlan
		// reasons each pod's reasons must contain.
		reasons map[string]string
	}{
		"two nodes, one surge": {b: rebalanceCondition,
			want:    map[string]Action{"web-h-0": ActionSurge, "web-h-1": ActionSurge, "web-h-2": ActionSurge, "web-h-3": ActionSurge},
			surge:   &SurgePlan{Namespace: "shop", Deployment: "web", Nodes: []string{"risky-a", "risky-b"}, Pods: []string{"web-h-0", "web-h-1", "web-h-2", "web-h-3"}},
			reasons: map[string]string{"web-h-3": "Deployment web scales up by 4 for its pods on 2 nodes draining together, then back"}},
		"a node too close to its deadline keeps its pods out": {b: interrupted(70 * time.Second),
			want:  map[string]Action{"web-h-0": ActionSurge, "web-h-1": ActionSurge, "web-h-2": ActionEvict, "web-h-3": ActionEvict},
			surge: &SurgePlan{Namespace: "shop", Deployment: "web", Nodes: []string{"risky-a"}, Pods: []string{"web-h-0", "web-h-1"}},
			reasons: map[string]string{"web-h-0": "Deployment web scales up by 2, then back",
				"web-h-2": "no surge: less than 1m0s to the interruption deadline"}},
		"both nodes too close to their deadline: evicted": {b: interrupted(70 * time.Second), a: interrupted(70 * time.Second),
			want:    map[string]Action{"web-h-0": ActionEvict, "web-h-1": ActionEvict, "web-h-2": ActionEvict, "web-h-3": ActionEvict},
			reasons: map[string]string{"web-h-0": "no surge: less than 1m0s to the interruption deadline"}},
		"a surge under way takes only the pods it names": {b: rebalanceCondition,
			record: `{"node":"risky-a","nodes":["risky-a","risky-b"],"from":5,"to":8,"phase":"waiting","since":"2026-11-26T12:00:00Z","pods":["web-h-0","web-h-1","web-h-2"]}`,
			want:   map[string]Action{"web-h-0": ActionSurge, "web-h-1": ActionSurge, "web-h-2": ActionSurge, "web-h-3": ActionEvict},
			reasons: map[string]string{"web-h-2": "moving in the surge of Deployment web off node risky-a and 1 other node(s) (scaled from 5 to 8)",
				"web-h-3": "no surge: already surging off node risky-a"}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			d, rs := deployment("web", 5)
			if tc.a == nil {
				tc.a = rebalanceCondition
			}
			nodes := []*corev1.Node{node("risky-a", "spot-a", now.Add(-time.Hour), tc.a),
				node("risky-b", "spot-a", now.Add(-time.Hour), tc.b), node("other", "spot-a", now.Add(-time.Hour))}
			pods := []*corev1.Pod{rsPod("web", 0, "risky-a"), rsPod("web", 1, "risky-a"), rsPod("web", 2, "risky-b"), rsPod("web", 3, "risky-b"), rsPod("web", 4, "other")}
			var records []*coordinationv1.Lease
			if tc.record != "" {
				records = append(records, &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: signals.SurgeRecordName(d.UID), Namespace: "spot-rebalancer",
					Annotations: map[string]string{signals.AnnotationSurgeState: tc.record}}})
			}
			snap := snapshot.New(now, snapshot.Objects{Nodes: nodes, Pods: pods, Deployments: []*appsv1.Deployment{d}, ReplicaSets: []*appsv1.ReplicaSet{rs},
				SurgeRecords: records})
			plan, err := New(snap, Options{Config: cfg()})
			if err != nil {
				t.Fatal(err)
			}
			got := map[string]Action{}
			for _, np := range plan.Nodes {
				for _, pp := range np.Pods {
					got[pp.Name] = pp.Action
					if want := tc.reasons[pp.Name]; want != "" && !strings.Contains(strings.Join(pp.Reasons, "; "), want) {
						t.Errorf("pod %s: reasons %q lack %q", pp.Name, pp.Reasons, want)
					}
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("actions (-want +got):\n%s", diff)
			}
			var want []SurgePlan
			if tc.surge != nil {
				want = append(want, *tc.surge)
			}
			if diff := cmp.Diff(want, plan.Surges); diff != "" {
				t.Errorf("surges (-want +got):\n%s", diff)
			}
			if tc.surge != nil {
				for _, n := range []string{"risky-a", "risky-b"} {
					if got, want := len(plan.SurgesWith(n)), len(slices.DeleteFunc(slices.Clone(tc.surge.Nodes), func(s string) bool { return s != n })); got != want {
						t.Errorf("SurgesWith(%s) has %d surges, want %d", n, got, want)
					}
				}
			}
		})
	}
}
