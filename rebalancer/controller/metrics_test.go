package controller

import (
	"context"
	"errors"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/google/go-cmp/cmp"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func figuresNode(name string, state signals.State, reason signals.Reason, signalTime string) corev1.Node {
	n := corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Annotations: map[string]string{}}}
	if state != "" {
		n.Annotations[signals.AnnotationState] = string(state)
		n.Annotations[signals.AnnotationStateReasonCode] = string(reason)
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
	awaiting, blocked := signals.StateAwaitingReplacement, signals.StateBlocked
	tests := []struct {
		name       string
		nodes      []corev1.Node
		wantCounts map[signals.State]int
		wantOldest map[stateReason]time.Time
	}{
		{name: "no nodes: every state reads 0"},
		{
			name: "the oldest signal of each state and reason",
			nodes: []corev1.Node{
				figuresNode("a", awaiting, signals.ReasonAwaitingReplacement, at(-10*time.Minute)),
				figuresNode("b", awaiting, signals.ReasonAwaitingReplacement, at(-30*time.Minute)),
				figuresNode("c", awaiting, signals.ReasonQueued, at(-20*time.Minute)),
				figuresNode("d", blocked, signals.ReasonBlockedByPods, at(-time.Minute)),
				figuresNode("e", blocked, signals.ReasonKeptCordoned, at(-time.Hour)),
			},
			wantCounts: map[signals.State]int{awaiting: 3, blocked: 2},
			wantOldest: map[stateReason]time.Time{
				{awaiting, signals.ReasonAwaitingReplacement}: now.Add(-30 * time.Minute),
				{awaiting, signals.ReasonQueued}:              now.Add(-20 * time.Minute),
				{blocked, signals.ReasonBlockedByPods}:        now.Add(-time.Minute),
				{blocked, signals.ReasonKeptCordoned}:         now.Add(-time.Hour),
			},
		},
		{
			name:       "a signal time in the future (forged or skewed) counts as now",
			nodes:      []corev1.Node{figuresNode("a", blocked, signals.ReasonBlockedByPods, at(time.Hour))},
			wantCounts: map[signals.State]int{blocked: 1},
			wantOldest: map[stateReason]time.Time{{blocked, signals.ReasonBlockedByPods}: now},
		},
		{
			name:       "a reason code that is not ours is reported as other",
			nodes:      []corev1.Node{figuresNode("a", blocked, "Anything-at-all", at(-time.Minute))},
			wantCounts: map[signals.State]int{blocked: 1},
			wantOldest: map[stateReason]time.Time{{blocked, "other"}: now.Add(-time.Minute)},
		},
		{
			name: "a drained node whose signal went away counts without a time; nodes with no or an unknown state are left out",
			nodes: []corev1.Node{
				figuresNode("a", signals.StateDrained, signals.ReasonDrained, ""),
				figuresNode("b", "", "", at(-time.Minute)),
				figuresNode("c", "made-up", "", at(-time.Minute)),
			},
			wantCounts: map[signals.State]int{signals.StateDrained: 1},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			wantCounts := map[signals.State]int{}
			for _, s := range signals.States {
				wantCounts[s] = tt.wantCounts[s]
			}
			if tt.wantOldest == nil {
				tt.wantOldest = map[stateReason]time.Time{}
			}
			counts, oldest := nodeFigures(tt.nodes, now)
			if diff := cmp.Diff(wantCounts, counts); diff != "" {
				t.Errorf("counts (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tt.wantOldest, oldest); diff != "" {
				t.Errorf("oldest signals (-want +got):\n%s", diff)
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
	node := figuresNode("a", signals.StateBlocked, signals.ReasonBlockedByPods, t0.Add(-time.Hour).Format(time.RFC3339))
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
			b.WriteString("# HELP spot_rebalancer_oldest_signal_timestamp_seconds " + "Per state and reason code, the Unix time of the oldest Spot signal of a node in that state (absent when no node in it has a signal): time() minus it is how long the longest-waiting node has been at risk.\n")
			b.WriteString("# TYPE spot_rebalancer_oldest_signal_timestamp_seconds gauge\n")
			b.WriteString("spot_rebalancer_oldest_signal_timestamp_seconds{reason=\"BlockedByPods\",state=\"blocked\"} " + oldest + "\n")
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

// failingReader is a cache that cannot list.
type failingReader struct{ client.Reader }

func (failingReader) List(context.Context, client.ObjectList, ...client.ListOption) error {
	return errors.New("cache not synced")
}

// A failed read leaves the node metrics out of the scrape instead of
// failing the whole of /metrics (controller-runtime answers 500 to a scrape
// with an invalid metric).
func TestNodeCollectorSkipsWhatItCannotRead(t *testing.T) {
	collector := &NodeCollector{Reader: failingReader{}, Clock: clocktesting.NewFakePassiveClock(t0), Log: logr.Discard()}
	reg := prometheus.NewPedanticRegistry()
	reg.MustRegister(collector)
	families, err := reg.Gather()
	if err != nil || len(families) != 0 {
		t.Errorf("gathered %d families (%v), want none and no error", len(families), err)
	}
}
