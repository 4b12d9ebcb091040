package planner

import (
	"fmt"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func node(name, pool string, created time.Time, mods ...func(*corev1.Node)) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created),
			Labels: map[string]string{"eks.amazonaws.com/nodegroup": pool, "kubernetes.io/hostname": name, "eks.amazonaws.com/capacityType": "SPOT"}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, m := range mods {
		m(n)
	}
	return n
}

func rebalanceCondition(n *corev1.Node) {
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionRebalance, Status: corev1.ConditionTrue,
		LastTransitionTime: metav1.NewTime(now.Add(-time.Minute))})
}

// rsPod is a pod of Deployment app (ReplicaSet app-h) on nodeName.
func rsPod(app string, i int, nodeName string, mods ...func(*corev1.Pod)) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-h-%d", app, i), Namespace: "shop", UID: types.UID(fmt.Sprintf("%s-%d", app, i)),
			Labels: map[string]string{"app": app, "pod-template-hash": "h"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-h",
				UID: types.UID("rs-" + app), Controller: new(true)}}},
		Spec: corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}}},
		Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
	}
	for _, m := range mods {
		m(p)
	}
	return p
}

func notReady(p *corev1.Pod) { p.Status.Conditions = nil }

func terminating(p *corev1.Pod) { p.DeletionTimestamp = new(metav1.NewTime(now)) }

func pdb(name, app string, allowed, expected, desired int32) *policyv1.PodDisruptionBudget {
	return &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Generation: 1},
		Spec:       policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}, MaxUnavailable: new(intstr.FromInt(1))},
		Status:     policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: allowed, ExpectedPods: expected, DesiredHealthy: desired, CurrentHealthy: expected},
	}
}

func cfg() *config.Rebalancer {
	c := config.Default().Rebalancer
	return &c
}

// waves returns pod name -> wave (or action when not evicted).
func waves(p *Plan) map[string]string {
	out := map[string]string{}
	for _, n := range p.Nodes {
		for _, pp := range n.Pods {
			if pp.Action == ActionEvict {
				out[pp.Name] = fmt.Sprintf("wave %d", pp.Wave)
			} else {
				out[pp.Name] = string(pp.Action)
			}
		}
	}
	return out
}

