package certs

import (
	"crypto/x509"

	"github.com/prometheus/client_golang/prometheus"
)

// ExpiryMetric is the gauge
// spot_rebalancer_webhook_certificate_expiry_timestamp_seconds: the Unix
// time the serving certificate the source holds now expires (NotAfter), in
// every certs mode, read at each scrape; 0 while it holds none.
func ExpiryMetric(s Source) prometheus.GaugeFunc {
	return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
		Name: "spot_rebalancer_webhook_certificate_expiry_timestamp_seconds",
		Help: "Unix time the webhook's serving certificate expires (0 while it has none).",
	}, func() float64 {
		c, err := s.GetCertificate(nil)
		if err != nil || c == nil || len(c.Certificate) == 0 {
			return 0
		}
		leaf := c.Leaf
		if leaf == nil {
			if leaf, err = x509.ParseCertificate(c.Certificate[0]); err != nil {
				return 0
			}
		}
		return float64(leaf.NotAfter.Unix())
	})
}
