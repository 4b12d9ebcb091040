package simulation

import (
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

type nodeOpt func(*corev1.Node)

func node(name string, opts ...nodeOpt) *corev1.Node {
	n := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{
			"kubernetes.io/hostname": name, corev1.LabelTopologyZone: "zone-a"}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("4"), corev1.ResourceMemory: resource.MustParse("8Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(n)
	}
	return n
}

func zone(z string) nodeOpt     { return func(n *corev1.Node) { n.Labels[corev1.LabelTopologyZone] = z } }
func label(k, v string) nodeOpt { return func(n *corev1.Node) { n.Labels[k] = v } }
func cpu(c string) nodeOpt {
	return func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourceCPU] = resource.MustParse(c) }
}
func maxPods(c string) nodeOpt {
	return func(n *corev1.Node) { n.Status.Allocatable[corev1.ResourcePods] = resource.MustParse(c) }
}
func taint(k, v string) nodeOpt {
	return func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: k, Value: v, Effect: corev1.TaintEffectNoSchedule})
	}
}
func cordoned(n *corev1.Node) { n.Spec.Unschedulable = true }
func notReady(n *corev1.Node) { n.Status.Conditions[0].Status = corev1.ConditionFalse }

type podOpt func(*corev1.Pod)

func pod(name, nodeName string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", UID: types.UID("uid-" + name), Labels: map[string]string{"app": name}},
		Spec:       corev1.PodSpec{NodeName: nodeName, Containers: []corev1.Container{{Name: "c"}}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func app(a string) podOpt { return func(p *corev1.Pod) { p.Labels = map[string]string{"app": a} } }
func req(c string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Resources.Requests = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(c)}
	}
}
func initReq(c string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.InitContainers = []corev1.Container{{Name: "init", Resources: corev1.ResourceRequirements{
			Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(c)}}}}
	}
}
func overhead(c string) podOpt {
	return func(p *corev1.Pod) { p.Spec.Overhead = corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(c)} }
}
func tolerate(k, v string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Tolerations = append(p.Spec.Tolerations, corev1.Toleration{Key: k, Operator: corev1.TolerationOpEqual, Value: v, Effect: corev1.TaintEffectNoSchedule})
	}
}
func selectNode(k, v string) podOpt {
	return func(p *corev1.Pod) { p.Spec.NodeSelector = map[string]string{k: v} }
}
func withHostPort(port int32) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Containers[0].Ports = []corev1.ContainerPort{{ContainerPort: port, HostPort: port}}
	}
}
func requireNodeIn(k string, values ...string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{RequiredDuringSchedulingIgnoredDuringExecution: &corev1.NodeSelector{
			NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: k, Operator: corev1.NodeSelectorOpIn, Values: values}}}}}}}
	}
}
func term(appLabel, key string) corev1.PodAffinityTerm {
	return corev1.PodAffinityTerm{TopologyKey: key, LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": appLabel}}}
}
func antiAffinity(appLabel, key string) podOpt {
	return func(p *corev1.Pod) {
		if p.Spec.Affinity == nil {
			p.Spec.Affinity = &corev1.Affinity{}
		}
		p.Spec.Affinity.PodAntiAffinity = &corev1.PodAntiAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term(appLabel, key)}}
	}
}
func affinity(appLabel, key string) podOpt {
	return func(p *corev1.Pod) {
		if p.Spec.Affinity == nil {
			p.Spec.Affinity = &corev1.Affinity{}
		}
		p.Spec.Affinity.PodAffinity = &corev1.PodAffinity{RequiredDuringSchedulingIgnoredDuringExecution: []corev1.PodAffinityTerm{term(appLabel, key)}}
	}
}
func spread(key string, maxSkew int32, appLabel string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.TopologySpreadConstraints = append(p.Spec.TopologySpreadConstraints, corev1.TopologySpreadConstraint{
			MaxSkew: maxSkew, TopologyKey: key, WhenUnsatisfiable: corev1.DoNotSchedule,
			LabelSelector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": appLabel}}})
	}
}

func preferNode(k, v string) podOpt {
	return func(p *corev1.Pod) {
		p.Spec.Affinity = &corev1.Affinity{NodeAffinity: &corev1.NodeAffinity{PreferredDuringSchedulingIgnoredDuringExecution: []corev1.PreferredSchedulingTerm{{
			Weight: 50, Preference: corev1.NodeSelectorTerm{MatchExpressions: []corev1.NodeSelectorRequirement{{Key: k, Operator: corev1.NodeSelectorOpIn, Values: []string{v}}}}}}}}
	}
}
func softTaint(k string) nodeOpt {
	return func(n *corev1.Node) {
		n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: k, Value: "true", Effect: corev1.TaintEffectPreferNoSchedule})
	}
}
func ownedBy(rs string) podOpt {
	return func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: rs, UID: types.UID(rs), Controller: ptr.To(true)}}
	}
}

