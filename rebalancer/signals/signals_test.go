package signals

import (
	"strings"
	"testing"
	"time"

	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
)

func TestFromNode(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	earlier := now.Add(-5 * time.Minute)
	cond := func(t corev1.NodeConditionType, s corev1.ConditionStatus) corev1.NodeCondition {
		return corev1.NodeCondition{Type: t, Status: s, LastTransitionTime: metav1.NewTime(earlier)}
	}
	spot := map[string]string{"karpenter.sh/capacity-type": "spot"}
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
				ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{AnnotationTerminationTime: "2026-11-26T11:56:50Z"}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{
					cond(ConditionRebalance, corev1.ConditionTrue), cond(ConditionInterruption, corev1.ConditionTrue)}},
			},
			want:       Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: earlier.Add(110 * time.Second)},
			wantAtRisk: true,
		},
		"an interruption without a termination time ends two minutes after its signal": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionInterruption, corev1.ConditionTrue)}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: earlier.Add(2 * time.Minute),
				Note: "no termination time: the signal's time plus 2m0s"},
			wantAtRisk: true,
		},
		"a termination time from 1970 is not believed": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{AnnotationTerminationTime: "1970-01-01T00:00:00Z"}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionInterruption, corev1.ConditionTrue)}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: earlier.Add(2 * time.Minute),
				Note: "termination time 1970-01-01T00:00:00Z is before the signal (stale or forged): the signal's time plus 2m0s"},
			wantAtRisk: true,
		},
		"a termination time left by an earlier notice is not believed": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{AnnotationTerminationTime: "2026-11-26T11:40:00Z"}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionInterruption, corev1.ConditionTrue)}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: earlier.Add(2 * time.Minute),
				Note: "termination time 2026-11-26T11:40:00Z is before the signal (stale or forged): the signal's time plus 2m0s"},
			wantAtRisk: true,
		},
		"a termination time an hour away is cut to the notice period": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{AnnotationTerminationTime: "2026-11-26T13:00:00Z"}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionInterruption, corev1.ConditionTrue)}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: earlier.Add(2 * time.Minute),
				Note: "termination time 2026-11-26T13:00:00Z is more than 2m0s after the signal: the signal's time plus 2m0s"},
			wantAtRisk: true,
		},
		"a termination time that does not parse is not guessed at": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{AnnotationTerminationTime: "soon"}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionInterruption, corev1.ConditionTrue)}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: earlier.Add(2 * time.Minute),
				Note: `termination time "soon" does not parse: the signal's time plus 2m0s`},
			wantAtRisk: true,
		},
		"a signal dated in the future starts now": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{{Type: ConditionInterruption, Status: corev1.ConditionTrue,
					LastTransitionTime: metav1.NewTime(now.Add(time.Hour))}}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: now, TerminationTime: now.Add(2 * time.Minute),
				Note: "no termination time: the signal's time plus 2m0s"},
			wantAtRisk: true,
		},
		"an interruption on a node not known to be Spot is a recommendation": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"eks.amazonaws.com/capacityType": "ON_DEMAND"},
				Annotations: map[string]string{AnnotationTerminationTime: "2026-11-26T11:56:50Z"}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionInterruption, corev1.ConditionTrue)}}},
			want: Signal{Kind: RebalanceRecommendation, Source: SourceCondition, Since: earlier,
				Note: "interruption notice on a node not known to be Spot (no Spot capacity label or EC2 lifecycle): handled as a rebalance recommendation"},
			wantAtRisk: true,
		},
		"the EC2 source's lifecycle makes a node Spot": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Annotations: map[string]string{AnnotationLifecycle: "spot", AnnotationTerminationTime: "2026-11-26T11:56:50Z"}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionInterruption, corev1.ConditionTrue)}}},
			want:       Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: earlier.Add(110 * time.Second)},
			wantAtRisk: true,
		},
		"a draining node whose signal went away goes on draining": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{
				AnnotationState: string(StateDraining), AnnotationSignalTime: earlier.Format(time.RFC3339)}}},
			want: Signal{Kind: RebalanceRecommendation, Source: SourceDraining, Since: earlier,
				Note: "the signal went away while draining: the drain finishes"},
			wantAtRisk: true,
		},
		"a drained node whose signal went away is not at risk": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{AnnotationState: string(StateDrained)}}},
		},
		"NTH's rebalance taint is a recommendation since it was added": {
			node:       corev1.Node{Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintNTHRebalance, Effect: corev1.TaintEffectNoSchedule, TimeAdded: new(metav1.NewTime(earlier))}}}},
			want:       Signal{Kind: RebalanceRecommendation, Source: SourceNTHTaint, Since: earlier},
			wantAtRisk: true,
		},
		"NTH's spot-itn taint is an interruption that ends two minutes after it is first seen": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot},
				Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule}}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceNTHTaint, Since: now, TerminationTime: now.Add(2 * time.Minute),
				Note: "no termination time: the signal's time plus 2m0s", Unrecorded: true},
			wantAtRisk: true,
		},
		"NTH's spot-itn taint after a recommendation counts from its own first sighting, not the recommendation's time": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{
				AnnotationSignalTime: now.Add(-10 * time.Minute).Format(time.RFC3339), AnnotationInterruptionSeen: now.Add(-30 * time.Second).Format(time.RFC3339)}},
				Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule}}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceNTHTaint, Since: now.Add(-30 * time.Second), TerminationTime: now.Add(90 * time.Second),
				Note: "no termination time: the signal's time plus 2m0s"},
			wantAtRisk: true,
		},
		"NTH's spot-itn taint not yet seen ignores an earlier recommendation's time": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{
				AnnotationSignalTime: now.Add(-10 * time.Minute).Format(time.RFC3339)}},
				Spec: corev1.NodeSpec{Taints: []corev1.Taint{{Key: TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule}}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceNTHTaint, Since: now, TerminationTime: now.Add(2 * time.Minute),
				Note: "no termination time: the signal's time plus 2m0s", Unrecorded: true},
			wantAtRisk: true,
		},
		"a long termination time is cut in the note": {
			node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: spot, Annotations: map[string]string{AnnotationTerminationTime: strings.Repeat("x", 500)}},
				Status: corev1.NodeStatus{Conditions: []corev1.NodeCondition{cond(ConditionInterruption, corev1.ConditionTrue)}}},
			want: Signal{Kind: InterruptionNotice, Source: SourceCondition, Since: earlier, TerminationTime: earlier.Add(2 * time.Minute),
				Note: `termination time "` + strings.Repeat("x", 40) + `..." does not parse: the signal's time plus 2m0s`},
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

