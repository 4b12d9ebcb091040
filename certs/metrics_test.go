package certs

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestExpiryMetricFollowsTheServedCertificate(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	ca, _ := NewCA(now, 24*time.Hour)
	srv, _ := NewServing(ca, names, now, 3*time.Hour)
	client := fake.NewClientset()
	src := NewSecretSource(client, "ns", "tls", []string{"spot-rebalancer"}, names, clocktesting.NewFakePassiveClock(now))
	metrics := Metrics(src)
	expiry, notBefore := metrics[0], metrics[1]
	if got := testutil.ToFloat64(expiry) + testutil.ToFloat64(notBefore); got != 0 {
		t.Fatalf("with no certificate the gauges read %v, want 0", got)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Start(ctx) }()
	defer func() { cancel(); <-done }()
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: "ns"},
		Data: map[string][]byte{TLSCertKey: srv.CertPEM, TLSKeyKey: srv.KeyPEM}}
	if _, err := client.CoreV1().Secrets("ns").Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	want := float64(srv.Cert.NotAfter.Unix())
	eventually(t, "the gauge to read the loaded certificate's expiry", func() error {
		if got := testutil.ToFloat64(expiry); got != want {
			return errors.New("not yet")
		}
		return nil
	})
	if want != float64(now.Add(3*time.Hour).Unix()) {
		t.Errorf("expiry %v is not the issue time plus the validity", want)
	}
	if got, want := testutil.ToFloat64(notBefore), float64(srv.Cert.NotBefore.Unix()); got != want || got > float64(now.Unix()) {
		t.Errorf("not before %v, want the certificate's %v, at or before its issue", got, want)
	}
}
