// Command webhook is `make bench-webhook`: a load generator that sends
// realistic AdmissionReviews over TLS with keep-alive to (a) spot-rebalancer's
// webhook, the real binary with its caches on a local cluster, and (b) a
// minimal controller-runtime webhook that allows everything without a
// patch (the framework's floor), alternating A and B in the same run. It
// reports throughput at saturation, latency percentiles at a fixed rate,
// errors and server CPU per request.
//
// Run with the argument "floor" it is the floor server.
package main

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	admissionv1 "k8s.io/api/admission/v1"
	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
	"sigs.k8s.io/yaml"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/webhook"
)

func main() {
	if len(os.Args) > 1 && os.Args[1] == "floor" {
		if err := floor(os.Args[2:]); err != nil {
			fmt.Fprintln(os.Stderr, "floor:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.IntVar(&o.conns, "connections", 32, "concurrent keep-alive connections at saturation")
	flag.DurationVar(&o.saturation, "saturation", 5*time.Second, "length of each saturation phase")
	flag.IntVar(&o.rate, "rate", 1000, "requests per second of the fixed-rate phase")
	flag.DurationVar(&o.fixed, "fixed", 10*time.Second, "length of each fixed-rate phase")
	flag.IntVar(&o.rounds, "rounds", 3, "A/B rounds")
	flag.StringVar(&o.binary, "binary", "bin/spot-rebalancer", "the spot-rebalancer binary")
	flag.StringVar(&o.cpuProfile, "cpuprofile", "", "write a CPU profile of our webhook during the first saturation phase to this file")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench-webhook:", err)
		os.Exit(1)
	}
}

type options struct {
	conns, rate, rounds int
	saturation, fixed   time.Duration
	binary, cpuProfile  string
}

// floor serves an allow-everything controller-runtime webhook.
func floor(args []string) error {
	fs := flag.NewFlagSet("floor", flag.ContinueOnError)
	port := fs.Int("port", 9443, "HTTPS port")
	certDir := fs.String("cert-dir", "", "directory with tls.crt and tls.key")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrllog.SetLogger(logr.Discard())
	server := ctrlwebhook.NewServer(ctrlwebhook.Options{Host: "127.0.0.1", Port: *port, CertDir: *certDir,
		TLSOpts: []func(*tls.Config){func(c *tls.Config) { c.MinVersion = tls.VersionTLS12 }}})
	server.Register(webhook.Path, &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})})
	return server.Start(ctx)
}

// target is one server under load.
type target struct {
	name   string
	url    string
	pid    int
	client *http.Client
	// wantPatch: our webhook must mutate the sample pod; an answer
	// without a patch would mean it failed open, and is counted as an
	// error.
	wantPatch bool
}

type phaseResult struct {
	requests, errors int64
	seconds          float64
	cpuSeconds       float64
	latencies        []time.Duration
}

