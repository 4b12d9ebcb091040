package controller

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

func TestBackoffAfter429DoublesFrom100msTo10s(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	r := &Reconciler{Clock: clk, backoff: map[string]time.Duration{}, until: map[string]time.Time{}}
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := r.backoff429("a"); got != w {
			t.Fatalf("429 number %d: wait %s, want %s", i+1, got, w)
		}
	}
	if got := r.waitAfter429("a"); got != 10*time.Second {
		t.Errorf("right after a 429 the node waits %s, want 10s", got)
	}
	clk.Step(4 * time.Second)
	if got := r.waitAfter429("a"); got != 6*time.Second {
		t.Errorf("4s later the node still waits %s, want 6s", got)
	}
	if got := r.waitAfter429("b"); got != 0 {
		t.Errorf("another node waits %s, want 0", got)
	}
	r.reset429("a")
	if got := r.backoff429("a"); got != 100*time.Millisecond {
		t.Errorf("after a success the backoff starts again at %s, want 100ms", got)
	}
}

func TestCamelNamesEventReasons(t *testing.T) {
	for in, want := range map[string]string{"awaiting-replacement": "AwaitingReplacement", "drained": "Drained", "at-risk": "AtRisk"} {
		if got := camel(in); got != want {
			t.Errorf("camel(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestEvictedPodsAreRememberedForAMinute(t *testing.T) {
	clk := clocktesting.NewFakeClock(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
	r := &Reconciler{Clock: clk}
	if r.evictedRecently("a") {
		t.Fatal("a pod never evicted counts as evicted")
	}
	r.rememberEviction("a")
	clk.Step(59 * time.Second)
	if !r.evictedRecently("a") || r.evictedRecently("b") {
		t.Errorf("59s after its eviction: a remembered %v (want true), b %v (want false)", r.evictedRecently("a"), r.evictedRecently("b"))
	}
	clk.Step(time.Second)
	if r.evictedRecently("a") || len(r.evicted) != 0 {
		t.Errorf("a minute after its eviction the pod is still remembered (%d entries)", len(r.evicted))
	}
}

// Workers deciding on the same stale snapshot must not all start draining:
// the second one sees the first one's admission.
func TestAdmitDrainCountsWhatTheCacheDoesNotShowYet(t *testing.T) {
	node := func(name, state string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name,
			Labels:      map[string]string{"eks.amazonaws.com/nodegroup": "a"},
			Annotations: map[string]string{signals.AnnotationState: state}}}
	}
	cfg := config.Default().Rebalancer
	r := &Reconciler{Config: &cfg}
	stale := snapshot.New(time.Now(), snapshot.Objects{Nodes: []*corev1.Node{node("n1", StateAwaitingReplacement), node("n2", StateAwaitingReplacement)}})
	if _, ok := r.admitDrain(stale, "a", "n1"); !ok {
		t.Fatal("the first node of the pool was refused")
	}
	if busy, ok := r.admitDrain(stale, "a", "n2"); ok || busy != 1 {
		t.Errorf("the second node was admitted (busy %d) while the first drains unseen", busy)
	}
	if _, ok := r.admitDrain(stale, "a", "n1"); !ok {
		t.Error("the admitted node itself was refused on its next reconcile")
	}
	fresh := snapshot.New(time.Now(), snapshot.Objects{Nodes: []*corev1.Node{node("n1", StateDrained), node("n2", StateAwaitingReplacement)}})
	if _, ok := r.admitDrain(fresh, "a", "n2"); !ok {
		t.Error("once the first node is drained the second must be admitted")
	}
}