func TestWavesAndBlockers(t *testing.T) {
	risky := node("risky", "spot-a", now.Add(-time.Hour), rebalanceCondition)
	other := node("other", "on-demand", now.Add(-time.Hour))
	tests := map[string]struct {
		pods    []*corev1.Pod
		pdbs    []*policyv1.PodDisruptionBudget
		config  func(*config.Rebalancer)
		signal  func(*corev1.Node)
		want    map[string]string
		blocked bool
	}{
		"a PDB that allows 1 moves its pods one wave at a time": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky"), rsPod("web", 2, "risky"), rsPod("web", 3, "other")},
			pdbs: []*policyv1.PodDisruptionBudget{pdb("web", "web", 1, 4, 3)},
			want: map[string]string{"web-h-0": "wave 1", "web-h-1": "wave 2", "web-h-2": "wave 3", "web-h-3": ""},
		},
		"a PDB that allows 2 moves two per wave": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky"), rsPod("web", 2, "risky")},
			pdbs: []*policyv1.PodDisruptionBudget{pdb("web", "web", 2, 6, 4)},
			want: map[string]string{"web-h-0": "wave 1", "web-h-1": "wave 1", "web-h-2": "wave 2"},
		},
		"a PDB spent right now waits one wave, then moves at its recovered allowance": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky")},
			pdbs: []*policyv1.PodDisruptionBudget{pdb("web", "web", 0, 4, 3)},
			want: map[string]string{"web-h-0": "wave 2", "web-h-1": "wave 3"},
		},
		"a pod whose eviction its PDB already granted (the delete never came) goes in wave 1 and spends nothing": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky"), rsPod("web", 2, "risky")},
			pdbs: []*policyv1.PodDisruptionBudget{disrupted(pdb("web", "web", 0, 4, 3), "web-h-1", now.Add(-30*time.Second))},
			want: map[string]string{"web-h-1": "wave 1", "web-h-0": "wave 2", "web-h-2": "wave 3"},
		},
		"a PDB's disrupted-pod entry near its expiry grants nothing": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky")},
			pdbs: []*policyv1.PodDisruptionBudget{disrupted(pdb("web", "web", 0, 4, 3), "web-h-1", now.Add(-90*time.Second))},
			want: map[string]string{"web-h-0": "wave 2", "web-h-1": "wave 3"},
		},
		"a granted pod that may not be evicted stays blocked": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky", func(p *corev1.Pod) {
				p.Annotations = map[string]string{signals.AnnotationDoNotEvict: "true"}
			})},
			pdbs: []*policyv1.PodDisruptionBudget{disrupted(pdb("web", "web", 0, 4, 3), "web-h-1", now.Add(-10*time.Second))},
			want: map[string]string{"web-h-0": "wave 2", "web-h-1": "blocked"}, blocked: true,
		},
		"granted pods count against maxParallelEvictions": {
			pods:   []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("api", 0, "risky")},
			pdbs:   []*policyv1.PodDisruptionBudget{disrupted(pdb("web", "web", 0, 4, 3), "web-h-0", now.Add(-10*time.Second)), pdb("api", "api", 1, 4, 3)},
			config: func(c *config.Rebalancer) { c.MaxParallelEvictions = 1 },
			want:   map[string]string{"web-h-0": "wave 1", "api-h-0": "wave 2"},
		},
		"a PDB that allows 0 even when healthy is a blocker": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky")},
			pdbs: []*policyv1.PodDisruptionBudget{pdb("web", "web", 0, 3, 3)},
			want: map[string]string{"web-h-0": "blocked"}, blocked: true,
		},
		"a pod covered by two PDBs is a blocker": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky")},
			pdbs: []*policyv1.PodDisruptionBudget{pdb("web", "web", 1, 3, 2), pdb("web-extra", "web", 1, 3, 2)},
			want: map[string]string{"web-h-0": "blocked"}, blocked: true,
		},
		"a pod with no controller is a blocker": {
			pods: []*corev1.Pod{rsPod("solo", 0, "risky", func(p *corev1.Pod) { p.OwnerReferences = nil })},
			want: map[string]string{"solo-h-0": "blocked"}, blocked: true,
		},
		"a pod annotated do-not-evict is a blocker": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky", func(p *corev1.Pod) {
				p.Annotations = map[string]string{signals.AnnotationDoNotEvict: "true"}
			})},
			want: map[string]string{"web-h-0": "blocked"}, blocked: true,
		},
		"DaemonSet, mirror and finished pods are skipped": {
			pods: []*corev1.Pod{
				rsPod("agent", 0, "risky", func(p *corev1.Pod) { p.OwnerReferences[0].Kind = "DaemonSet" }),
				rsPod("static", 0, "risky", func(p *corev1.Pod) {
					p.Annotations = map[string]string{corev1.MirrorPodAnnotationKey: "x"}
				}),
				rsPod("job", 0, "risky", func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }),
			},
			want: map[string]string{"agent-h-0": "skip", "static-h-0": "skip", "job-h-0": "skip"},
		},
		"a workload without a PDB gets the implicit budget of 25%, at least 1": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky"), rsPod("web", 2, "risky"),
				rsPod("web", 3, "other"), rsPod("web", 4, "other"), rsPod("web", 5, "other"), rsPod("web", 6, "other"), rsPod("web", 7, "other")},
			// 8 replicas: 25% is 2.
			want: map[string]string{"web-h-0": "wave 1", "web-h-1": "wave 1", "web-h-2": "wave 2",
				"web-h-3": "", "web-h-4": "", "web-h-5": "", "web-h-6": "", "web-h-7": ""},
		},
		"a workload without a PDB whose pod elsewhere is still starting waits for it: the implicit budget holds over time": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky"), rsPod("web", 2, "other"), rsPod("web", 3, "other", notReady)},
			// 4 replicas: 25% is 1, and one is down already.
			want: map[string]string{"web-h-0": "wave 2", "web-h-1": "wave 3", "web-h-2": "", "web-h-3": ""},
		},
		"a pod of a workload without a PDB evicted a moment ago counts against its implicit budget": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky", terminating), rsPod("web", 1, "risky"), rsPod("web", 2, "other"), rsPod("web", 3, "other")},
			want: map[string]string{"web-h-0": "skip", "web-h-1": "wave 2", "web-h-2": "", "web-h-3": ""},
		},
		"a pod annotated karpenter.sh/do-not-disrupt is a blocker": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky", func(p *corev1.Pod) {
				p.Annotations = map[string]string{signals.AnnotationKarpenterDoNotDisrupt: "true"}
			})},
			want: map[string]string{"web-h-0": "blocked"}, blocked: true,
		},
		"an interruption notice drains unprotected workloads at once": {
			pods: []*corev1.Pod{rsPod("web", 0, "risky"), rsPod("web", 1, "risky"), rsPod("web", 2, "risky")},
			signal: func(n *corev1.Node) {
				n.Spec.Taints = []corev1.Taint{{Key: signals.TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule}}
			},
			want: map[string]string{"web-h-0": "wave 1", "web-h-1": "wave 1", "web-h-2": "wave 1"},
		},
		"critical pods go after everything else, lower priority first": {
			pods: []*corev1.Pod{
				rsPod("dns", 0, "risky", func(p *corev1.Pod) { p.Spec.PriorityClassName = "system-cluster-critical" }),
				rsPod("high", 0, "risky", func(p *corev1.Pod) { p.Spec.Priority = new(int32(1000)) }),
				rsPod("low", 0, "risky"),
			},
			config: func(c *config.Rebalancer) { c.MaxParallelEvictions = 1 },
			want:   map[string]string{"low-h-0": "wave 1", "high-h-0": "wave 2", "dns-h-0": "wave 3"},
		},
		"maxParallelEvictions caps a wave": {
			pods:   []*corev1.Pod{rsPod("a", 0, "risky"), rsPod("b", 0, "risky"), rsPod("c", 0, "risky")},
			config: func(c *config.Rebalancer) { c.MaxParallelEvictions = 2 },
			want:   map[string]string{"a-h-0": "wave 1", "b-h-0": "wave 1", "c-h-0": "wave 2"},
		},
		"two pods, room for one: one is blocked": {
			pods: []*corev1.Pod{rsPod("big", 0, "risky", bigCPU), rsPod("big", 1, "risky", bigCPU)},
			want: map[string]string{"big-h-0": "wave 1", "big-h-1": "blocked"}, blocked: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			r := risky.DeepCopy()
			if tc.signal != nil {
				r.Status.Conditions = r.Status.Conditions[:1]
				tc.signal(r)
			}
			snap := snapshot.New(now, snapshot.Objects{Nodes: []*corev1.Node{r, other}, Pods: tc.pods, PDBs: tc.pdbs})
			c := cfg()
			if tc.config != nil {
				tc.config(c)
			}
			plan, err := New(snap, Options{Config: c})
			if err != nil {
				t.Fatal(err)
			}
			got := waves(plan)
			for k, v := range tc.want {
				if v == "" {
					delete(tc.want, k) // stays on its node, not planned
				}
			}
			if diff := cmp.Diff(tc.want, got); diff != "" {
				t.Errorf("(-want +got):\n%s", diff)
			}
			if plan.Complete == tc.blocked {
				t.Errorf("complete = %v, want %v", plan.Complete, !tc.blocked)
			}
			if tc.blocked && len(plan.Nodes[0].Blockers) == 0 {
				t.Error("a blocked plan lists no blocker")
			}
		})
	}
}