func TestSurgeRecordsAreCheckedBeforeTheyAreBelieved(t *testing.T) {
	record := func(state string) *coordinationv1.Lease {
		return &coordinationv1.Lease{ObjectMeta: metav1.ObjectMeta{Name: "surge-1", Namespace: "spot-rebalancer",
			Annotations: map[string]string{AnnotationSurgeState: state}}}
	}
	tests := map[string]struct {
		state string
		ok    bool
	}{
		"a surge of two pods from 4 to 6": {state: `{"node":"a","from":4,"to":6,"phase":"waiting","since":"2026-11-26T12:00:00Z","pods":["p","q"]}`, ok: true},
		"no node":                         {state: `{"from":4,"to":6,"phase":"waiting","pods":["p","q"]}`},
		"from 0 (nothing to move from)":   {state: `{"node":"a","from":0,"to":2,"phase":"scaling-down","pods":["p","q"]}`},
		"a scale-up other than its pods":  {state: `{"node":"a","from":1,"to":50,"phase":"waiting","pods":["p"]}`},
		"a scale-down posing as a surge":  {state: `{"node":"a","from":6,"to":4,"phase":"scaling-down","pods":[]}`},
		"no pods":                         {state: `{"node":"a","from":4,"to":4,"phase":"waiting","pods":[]}`},
		"not JSON":                        {state: `{`},
		"a negative count":                {state: `{"node":"a","from":-2,"to":0,"phase":"waiting","pods":["p","q"]}`},
		"off two nodes, its owner first":  {state: `{"node":"a","nodes":["a","b"],"from":4,"to":6,"phase":"waiting","pods":["p","q"]}`, ok: true},
		"nodes without its owner first":   {state: `{"node":"a","nodes":["b","a"],"from":4,"to":6,"phase":"waiting","pods":["p","q"]}`},
		"nodes without its owner":         {state: `{"node":"a","nodes":["b"],"from":4,"to":6,"phase":"waiting","pods":["p","q"]}`},
		"a node twice":                    {state: `{"node":"a","nodes":["a","b","b"],"from":4,"to":6,"phase":"waiting","pods":["p","q"]}`},
		"more nodes than pods":            {state: `{"node":"a","nodes":["a","b","c"],"from":4,"to":6,"phase":"waiting","pods":["p","q"]}`},
		"an empty node name":              {state: `{"node":"a","nodes":["a",""],"from":4,"to":6,"phase":"waiting","pods":["p","q"]}`},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			st, err := SurgeOf(record(tc.state))
			if (err == nil) != tc.ok || (st != nil) != tc.ok {
				t.Errorf("SurgeOf = %+v, %v; want ok %v", st, err, tc.ok)
			}
		})
	}
	if _, err := SurgeOf(&coordinationv1.Lease{}); err == nil {
		t.Error("a record without the annotation was believed")
	}
}
