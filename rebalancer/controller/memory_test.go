package controller

import (
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

var t0 = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

func TestBackoffAfter429DoublesFrom100msTo10s(t *testing.T) {
	var m memory
	want := []time.Duration{100 * time.Millisecond, 200 * time.Millisecond, 400 * time.Millisecond, 800 * time.Millisecond,
		1600 * time.Millisecond, 3200 * time.Millisecond, 6400 * time.Millisecond, 10 * time.Second, 10 * time.Second}
	for i, w := range want {
		if got := m.backoff429("a", t0); got != w {
			t.Fatalf("429 number %d: wait %s, want %s", i+1, got, w)
		}
	}
	if got := m.waitAfter429("a", t0); got != 10*time.Second {
		t.Errorf("right after a 429 the node waits %s, want 10s", got)
	}
	if got := m.waitAfter429("a", t0.Add(4*time.Second)); got != 6*time.Second {
		t.Errorf("4s later the node still waits %s, want 6s", got)
	}
	if got := m.waitAfter429("b", t0); got != 0 {
		t.Errorf("another node waits %s, want 0", got)
	}
	m.reset429("a")
	if got := m.backoff429("a", t0); got != 100*time.Millisecond {
		t.Errorf("after a success the backoff starts again at %s, want 100ms", got)
	}
}

func TestEvictedPodsAreRememberedForAMinute(t *testing.T) {
	var m memory
	if m.evictedRecently(t0).Has("a") {
		t.Fatal("a pod never evicted counts as evicted")
	}
	m.rememberEviction("a", t0)
	if got := m.evictedRecently(t0.Add(59 * time.Second)); !got.Has("a") || got.Has("b") {
		t.Errorf("59s after its eviction: remembered %v, want only a", got.UnsortedList())
	}
	if got := m.evictedRecently(t0.Add(time.Minute)); got.Len() != 0 || len(m.evicted) != 0 {
		t.Errorf("a minute after its eviction the pod is still remembered (%d entries)", len(m.evicted))
	}
}

// Workers deciding on the same stale snapshot must not all start draining:
// the second one sees the first one's admission.
func TestDrainingCountsWhatTheCacheDoesNotShowYet(t *testing.T) {
	node := func(name string, state signals.State, rv string) *corev1.Node {
		return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, ResourceVersion: rv,
			Labels:      map[string]string{"eks.amazonaws.com/nodegroup": "a"},
			Annotations: map[string]string{signals.AnnotationState: string(state)}}}
	}
	labels := config.Default().Rebalancer.PoolLabels
	var m memory
	stale := snapshot.New(t0, snapshot.Objects{Nodes: []*corev1.Node{
		node("n1", signals.StateAwaitingReplacement, "10"), node("n2", signals.StateAwaitingReplacement, "11")}})
	if got := m.draining(stale, "a", "n1", labels); got != 0 {
		t.Fatalf("the first node of the pool sees %d draining, want 0", got)
	}
	m.admit("a", "n1", "10")
	if got := m.draining(stale, "a", "n2", labels); got != 1 {
		t.Errorf("the second node sees %d draining while the first drains unseen, want 1", got)
	}
	if got := m.draining(stale, "a", "n1", labels); got != 0 {
		t.Errorf("the admitted node counts itself: %d", got)
	}
	// One worker's fresh snapshot shows the first node draining; another's,
	// older than the admission, still shows it waiting: both count it.
	draining := snapshot.New(t0, snapshot.Objects{Nodes: []*corev1.Node{
		node("n1", signals.StateDraining, "12"), node("n2", signals.StateAwaitingReplacement, "11")}})
	if got := m.draining(draining, "a", "n2", labels); got != 1 {
		t.Errorf("with the first node draining in the cache the second sees %d draining, want 1", got)
	}
	if got := m.draining(stale, "a", "n2", labels); got != 1 {
		t.Errorf("a snapshot older than the admission: the second node sees %d draining, want 1", got)
	}
	// The first node moves on (blocked a moment later, or drained): it
	// counts no more, in any snapshot.
	movedOn := snapshot.New(t0, snapshot.Objects{Nodes: []*corev1.Node{
		node("n1", signals.StateBlocked, "13"), node("n2", signals.StateAwaitingReplacement, "11")}})
	if got := m.draining(movedOn, "a", "n2", labels); got != 0 {
		t.Errorf("once the cache shows the first node blocked the second sees %d draining, want 0", got)
	}
	if got := m.draining(stale, "a", "n2", labels); got != 0 {
		t.Errorf("an admission seen to have moved on is forgotten, but the second node sees %d draining", got)
	}
}

func TestReservationsHeldAfterAFailure(t *testing.T) {
	var m memory
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	if m.holdReservations("a", now) {
		t.Fatal("held before any failure")
	}
	m.reservationsFailed("a", now)
	if !m.holdReservations("a", now.Add(reserveHold-time.Second)) || m.holdReservations("b", now) {
		t.Error("want node a held, node b not")
	}
	if m.holdReservations("a", now.Add(reserveHold)) {
		t.Error("still held after reserveHold")
	}
}