// disrupted names pod in p's status.disruptedPods, granted at, and counts
// it out of the healthy pods as the disruption controller does.
func disrupted(p *policyv1.PodDisruptionBudget, pod string, at time.Time) *policyv1.PodDisruptionBudget {
	p.Status.DisruptedPods = map[string]metav1.Time{pod: metav1.NewTime(at)}
	p.Status.CurrentHealthy--
	return p
}

func TestGranted(t *testing.T) {
	created := now.Add(-time.Hour)
	tests := map[string]struct {
		at   *time.Time
		name string
		pod  func(*corev1.Pod)
		want bool
	}{
		"granted a moment ago":                              {at: new(now.Add(-10 * time.Second)), want: true},
		"granted just inside the trusted minute":            {at: new(now.Add(-GrantTrust + time.Second)), want: true},
		"granted a minute ago: too close to its expiry":     {at: new(now.Add(-GrantTrust)), want: false},
		"granted 90 s ago: not trusted, though not expired": {at: new(now.Add(-90 * time.Second)), want: false},
		"a little clock skew is allowed":                    {at: new(now.Add(5 * time.Second)), want: true},
		"30 s in the future: not trusted":                   {at: new(now.Add(30 * time.Second)), want: false},
		"granted before the pod was created":                {at: new(created.Add(-time.Second)), want: false},
		"granted in the second the pod was created":         {at: new(created), want: false},
		"another pod's entry":                               {at: new(now), name: "web-h-9", want: false},
		"no entry":                                          {},
		"a Job's pod (the Eviction API would mark it DisruptionTarget)": {at: new(now), want: false,
			pod: func(p *corev1.Pod) { p.OwnerReferences[0].Kind = "Job" }},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			pod := rsPod("web", 0, "risky", func(p *corev1.Pod) { p.CreationTimestamp = metav1.NewTime(created) })
			if tc.pod != nil {
				tc.pod(pod)
			}
			b := pdb("web", "web", 0, 4, 3)
			if tc.at != nil {
				entry := pod.Name
				if tc.name != "" {
					entry = tc.name
				}
				disrupted(b, entry, *tc.at)
			}
			if got := Granted(b, pod, now); got != tc.want {
				t.Errorf("Granted = %v, want %v", got, tc.want)
			}
		})
	}
}

