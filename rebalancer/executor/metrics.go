package executor

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// Metrics are the rebalancer's Prometheus metrics.
type Metrics struct {
	Transitions *prometheus.CounterVec
	Evictions   *prometheus.CounterVec
	// WaitForReplacement is the time from the signal to draining;
	// SignalToDrained the time from the signal to drained; both by the
	// signal's kind (rebalance-recommendation, interruption-notice).
	WaitForReplacement *prometheus.HistogramVec
	SignalToDrained    *prometheus.HistogramVec
	// Draining is the time from draining to drained (moving pods), by
	// the signal's kind: the part of SignalToDrained after
	// WaitForReplacement.
	Draining *prometheus.HistogramVec
	// BudgetWait adds up the time draining nodes spend with pods waiting
	// for their PodDisruptionBudgets, by the signal's kind.
	BudgetWait *prometheus.CounterVec
	// Surges counts surge hand-offs by result (started, completed,
	// abandoned).
	Surges *prometheus.CounterVec
	// Reservations counts reservation pods by result (created, deleted,
	// failed).
	Reservations *prometheus.CounterVec
	// LeftToOthers counts the at-risk nodes whose drain was left to
	// someone else, by who (karpenter).
	LeftToOthers *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	buckets := []float64{1, 5, 15, 30, 60, 120, 300, 600, 1200, 1800, 3600}
	m := &Metrics{
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_state_transitions_total",
			Help: "Node state changes, by the state entered (at-risk, awaiting-replacement, draining, drained, blocked, cleared).",
		}, []string{"state"}),
		Evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_evictions_total",
			Help: "Eviction and deadline deletion attempts, by result (evicted, gone, blocked-by-pdb, deleted, failed).",
		}, []string{"result"}),
		WaitForReplacement: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spot_rebalancer_replacement_wait_seconds", Buckets: buckets,
			Help: "Time from a node's signal until it starts draining (waiting for replacement capacity), by the signal's kind.",
		}, []string{"signal"}),
		SignalToDrained: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spot_rebalancer_signal_to_drained_seconds", Buckets: buckets,
			Help: "Time from a node's signal until it is drained, by the signal's kind.",
		}, []string{"signal"}),
		Draining: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name: "spot_rebalancer_draining_seconds", Buckets: buckets,
			Help: "Time from a node's start of draining until it is drained (moving its pods), by the signal's kind; observed for drains this process saw start.",
		}, []string{"signal"}),
		BudgetWait: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_budget_wait_seconds_total",
			Help: "Node-seconds draining nodes spent with pods that must move waiting for their PodDisruptionBudgets (a later wave, or after a 429), by the signal's kind.",
		}, []string{"signal"}),
		Surges: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_surges_total",
			Help: "Surge hand-offs of Deployments, by result (started, completed, abandoned).",
		}, []string{"result"}),
		Reservations: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_reservations_total",
			Help: "Reservation pods asking for replacement capacity, by result (created, deleted, failed).",
		}, []string{"result"}),
		LeftToOthers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_drains_left_to_others_total",
			Help: "At-risk nodes whose drain the rebalancer left to another drainer that had begun it, by drainer (karpenter: its NodeClaim was being deleted).",
		}, []string{"drainer"}),
	}
	reg.MustRegister(m.Transitions, m.Evictions, m.WaitForReplacement, m.SignalToDrained, m.Draining, m.BudgetWait, m.Surges, m.Reservations, m.LeftToOthers)
	m.LeftToOthers.WithLabelValues("karpenter")
	// Every known label value starts at 0, so that rate() and increase()
	// see the first event (the alerts on deadline deletions and abandoned
	// surges) and the dashboards have their series from the start.
	for _, o := range []Outcome{Evicted, Gone, BlockedByPDB, Deleted, Failed} {
		m.Evictions.WithLabelValues(string(o))
	}
	for _, r := range []string{"started", "completed", "abandoned"} {
		m.Surges.WithLabelValues(r)
	}
	for _, r := range []string{"created", "deleted", "failed"} {
		m.Reservations.WithLabelValues(r)
	}
	for _, k := range []signals.Kind{signals.RebalanceRecommendation, signals.InterruptionNotice} {
		m.WaitForReplacement.WithLabelValues(string(k))
		m.SignalToDrained.WithLabelValues(string(k))
	}
	return m
}