func run(ctx context.Context, o options, out io.Writer) error {
	bin, err := cluster.Binary(o.binary)
	if err != nil {
		return err
	}
	fmt.Fprintln(out, "starting a local cluster")
	c, err := cluster.Start("bench")
	if err != nil {
		return err
	}
	defer c.Stop()
	kube := c.Client
	dir, err := os.MkdirTemp("", "spot-rebalancer-bench-webhook-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// A CA and a serving certificate for 127.0.0.1, served by both.
	ca, err := certs.NewCA(time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}

	certDir := filepath.Join(dir, "certs")
	if err := os.MkdirAll(certDir, 0o700); err != nil {
		return err
	}

	// What our webhook reads: an opted-in namespace with a PDB, and a
	// configuration whose CA bundle matches (it selects no namespace).
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "bench",
		Labels: map[string]string{webhook.ProfileKey: "spot-spread"}}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	if _, err := kube.PolicyV1().PodDisruptionBudgets("bench").Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web"},
		Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app.kubernetes.io/name": "web"}}}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	ports := make([]int, 4)
	for i := range ports {
		if ports[i], err = cluster.FreePort(); err != nil {
			return err
		}
	}
	oursPort, floorPort, health, metricsPort := ports[0], ports[1], ports[2], ports[3]
	url := func(port int) string { return fmt.Sprintf("https://127.0.0.1:%d%s", port, webhook.Path) }
	if _, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: "bench"},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "bench.spot-rebalancer.io",
			ClientConfig:            admissionregistrationv1.WebhookClientConfig{URL: ptr.To(url(oursPort)), CABundle: ca.CertPEM},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: map[string]string{"bench": "never"}},
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			AdmissionReviewVersions: []string{"v1"}}},
	}, metav1.CreateOptions{}); err != nil {
		return err
	}
	cfg := config.Default()
	cfg.Certs.Mode = config.CertModeExternal
	cfg.Certs.CertDir = certDir
	cfg.Certs.WebhookConfigurations = []string{"bench"}
	cfg.Certs.ExtraDNSNames = []string{"127.0.0.1"}
	// The names the webhook expects in its certificate, 127.0.0.1 among them.
	serving, err := certs.NewServing(ca, certs.OptionsFromConfig(cfg).DNSNames, time.Now(), 24*time.Hour)
	if err != nil {
		return err
	}
	if err := errors.Join(os.WriteFile(filepath.Join(certDir, "tls.crt"), serving.CertPEM, 0o600),
		os.WriteFile(filepath.Join(certDir, "tls.key"), serving.KeyPEM, 0o600)); err != nil {
		return err
	}
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := config.WriteFile(cfgPath, cfg); err != nil {
		return err
	}

	ours := exec.Command(bin, "webhook", "--kubeconfig", c.Kubeconfig, "--config", cfgPath, "--port", strconv.Itoa(oursPort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort), "--metrics-secure=false", "--profiling",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health), "--log-level", "error")
	self, err := os.Executable()
	if err != nil {
		return err
	}
	floorCmd := exec.Command(self, "floor", "--port", strconv.Itoa(floorPort), "--cert-dir", certDir)
	for _, cmd := range []*exec.Cmd{ours, floorCmd} {
		cmd.Stderr = os.Stderr
		if err := cmd.Start(); err != nil {
			return err
		}
		defer func(cmd *exec.Cmd) { _ = cmd.Process.Signal(syscall.SIGTERM); _ = cmd.Wait() }(cmd)
	}
	if err := cluster.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		return cluster.Ready(ctx, health), nil
	}); err != nil {
		return fmt.Errorf("our webhook never became ready: %w", err)
	}

	body, podSize, err := sampleReview(ctx, c)
	if err != nil {
		return err
	}
	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(ca.CertPEM)
	newClient := func() *http.Client {
		return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
			TLSClientConfig:     &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12},
			MaxIdleConnsPerHost: o.conns, MaxConnsPerHost: o.conns, MaxIdleConns: o.conns,
			// HTTP/1.1 with keep-alive: one request per connection at a time.
			TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{},
		}}
	}
	targets := []*target{
		{name: "spot-rebalancer webhook", url: url(oursPort), pid: ours.Process.Pid, client: newClient(), wantPatch: true},
		{name: "controller-runtime floor", url: url(floorPort), pid: floorCmd.Process.Pid, client: newClient()},
	}
	for _, t := range targets {
		if _, err := send(ctx, t, body); err != nil {
			return fmt.Errorf("%s: %w", t.name, err)
		}
	}
	fmt.Fprintf(out, "sample: a pod of a real Deployment's template, %d bytes of pod JSON, %d bytes of AdmissionReview\n", podSize, len(body))

	sat := map[string][]phaseResult{}
	fixed := map[string][]phaseResult{}
	for round := range o.rounds {
		order := slices.Clone(targets)
		if round%2 == 1 {
			slices.Reverse(order)
		}
		if round == 0 && o.cpuProfile != "" {
			go profile(fmt.Sprintf("http://127.0.0.1:%d/debug/pprof/profile?seconds=%d", metricsPort, max(1, int(o.saturation.Seconds())-1)), o.cpuProfile)
		}
		for _, t := range order {
			r, err := saturate(ctx, t, body, o.conns, o.saturation)
			if err != nil {
				return err
			}
			sat[t.name] = append(sat[t.name], r)
			fmt.Fprintf(out, "round %d %-26s saturation %8.0f req/s\n", round+1, t.name, float64(r.requests)/r.seconds)
		}
		for _, t := range order {
			r, err := fixedRate(ctx, t, body, o.rate, o.fixed)
			if err != nil {
				return err
			}
			fixed[t.name] = append(fixed[t.name], r)
			fmt.Fprintf(out, "round %d %-26s %d req/s: p99 %s\n", round+1, t.name, o.rate, percentile(r.latencies, 0.99))
		}
	}

	fmt.Fprintf(out, "\n%d connections at saturation, %s per phase; %d req/s for %s per phase; %d rounds alternating A/B; HTTP/1.1 keep-alive over TLS 1.3.\n\n",
		o.conns, o.saturation, o.rate, o.fixed, o.rounds)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tSATURATION REQ/S (MEDIAN)\tCPU µs/REQ\tP50\tP99\tP99.9\tERRORS")
	var oursSat, floorSat float64
	for _, t := range targets {
		var rates []float64
		var cpu, reqs float64
		var errs int64
		var lat []time.Duration
		for _, r := range sat[t.name] {
			rates = append(rates, float64(r.requests)/r.seconds)
			cpu += r.cpuSeconds
			reqs += float64(r.requests)
			errs += r.errors
		}
		for _, r := range fixed[t.name] {
			lat = append(lat, r.latencies...)
			errs += r.errors
		}
		slices.Sort(rates)
		median := rates[len(rates)/2]
		if t.wantPatch {
			oursSat = median
		} else {
			floorSat = median
		}
		slices.Sort(lat)
		fmt.Fprintf(tw, "%s\t%.0f\t%.0f\t%s\t%s\t%s\t%d\n", t.name, median, 1e6*cpu/reqs,
			percentile(lat, 0.50), percentile(lat, 0.99), percentile(lat, 0.999), errs)
	}
	tw.Flush()
	fmt.Fprintf(out, "\nspot-rebalancer at %.0f%% of the floor's throughput\n", 100*oursSat/floorSat)
	return nil
}