func bigCPU(p *corev1.Pod) {
	p.Spec.Containers[0].Resources.Requests[corev1.ResourceCPU] = resource.MustParse("5")
}

func TestSuggestedPDB(t *testing.T) {
	zone := func(p *corev1.Pod) { p.Labels["topology.kubernetes.io/zone"] = "us-east-1a" }
	web, webRS := deployment("web", 2, func(d *appsv1.Deployment) {
		d.Spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}
	})
	cache := &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "cache", Namespace: "shop", UID: "sts-cache"},
		Spec: appsv1.StatefulSetSpec{Selector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{
			{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"cache"}}}}}}
	cachePod := rsPod("cache", 0, "risky", zone, func(p *corev1.Pod) {
		p.OwnerReferences[0].Kind, p.OwnerReferences[0].Name, p.OwnerReferences[0].UID = "StatefulSet", "cache", "sts-cache"
	})
	snap := snapshot.New(now, snapshot.Objects{
		Nodes: []*corev1.Node{node("risky", "spot-a", now, rebalanceCondition), node("other", "x", now)},
		Pods:  []*corev1.Pod{rsPod("web", 0, "risky", zone), rsPod("web", 1, "risky", zone), rsPod("db", 0, "risky"), cachePod},
		PDBs:  []*policyv1.PodDisruptionBudget{pdb("db", "db", 1, 3, 2)}, Deployments: []*appsv1.Deployment{web},
		ReplicaSets: []*appsv1.ReplicaSet{webRS}, StatefulSets: []*appsv1.StatefulSet{cache}})
	plan, err := New(snap, Options{Config: cfg()})
	if err != nil {
		t.Fatal(err)
	}
	// The pods' zone label is not the workloads': a PDB on it would
	// protect one zone's pods only.
	want := []Unprotected{
		{Namespace: "shop", Kind: "Deployment", Name: "web", Pods: 2,
			SuggestedPDB: SuggestedPDB{Name: "web", Selector: map[string]string{"app": "web"}, MaxUnavailable: 1}},
		{Namespace: "shop", Kind: "StatefulSet", Name: "cache", Pods: 1,
			SuggestedPDB: SuggestedPDB{Name: "cache", Selector: map[string]string{}, MaxUnavailable: 1,
				MatchExpressions: []metav1.LabelSelectorRequirement{{Key: "app", Operator: metav1.LabelSelectorOpIn, Values: []string{"cache"}}}}},
	}
	if diff := cmp.Diff(want, plan.Nodes[0].Unprotected); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
}

func TestReplacement(t *testing.T) {
	signalled := now.Add(-time.Minute)
	tests := map[string]struct {
		mode      config.ReplacementMode
		extra     []*corev1.Node
		wantReady bool
		wantNodes []string
	}{
		"mode node waits without a new node in the pool": {
			mode: config.ReplacementNode, extra: []*corev1.Node{node("old", "spot-a", now.Add(-time.Hour))},
		},
		"mode node is ready once a new Ready node joins the pool": {
			mode: config.ReplacementNode, extra: []*corev1.Node{node("new", "spot-a", now)}, wantReady: true, wantNodes: []string{"new"},
		},
		"a new node of another pool does not count": {
			mode: config.ReplacementNode, extra: []*corev1.Node{node("new", "spot-b", now)},
		},
		"a new node that is itself at risk does not count": {
			mode: config.ReplacementNode, extra: []*corev1.Node{node("new", "spot-a", now, rebalanceCondition)},
		},
		"mode capacity is ready when the pods fit on old nodes": {
			mode: config.ReplacementCapacity, extra: []*corev1.Node{node("old", "spot-a", now.Add(-time.Hour))}, wantReady: true,
		},
		"mode none is always ready": {
			mode: config.ReplacementNone, wantReady: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			risky := node("risky", "spot-a", now.Add(-time.Hour), func(n *corev1.Node) {
				n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionRebalance, Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(signalled)})
			})
			snap := snapshot.New(now, snapshot.Objects{Nodes: append([]*corev1.Node{risky}, tc.extra...), Pods: []*corev1.Pod{rsPod("web", 0, "risky")}})
			c := cfg()
			c.Replacement.Mode = tc.mode
			plan, err := New(snap, Options{Config: c})
			if err != nil {
				t.Fatal(err)
			}
			r := plan.Nodes[0].Replacement
			if r.Ready != tc.wantReady {
				t.Errorf("ready = %v (%s), want %v", r.Ready, r.Reason, tc.wantReady)
			}
			if tc.wantNodes != nil {
				if diff := cmp.Diff(tc.wantNodes, r.Nodes); diff != "" {
					t.Errorf("nodes (-want +got):\n%s", diff)
				}
			}
		})
	}
}