func ownedByJob(job string) podOpt {
	return func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{APIVersion: "batch/v1", Kind: "Job", Name: job, UID: types.UID(job), Controller: ptr.To(true)}}
	}
}

func TestPlacement(t *testing.T) {
	tests := map[string]struct {
		nodes []*corev1.Node
		// pods on "risky" move; the others stay.
		pods []*corev1.Pod
		// want maps each moving pod to its destination, or to a substring
		// of the reason when it starts with "!".
		want map[string]string
	}{
		"a pod moves to a node with room": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("web", "risky", req("1"))},
			want:  map[string]string{"web": "a"},
		},
		"the at-risk node and other at-risk nodes take nothing": {
			nodes: []*corev1.Node{node("risky"), node("also-risky")},
			pods:  []*corev1.Pod{pod("web", "risky")},
			want:  map[string]string{"web": "!0/2 nodes are available: 2 at risk"},
		},
		"a cordoned node and a not-ready node take nothing": {
			nodes: []*corev1.Node{node("risky"), node("a", cordoned), node("b", notReady)},
			pods:  []*corev1.Pod{pod("web", "risky")},
			want:  map[string]string{"web": "!1 at risk, 1 not ready, 1 unschedulable"},
		},
		"a NoSchedule taint the pod does not tolerate keeps it off": {
			nodes: []*corev1.Node{node("risky"), node("spot", taint("spot", "true"))},
			pods:  []*corev1.Pod{pod("web", "risky")},
			want:  map[string]string{"web": "!1 untolerated taint"},
		},
		"a tolerated taint does not": {
			nodes: []*corev1.Node{node("risky"), node("spot", taint("spot", "true"))},
			pods:  []*corev1.Pod{pod("web", "risky", tolerate("spot", "true"))},
			want:  map[string]string{"web": "spot"},
		},
		"a preferred node affinity outweighs free room (NodeAffinity, weight 2)": {
			// b is emptier, but the pod prefers spot capacity, as the
			// webhook's spot profile makes it.
			nodes: []*corev1.Node{node("risky"), node("a", label("capacity", "spot")), node("b", cpu("16"))},
			pods:  []*corev1.Pod{pod("web", "risky", req("1"), preferNode("capacity", "spot")), pod("busy", "a", req("1"))},
			want:  map[string]string{"web": "a"},
		},
		"a PreferNoSchedule taint the pod does not tolerate is avoided (TaintToleration, weight 3)": {
			nodes: []*corev1.Node{node("risky"), node("a", softTaint("spot")), node("b")},
			pods:  []*corev1.Pod{pod("web", "risky", req("1")), pod("busy", "b", req("1"))},
			want:  map[string]string{"web": "b"},
		},
		"pods of one ReplicaSet spread over nodes by default (PodTopologySpread, weight 2)": {
			// a is emptier, but already runs two pods of the ReplicaSet.
			nodes: []*corev1.Node{node("risky"), node("a", cpu("8")), node("b")},
			pods: []*corev1.Pod{pod("web-1", "risky", app("web"), ownedBy("rs-web")),
				pod("web-2", "a", app("web"), ownedBy("rs-web")), pod("web-3", "a", app("web"), ownedBy("rs-web")),
				pod("other", "b", req("1"))},
			want: map[string]string{"web-1": "b"},
		},
		"without an owner no default spreading applies": {
			nodes: []*corev1.Node{node("risky"), node("a", cpu("8")), node("b")},
			pods: []*corev1.Pod{pod("web-1", "risky", app("web")),
				pod("web-2", "a", app("web")), pod("web-3", "a", app("web")),
				pod("other", "b", req("1"))},
			want: map[string]string{"web-1": "a"},
		},
		"pods of one ReplicaSet placed under zone spread count once each": {
			// zone-a 0, zone-b 1 (full): with maxSkew 2 all three fit in
			// zone-a (2, then 3 against 1).
			nodes: []*corev1.Node{node("risky"), node("a", cpu("16")), node("b", zone("zone-b"), cpu("1"))},
			pods: []*corev1.Pod{
				pod("m1", "risky", req("1"), app("web"), ownedBy("rs-web"), spread(corev1.LabelTopologyZone, 2, "web")),
				pod("m2", "risky", req("1"), app("web"), ownedBy("rs-web"), spread(corev1.LabelTopologyZone, 2, "web")),
				pod("m3", "risky", req("1"), app("web"), ownedBy("rs-web"), spread(corev1.LabelTopologyZone, 2, "web")),
				pod("web-b", "b", req("1"), app("web"), ownedBy("rs-web"))},
			want: map[string]string{"m1": "a", "m2": "a", "m3": "a"},
		},
		"a nodeSelector picks only matching nodes": {
			nodes: []*corev1.Node{node("risky"), node("a"), node("gpu", label("gpu", "true"))},
			pods:  []*corev1.Pod{pod("web", "risky", selectNode("gpu", "true"))},
			want:  map[string]string{"web": "gpu"},
		},
		"required node affinity is honoured": {
			nodes: []*corev1.Node{node("risky"), node("a", zone("zone-a")), node("b", zone("zone-b"))},
			pods:  []*corev1.Pod{pod("web", "risky", requireNodeIn(corev1.LabelTopologyZone, "zone-c"))},
			want:  map[string]string{"web": "!2 didn't match node affinity/selector"},
		},
		"a request larger than any free space does not fit": {
			nodes: []*corev1.Node{node("risky"), node("a", cpu("1"))},
			pods:  []*corev1.Pod{pod("web", "risky", req("2"))},
			want:  map[string]string{"web": "!1 Insufficient cpu"},
		},
		"init containers count when larger than the app containers": {
			nodes: []*corev1.Node{node("risky"), node("a", cpu("1"))},
			pods:  []*corev1.Pod{pod("web", "risky", req("500m"), initReq("1500m"))},
			want:  map[string]string{"web": "!Insufficient cpu"},
		},
		"pod overhead counts": {
			nodes: []*corev1.Node{node("risky"), node("a", cpu("1"))},
			pods:  []*corev1.Pod{pod("web", "risky", req("900m"), overhead("200m"))},
			want:  map[string]string{"web": "!Insufficient cpu"},
		},
		"pods already on a node use its room": {
			nodes: []*corev1.Node{node("risky"), node("a", cpu("2"))},
			pods:  []*corev1.Pod{pod("web", "risky", req("1")), pod("db", "a", req("1500m"))},
			want:  map[string]string{"web": "!Insufficient cpu"},
		},
		"a full pod count keeps a pod off": {
			nodes: []*corev1.Node{node("risky"), node("a", maxPods("1"))},
			pods:  []*corev1.Pod{pod("web", "risky"), pod("db", "a")},
			want:  map[string]string{"web": "!1 Too many pods"},
		},
		"two pods and room for one: one is placed, one is not": {
			nodes: []*corev1.Node{node("risky"), node("a", cpu("1500m"))},
			pods:  []*corev1.Pod{pod("web-1", "risky", req("1")), pod("web-2", "risky", req("1"))},
			want:  map[string]string{"web-1": "a", "web-2": "!Insufficient cpu"},
		},
		"the larger pod is placed first so both fit": {
			nodes: []*corev1.Node{node("risky"), node("a", cpu("1")), node("b", cpu("3"))},
			pods:  []*corev1.Pod{pod("small", "risky", req("1")), pod("big", "risky", req("3"))},
			want:  map[string]string{"big": "b", "small": "a"},
		},
		"pod with hostPort 80 does not fit a node where port 80 is taken": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("web", "risky", withHostPort(80)), pod("proxy", "a", withHostPort(80))},
			want:  map[string]string{"web": "!1 host port conflict"},
		},
		"two moving pods cannot share a host port": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("web-1", "risky", withHostPort(80)), pod("web-2", "risky", withHostPort(80))},
			want:  map[string]string{"web-1": "a", "web-2": "!host port conflict"},
		},
		"anti-affinity keeps a pod away from a node that runs a match": {
			nodes: []*corev1.Node{node("risky"), node("a"), node("b")},
			pods: []*corev1.Pod{pod("web-1", "risky", app("web"), antiAffinity("web", "kubernetes.io/hostname")),
				pod("web-2", "a", app("web"))},
			want: map[string]string{"web-1": "b"},
		},
		"an existing pod's anti-affinity keeps a matching pod away": {
			nodes: []*corev1.Node{node("risky"), node("a"), node("b", cpu("1"))},
			pods: []*corev1.Pod{pod("web", "risky", req("500m")),
				pod("loner", "a", antiAffinity("web", "kubernetes.io/hostname"))},
			want: map[string]string{"web": "b"},
		},
		"anti-affinity between moving pods spreads them": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods: []*corev1.Pod{pod("web-1", "risky", app("web"), antiAffinity("web", "kubernetes.io/hostname")),
				pod("web-2", "risky", app("web"), antiAffinity("web", "kubernetes.io/hostname"))},
			want: map[string]string{"web-1": "a", "web-2": "!anti-affinity"},
		},
		"anti-affinity between moving pods of one ReplicaSet spreads them, a staying one's included": {
			// The pods share their controller, so their rules are cached by
			// it: each placement must still be seen by the next pod.
			nodes: []*corev1.Node{node("risky"), node("a"), node("b"), node("c")},
			pods: []*corev1.Pod{
				pod("web-1", "risky", app("web"), ownedBy("rs-web"), antiAffinity("web", "kubernetes.io/hostname")),
				pod("web-2", "risky", app("web"), ownedBy("rs-web"), antiAffinity("web", "kubernetes.io/hostname")),
				pod("web-3", "risky", app("web"), ownedBy("rs-web"), antiAffinity("web", "kubernetes.io/hostname")),
				pod("web-0", "c", app("web"), ownedBy("rs-web"), antiAffinity("web", "kubernetes.io/hostname"))},
			want: map[string]string{"web-1": "a", "web-2": "b", "web-3": "!3 didn't match pod anti-affinity"},
		},
		"a pod placed after a ReplicaSet's first keeps the next off by its anti-affinity": {
			// web-0 (largest) goes first and caches what keeps web pods
			// away; guard is placed next, on b; web-1 must see it.
			nodes: []*corev1.Node{node("risky"), node("a"), node("b")},
			pods: []*corev1.Pod{
				pod("web-0", "risky", app("web"), ownedBy("rs-web"), req("3")),
				pod("guard", "risky", req("2"), antiAffinity("web", "kubernetes.io/hostname")),
				pod("web-1", "risky", app("web"), ownedBy("rs-web"), req("1"))},
			want: map[string]string{"web-0": "a", "guard": "b", "web-1": "a"},
		},
		"a pod placed after a ReplicaSet's first counts against the next one's own anti-affinity": {
			// web-1 goes first and caches its term's domains; cache is
			// placed next, on b (web-1's term keeps it off a); web-2's own
			// term must see it there.
			nodes: []*corev1.Node{node("risky"), node("a"), node("b")},
			pods: []*corev1.Pod{
				pod("web-1", "risky", app("web"), ownedBy("rs-web"), req("2"), antiAffinity("cache", "kubernetes.io/hostname")),
				pod("cache", "risky", app("cache"), req("1")),
				pod("web-2", "risky", app("web"), ownedBy("rs-web"), req("500m"), antiAffinity("cache", "kubernetes.io/hostname"))},
			want: map[string]string{"web-1": "a", "cache": "b", "web-2": "a"},
		},
		"two pods of one controller with different spread constraints each count their own": {
			// m1's constraint counts web pods (2 in zone-a): it goes to b.
			// m2's counts cache pods (none): it may go to the emptier a.
			// (Owned by a Job: no default spreading to hide the difference.)
			nodes: []*corev1.Node{node("risky"), node("a", cpu("16")), node("b", zone("zone-b"))},
			pods: []*corev1.Pod{
				pod("m1", "risky", app("web"), ownedByJob("web"), req("2"), spread(corev1.LabelTopologyZone, 1, "web")),
				pod("m2", "risky", app("web"), ownedByJob("web"), req("1"), spread(corev1.LabelTopologyZone, 1, "cache")),
				pod("web-x", "a", app("web")), pod("web-y", "a", app("web"))},
			want: map[string]string{"m1": "b", "m2": "a"},
		},
		"two pods of one controller with different anti-affinity terms each keep their own": {
			// A controller mid-update: db-0 still has the hostname term,
			// db-1 the zone term; db-2 stays in zone-a. db-1 must leave
			// zone-a (for the fuller b1) though db-0's term would allow a3.
			// (Owned by a Job: no default spreading to hide the difference.)
			nodes: []*corev1.Node{node("risky"), node("a1", cpu("16")), node("a2"), node("a3", cpu("16")), node("b1", zone("zone-b"))},
			pods: []*corev1.Pod{
				pod("db-0", "risky", app("db"), ownedByJob("db"), req("2"), antiAffinity("db", "kubernetes.io/hostname")),
				pod("db-1", "risky", app("db"), ownedByJob("db"), req("1"), antiAffinity("db", corev1.LabelTopologyZone)),
				pod("db-2", "a2", app("db"), ownedByJob("db")),
				pod("filler", "b1", req("1"))},
			want: map[string]string{"db-0": "a1", "db-1": "b1"},
		},
		"affinity places a pod next to its match": {
			nodes: []*corev1.Node{node("risky"), node("a", zone("zone-a")), node("b", zone("zone-b"))},
			pods: []*corev1.Pod{pod("web", "risky", affinity("cache", corev1.LabelTopologyZone)),
				pod("cache", "b", app("cache"))},
			want: map[string]string{"web": "b"},
		},
		"affinity with no match anywhere fails unless the pod matches itself": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("web", "risky", affinity("cache", corev1.LabelTopologyZone))},
			want:  map[string]string{"web": "!didn't match pod affinity"},
		},
		"the first pod of a self-affine group goes anywhere": {
			nodes: []*corev1.Node{node("risky"), node("a")},
			pods:  []*corev1.Pod{pod("web", "risky", app("web"), affinity("web", corev1.LabelTopologyZone))},
			want:  map[string]string{"web": "a"},
		},
		"topology spread refuses a zone that would exceed maxSkew": {
			nodes: []*corev1.Node{node("risky", zone("zone-c")), node("a", zone("zone-a")), node("b", zone("zone-b"))},
			pods: []*corev1.Pod{pod("web-1", "risky", app("web"), spread(corev1.LabelTopologyZone, 1, "web")),
				pod("web-2", "a", app("web")), pod("web-3", "a", app("web")), pod("web-4", "b", app("web"))},
			// zone-c (at risk, but a domain) has 0 after the move: skew
			// would be 2 in zone-a and 2 in zone-b.
			want: map[string]string{"web-1": "!2 didn't match topology spread"},
		},
		"topology spread allows the emptier zone": {
			nodes: []*corev1.Node{node("risky", zone("zone-a")), node("a", zone("zone-a")), node("b", zone("zone-b"))},
			pods: []*corev1.Pod{pod("web-1", "risky", app("web"), spread(corev1.LabelTopologyZone, 1, "web")),
				pod("web-2", "a", app("web"))},
			want: map[string]string{"web-1": "b"},
		},
		"a node without the topology key cannot take a spread pod": {
			nodes: []*corev1.Node{node("risky"), node("a", func(n *corev1.Node) { delete(n.Labels, corev1.LabelTopologyZone) })},
			pods:  []*corev1.Pod{pod("web", "risky", spread(corev1.LabelTopologyZone, 1, "web"))},
			want:  map[string]string{"web": "!didn't match topology spread"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			snap := snapshot.New(time.Now(), snapshot.Objects{Nodes: tc.nodes, Pods: tc.pods})
			var moving []*corev1.Pod
			for _, p := range tc.pods {
				if p.Spec.NodeName == "risky" {
					moving = append(moving, p)
				}
			}
			atRisk := sets.New("risky")
			if snap.Node("also-risky") != nil {
				atRisk.Insert("also-risky")
			}
			results := New(snap, atRisk, moving).Place(moving)
			if len(results) != len(moving) {
				t.Fatalf("%d results for %d pods", len(results), len(moving))
			}
			checkResults(t, results, tc.want)
		})
	}
}

// checkResults compares each pod's result with want: its destination, or
// "!" and a substring of the reason it fits nowhere.
func checkResults(t *testing.T, results []Result, want map[string]string) {
	t.Helper()
	for _, r := range results {
		w, ok := want[r.Pod.Name]
		if !ok {
			t.Errorf("pod %s: no expectation (got %q %q)", r.Pod.Name, r.Node, r.Reason)
			continue
		}
		if reason, isReason := strings.CutPrefix(w, "!"); isReason {
			if r.Node != "" || !strings.Contains(r.Reason, reason) {
				t.Errorf("pod %s: got node %q reason %q, want no node and a reason containing %q", r.Pod.Name, r.Node, r.Reason, reason)
			}
		} else if r.Node != w {
			t.Errorf("pod %s: placed on %q (%s), want %q", r.Pod.Name, r.Node, r.Reason, w)
		}
	}
}

func TestExplainReadsLikeTheScheduler(t *testing.T) {
	got := explain(7, map[string]int{ReasonTaint: 3, "Insufficient cpu": 2, ReasonAtRisk: 2})
	want := "0/7 nodes are available: 3 untolerated taint, 2 Insufficient cpu, 2 at risk"
	if got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
