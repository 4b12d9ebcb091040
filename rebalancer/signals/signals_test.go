package signals

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestFromNode(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	earlier := now.Add(-5 * time.Minute)
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, LastTransitionTime: metav1.NewTime(earlier)}
	}
	tests := map[string]struct {
		node       corev1.Node
		want       Signal
		wantAtRisk bool
	}{
		"a node without signals is not at risk": {},
		"the rebalance condition is a recommendation since its transition": {
			node:       corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionRebalance, corev1.ConditionTrue)}}},
			want:       Signal{Kind: RebalanceRecommendation, Source: SourceCondition, Since: earlier},
			wantAtRisk: true,
		},
		"a False condition is no signal": {
			node: corev1.Node{Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionRebalance, corev1.ConditionFalse)}}},
		},
		"an interruption wins over a recommendation and carries the termination time": {
			node: corev1.Node{
				ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationTerminationTime: "2026-11-26T12:02:00Z"}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
					cond(ConditionRebalance, corev1.ConditionTrue), cond(ConditionInterruption, corev1.ConditionTrue)}},
			},
			want:       Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: now.Add(2 * time.Minute)},
			wantAtRisk: true,
		},
		"NTH's rebalance taint is a recommendation since it was added": {
			node:       corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintNTHRebalance, Effect: corev1.TaintEffectNoSchedule, TimeAdded: new(metav1.NewTime(earlier))}}}},
			want:       Signal{Kind: RebalanceRecommendation, Source: SourceNTHTaint, Since: earlier},
			wantAtRisk: true,
		},
		"NTH's spot-itn taint is an interruption": {
			node:       corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule}}}},
			want:       Signal{Kind: InterruptionNotice, Source: SourceNTHTaint, Since: now},
			wantAtRisk: true,
		},
		"the operator's annotation is a recommendation since the recorded signal time": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{
				AnnotationAtRisk: "true", AnnotationSignalTime: earlier.Format(time.RFC3339)}}},
			want:       Signal{Kind: RebalanceRecommendation, Source: SourceAnnotation, Since: earlier},
			wantAtRisk: true,
		},
		"the operator's annotation, not yet recorded, dates from when its field manager wrote it": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Annotations: map[string]string{AnnotationAtRisk: "true", "other": "x"},
				ManagedFields: []metav1.ManagedFieldsEntry{
					managed("kubelet", now.Add(-time.Hour), `{"f:status":{"f:conditions":{}}}`),
					managed("kubectl-annotate", earlier, `{"f:metadata":{"f:annotations":{"f:spot-rebalancer.io/at-risk":{}}}}`),
					managed("someone", now.Add(-time.Minute), `{"f:metadata":{"f:annotations":{"f:other":{}}}}`),
				}}},
			want:       Signal{Kind: RebalanceRecommendation, Source: SourceAnnotation, Since: earlier},
			wantAtRisk: true,
		},
		"of two managers owning the annotation, the later one counts": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Annotations: map[string]string{AnnotationAtRisk: "true"},
				ManagedFields: []metav1.ManagedFieldsEntry{
					managed("a", earlier, `{"f:metadata":{"f:annotations":{"f:spot-rebalancer.io/at-risk":{}}}}`),
					managed("b", now.Add(-time.Minute), `{"f:metadata":{"f:annotations":{"f:spot-rebalancer.io/at-risk":{}}}}`),
				}}},
			want:       Signal{Kind: RebalanceRecommendation, Source: SourceAnnotation, Since: now.Add(-time.Minute)},
			wantAtRisk: true,
		},
		"a recorded signal time wins over managed fields": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Annotations: map[string]string{AnnotationAtRisk: "true", AnnotationSignalTime: now.Add(-time.Minute).Format(time.RFC3339)},
				ManagedFields: []metav1.ManagedFieldsEntry{
					managed("a", earlier, `{"f:metadata":{"f:annotations":{"f:spot-rebalancer.io/at-risk":{}}}}`),
				}}},
			want:       Signal{Kind: RebalanceRecommendation, Source: SourceAnnotation, Since: now.Add(-time.Minute)},
			wantAtRisk: true,
		},
		"managed fields that do not parse, mention the key elsewhere or lie in the future are ignored": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{
				Annotations: map[string]string{AnnotationAtRisk: "true"},
				ManagedFields: []metav1.ManagedFieldsEntry{
					managed("broken", earlier, `{"f:metadata":{"f:annotations":{"f:spot-rebalancer.io/at-risk"`),
					managed("label", earlier, `{"f:metadata":{"f:labels":{"f:spot-rebalancer.io/at-risk":{}}}}`),
					managed("future", now.Add(time.Hour), `{"f:metadata":{"f:annotations":{"f:spot-rebalancer.io/at-risk":{}}}}`),
					{Manager: "no-time", FieldsV1: &metav1.FieldsV1{Raw: []byte(`{"f:metadata":{"f:annotations":{"f:spot-rebalancer.io/at-risk":{}}}}`)}},
				}}},
			want:       Signal{Kind: RebalanceRecommendation, Source: SourceAnnotation, Since: now},
			wantAtRisk: true,
		},
		"an at-risk annotation other than true is no signal": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationAtRisk: "maybe"}}},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			got, ok := FromNode(&tc.node, now)
			if ok != tc.wantAtRisk || got != tc.want {
				t.Errorf("got %+v, %v; want %+v, %v", got, ok, tc.want, tc.wantAtRisk)
			}
		})
	}
}

func managed(manager string, at time.Time, fields string) metav1.ManagedFieldsEntry {
	return metav1.ManagedFieldsEntry{Manager: manager, Operation: metav1.ManagedFieldsOperationUpdate,
		Time: new(metav1.NewTime(at)), FieldsV1: &metav1.FieldsV1{Raw: []byte(fields)}}
}