func TestPlanNamedNodesAsIfJustRecommended(t *testing.T) {
	snap := snapshot.New(now, snapshot.Objects{Nodes: []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour)), node("b", "spot-a", now.Add(-time.Hour))}, Pods: []*corev1.Pod{rsPod("web", 0, "a")}})
	plan, err := New(snap, Options{Config: cfg(), Nodes: []string{"a"}})
	if err != nil {
		t.Fatal(err)
	}
	if len(plan.Nodes) != 1 || plan.Nodes[0].Signal != signals.RebalanceRecommendation || plan.Nodes[0].SignalSource != signals.SourcePlan {
		t.Fatalf("got %+v", plan.Nodes)
	}
	if plan.Nodes[0].Pods[0].Destination != "b" {
		t.Errorf("destination = %q, want b", plan.Nodes[0].Pods[0].Destination)
	}
	if _, err := New(snap, Options{Config: cfg(), Nodes: []string{"nope"}}); err == nil {
		t.Error("an unknown node must be an error")
	}
}

func TestUnplaceableCountsPodsThatFitNowhere(t *testing.T) {
	snap := snapshot.New(now, snapshot.Objects{Nodes: []*corev1.Node{node("risky", "spot-a", now, rebalanceCondition), node("other", "x", now)}, Pods: []*corev1.Pod{rsPod("big", 0, "risky", bigCPU), rsPod("big", 1, "risky", bigCPU),
		rsPod("solo", 0, "risky", func(p *corev1.Pod) { p.OwnerReferences = nil })}})
	plan, err := New(snap, Options{Config: cfg()})
	if err != nil {
		t.Fatal(err)
	}
	// One big pod fits, one does not; the pod without a controller is
	// blocked for another reason and does not count.
	if got := plan.Nodes[0].Unplaceable; got != 1 {
		t.Errorf("unplaceable = %d, want 1", got)
	}
	if evict, blocked, waves := plan.Nodes[0].Tally(); evict != 1 || blocked != 2 || waves != 1 {
		t.Errorf("tally = %d evict, %d blocked, %d waves; want 1, 2, 1", evict, blocked, waves)
	}
}

// Draining follows replacements as they join: the k-th node of a pool to
// drain needs k new nodes.
func TestReplacementsAreSharedInOrder(t *testing.T) {
	draining := func(n *corev1.Node) { n.Annotations = map[string]string{signals.AnnotationState: "draining"} }
	for _, tc := range []struct {
		name      string
		otherMods []func(*corev1.Node)
		newNodes  int
		wantReady bool
	}{
		{name: "the first of two at-risk nodes starts with one new node", newNodes: 1, wantReady: true},
		{name: "the second waits for a second new node", otherMods: []func(*corev1.Node){draining}, newNodes: 1},
		{name: "and starts with it", otherMods: []func(*corev1.Node){draining}, newNodes: 2, wantReady: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			nodes := []*corev1.Node{node("a", "spot-a", now.Add(-time.Hour), rebalanceCondition),
				node("b", "spot-a", now.Add(-time.Hour), append([]func(*corev1.Node){rebalanceCondition}, tc.otherMods...)...)}
			for i := range tc.newNodes {
				nodes = append(nodes, node(fmt.Sprintf("new-%d", i), "spot-a", now))
			}
			plan, err := New(snapshot.New(now, snapshot.Objects{Nodes: nodes, Pods: []*corev1.Pod{rsPod("web", 0, "a")}}), Options{Config: cfg(), Nodes: nil})
			if err != nil {
				t.Fatal(err)
			}
			for _, np := range plan.Nodes {
				if np.Name == "a" && np.Replacement.Ready != tc.wantReady {
					t.Errorf("node a ready = %v (%s), want %v", np.Replacement.Ready, np.Replacement.Reason, tc.wantReady)
				}
			}
		})
	}
}
