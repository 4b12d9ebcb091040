package certs

import (
	"crypto/x509"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Metrics are the gauges of the serving certificate the source holds now,
// in every certs mode, read at each scrape (0 while it holds none):
// spot_rebalancer_webhook_certificate_expiry_timestamp_seconds (NotAfter)
// and spot_rebalancer_webhook_certificate_not_before_timestamp_seconds
// (NotBefore), so an alert can say "less than a fifth of its lifetime
// left" whatever the validity.
func Metrics(s Source) []prometheus.Collector {
	leaf := func() *x509.Certificate {
		c, err := s.GetCertificate(nil)
		if err != nil || c == nil || len(c.Certificate) == 0 {
			return nil
		}
		if c.Leaf != nil {
			return c.Leaf
		}
		l, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return nil
		}
		return l
	}
	gauge := func(name, help string, at func(*x509.Certificate) time.Time) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: name, Help: help}, func() float64 {
			if l := leaf(); l != nil {
				return float64(at(l).Unix())
			}
			return 0
		})
	}
	return []prometheus.Collector{
		gauge("spot_rebalancer_webhook_certificate_expiry_timestamp_seconds",
			"Unix time the webhook's serving certificate expires (0 while it has none).",
			func(c *x509.Certificate) time.Time { return c.NotAfter }),
		gauge("spot_rebalancer_webhook_certificate_not_before_timestamp_seconds",
			"Unix time the webhook's serving certificate became valid (0 while it has none).",
			func(c *x509.Certificate) time.Time { return c.NotBefore }),
	}
}
