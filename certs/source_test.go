package certs

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

// The sources only read: a fake clientset is enough to feed their informers.

func webhookConfig(bundle []byte) *admissionregistrationv1.MutatingWebhookConfiguration {
	return &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "spot-rebalancer"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "pods.spot-rebalancer.io", ClientConfig: admissionregistrationv1.WebhookClientConfig{CABundle: bundle},
		}},
	}
}

func eventually(t *testing.T, what string, cond func() error) {
	t.Helper()
	var last error
	err := wait.PollUntilContextTimeout(t.Context(), 10*time.Millisecond, 10*time.Second, true, func(context.Context) (bool, error) {
		last = cond()
		return last == nil, nil
	})
	if err != nil {
		t.Fatalf("waiting for %s: %v", what, last)
	}
}

func TestSecretSourceSwapsCertificatesAndIsReadyOnlyWhenTheyVerify(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	clk := clocktesting.NewFakePassiveClock(now)
	ca1, _ := NewCA(now, 24*time.Hour)
	ca2, _ := NewCA(now, 24*time.Hour)
	srv1, _ := NewServing(ca1, names, now, time.Hour)
	srv2, _ := NewServing(ca2, names, now, time.Hour)

	client := fake.NewClientset()
	src := NewSecretSource(client, "ns", "tls", []string{"spot-rebalancer"}, names, clk)
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Start(ctx) }()
	defer func() { cancel(); <-done }()

	if err := src.Ready(nil); err == nil {
		t.Fatal("ready without a certificate")
	}
	secrets := client.CoreV1().Secrets("ns")
	secret := &corev1.Secret{ObjectMeta: metav1.ObjectMeta{Name: "tls", Namespace: "ns"},
		Data: map[string][]byte{TLSCertKey: srv1.CertPEM, TLSKeyKey: srv1.KeyPEM}}
	if _, err := secrets.Create(t.Context(), secret, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the first certificate to load", func() error {
		_, err := src.GetCertificate(nil)
		return err
	})
	if err := src.Ready(nil); err == nil || !strings.Contains(err.Error(), "publishes a CA bundle") {
		t.Fatalf("ready before any bundle is published: %v", err)
	}
	mwcs := client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := mwcs.Create(t.Context(), webhookConfig(ca2.CertPEM), metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the bundle of another CA to make the source unready", func() error {
		if err := src.Ready(nil); err == nil || !strings.Contains(err.Error(), "does not verify") {
			return err
		}
		return nil
	})

	secret.Data = map[string][]byte{TLSCertKey: srv2.CertPEM, TLSKeyKey: srv2.KeyPEM}
	if _, err := secrets.Update(t.Context(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the new certificate to be served and ready", func() error { return src.Ready(nil) })
	if c, _ := src.GetCertificate(nil); !c.Leaf.Equal(srv2.Cert) {
		t.Fatal("the source did not swap to the new certificate")
	}

	// Garbage in the Secret keeps the last good certificate: watch every
	// certificate served until a good one follows the garbage.
	secret.Data = map[string][]byte{TLSCertKey: []byte("garbage"), TLSKeyKey: []byte("garbage")}
	if _, err := secrets.Update(t.Context(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	secret.Data = map[string][]byte{TLSCertKey: srv1.CertPEM, TLSKeyKey: srv1.KeyPEM}
	if _, err := secrets.Update(t.Context(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "the good certificate after the garbage", func() error {
		c, err := src.GetCertificate(nil)
		if err != nil {
			t.Fatalf("garbage in the Secret dropped the last good certificate: %v", err)
		}
		if !c.Leaf.Equal(srv1.Cert) {
			return errors.New("still the previous certificate")
		}
		return nil
	})

	secret.Data = map[string][]byte{TLSCertKey: srv2.CertPEM, TLSKeyKey: srv2.KeyPEM}
	if _, err := secrets.Update(t.Context(), secret, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	eventually(t, "ready again", func() error { return src.Ready(nil) })
	clk.SetTime(now.Add(2 * time.Hour))
	if err := src.Ready(nil); err == nil {
		t.Fatal("ready with an expired certificate")
	}
}

func TestFileSourceReloadsMountedFiles(t *testing.T) {
	now := time.Now()
	ca, _ := NewCA(now.Add(-time.Minute), 24*time.Hour)
	srv1, _ := NewServing(ca, names, now.Add(-time.Minute), time.Hour)
	srv2, _ := NewServing(ca, names, now.Add(-time.Minute), time.Hour)
	dir := t.TempDir()
	write := func(kp *KeyPair) {
		t.Helper()
		// Write the key first and rename atomically, as kubelet and
		// cert-manager do, so the watcher never sees a half pair.
		for _, f := range []struct {
			name string
			data []byte
		}{{TLSKeyKey, kp.KeyPEM}, {TLSCertKey, kp.CertPEM}} {
			name, data := f.name, f.data
			tmp := filepath.Join(dir, "."+name)
			if err := os.WriteFile(tmp, data, 0o600); err != nil {
				t.Fatal(err)
			}
			if err := os.Rename(tmp, filepath.Join(dir, name)); err != nil {
				t.Fatal(err)
			}
		}
	}
	write(srv1)
	client := fake.NewClientset(webhookConfig(ca.CertPEM))
	src, err := NewFileSource(client, dir, []string{"spot-rebalancer"}, names, clocktesting.NewFakePassiveClock(now))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- src.Start(ctx) }()
	defer func() { cancel(); <-done }()

	eventually(t, "the mounted certificate to be ready", func() error { return src.Ready(nil) })
	write(srv2)
	eventually(t, "the new files to be served", func() error {
		c, err := src.GetCertificate(nil)
		if err != nil {
			return err
		}
		if c.Leaf == nil || !c.Leaf.Equal(srv2.Cert) {
			return os.ErrNotExist
		}
		return nil
	})
}

func TestNewFileSourceNamesAMissingDirectory(t *testing.T) {
	_, err := NewFileSource(fake.NewClientset(), "/nonexistent/certs", nil, names, clocktesting.NewFakePassiveClock(time.Now()))
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/certs") {
		t.Fatalf("err = %v, want it to name the directory", err)
	}
}
