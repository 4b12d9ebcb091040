package controller

import "github.com/prometheus/client_golang/prometheus"

// Metrics are the rebalancer's Prometheus metrics.
type Metrics struct {
	Transitions *prometheus.CounterVec
	Evictions   *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Transitions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_rebalancer_state_transitions_total",
			Help: "Node state changes, by the state entered (at-risk, awaiting-replacement, draining, drained, blocked, cleared).",
		}, []string{"state"}),
		Evictions: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_rebalancer_evictions_total",
			Help: "Eviction and deadline deletion attempts, by result (evicted, gone, blocked-by-pdb, multiple-pdbs, deleted, failed).",
		}, []string{"result"}),
	}
	reg.MustRegister(m.Transitions, m.Evictions)
	return m
}