// sampleReview builds the AdmissionReview of a pod created by a real
// Deployment's ReplicaSet: the Deployment is applied to a namespace the
// webhook does not watch, its pod read back as the API server stored it.
func sampleReview(ctx context.Context, c *cluster.Cluster) ([]byte, int, error) {
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "sample"}}, metav1.CreateOptions{}); err != nil {
		return nil, 0, err
	}
	var d appsv1.Deployment
	if err := yaml.UnmarshalStrict([]byte(sampleDeployment), &d); err != nil {
		return nil, 0, err
	}
	if _, err := c.Client.AppsV1().Deployments("sample").Create(ctx, &d, metav1.CreateOptions{}); err != nil {
		return nil, 0, err
	}
	var pod *corev1.Pod
	if err := cluster.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		pods, err := c.Client.CoreV1().Pods("sample").List(ctx, metav1.ListOptions{})
		if err != nil || len(pods.Items) == 0 {
			return false, err
		}
		pod = &pods.Items[0]
		return true, nil
	}); err != nil {
		return nil, 0, fmt.Errorf("waiting for the sample pod: %w", err)
	}
	// As the ReplicaSet controller submits it.
	pod.Namespace, pod.Name = "bench", ""
	pod.UID, pod.ResourceVersion, pod.CreationTimestamp, pod.ManagedFields = "", "", metav1.Time{}, nil
	pod.Spec.NodeName, pod.Status = "", corev1.PodStatus{}
	raw, err := json.Marshal(pod)
	if err != nil {
		return nil, 0, err
	}
	review := admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "bench", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "bench", Operation: admissionv1.Create,
			Object: runtime.RawExtension{Raw: raw}, UserInfo: authnUser()},
	}
	body, err := json.Marshal(review)
	return body, len(raw), err
}

// send posts one review and checks the answer.
func send(ctx context.Context, t *target, body []byte) (time.Duration, error) {
	start := time.Now()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, t.url, bytes.NewReader(body))
	if err != nil {
		return 0, err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := t.client.Do(req)
	if err != nil {
		return 0, err
	}
	data, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if err != nil {
		return 0, err
	}
	elapsed := time.Since(start)
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("status %d: %s", resp.StatusCode, data)
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(data, &review); err != nil {
		return 0, fmt.Errorf("decoding the answer: %w", err)
	}
	switch {
	case review.Response == nil || !review.Response.Allowed:
		return 0, fmt.Errorf("not allowed: %s", data)
	case t.wantPatch && len(review.Response.Patch) == 0:
		return 0, fmt.Errorf("no patch: the webhook did not mutate the pod: %s", data)
	}
	return elapsed, nil
}

