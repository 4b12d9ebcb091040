package controller

import (
	"sync"
	"time"

	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// memory is what the controller remembers between reconciles. None of it
// is needed for correctness after a restart: it covers the moments when
// the cache lags the controller's own writes.
type memory struct {
	mu sync.Mutex
	// reserveFailed is when creating a node's reservations last failed:
	// none is tried again for reserveHold (a missing PriorityClass or a
	// quota would otherwise spend the client's rate limit every pass).
	reserveFailed map[string]time.Time
	// backoff is the last wait after a 429 and until when it lasts, per
	// node: other events must not cut it short.
	backoff map[string]time.Duration
	until   map[string]time.Time
	// evicted remembers pods evicted in the last evictionMemory: the cache
	// can show them untouched for a moment after the eviction.
	evicted map[types.UID]time.Time
	// admission serializes deciding to start a drain and recording it;
	// admitted are the nodes, by pool, this process let start draining,
	// with the resourceVersion they had before that write, until the cache
	// shows them past draining.
	admission sync.Mutex
	admitted  map[string]map[string]string
}

const evictionMemory = time.Minute

func (m *memory) lockAdmission() func() {
	m.admission.Lock()
	return m.admission.Unlock
}

// draining counts the nodes of pool draining besides self: those the
// snapshot shows draining and those this process admitted that it does
// not show draining yet (several workers deciding on one stale snapshot
// would each see room, and a worker's snapshot may be older than another
// worker's admission). Call it with the admission lock held.
func (m *memory) draining(snap *snapshot.Snapshot, pool, self string, poolLabels []string) int {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := sets.New[string]()
	for _, n := range snap.Nodes {
		// A node Karpenter drains takes no place of the pool's: the
		// controller moves nothing there.
		if n.Name != self && signals.StateOf(n.Annotations) == signals.StateDraining && planner.Pool(n, poolLabels) == pool &&
			signals.ReasonOf(n.Annotations) != signals.ReasonDrainedByKarpenter {
			out.Insert(n.Name)
		}
	}
	for name, before := range m.admitted[pool] {
		n := snap.Node(name)
		switch {
		case n == nil:
			delete(m.admitted[pool], name)
		case signals.StateOf(n.Annotations) == signals.StateDraining:
			// Counted above. Kept while it drains: a worker holding a
			// snapshot older than the admission must still count it.
		case n.ResourceVersion != before:
			// The cache has seen the write and the node has moved on
			// (drained, blocked): it drains no more.
			delete(m.admitted[pool], name)
		case name != self:
			out.Insert(name)
		}
	}
	return out.Len()
}

// admit remembers that node of pool, at resourceVersion before the write,
// was let start draining.
func (m *memory) admit(pool, node, before string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.admitted == nil {
		m.admitted = map[string]map[string]string{}
	}
	if m.admitted[pool] == nil {
		m.admitted[pool] = map[string]string{}
	}
	m.admitted[pool][node] = before
}

// evictedRecently returns the pods evicted less than evictionMemory ago,
// and forgets older evictions.
func (m *memory) evictedRecently(now time.Time) sets.Set[types.UID] {
	m.mu.Lock()
	defer m.mu.Unlock()
	out := sets.New[types.UID]()
	for u, at := range m.evicted {
		if now.Sub(at) >= evictionMemory {
			delete(m.evicted, u)
			continue
		}
		out.Insert(u)
	}
	return out
}

func (m *memory) rememberEviction(uid types.UID, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.evicted == nil {
		m.evicted = map[types.UID]time.Time{}
	}
	m.evicted[uid] = now
}

// waitAfter429 is how long the node still waits after a 429.
// reserveHold is how long a node's reservations are not tried again
// after a create failed.
const reserveHold = 30 * time.Second

// holdReservations tells whether creating node's reservations failed in
// the last reserveHold.
func (m *memory) holdReservations(node string, now time.Time) bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	at, ok := m.reserveFailed[node]
	return ok && now.Sub(at) < reserveHold
}

// reservationsFailed remembers that creating node's reservations failed.
func (m *memory) reservationsFailed(node string, now time.Time) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.reserveFailed == nil {
		m.reserveFailed = map[string]time.Time{}
	}
	m.reserveFailed[node] = now
}

func (m *memory) waitAfter429(node string, now time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	return max(m.until[node].Sub(now), 0)
}

// backoff429 doubles the node's wait after a 429, from 100 ms to 10 s.
func (m *memory) backoff429(node string, now time.Time) time.Duration {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.backoff == nil {
		m.backoff, m.until = map[string]time.Duration{}, map[string]time.Time{}
	}
	d := m.backoff[node]
	switch {
	case d == 0:
		d = 100 * time.Millisecond
	default:
		d = min(2*d, 10*time.Second)
	}
	m.backoff[node] = d
	m.until[node] = now.Add(d)
	return d
}

func (m *memory) reset429(node string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	delete(m.backoff, node)
	delete(m.until, node)
}
