package webhook

import (
	"github.com/prometheus/client_golang/prometheus"
)

// Results of an admission request: metric label values.
const (
	ResultMutated   = "mutated"
	ResultUnchanged = "unchanged"
	ResultSkipped   = "skipped"
	// ResultError means an internal error was met and the request was
	// admitted unchanged (fail open).
	ResultError = "error"
)

// Metrics are the webhook's Prometheus metrics.
type Metrics struct {
	Requests *prometheus.CounterVec
	Latency  *prometheus.HistogramVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_webhook_requests_total",
			Help: "Admission requests by kind (pod, deployment, statefulset), operation, result (mutated, unchanged, skipped, error) and profile.",
		}, []string{"kind", "operation", "result", "profile"}),
		Latency: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "spot_rebalancer_webhook_request_duration_seconds",
			Help:    "Time to answer an admission request, by kind.",
			Buckets: []float64{0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.5, 1},
		}, []string{"kind"}),
	}
	reg.MustRegister(m.Requests, m.Latency)
	return m
}