// saturate keeps conns requests in flight for d.
func saturate(ctx context.Context, t *target, body []byte, conns int, d time.Duration) (phaseResult, error) {
	var ok, bad atomic.Int64
	cpu0, err := cpuSeconds(t.pid)
	if err != nil {
		return phaseResult{}, err
	}
	start := time.Now()
	deadline := start.Add(d)
	var wg sync.WaitGroup
	for range conns {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for time.Now().Before(deadline) && ctx.Err() == nil {
				if _, err := send(ctx, t, body); err != nil {
					bad.Add(1)
				} else {
					ok.Add(1)
				}
			}
		}()
	}
	wg.Wait()
	elapsed := time.Since(start).Seconds()
	cpu1, err := cpuSeconds(t.pid)
	if err != nil {
		return phaseResult{}, err
	}
	return phaseResult{requests: ok.Load(), errors: bad.Load(), seconds: elapsed, cpuSeconds: cpu1 - cpu0}, ctx.Err()
}

// fixedRate sends rate requests per second for d, open loop: each
// latency counts from when the request was due, so a slow answer cannot
// hide the ones queued behind it.
func fixedRate(ctx context.Context, t *target, body []byte, rate int, d time.Duration) (phaseResult, error) {
	var mu sync.Mutex
	var res phaseResult
	interval := time.Second / time.Duration(rate)
	n := int(d / interval)
	start := time.Now()
	var wg sync.WaitGroup
	inflight := make(chan struct{}, 512)
	for i := range n {
		due := start.Add(time.Duration(i) * interval)
		if wait := time.Until(due); wait > 0 {
			time.Sleep(wait)
		}
		if ctx.Err() != nil {
			break
		}
		inflight <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-inflight }()
			_, err := send(ctx, t, body)
			lat := time.Since(due)
			mu.Lock()
			defer mu.Unlock()
			if err != nil {
				res.errors++
				return
			}
			res.requests++
			res.latencies = append(res.latencies, lat)
		}()
	}
	wg.Wait()
	res.seconds = time.Since(start).Seconds()
	slices.Sort(res.latencies)
	return res, ctx.Err()
}

// profile saves a CPU profile from url to path.
func profile(url, path string) {
	resp, err := http.Get(url)
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
		return
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err == nil {
		err = os.WriteFile(path, data, 0o644)
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, "profile:", err)
	}
}

func percentile(sorted []time.Duration, p float64) time.Duration {
	if len(sorted) == 0 {
		return 0
	}
	i := int(float64(len(sorted)-1) * p)
	return sorted[i].Round(10 * time.Microsecond)
}

// cpuSeconds is the process's user plus system CPU time so far.
func cpuSeconds(pid int) (float64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0, err
	}
	// Fields after the command name, which is in parentheses.
	fields := strings.Fields(string(data[bytes.LastIndexByte(data, ')')+2:]))
	utime, err1 := strconv.ParseFloat(fields[11], 64)
	stime, err2 := strconv.ParseFloat(fields[12], 64)
	if err := errors.Join(err1, err2); err != nil {
		return 0, err
	}
	const clockTicks = 100 // USER_HZ on Linux
	return (utime + stime) / clockTicks, nil
}

