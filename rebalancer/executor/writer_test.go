package executor

import (
	"context"
	"encoding/json"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/record"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/decide"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// A state is written as a merge patch of what changed, carrying the
// resourceVersion read: fields this client does not know survive on a
// newer API server, and a node changed in between conflicts instead of
// being overwritten.
func TestTransitionPatchesOnlyWhatChanged(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "42", Labels: map[string]string{"x": "y"},
			Annotations: map[string]string{"other": "kept"}},
		Spec:   corev1.NodeSpec{Taints: []corev1.Taint{{Key: "spot", Value: "true", Effect: corev1.TaintEffectNoSchedule}}},
		Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}}},
	}
	kube := fake.NewClientset(node)
	var patch []byte
	kube.PrependReactor("patch", "nodes", func(a k8stesting.Action) (bool, runtime.Object, error) {
		patch = a.(k8stesting.PatchAction).GetPatch()
		return false, nil, nil
	})
	w := &Writer{Kube: kube, Recorder: record.NewFakeRecorder(10), Metrics: NewMetrics(prometheus.NewRegistry()), Clock: clocktesting.NewFakePassiveClock(now)}
	sig := signals.Signal{Kind: signals.RebalanceRecommendation, Since: now.Add(-time.Minute)}
	d := decide.Decision{Transition: &decide.Transition{State: signals.StateDraining, Reason: signals.ReasonReplacementReady,
		Message: "1 replacement node(s) Ready in pool a", Taint: true, Cordon: true}}
	if _, err := w.Apply(context.Background(), node, sig, d); err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(patch, &got); err != nil {
		t.Fatalf("patch %s: %v", patch, err)
	}
	want := map[string]any{
		"metadata": map[string]any{"resourceVersion": "42", "annotations": map[string]any{
			signals.AnnotationState:           "draining",
			signals.AnnotationStateReasonCode: "ReplacementReady",
			signals.AnnotationStateReason:     "1 replacement node(s) Ready in pool a",
			signals.AnnotationSignalTime:      "2026-11-26T11:59:00Z",
		}},
		"spec": map[string]any{"unschedulable": true, "taints": []any{
			map[string]any{"key": "spot", "value": "true", "effect": "NoSchedule"},
			map[string]any{"key": signals.TaintDraining, "value": "draining", "effect": "NoSchedule"},
		}},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("patch (-want +got):\n%s", diff)
	}
}
