package controller

import (
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// A surge off two nodes counts its Deployment's pods: Ready elsewhere only
// off its own nodes and off other draining nodes; the owner's pods on it;
// the marked ones on either node; the recorded ones not gone yet; and
// those on a node of the surge that is gone.
func TestSurgeCountsThePodsOfItsNodes(t *testing.T) {
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop", UID: "d-web"}, Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](4)}}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "web-h", Namespace: "shop", UID: "rs-web",
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: "web", UID: d.UID, Controller: ptr.To(true)}}}}
	nodeIn := func(name string, state signals.State) *corev1.Node {
		n := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
		if state != "" {
			n.Annotations[signals.AnnotationState] = string(state)
		}
		return n
	}
	i := 0
	pod := func(node string, mods ...func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("web-h-%d", i), Namespace: "shop", UID: types.UID(fmt.Sprint("p", i)), Annotations: map[string]string{},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-h", UID: rs.UID, Controller: ptr.To(true)}}},
			Spec:   corev1.PodSpec{NodeName: node},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}}}
		i++
		for _, m := range mods {
			m(p)
		}
		return p
	}
	marked := func(p *corev1.Pod) { p.Annotations[signals.AnnotationPodDeletionCost] = signals.SurgeDeletionCost }
	gone := func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(t0)) }
	notReady := func(p *corev1.Pod) { p.Status.Conditions = nil }
	pods := []*corev1.Pod{
		pod("owner", marked),       // web-h-0: moving, on the owner
		pod("owner", marked, gone), // web-h-1: moving, on its way out
		pod("beside", marked),      // web-h-2: moving, on the other node
		pod("other-draining"),      // web-h-3: leaving too, not counted
		pod("healthy"),             // web-h-4: Ready elsewhere
		pod("healthy", notReady),   // web-h-5: starting
		pod("vanished", marked),    // web-h-6: moving, on a node that is gone
		pod("blocked"),             // web-h-7: on a node not draining: counted
	}
	record, err := signals.NewSurgeRecord("spot-rebalancer", d, &signals.SurgeState{Node: "owner", Nodes: []string{"owner", "beside", "vanished"},
		From: 4, To: 8, Phase: signals.SurgeWaiting, Since: t0, Pods: []string{"web-h-0", "web-h-1", "web-h-2", "web-h-6"}})
	if err != nil {
		t.Fatal(err)
	}
	snap := snapshot.New(t0, snapshot.Objects{
		Nodes: []*corev1.Node{nodeIn("owner", signals.StateDraining), nodeIn("beside", signals.StateDraining),
			nodeIn("other-draining", signals.StateDraining), nodeIn("healthy", ""), nodeIn("blocked", signals.StateBlocked)},
		Pods: pods, Deployments: []*appsv1.Deployment{d}, ReplicaSets: []*appsv1.ReplicaSet{rs}, SurgeRecords: []*coordinationv1.Lease{record}})
	got := surgeOf(record, d, "owner", snap)
	type counts struct {
		ReadyElsewhere, Leaving int
		Marked, OnNode          []string
		Stranded                []string
	}
	want := counts{ReadyElsewhere: 2, Leaving: 3, Marked: []string{"web-h-0", "web-h-1", "web-h-2", "web-h-6"}, OnNode: []string{"web-h-0"},
		Stranded: []string{"web-h-6"}}
	if diff := cmp.Diff(want, counts{got.ReadyElsewhere, got.Leaving, got.Marked, got.OnNode, got.Stranded}); diff != "" {
		t.Errorf("(-want +got):\n%s", diff)
	}
	if got.Unreadable || got.Record == nil || got.Replicas != 4 {
		t.Errorf("record %+v unreadable %v replicas %d", got.Record, got.Unreadable, got.Replicas)
	}
}
