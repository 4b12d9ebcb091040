package e2e

import (
	"bytes"
	"context"
	"crypto/tls"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/deploy/monitoring"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/webhook"
)

// scrape reads a plain-HTTP /metrics and returns the metric families.
func scrape(ctx context.Context, port int) (map[string]bool, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, fmt.Sprintf("http://127.0.0.1:%d/metrics", port), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("/metrics: %s", resp.Status)
	}
	parser := expfmt.NewTextParser(model.UTF8Validation)
	families, err := parser.TextToMetricFamilies(resp.Body)
	if err != nil {
		return nil, err
	}
	out := map[string]bool{}
	for name, f := range families {
		if len(f.GetMetric()) > 0 {
			out[name] = true
		}
	}
	return out, nil
}

// Every metric the chart's alerts and dashboard query is served by the
// real binaries: the controller (queue and EC2 sources on, against an
// endpoint that refuses), the webhook (after one admission request) and
// the agent (against ec2-metadata-mock).
func TestEveryMetricTheAlertsAndDashboardQueryIsServed(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	bin := buildBinary(t)
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	files := filepath.Join(root, "deploy", "chart", "spot-rebalancer", "files")
	alerts, err := os.ReadFile(filepath.Join(files, "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := monitoring.ParseRules(alerts)
	if err != nil {
		t.Fatal(err)
	}
	dashboardJSON, err := os.ReadFile(filepath.Join(files, "dashboard.json"))
	if err != nil {
		t.Fatal(err)
	}
	dashboard, err := monitoring.ParseDashboard(dashboardJSON)
	if err != nil {
		t.Fatal(err)
	}
	var exprs []string
	for _, r := range rules.Rules() {
		exprs = append(exprs, r.Expr)
	}
	queried := monitoring.MetricNames(append(exprs, dashboard.Queries()...)...)

	// The controller, its AWS sources pointed at a port nobody listens on.
	t.Setenv("AWS_ACCESS_KEY_ID", "AKIDEXAMPLE")
	t.Setenv("AWS_SECRET_ACCESS_KEY", "secret")
	cfg := config.Default()
	cfg.Webhook.Namespace = ns
	cfg.Certs.Mode = config.CertModeExternal
	cfg.Rebalancer.Replacement.Mode = config.ReplacementCapacity
	cfg.Rebalancer.Surge.Enabled = ptr.To(false)
	cfg.AWS.Region = "us-east-1"
	cfg.AWS.Endpoint = fmt.Sprintf("http://127.0.0.1:%d", freePort(t))
	cfg.AWS.Queue.URL = "https://sqs.us-east-1.amazonaws.com/123456789012/spot-events"
	cfg.AWS.EC2.PollSpotRequests = true
	controllerCfg := filepath.Join(t.TempDir(), "controller.yaml")
	if err := config.WriteFile(controllerCfg, cfg); err != nil {
		t.Fatal(err)
	}
	controllerPort := freePort(t)
	startProcess(t, bin, "controller", "--kubeconfig", c.Kubeconfig, "--config", controllerCfg, "--leader-elect=false",
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", controllerPort), "--metrics-secure=false",
		"--health-probe-bind-address", "0", "--log-format", "text")
	// A node at risk, so that a state with a signal is reported.
	node := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-metrics"})
	annotate(t, c, node.Name, signals.AnnotationAtRisk, ptr.To("true"))

	// The webhook, serving a certificate from files (certs.mode external).
	dir := t.TempDir()
	now := time.Now()
	ca, err := certs.NewCA(now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	serving, err := certs.NewServing(ca, []string{"127.0.0.1"}, now, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for name, data := range map[string][]byte{certs.TLSCertKey: serving.CertPEM, certs.TLSKeyKey: serving.KeyPEM} {
		if err := os.WriteFile(filepath.Join(dir, name), data, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	hookCfg := config.Default()
	hookCfg.Webhook.Namespace = ns
	hookCfg.Certs.Mode = config.CertModeExternal
	hookCfg.Certs.CertDir = dir
	webhookCfg := filepath.Join(t.TempDir(), "webhook.yaml")
	if err := config.WriteFile(webhookCfg, hookCfg); err != nil {
		t.Fatal(err)
	}
	hookPort, webhookPort := freePort(t), freePort(t)
	startProcess(t, bin, "webhook", "--kubeconfig", c.Kubeconfig, "--config", webhookCfg, "--port", strconv.Itoa(hookPort),
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", webhookPort), "--metrics-secure=false",
		"--health-probe-bind-address", "0", "--log-format", "text")
	review := fmt.Sprintf(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"e2e-1",
		"kind":{"group":"","version":"v1","kind":"Pod"},"resource":{"group":"","version":"v1","resource":"pods"},
		"namespace":%q,"operation":"CREATE","userInfo":{},
		"object":{"apiVersion":"v1","kind":"Pod","metadata":{"name":"p","namespace":%q},"spec":{"containers":[{"name":"c","image":"app"}]}}}}`, ns, ns)
	insecure := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{InsecureSkipVerify: true}}}
	c.WaitFor(t, 60*time.Second, "the webhook to answer an admission request", func(ctx context.Context) (bool, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodPost, fmt.Sprintf("https://127.0.0.1:%d%s", hookPort, webhook.Path), bytes.NewBufferString(review))
		if err != nil {
			return false, err
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err := insecure.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})

	// The agent, against ec2-metadata-mock.
	endpoint, _ := startAEMM(t, c)
	agentCfg := filepath.Join(t.TempDir(), "agent.yaml")
	if err := config.WriteFile(agentCfg, config.Default()); err != nil {
		t.Fatal(err)
	}
	agentPort := freePort(t)
	startProcess(t, bin, "agent", "--kubeconfig", c.Kubeconfig, "--config", agentCfg, "--node-name", node.Name, "--imds-endpoint", endpoint,
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", agentPort), "--metrics-secure=false", "--log-format", "text")

	var missing []string
	defer func() {
		if t.Failed() {
			t.Logf("not served: %v", missing)
		}
	}()
	c.WaitFor(t, 60*time.Second, "every queried metric to be served", func(ctx context.Context) (bool, error) {
		served := map[string]bool{}
		for _, port := range []int{controllerPort, webhookPort, agentPort} {
			families, err := scrape(ctx, port)
			if err != nil {
				return false, nil
			}
			for name := range families {
				served[name] = true
			}
		}
		missing = slices.DeleteFunc(slices.Clone(queried), func(m string) bool { return served[m] })
		return len(missing) == 0, nil
	})
	t.Logf("%d metrics queried by %d alerts and the dashboard, all served: %v", len(queried), len(rules.Rules()), queried)
	if len(queried) < 15 {
		t.Errorf("only %d metrics queried: the rules or the dashboard lost their queries", len(queried))
	}
}
