package executor

import (
	"context"
	"encoding/json"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	dto "github.com/prometheus/client_model/go"
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

// The time a node spends draining is observed when it is drained, for
// drains this writer saw begin.
func TestDrainingTimeIsObservedFromDrainingToDrained(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakeClock(now)
	kube := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "1"}}, &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "b", ResourceVersion: "1"}})
	m := NewMetrics(prometheus.NewRegistry())
	w := &Writer{Kube: kube, Recorder: record.NewFakeRecorder(100), Metrics: m, Clock: clock}
	sig := signals.Signal{Kind: signals.RebalanceRecommendation, Since: now.Add(-time.Minute)}
	to := func(name string, state signals.State) {
		t.Helper()
		node, err := kube.CoreV1().Nodes().Get(context.Background(), name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Apply(context.Background(), node, sig, decide.Decision{Transition: &decide.Transition{State: state, Reason: signals.ReasonReplacementReady}}); err != nil {
			t.Fatal(err)
		}
	}
	to("a", signals.StateDraining)
	clock.Step(90 * time.Second)
	to("a", signals.StateDrained)
	// b was draining before this writer started: not observed.
	to("b", signals.StateDrained)
	h := m.Draining.WithLabelValues(string(signals.RebalanceRecommendation)).(prometheus.Histogram)
	var got dto.Metric
	if err := h.Write(&got); err != nil {
		t.Fatal(err)
	}
	if n, sum := got.GetHistogram().GetSampleCount(), got.GetHistogram().GetSampleSum(); n != 1 || sum != 90 {
		t.Errorf("draining histogram: %d observations summing to %vs, want 1 of 90s", n, sum)
	}
}

// The time between two looks at a node that waits on its budgets both
// times is added up; a look that does not wait ends the episode.
func TestBudgetWaitAddsTheTimeBetweenLooksThatWait(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clock := clocktesting.NewFakeClock(now)
	m := NewMetrics(prometheus.NewRegistry())
	w := &Writer{Kube: fake.NewClientset(), Recorder: record.NewFakeRecorder(10), Metrics: m, Clock: clock}
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a"}}
	sig := signals.Signal{Kind: signals.InterruptionNotice, Since: now}
	for _, look := range []struct {
		after   time.Duration
		waiting bool
	}{{0, true}, {time.Second, true}, {2 * time.Second, true}, {5 * time.Second, false}, {time.Second, true}, {3 * time.Second, true}} {
		clock.Step(look.after)
		if _, err := w.Apply(context.Background(), node, sig, decide.Decision{WaitingOnBudgets: look.waiting}); err != nil {
			t.Fatal(err)
		}
	}
	// 1 s + 2 s, then (after a look that did not wait) 3 s.
	if got := testutil.ToFloat64(m.BudgetWait.WithLabelValues(string(signals.InterruptionNotice))); got != 6 {
		t.Errorf("budget wait %vs, want 6s", got)
	}
	// A node that is gone is forgotten: a node of the same name starts
	// afresh.
	w.Forget("a")
	clock.Step(4 * time.Second)
	if _, err := w.Apply(context.Background(), node, sig, decide.Decision{WaitingOnBudgets: true}); err != nil {
		t.Fatal(err)
	}
	if got := testutil.ToFloat64(m.BudgetWait.WithLabelValues(string(signals.InterruptionNotice))); got != 6 {
		t.Errorf("budget wait after the node was forgotten %vs, want still 6s", got)
	}
}

// A draining node is labelled for load balancers to leave it, unless
// someone else labelled it already; a drain rolled back removes the label
// only if the rebalancer wrote it.
func TestLoadBalancersLeaveADrainingNode(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	sig := signals.Signal{Kind: signals.InterruptionNotice, Since: now.Add(-time.Minute)}
	drain := decide.Decision{Transition: &decide.Transition{State: signals.StateDraining, Reason: signals.ReasonInterruption,
		Message: "interruption notice: draining at once", Taint: true, Cordon: true, ExcludeFromLoadBalancers: true}}
	tests := map[string]struct {
		labels map[string]string
		// want is the label after the drain, and after it is rolled back.
		want, wantCleared string
	}{
		"an unlabelled node is labelled, and unlabelled on a roll-back": {want: "true", wantCleared: ""},
		"Karpenter's own value is left alone, also on a roll-back": {
			labels: map[string]string{corev1.LabelNodeExcludeBalancers: "karpenter"}, want: "karpenter", wantCleared: "karpenter"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			kube := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "1", Labels: tc.labels}})
			w := &Writer{Kube: kube, Recorder: record.NewFakeRecorder(10), Metrics: NewMetrics(prometheus.NewRegistry()), Clock: clocktesting.NewFakePassiveClock(now)}
			ctx := context.Background()
			read := func() *corev1.Node {
				n, err := kube.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
				if err != nil {
					t.Fatal(err)
				}
				return n
			}
			if _, err := w.Apply(ctx, read(), sig, drain); err != nil {
				t.Fatal(err)
			}
			if got := read().Labels[corev1.LabelNodeExcludeBalancers]; got != tc.want {
				t.Errorf("label after the drain began = %q, want %q", got, tc.want)
			}
			if _, err := w.Apply(ctx, read(), sig, decide.Decision{Clear: true, ClearedFrom: signals.StateBlocked, Uncordon: true}); err != nil {
				t.Fatal(err)
			}
			n := read()
			if got := n.Labels[corev1.LabelNodeExcludeBalancers]; got != tc.wantCleared {
				t.Errorf("label after the roll-back = %q, want %q", got, tc.wantCleared)
			}
			if _, ok := n.Annotations[signals.AnnotationExcludedFromLoadBalancers]; ok {
				t.Errorf("the record of the label outlived the roll-back")
			}
		})
	}
}

// Karpenter taking over a node this controller drains already is counted
// and said once, though the state stays draining.
func TestKarpenterTakingOverADrainingNodeIsCounted(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	node := &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a", ResourceVersion: "1", Annotations: map[string]string{
		signals.AnnotationState: string(signals.StateDraining), signals.AnnotationStateReasonCode: string(signals.ReasonInterruption)}}}
	kube := fake.NewClientset(node)
	recorder := record.NewFakeRecorder(10)
	m := NewMetrics(prometheus.NewRegistry())
	w := &Writer{Kube: kube, Recorder: recorder, Metrics: m, Clock: clocktesting.NewFakePassiveClock(now)}
	d := decide.Decision{Transition: &decide.Transition{State: signals.StateDraining, Reason: signals.ReasonDrainedByKarpenter,
		Message: "karpenter drains the node", Taint: true, Cordon: true}}
	if _, err := w.Apply(context.Background(), node, signals.Signal{Kind: signals.InterruptionNotice, Since: now}, d); err != nil {
		t.Fatal(err)
	}
	if n := testutil.ToFloat64(m.LeftToOthers.WithLabelValues("karpenter")); n != 1 {
		t.Errorf("drains left to Karpenter: %v, want 1", n)
	}
	select {
	case e := <-recorder.Events:
		if !strings.Contains(e, "DrainedByKarpenter") {
			t.Errorf("event %q, want DrainedByKarpenter", e)
		}
	default:
		t.Errorf("no Event said Karpenter drains the node")
	}
}
