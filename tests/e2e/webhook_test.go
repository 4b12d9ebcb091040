package e2e

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/ptr"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/webhook"
)

// requestCounter counts the requests of every client built on a config
// it wraps, watches aside.
type requestCounter struct {
	count atomic.Int64
	mu    sync.Mutex
	last  []string
}

func (rc *requestCounter) wrap(next http.RoundTripper) http.RoundTripper {
	return roundTripFunc(func(req *http.Request) (*http.Response, error) {
		if req.URL.Query().Get("watch") != "true" {
			rc.count.Add(1)
			rc.mu.Lock()
			rc.last = append(rc.last, req.Method+" "+req.URL.Path)
			rc.mu.Unlock()
		}
		return next.RoundTrip(req)
	})
}

type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(req *http.Request) (*http.Response, error) { return f(req) }

// The webhook, called by the real API server over TLS with certificates
// from package certs: pods in an opted-in namespace get the Spot
// tolerations and land on tainted Spot nodes; a namespace that did not opt
// in is untouched; a Deployment without a PDB gets the hint and a warning;
// server-side dry run is mutated too; 200 pods cost no API request beyond
// the caches' watches; and with the webhook gone, pods are still created.
func TestWebhookInjectsTolerationsAndHints(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	system := c.Namespace(t, nil)
	selector := map[string]string{"e2e.spot-rebalancer.io/webhook": system}
	optedIn := c.Namespace(t, map[string]string{"e2e.spot-rebalancer.io/webhook": system, webhook.ProfileKey: "spot"})
	plain := c.Namespace(t, selector)
	configName := "e2e-webhook-" + system

	port := freePort(t)
	cfg := config.Default()
	cfg.Webhook.Namespace = system
	cfg.Webhook.Port = int32(port)
	cfg.Certs.ServiceName = "webhook"
	cfg.Certs.ServingSecretName = "webhook-tls"
	cfg.Certs.CASecretName = "webhook-ca"
	cfg.Certs.ExtraDNSNames = []string{"127.0.0.1"}
	cfg.Certs.WebhookConfigurations = []string{configName}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	dnsNames := certs.DNSNames(cfg.Certs.ServiceName, system, cfg.Certs.ExtraDNSNames)
	startLeaderManager(t, c, system, rotatorFor(c, system, configName, dnsNames, time.Hour, 30*time.Minute))

	// The webhook's own client counts every request it makes.
	counter := &requestCounter{}
	webhookRest := rest.CopyConfig(c.Config)
	webhookRest.Wrap(counter.wrap)
	healthPort := freePort(t)
	webhookCtx, stopWebhook := context.WithCancel(logr.NewContext(ctx, cluster.Logger()))
	webhookDone := make(chan error, 1)
	go func() {
		webhookDone <- webhook.Run(webhookCtx, webhook.Options{Config: cfg, RESTConfig: webhookRest, Host: "127.0.0.1",
			Metrics: metricsserver.Options{BindAddress: "0"}, HealthAddr: fmt.Sprintf("127.0.0.1:%d", healthPort)})
	}()
	t.Cleanup(func() { stopWebhook(); <-webhookDone })

	// Registered as deploy/ registers it, with a URL instead of a Service.
	hookURL := fmt.Sprintf("https://127.0.0.1:%d%s", port, webhook.Path)
	common := func(name string, rules []admissionregistrationv1.RuleWithOperations) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name, ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &hookURL}, Rules: rules,
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: selector},
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](3),
		}
	}
	webhooks := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	_, err := webhooks.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: configName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			common("pods.spot-rebalancer.io", []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}},
			}}),
			common("workloads.spot-rebalancer.io", []admissionregistrationv1.RuleWithOperations{{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"}, Resources: []string{"deployments", "statefulsets"}},
			}}),
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = webhooks.Delete(context.Background(), configName, metav1.DeleteOptions{}) })

	c.WaitFor(t, 30*time.Second, "the webhook's /readyz", func(ctx context.Context) (bool, error) {
		return cluster.Ready(ctx, healthPort), nil
	})

	spotTaint := corev1.Taint{Key: config.EKSCapacityTypeLabel, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}
	spotA := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-a", Taints: []corev1.Taint{spotTaint}})
	spotB := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-a", Taints: []corev1.Taint{spotTaint}})

	seen := &cluster.Warnings{}
	warnConfig := rest.CopyConfig(c.Config)
	warnConfig.WarningHandler = seen
	client, err := kubernetes.NewForConfig(warnConfig)
	if err != nil {
		t.Fatal(err)
	}
	deploy := func(ns string) *appsv1.Deployment {
		app := map[string]string{"app": "web"}
		d := &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec: appsv1.DeploymentSpec{
				Replicas: ptr.To[int32](3),
				Selector: &metav1.LabelSelector{MatchLabels: app},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: app},
					Spec: corev1.PodSpec{
						NodeSelector: map[string]string{cluster.OwnerLabel: cluster.Owner(t)},
						Containers:   []corev1.Container{{Name: "web", Image: "registry.example/web:1"}},
					},
				},
			},
		}
		created, err := client.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
		return created
	}

	t.Run("pods of an opted-in namespace tolerate Spot and run on tainted Spot nodes", func(t *testing.T) {
		d := deploy(optedIn)
		if got := d.Annotations[webhook.PDBHintAnnotation]; got != "missing; suggest maxUnavailable=1" {
			t.Errorf("pdb-hint annotation = %q", got)
		}
		if w := strings.Join(seen.Take(), "\n"); !strings.Contains(w, "spot-rebalancer: deployment web PDB missing; suggest maxUnavailable=1") {
			t.Errorf("the client saw no PDB warning; warnings: %q", w)
		}
		c.WaitFor(t, 60*time.Second, "3 web pods Running on the Spot nodes", func(ctx context.Context) (bool, error) {
			pods, err := c.Client.CoreV1().Pods(optedIn).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				return false, err
			}
			running := 0
			for _, p := range pods.Items {
				if cluster.PodIsReady(&p) && (p.Spec.NodeName == spotA.Name || p.Spec.NodeName == spotB.Name) {
					running++
				}
			}
			return running == 3, nil
		})
		pods, _ := c.Client.CoreV1().Pods(optedIn).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		for _, p := range pods.Items {
			var injected webhook.Injected
			if err := json.Unmarshal([]byte(p.Annotations[webhook.InjectedAnnotation]), &injected); err != nil || injected.Profile != "spot" {
				t.Errorf("pod %s: injected annotation %q", p.Name, p.Annotations[webhook.InjectedAnnotation])
			}
			if p.Spec.Affinity == nil || p.Spec.Affinity.NodeAffinity == nil || p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution != nil {
				t.Errorf("pod %s: want a preferred, never a required, node affinity: %+v", p.Name, p.Spec.Affinity)
			}
		}
	})

	t.Run("the same Deployment in a namespace that did not opt in is untouched", func(t *testing.T) {
		d := deploy(plain)
		if _, ok := d.Annotations[webhook.PDBHintAnnotation]; ok {
			t.Error("a workload outside opted-in namespaces got a hint")
		}
		c.WaitFor(t, 30*time.Second, "3 web pods to exist", func(ctx context.Context) (bool, error) {
			pods, err := c.Client.CoreV1().Pods(plain).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			return err == nil && len(pods.Items) == 3, err
		})
		pods, _ := c.Client.CoreV1().Pods(plain).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
		for _, p := range pods.Items {
			if _, ok := p.Annotations[webhook.InjectedAnnotation]; ok || len(p.Spec.Tolerations) > 2 {
				t.Errorf("pod %s was mutated: %v %v", p.Name, p.Annotations, p.Spec.Tolerations)
			}
			if p.Spec.NodeName != "" {
				t.Errorf("pod %s without Spot tolerations was placed on tainted node %s", p.Name, p.Spec.NodeName)
			}
		}
	})

	newPod := func(name string) *corev1.Pod {
		return &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"app": "batch"}},
			Spec: corev1.PodSpec{
				NodeSelector: map[string]string{"e2e.spot-rebalancer.io/nowhere": "true"},
				Containers:   []corev1.Container{{Name: "c", Image: "registry.example/batch:1"}},
			},
		}
	}

	t.Run("a server-side dry run is mutated like a real request", func(t *testing.T) {
		got, err := c.Client.CoreV1().Pods(optedIn).Create(ctx, newPod("dry"), metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := got.Annotations[webhook.InjectedAnnotation]; !ok {
			t.Error("the dry-run pod was not mutated")
		}
	})

	t.Run("admitting 200 pods costs no API request beyond the caches' watches", func(t *testing.T) {
		before := counter.count.Load()
		for i := range 200 {
			p, err := c.Client.CoreV1().Pods(optedIn).Create(ctx, newPod(fmt.Sprintf("load-%d", i)), metav1.CreateOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if _, ok := p.Annotations[webhook.InjectedAnnotation]; !ok {
				t.Fatalf("pod %s did not go through the webhook", p.Name)
			}
		}
		if n := counter.count.Load() - before; n != 0 {
			counter.mu.Lock()
			t.Errorf("the webhook made %d API requests while admitting 200 pods: %v", n, counter.last[len(counter.last)-int(n):])
			counter.mu.Unlock()
		}
	})

	t.Run("TLS 1.2 at least, 1.3 preferred, and no plaintext on the admission port", func(t *testing.T) {
		addr := fmt.Sprintf("127.0.0.1:%d", port)
		conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true}) //nolint:gosec // only the protocol version is checked
		if err != nil {
			t.Fatalf("TLS handshake: %v", err)
		}
		if v := conn.ConnectionState().Version; v != tls.VersionTLS13 {
			t.Errorf("negotiated %s, want TLS 1.3", tls.VersionName(v))
		}
		conn.Close()
		if conn, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS11}); err == nil { //nolint:gosec
			conn.Close()
			t.Error("a TLS 1.1 client completed a handshake")
		}
		conn2, err := tls.Dial("tcp", addr, &tls.Config{InsecureSkipVerify: true, MaxVersion: tls.VersionTLS12}) //nolint:gosec
		if err != nil {
			t.Errorf("a TLS 1.2 client was refused: %v", err)
		} else {
			conn2.Close()
		}
		resp, err := http.Post("http://"+addr+webhook.Path, "application/json", strings.NewReader("{}"))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				t.Error("the admission port answered plaintext HTTP with 200")
			}
		}
	})

	t.Run("with the webhook stopped, pods are still created (fail open)", func(t *testing.T) {
		stopWebhook()
		if err := <-webhookDone; err != nil {
			t.Errorf("webhook stopped with %v", err)
		}
		webhookDone <- nil // for the cleanup
		start := time.Now()
		p, err := c.Client.CoreV1().Pods(optedIn).Create(ctx, newPod("after-stop"), metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("pod creation failed with the webhook down: %v", err)
		}
		if _, ok := p.Annotations[webhook.InjectedAnnotation]; ok {
			t.Error("a stopped webhook mutated a pod")
		}
		if d := time.Since(start); d > 4*time.Second {
			t.Errorf("creation took %s, beyond the 3 s timeout", d)
		}
	})
}
