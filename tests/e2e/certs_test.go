package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// handshakes records which certificates the webhook actually presented.
type handshakes struct {
	mu      sync.Mutex
	serials map[string]bool
	issuers map[string]bool
}

func (h *handshakes) record(c *tls.Certificate) {
	h.mu.Lock()
	defer h.mu.Unlock()
	h.serials[c.Leaf.SerialNumber.String()] = true
	h.issuers[string(c.Leaf.AuthorityKeyId)] = true
}

func (h *handshakes) counts() (serving, cas int) {
	h.mu.Lock()
	defer h.mu.Unlock()
	return len(h.serials), len(h.issuers)
}

// The API server calls a webhook with failurePolicy Fail, so any TLS
// failure fails a pod creation. Lifetimes are cut to seconds so that the
// serving certificate rotates several times and the CA at least once while
// pods are created without pause; every creation must succeed. Then the
// webhook configuration is re-applied without its caBundle and heals.
func TestCertificatesRotateWithoutAGap(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	configName := "e2e-certs-" + ns

	// The webhook server: new connection per request, so every request is
	// a TLS handshake against whatever certificate is current.
	listener, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	dnsNames := certs.DNSNames("webhook", ns, []string{"127.0.0.1"})
	source := certs.NewSecretSource(c.Client, ns, "webhook-tls", []string{configName}, dnsNames, clock.RealClock{})
	seen := &handshakes{serials: map[string]bool{}, issuers: map[string]bool{}}
	var admitted atomic.Int64
	server := &http.Server{
		Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			var review admissionv1.AdmissionReview
			if err := json.NewDecoder(r.Body).Decode(&review); err != nil || review.Request == nil {
				http.Error(w, "bad review", http.StatusBadRequest)
				return
			}
			admitted.Add(1)
			review.Response = &admissionv1.AdmissionResponse{UID: review.Request.UID, Allowed: true}
			review.Request = nil
			_ = json.NewEncoder(w).Encode(&review)
		}),
		TLSConfig: &tls.Config{
			MinVersion: tls.VersionTLS12,
			GetCertificate: func(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
				cert, err := source.GetCertificate(h)
				if err == nil {
					seen.record(cert)
				}
				return cert, err
			},
		},
	}
	server.SetKeepAlivesEnabled(false)
	go func() { _ = server.ServeTLS(listener, "", "") }()
	t.Cleanup(func() { _ = server.Close() })

	webhookConfig := &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: configName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{
			Name: "certs.e2e.spot-rebalancer.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{
				URL: ptr.To(fmt.Sprintf("https://%s/mutate", listener.Addr())),
			},
			Rules: []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"kubernetes.io/metadata.name": ns}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Fail),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](5),
		}},
	}
	webhooks := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := webhooks.Create(ctx, webhookConfig, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = webhooks.Delete(context.Background(), configName, metav1.DeleteOptions{}) })

	// The rotator runs as a leader-elected runnable of a manager, as in
	// `spot-rebalancer controller`.
	startLeaderManager(t, c, ns,
		rotatorFor(c, ns, configName, dnsNames, 45*time.Second, 15*time.Second),
		manager.RunnableFunc(source.Start))

	c.WaitFor(t, 30*time.Second, "the webhook to be ready (a certificate that verifies against the published bundle)",
		func(context.Context) (bool, error) { return source.Ready(nil) == nil, nil })

	createPod := func(i int) error {
		pod := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", i), Namespace: ns},
			Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"e2e.spot-rebalancer.io/nowhere": "true"},
				Containers:   []corev1.Container{{Name: "c", Image: "registry.example/app:1"}},
			},
		}
		_, err := c.Client.CoreV1().Pods(ns).Create(ctx, pod, metav1.CreateOptions{})
		return err
	}

	// Create pods without pause until the webhook has presented at least
	// four serving certificates from at least two CAs.
	var failures []error
	created := 0
	err = cluster.WaitFor(ctx, 3*time.Minute, func(context.Context) (bool, error) {
		if err := createPod(created); err != nil {
			failures = append(failures, err)
		}
		created++
		serving, cas := seen.counts()
		return serving >= 4 && cas >= 2, nil
	})
	serving, cas := seen.counts()
	t.Logf("created %d pods, %d admitted; the webhook presented %d serving certificates from %d CAs", created, admitted.Load(), serving, cas)
	if err != nil {
		t.Fatalf("rotation did not happen in time: %d serving certificates from %d CAs", serving, cas)
	}
	if len(failures) > 0 {
		t.Fatalf("%d of %d pod creations failed during rotation; first: %v", len(failures), created, errors.Join(failures[:1]...))
	}

	// Someone re-applies the configuration without the caBundle.
	got, err := webhooks.Get(ctx, configName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	got.Webhooks[0].ClientConfig.CABundle = nil
	if _, err := webhooks.Update(ctx, got, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	c.WaitFor(t, 10*time.Second, "the caBundle to be written again", func(ctx context.Context) (bool, error) {
		got, err := webhooks.Get(ctx, configName, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		roots, err := certs.ParseCertificates(got.Webhooks[0].ClientConfig.CABundle)
		return err == nil && len(roots) > 0 && verifiesCurrent(source, roots), nil
	})
	t.Logf("caBundle healed in %s", time.Since(start).Round(time.Millisecond))
	c.WaitFor(t, 10*time.Second, "pod creation to work again", func(context.Context) (bool, error) {
		created++
		return createPod(created) == nil, nil
	})
}

func verifiesCurrent(source certs.Source, roots []*x509.Certificate) bool {
	cert, err := source.GetCertificate(nil)
	if err != nil {
		return false
	}
	pool := x509.NewCertPool()
	for _, r := range roots {
		pool.AddCert(r)
	}
	_, err = cert.Leaf.Verify(x509.VerifyOptions{Roots: pool})
	return err == nil
}
