package controller

import (
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func figuresNode(name string, state signals.State, signalTime string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	if state != "" {
		n.Annotations[signals.AnnotationState] = string(state)
	}
	if signalTime != "" {
		n.Annotations[signals.AnnotationAtRisk] = "true"
		n.Annotations[signals.AnnotationSignalTime] = signalTime
	}
	return n
}

func TestNodeFigures(t *testing.T) {
	now := t0
	at := func(d time.Duration) string { return now.Add(d).Format(time.RFC3339) }
	tests := []struct {
		name  string
		nodes []corev1.Node
		// want: state -> count, oldest signal (zero: none)
		want map[signals.State]stateFigures
	}{
		{name: "no nodes: every state reads 0", want: map[signals.State]stateFigures{}},
		{
			name: "the oldest signal of each state",
			nodes: []corev1.Node{
				figuresNode("a", signals.StateAwaitingReplacement, at(-10*time.Minute)),
				figuresNode("b", signals.StateAwaitingReplacement, at(-30*time.Minute)),
				figuresNode("c", signals.StateAwaitingReplacement, at(-20*time.Minute)),
				figuresNode("d", signals.StateBlocked, at(-time.Minute)),
			},
			want: map[signals.State]stateFigures{
				signals.StateAwaitingReplacement: {Count: 3, OldestSignal: now.Add(-30 * time.Minute)},
				signals.StateBlocked:             {Count: 1, OldestSignal: now.Add(-time.Minute)},
			},
		},
		{
			name:  "a signal time in the future (forged or skewed) counts as now",
			nodes: []corev1.Node{figuresNode("a", signals.StateBlocked, at(time.Hour))},
			want:  map[signals.State]stateFigures{signals.StateBlocked: {Count: 1, OldestSignal: now}},
		},
		{
			name: "a drained node whose signal went away counts without a time; nodes with no or an unknown state are left out",
			nodes: []corev1.Node{
				figuresNode("a", signals.StateDrained, ""),
				figuresNode("b", "", at(-time.Minute)),
				figuresNode("c", "made-up", at(-time.Minute)),
			},
			want: map[signals.State]stateFigures{signals.StateDrained: {Count: 1}},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var want []stateFigures
			for _, s := range signals.States {
				f := tt.want[s]
				f.State = s
				want = append(want, f)
			}
			if diff := cmp.Diff(want, nodeFigures(tt.nodes, now)); diff != "" {
				t.Errorf("figures (-want +got):\n%s", diff)
			}
		})
	}
}

// TestNodeCollectorReadsAtScrape: a node that leaves a state leaves the
// gauge at the next scrape, with no reconcile in between.
func TestNodeCollectorReadsAtScrape(t *testing.T) {
	scheme := runtime.NewScheme()
	if err := corev1.AddToScheme(scheme); err != nil {
		t.Fatal(err)
	}
	node := figuresNode("a", signals.StateBlocked, t0.Add(-time.Hour).Format(time.RFC3339))
	c := fake.NewClientBuilder().WithScheme(scheme).WithObjects(&node).Build()
	collector := &NodeCollector{Reader: c, Clock: clocktesting.NewFakePassiveClock(t0)}
	want := func(blocked int, oldest string) string {
		var b strings.Builder
		b.WriteString("# HELP spot_rebalancer_nodes Nodes by the rebalancer state recorded on them.\n# TYPE spot_rebalancer_nodes gauge\n")
		for _, s := range signals.States {
			n := 0
			if s == signals.StateBlocked {
				n = blocked
			}
			b.WriteString("spot_rebalancer_nodes{state=\"" + string(s) + "\"} " + strconv.Itoa(n) + "\n")
		}
		if oldest != "" {
			b.WriteString("# HELP spot_rebalancer_oldest_signal_timestamp_seconds " + "Per state, the Unix time of the oldest Spot signal of a node in that state (absent when no node in it has a signal): time() minus it is how long the longest-waiting node has been at risk.\n")
			b.WriteString("# TYPE spot_rebalancer_oldest_signal_timestamp_seconds gauge\n")
			b.WriteString("spot_rebalancer_oldest_signal_timestamp_seconds{state=\"blocked\"} " + oldest + "\n")
		}
		return b.String()
	}
	if err := testutil.CollectAndCompare(collector, strings.NewReader(want(1, strconv.FormatInt(t0.Add(-time.Hour).Unix(), 10)))); err != nil {
		t.Fatal(err)
	}
	delete(node.Annotations, signals.AnnotationState)
	if err := c.Update(t.Context(), &node); err != nil {
		t.Fatal(err)
	}
	if err := testutil.CollectAndCompare(collector, strings.NewReader(want(0, ""))); err != nil {
		t.Fatal(err)
	}
}