// sampleDeployment is a typical production Deployment: labels and
// annotations of a Helm release, probes, resources, environment, volumes,
// security context.
const sampleDeployment = `
metadata:
  name: web
  labels: {app.kubernetes.io/name: web, app.kubernetes.io/instance: shop, app.kubernetes.io/version: "2.14.3", app.kubernetes.io/component: frontend, app.kubernetes.io/part-of: shop, app.kubernetes.io/managed-by: Helm, helm.sh/chart: web-2.14.3}
spec:
  replicas: 1
  selector:
    matchLabels: {app.kubernetes.io/name: web, app.kubernetes.io/instance: shop}
  template:
    metadata:
      labels: {app.kubernetes.io/name: web, app.kubernetes.io/instance: shop, app.kubernetes.io/version: "2.14.3", app.kubernetes.io/component: frontend, app.kubernetes.io/part-of: shop, team: storefront, cost-center: cc-4411}
      annotations:
        prometheus.io/scrape: "true"
        prometheus.io/port: "9090"
        prometheus.io/path: /metrics
        checksum/config: 5f3c1b2a9d8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3f2a
        kubectl.kubernetes.io/default-container: web
    spec:
      serviceAccountName: default
      terminationGracePeriodSeconds: 45
      securityContext: {runAsNonRoot: true, runAsUser: 10001, fsGroup: 10001, seccompProfile: {type: RuntimeDefault}}
      containers:
        - name: web
          image: registry.example/shop/web:2.14.3
          imagePullPolicy: IfNotPresent
          args: [--listen=:8080, --metrics=:9090, --log-format=json, --upstream=http://api.shop.svc.cluster.local:8080]
          ports:
            - {name: http, containerPort: 8080, protocol: TCP}
            - {name: metrics, containerPort: 9090, protocol: TCP}
          env:
            - {name: POD_NAME, valueFrom: {fieldRef: {fieldPath: metadata.name}}}
            - {name: POD_NAMESPACE, valueFrom: {fieldRef: {fieldPath: metadata.namespace}}}
            - {name: NODE_NAME, valueFrom: {fieldRef: {fieldPath: spec.nodeName}}}
            - {name: GOMAXPROCS, valueFrom: {resourceFieldRef: {resource: limits.cpu}}}
            - {name: FEATURE_FLAGS, value: "checkout-v2,search-suggest,recommendations"}
            - {name: CACHE_TTL, value: "300s"}
            - {name: OTEL_EXPORTER_OTLP_ENDPOINT, value: "http://otel-collector.observability.svc:4317"}
            - {name: OTEL_SERVICE_NAME, value: web}
          resources:
            requests: {cpu: 250m, memory: 256Mi}
            limits: {cpu: "1", memory: 512Mi}
          readinessProbe: {httpGet: {path: /readyz, port: http}, periodSeconds: 5, failureThreshold: 3}
          livenessProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 10, failureThreshold: 6, initialDelaySeconds: 10}
          startupProbe: {httpGet: {path: /healthz, port: http}, periodSeconds: 2, failureThreshold: 30}
          securityContext: {allowPrivilegeEscalation: false, readOnlyRootFilesystem: true, capabilities: {drop: [ALL]}}
          volumeMounts:
            - {name: config, mountPath: /etc/web, readOnly: true}
            - {name: tmp, mountPath: /tmp}
            - {name: cache, mountPath: /var/cache/web}
        - name: envoy
          image: registry.example/envoy:1.31.2
          args: [-c, /etc/envoy/envoy.yaml, --service-cluster, web]
          ports:
            - {name: envoy-admin, containerPort: 9901}
          resources:
            requests: {cpu: 50m, memory: 64Mi}
            limits: {memory: 128Mi}
          volumeMounts:
            - {name: envoy, mountPath: /etc/envoy, readOnly: true}
      volumes:
        - {name: config, configMap: {name: web-config}}
        - {name: envoy, configMap: {name: web-envoy}}
        - {name: tmp, emptyDir: {}}
        - {name: cache, emptyDir: {sizeLimit: 1Gi}}
      topologySpreadConstraints:
        - {maxSkew: 1, topologyKey: kubernetes.io/hostname, whenUnsatisfiable: ScheduleAnyway, labelSelector: {matchLabels: {app.kubernetes.io/name: web}}}
      affinity:
        podAntiAffinity:
          preferredDuringSchedulingIgnoredDuringExecution:
            - weight: 100
              podAffinityTerm: {topologyKey: kubernetes.io/hostname, labelSelector: {matchLabels: {app.kubernetes.io/name: web}}}
`

// authnUser is who creates pods of Deployments: the ReplicaSet controller.
func authnUser() authenticationv1.UserInfo {
	return authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:replicaset-controller",
		Groups: []string{"system:serviceaccounts", "system:serviceaccounts:kube-system", "system:authenticated"}}
}
