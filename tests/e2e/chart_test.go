package e2e

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	rbacv1 "k8s.io/api/rbac/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"
	"sigs.k8s.io/yaml"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/deploy/monitoring"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// tool runs one of bin/'s tools against the local cluster and returns its
// combined output and exit code.
func tool(t *testing.T, c *cluster.Cluster, stdin []byte, name string, args ...string) (string, int) {
	t.Helper()
	// Not the test's context: cleanups run tools after it is cancelled.
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, name), args...)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig, "HELM_CACHE_HOME="+t.TempDir(),
		"HELM_CONFIG_HOME="+t.TempDir(), "HELM_DATA_HOME="+t.TempDir())
	if stdin != nil {
		cmd.Stdin = bytes.NewReader(stdin)
	}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return out.String(), 0
	case errors.As(err, &exit):
		return out.String(), exit.ExitCode()
	default:
		t.Fatalf("running %s: %v", name, err)
		return "", -1
	}
}

func mustTool(t *testing.T, c *cluster.Cluster, stdin []byte, name string, args ...string) string {
	t.Helper()
	out, code := tool(t, c, stdin, name, args...)
	if code != 0 {
		t.Fatalf("%s %s: exit %d\n%s", name, strings.Join(args, " "), code, out)
	}
	return out
}

// renderedConfig finds the chart's ConfigMap in a rendering and decodes its
// config file as the binary does.
func renderedConfig(t *testing.T, manifests string) *config.Config {
	t.Helper()
	decoder := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifests)))
	for {
		doc, err := decoder.Read()
		if err != nil {
			t.Fatalf("no ConfigMap in the rendering: %v", err)
		}
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal(doc, &cm); err != nil || cm.Kind != "ConfigMap" || cm.Data["config.yaml"] == "" {
			continue
		}
		cfg, err := config.Decode([]byte(cm.Data["config.yaml"]))
		if err != nil {
			t.Fatalf("the chart's config file does not load: %v\n%s", err, cm.Data["config.yaml"])
		}
		return cfg
	}
}

// renderedDocs splits a rendering into its objects, by kind.
func renderedDocs(t *testing.T, manifests string) map[string][][]byte {
	t.Helper()
	out := map[string][][]byte{}
	decoder := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(manifests)))
	for {
		doc, err := decoder.Read()
		if err != nil {
			return out
		}
		var meta metav1.TypeMeta
		if err := yaml.Unmarshal(doc, &meta); err != nil {
			t.Fatal(err)
		}
		if meta.Kind != "" {
			out[meta.Kind] = append(out[meta.Kind], doc)
		}
	}
}

// checkMonitoring checks a rendering with every monitoring value on: a
// metrics Service per component, the agent's endpoint and its right to
// check callers, the ServiceMonitor, the PrometheusRule with the rule file's
// alerts (less the disabled one, plus the extra label), the dashboard.
func checkMonitoring(t *testing.T, m string) {
	docs := renderedDocs(t, m)
	var services []string
	for _, doc := range docs["Service"] {
		var svc corev1.Service
		if err := yaml.Unmarshal(doc, &svc); err != nil {
			t.Fatal(err)
		}
		if svc.Labels["spot-rebalancer.io/metrics"] == "true" {
			services = append(services, svc.Name)
		}
	}
	slices.Sort(services)
	if want := []string{"spot-rebalancer-agent-metrics", "spot-rebalancer-controller-metrics", "spot-rebalancer-webhook-metrics"}; !slices.Equal(services, want) {
		t.Errorf("metrics Services %v, want %v", services, want)
	}
	for _, want := range []string{"--metrics-bind-address=:9880", "bearerTokenFile:", "scheme: https", "jobLabel: app.kubernetes.io/part-of", "app.kubernetes.io/part-of: spot-rebalancer"} {
		if !strings.Contains(m, want) {
			t.Errorf("the rendering lacks %q", want)
		}
	}
	checksCallers := false
	for _, doc := range docs["ClusterRoleBinding"] {
		var b rbacv1.ClusterRoleBinding
		if err := yaml.Unmarshal(doc, &b); err != nil {
			t.Fatal(err)
		}
		checksCallers = checksCallers || b.RoleRef.Name == "spot-rebalancer-metrics-auth" && slices.ContainsFunc(b.Subjects, func(s rbacv1.Subject) bool {
			return s.Kind == rbacv1.ServiceAccountKind && s.Name == "spot-rebalancer-agent"
		})
	}
	if !checksCallers {
		t.Error("the agent serves /metrics but may not review its callers' tokens")
	}
	if len(docs["ServiceMonitor"]) != 1 || len(docs["PrometheusRule"]) != 1 {
		t.Fatalf("%d ServiceMonitors and %d PrometheusRules, want one each", len(docs["ServiceMonitor"]), len(docs["PrometheusRule"]))
	}
	var monitor struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
		Spec     struct {
			Endpoints []struct {
				Port, Interval, ScrapeTimeout, Scheme string
				Relabelings                           []map[string]any `json:"relabelings"`
			} `json:"endpoints"`
		} `json:"spec"`
	}
	if err := yaml.Unmarshal(docs["ServiceMonitor"][0], &monitor); err != nil {
		t.Fatal(err)
	}
	if e := monitor.Spec.Endpoints; monitor.Metadata.Labels["release"] != "kps" || len(e) != 1 || e[0].Port != "metrics" || e[0].Interval != "15s" ||
		e[0].ScrapeTimeout != "10s" || len(e[0].Relabelings) != 1 || e[0].Relabelings[0]["targetLabel"] != "cluster" {
		t.Errorf("ServiceMonitor labels %v, endpoints %+v", monitor.Metadata.Labels, e)
	}
	var ruleMeta struct {
		Metadata metav1.ObjectMeta `json:"metadata"`
	}
	if err := yaml.Unmarshal(docs["PrometheusRule"][0], &ruleMeta); err != nil || ruleMeta.Metadata.Labels["release"] != "kps" {
		t.Errorf("PrometheusRule labels %v (%v), want release=kps", ruleMeta.Metadata.Labels, err)
	}
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(filepath.Join(root, "deploy", "chart", "spot-rebalancer", "files", "alerts.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	file, err := monitoring.ParseRules(data)
	if err != nil {
		t.Fatal(err)
	}
	var rule struct {
		Spec monitoring.RuleFile `json:"spec"`
	}
	if err := yaml.Unmarshal(docs["PrometheusRule"][0], &rule); err != nil {
		t.Fatal(err)
	}
	var want, got []string
	for _, r := range file.Rules() {
		if r.Alert != "SpotRebalancerSurgeAbandoned" {
			want = append(want, r.Alert)
		}
	}
	for _, r := range rule.Spec.Rules() {
		got = append(got, r.Alert)
		if r.Labels["team"] != "platform" || r.Labels["severity"] == "" {
			t.Errorf("%s: labels %v, want its severity and team=platform", r.Alert, r.Labels)
		}
	}
	if !slices.Equal(got, want) {
		t.Errorf("PrometheusRule alerts %v, want %v", got, want)
	}
	var dashboard corev1.ConfigMap
	for _, doc := range docs["ConfigMap"] {
		var cm corev1.ConfigMap
		if err := yaml.Unmarshal(doc, &cm); err != nil {
			t.Fatal(err)
		}
		if cm.Labels["grafana_dashboard"] == "1" {
			dashboard = cm
		}
	}
	if dashboard.Annotations["grafana_folder"] != "Spot" {
		t.Errorf("dashboard ConfigMap annotations %v, want grafana_folder=Spot", dashboard.Annotations)
	}
	if d, err := monitoring.ParseDashboard([]byte(dashboard.Data["spot-rebalancer.json"])); err != nil || len(d.Panels) == 0 {
		t.Errorf("the dashboard ConfigMap holds no dashboard (%v)", err)
	}
}

// podValues sets every per-component pod value of the chart.
const podValues = `
controller:
  priorityClassName: system-cluster-critical
  podLabels: {team: platform, app.kubernetes.io/component: not-this}
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: ScheduleAnyway}
  extraEnv: [{name: HTTPS_PROXY, value: "http://proxy:3128"}]
  podSecurityContext: {fsGroup: 65532}
  securityContext: {runAsUser: 1001}
  serviceAccount: {create: false, name: my-controller}
webhook:
  priorityClassName: system-cluster-critical
  podLabels: {team: platform}
  topologySpreadConstraints:
    - {maxSkew: 1, topologyKey: topology.kubernetes.io/zone, whenUnsatisfiable: DoNotSchedule}
  extraEnv: [{name: GOMAXPROCS, value: "2"}]
  podSecurityContext: {runAsUser: 2000, runAsGroup: 2000}
  serviceAccount: {annotations: {example.com/owner: platform}}
  namespaceSelector: {matchLabels: {env: prod}}
  objectSelector: {matchExpressions: [{key: example.com/skip, operator: DoesNotExist}]}
agent:
  podLabels: {team: platform}
  podAnnotations: {example.com/scrape: "no"}
  nodeSelector: {example.com/pool: spot}
  extraEnv: [{name: AWS_EC2_METADATA_SERVICE_ENDPOINT_MODE, value: IPv6}]
  serviceAccount: {name: my-agent}
`

// checkPodValues checks that each of podValues reached its pods, and that
// the chart's own selector labels and restricted defaults hold beside them.
func checkPodValues(t *testing.T, m string) {
	docs := renderedDocs(t, m)
	pods := map[string]corev1.PodTemplateSpec{}
	for _, doc := range docs["Deployment"] {
		var d appsv1.Deployment
		if err := yaml.Unmarshal(doc, &d); err != nil {
			t.Fatal(err)
		}
		pods[d.Spec.Template.Labels["app.kubernetes.io/component"]] = d.Spec.Template
	}
	for _, doc := range docs["DaemonSet"] {
		var d appsv1.DaemonSet
		if err := yaml.Unmarshal(doc, &d); err != nil {
			t.Fatal(err)
		}
		pods["agent"] = d.Spec.Template
	}
	for _, c := range []string{"controller", "webhook", "agent"} {
		p, ok := pods[c]
		if !ok {
			t.Fatalf("no %s pods rendered (a podLabels value took the component label?)", c)
		}
		if p.Labels["team"] != "platform" {
			t.Errorf("%s: pod labels %v, want team=platform", c, p.Labels)
		}
		sc := p.Spec.Containers[0].SecurityContext
		if sc == nil || sc.ReadOnlyRootFilesystem == nil || !*sc.ReadOnlyRootFilesystem || sc.AllowPrivilegeEscalation == nil || *sc.AllowPrivilegeEscalation ||
			p.Spec.SecurityContext == nil || p.Spec.SecurityContext.RunAsNonRoot == nil || !*p.Spec.SecurityContext.RunAsNonRoot ||
			p.Spec.SecurityContext.SeccompProfile == nil || sc.Capabilities == nil || len(sc.Capabilities.Drop) != 1 {
			t.Errorf("%s: an override lost the restricted defaults: pod %+v, container %+v", c, p.Spec.SecurityContext, sc)
		}
		if len(p.Spec.Containers[0].Env) == 0 {
			t.Errorf("%s: no extraEnv", c)
		}
	}
	ctl, hook, agent := pods["controller"].Spec, pods["webhook"].Spec, pods["agent"].Spec
	var migrate struct {
		Spec struct {
			Template corev1.PodTemplateSpec `json:"template"`
		} `json:"spec"`
	}
	if len(docs["Job"]) != 1 || yaml.Unmarshal(docs["Job"][0], &migrate) != nil || migrate.Spec.Template.Spec.PriorityClassName != "system-cluster-critical" ||
		migrate.Spec.Template.Spec.SecurityContext.FSGroup == nil {
		t.Errorf("the migration Job does not run under the controller's pod values: %+v", migrate.Spec.Template.Spec)
	}
	for _, check := range []struct {
		what string
		ok   bool
	}{
		{"controller priority class", ctl.PriorityClassName == "system-cluster-critical"},
		{"controller topology spread", len(ctl.TopologySpreadConstraints) == 1 && ctl.TopologySpreadConstraints[0].TopologyKey == "topology.kubernetes.io/zone"},
		{"controller HTTPS_PROXY", slices.ContainsFunc(ctl.Containers[0].Env, func(e corev1.EnvVar) bool { return e.Name == "HTTPS_PROXY" })},
		{"controller fsGroup", ctl.SecurityContext.FSGroup != nil && *ctl.SecurityContext.FSGroup == 65532},
		{"controller runAsUser override", ctl.Containers[0].SecurityContext.RunAsUser != nil && *ctl.Containers[0].SecurityContext.RunAsUser == 1001},
		{"controller's own ServiceAccount", ctl.ServiceAccountName == "my-controller"},
		{"webhook priority class", hook.PriorityClassName == "system-cluster-critical"},
		{"webhook topology spread", len(hook.TopologySpreadConstraints) == 1},
		{"webhook default ServiceAccount", hook.ServiceAccountName == "spot-rebalancer-webhook"},
		{"agent node selector", agent.NodeSelector["example.com/pool"] == "spot"},
		{"agent annotations", pods["agent"].Annotations["example.com/scrape"] == "no"},
		{"agent NODE_NAME kept beside extraEnv", len(agent.Containers[0].Env) == 2 && agent.Containers[0].Env[0].Name == "NODE_NAME"},
		{"agent ServiceAccount", agent.ServiceAccountName == "my-agent"},
		{"agent runs as 65532 still", agent.SecurityContext.RunAsUser != nil && *agent.SecurityContext.RunAsUser == 65532 && agent.Containers[0].SecurityContext.RunAsUser == nil},
		{"webhook pod's own user, not overridden by its container", hook.SecurityContext.RunAsUser != nil && *hook.SecurityContext.RunAsUser == 2000 && hook.Containers[0].SecurityContext.RunAsUser == nil},
	} {
		if !check.ok {
			t.Errorf("%s: not rendered", check.what)
		}
	}
	// ServiceAccounts: the controller's is brought by the user; the others
	// are made, the webhook's with its annotations; every binding and
	// policy names the one in use.
	var accounts []string
	for _, doc := range docs["ServiceAccount"] {
		var sa corev1.ServiceAccount
		if err := yaml.Unmarshal(doc, &sa); err != nil {
			t.Fatal(err)
		}
		accounts = append(accounts, sa.Name)
		if sa.Name == "spot-rebalancer-webhook" && sa.Annotations["example.com/owner"] != "platform" {
			t.Errorf("webhook ServiceAccount annotations %v", sa.Annotations)
		}
	}
	slices.Sort(accounts)
	if want := []string{"my-agent", "spot-rebalancer-migrate", "spot-rebalancer-webhook"}; !slices.Equal(accounts, want) {
		t.Errorf("ServiceAccounts %v, want %v", accounts, want)
	}
	// The admission policies name the accounts in use, by username.
	var named []string
	for _, match := range regexp.MustCompile(`system:serviceaccount:[a-z0-9-]+:([a-z0-9-]+)`).FindAllStringSubmatch(m, -1) {
		named = append(named, match[1])
	}
	slices.Sort(named)
	if named = slices.Compact(named); !slices.Equal(named, []string{"my-agent", "my-controller", "spot-rebalancer-migrate"}) {
		t.Errorf("the admission policies name the ServiceAccounts %v, want my-agent, my-controller and spot-rebalancer-migrate", named)
	}
	for _, kind := range []string{"ClusterRoleBinding", "RoleBinding"} {
		for _, doc := range docs[kind] {
			var b rbacv1.RoleBinding // a ClusterRoleBinding decodes the same
			if err := yaml.Unmarshal(doc, &b); err != nil {
				t.Fatal(err)
			}
			for _, s := range b.Subjects {
				if s.Kind == rbacv1.ServiceAccountKind && (s.Name == "spot-rebalancer-controller" || s.Name == "spot-rebalancer-agent") {
					t.Errorf("%s %s names %s, not the ServiceAccount in use", kind, b.Name, s.Name)
				}
			}
		}
	}
	// The webhook configuration: the user's selectors beside the chart's.
	var hooks struct {
		Webhooks []struct {
			Name              string                `json:"name"`
			NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector"`
			ObjectSelector    *metav1.LabelSelector `json:"objectSelector"`
		} `json:"webhooks"`
	}
	if err := yaml.Unmarshal(docs["MutatingWebhookConfiguration"][0], &hooks); err != nil {
		t.Fatal(err)
	}
	for _, h := range hooks.Webhooks {
		ns := h.NamespaceSelector
		if ns == nil || ns.MatchLabels["env"] != "prod" || ns.MatchExpressions[0].Key != corev1.LabelMetadataName || h.ObjectSelector == nil {
			t.Errorf("%s: namespaceSelector %+v, objectSelector %+v", h.Name, ns, h.ObjectSelector)
			continue
		}
		optIn := slices.ContainsFunc(ns.MatchExpressions, func(r metav1.LabelSelectorRequirement) bool {
			return r.Key == "spot-rebalancer.io/profile" && r.Operator == metav1.LabelSelectorOpExists
		})
		if optIn != (h.Name == "workloads.spot-rebalancer.io") {
			t.Errorf("%s: limited to namespaces with a profile: %v; want only the workloads hook", h.Name, optIn)
		}
	}
}

// The Helm chart: lint, render with every option, apply each rendering
// with a server-side dry run, install it for real, and check each
// component's RBAC: what it needs, and nothing it has no business with.
func TestHelmChart(t *testing.T) {
	c := cluster.Get(t)
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(c.BinDir, "helm")); err != nil {
		t.Fatalf("bin/helm is missing: run `make tools`")
	}
	chart := filepath.Join(root, "deploy", "chart", "spot-rebalancer")
	ns := c.Namespace(t, nil)

	mustTool(t, c, nil, "helm", "lint", "--strict", chart)

	t.Run("deploy/spot-rebalancer.yaml is the chart rendered with defaults", func(t *testing.T) {
		cmd := exec.Command(filepath.Join(root, "hack", "manifests.sh"), "-")
		cmd.Env = append(os.Environ(), "HELM="+filepath.Join(c.BinDir, "helm"))
		want, err := cmd.Output()
		if err != nil {
			t.Fatalf("hack/manifests.sh: %v", err)
		}
		got, err := os.ReadFile(filepath.Join(root, "deploy", "spot-rebalancer.yaml"))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("deploy/spot-rebalancer.yaml is stale: run `make manifests`")
		}
	})

	// cert-manager's kinds and the Prometheus Operator's, for the cases
	// that render them.
	mustTool(t, c, nil, "kubectl", "apply", "-f", filepath.Join("testdata", "cert-manager-crds.yaml"))
	mustTool(t, c, nil, "kubectl", "apply", "--server-side", "-f", filepath.Join("testdata", "prometheus-operator-crds.yaml"))
	c.WaitFor(t, 30*time.Second, "cert-manager's stand-in CRDs and the Prometheus Operator's to be served", func(ctx context.Context) (bool, error) {
		_, code := tool(t, c, nil, "kubectl", "get", "certificates.cert-manager.io,servicemonitors.monitoring.coreos.com,prometheusrules.monitoring.coreos.com", "-n", ns)
		return code == 0, nil
	})

	cases := []struct {
		name string
		set  []string
		// values, if any, is a values file given with --values.
		values string
		check  func(t *testing.T, cfg *config.Config, manifests string)
	}{
		{name: "defaults", check: func(t *testing.T, cfg *config.Config, m string) {
			if cfg.Certs.Mode != config.CertModeSelfManaged || cfg.Webhook.Namespace != ns || cfg.Rebalancer.DryRun {
				t.Errorf("config: certs.mode %q, webhook.namespace %q, dryRun %v", cfg.Certs.Mode, cfg.Webhook.Namespace, cfg.Rebalancer.DryRun)
			}
			for _, want := range []string{"kind: DaemonSet", "failurePolicy: Ignore", "sideEffects: None",
				"reinvocationPolicy: IfNeeded", "timeoutSeconds: 3", "readOnlyRootFilesystem: true", "runAsNonRoot: true"} {
				if !strings.Contains(m, want) {
					t.Errorf("the rendering lacks %q", want)
				}
			}
		}},
		{name: "dry run", set: []string{"rebalancer.dryRun=true"}, check: func(t *testing.T, cfg *config.Config, _ string) {
			if !cfg.Rebalancer.DryRun {
				t.Error("rebalancer.dryRun=true did not reach the config")
			}
		}},
		{name: "cert-manager", set: []string{"certs.mode=cert-manager"}, check: func(t *testing.T, cfg *config.Config, m string) {
			if cfg.Certs.Mode != config.CertModeExternal {
				t.Errorf("certs.mode = %q, want external (cert-manager writes the Secret)", cfg.Certs.Mode)
			}
			for _, want := range []string{"kind: Certificate", "cert-manager.io/inject-ca-from: " + ns + "/spot-rebalancer-webhook"} {
				if !strings.Contains(m, want) {
					t.Errorf("the rendering lacks %q", want)
				}
			}
		}},
		{name: "external certificates", set: []string{"certs.mode=external", "certs.external.secretName=my-tls", "certs.external.caBundle=Zm9v"},
			check: func(t *testing.T, cfg *config.Config, m string) {
				if cfg.Certs.ServingSecretName != "my-tls" || !strings.Contains(m, "caBundle: Zm9v") {
					t.Errorf("servingSecretName %q; caBundle rendered: %v", cfg.Certs.ServingSecretName, strings.Contains(m, "caBundle"))
				}
			}},
		{name: "AWS sources on, agent off", set: []string{"aws.region=us-east-1", "aws.queue.url=https://sqs.us-east-1.amazonaws.com/123456789012/spot",
			"aws.ec2.describeInstances=true", "aws.ec2.pollSpotRequests=true", "agent.enabled=false"},
			check: func(t *testing.T, cfg *config.Config, m string) {
				if cfg.AWS.Queue.URL == "" || !cfg.AWS.EC2.DescribeInstances || !cfg.AWS.EC2.PollSpotRequests || cfg.AWS.Region != "us-east-1" {
					t.Errorf("aws config = %+v", cfg.AWS)
				}
				if strings.Contains(m, "kind: DaemonSet") {
					t.Error("agent.enabled=false still renders the DaemonSet")
				}
			}},
		{name: "client rate limit", set: []string{"controller.kubeAPIQPS=200", "controller.kubeAPIBurst=400"},
			check: func(t *testing.T, _ *config.Config, m string) {
				for _, want := range []string{"--kube-api-qps=200", "--kube-api-burst=400"} {
					if !strings.Contains(m, want) {
						t.Errorf("the rendering lacks %q", want)
					}
				}
			}},
		{name: "monitoring", set: []string{"metrics.serviceMonitor.enabled=true", "metrics.prometheusRule.enabled=true", "metrics.dashboard.enabled=true",
			"agent.metrics.enabled=true", "metrics.prometheusRule.disabled={SpotRebalancerSurgeAbandoned}", "metrics.prometheusRule.additionalLabels.team=platform",
			"metrics.serviceMonitor.interval=15s", "metrics.serviceMonitor.scrapeTimeout=10s", "metrics.serviceMonitor.labels.release=kps",
			"metrics.serviceMonitor.relabelings[0].targetLabel=cluster", "metrics.serviceMonitor.relabelings[0].replacement=prod",
			"metrics.prometheusRule.labels.release=kps", "metrics.dashboard.annotations.grafana_folder=Spot"},
			check: func(t *testing.T, _ *config.Config, m string) { checkMonitoring(t, m) }},
		{name: "every component's pod values", values: podValues, check: func(t *testing.T, _ *config.Config, m string) { checkPodValues(t, m) }},
		{name: "replacement and surge", set: []string{"rebalancer.replacement.mode=capacity", "rebalancer.surge.enabled=false", "config.rebalancer.implicitBudget.maxUnavailable=1"},
			check: func(t *testing.T, cfg *config.Config, _ string) {
				if cfg.Rebalancer.Replacement.Mode != config.ReplacementCapacity || *cfg.Rebalancer.Surge.Enabled || cfg.Rebalancer.ImplicitBudget.MaxUnavailable.IntValue() != 1 {
					t.Errorf("rebalancer config = %+v", cfg.Rebalancer)
				}
			}},
	}
	for _, tc := range cases {
		t.Run("render and apply: "+tc.name, func(t *testing.T) {
			args := []string{"template", "spot-rebalancer", chart, "--namespace", ns}
			if tc.values != "" {
				path := filepath.Join(t.TempDir(), "values.yaml")
				if err := os.WriteFile(path, []byte(tc.values), 0o600); err != nil {
					t.Fatal(err)
				}
				args = append(args, "--values", path)
			}
			for _, s := range tc.set {
				args = append(args, "--set", s)
			}
			manifests := mustTool(t, c, nil, "helm", args...)
			tc.check(t, renderedConfig(t, manifests), manifests)
			mustTool(t, c, []byte(manifests), "kubectl", "apply", "--dry-run=server", "-f", "-")
		})
	}

	// Pod Security Admission: the controller and the webhook meet
	// `restricted`; the agent, on the host network, needs `privileged`.
	t.Run("pod security: controller and webhook restricted, the agent privileged", func(t *testing.T) {
		restricted := c.Namespace(t, map[string]string{
			"pod-security.kubernetes.io/enforce": "restricted", "pod-security.kubernetes.io/warn": "restricted"})
		withoutAgent := mustTool(t, c, nil, "helm", "template", "spot-rebalancer", chart, "--namespace", restricted, "--set", "agent.enabled=false")
		if out := mustTool(t, c, []byte(withoutAgent), "kubectl", "apply", "--dry-run=server", "-f", "-"); strings.Contains(out, "PodSecurity") {
			t.Errorf("the controller or the webhook would violate the restricted level:\n%s", out)
		}
		withAgent := mustTool(t, c, nil, "helm", "template", "spot-rebalancer", chart, "--namespace", restricted)
		if out := mustTool(t, c, []byte(withAgent), "kubectl", "apply", "--dry-run=server", "-f", "-"); !strings.Contains(out, "hostNetwork") {
			t.Errorf("the agent on the host network passed the restricted level unnoticed:\n%s", out)
		}
		privileged := c.Namespace(t, map[string]string{
			"pod-security.kubernetes.io/enforce": "privileged", "pod-security.kubernetes.io/warn": "privileged"})
		agentOnly := mustTool(t, c, nil, "helm", "template", "spot-rebalancer", chart, "--namespace", privileged)
		if out := mustTool(t, c, []byte(agentOnly), "kubectl", "apply", "--dry-run=server", "-f", "-"); strings.Contains(out, "PodSecurity") {
			t.Errorf("a privileged namespace warned:\n%s", out)
		}
	})

	t.Run("bad values fail with the field's name", func(t *testing.T) {
		// values.schema.json refuses them before any template runs, naming
		// the value's path; the templates' own checks stay for what a schema
		// cannot say.
		for set, want := range map[string]string{
			"certs.mode=vault":                         `at '/certs/mode': value must be one of`,
			"controller.kubeAPIQPS=0":                  `at '/controller/kubeAPIQPS'`,
			"controller.kubeAPIBurst=-1":               `at '/controller/kubeAPIBurst'`,
			"logLevel=verbose":                         `at '/logLevel': value must be one of 'debug', 'info', 'error'`,
			"rebalancer.replacement.mode=eventually":   `at '/rebalancer/replacement/mode'`,
			"rebalancer.surge.timeout=5 minutes":       `at '/rebalancer/surge/timeout'`,
			"controller.replicas=0":                    `at '/controller/replicas'`,
			"webhook.port=70000":                       `at '/webhook/port'`,
			"controller.typo=1":                        `additional properties 'typo' not allowed`,
			"aws.queue.accounts={12345}":               `at '/aws/queue/accounts/0'`,
			"metrics.serviceMonitor.enabled=yes":       `at '/metrics/serviceMonitor/enabled': got string, want boolean`,
			"controller.extraEnv[0].value=x":           `at '/controller/extraEnv/0': missing property 'name'`,
			"metrics.prometheusRule.disabled={NoSuch}": `at '/metrics/prometheusRule/disabled/0'`,
			"certs.mode=external":                      "certs.external.secretName is required",
			"controller.podLabels.version=2":           `at '/controller/podLabels/version': got number, want string`,
			"controller.serviceAccount.name=shared,agent.serviceAccount.name=shared": `agent.serviceAccount.name "shared": every component needs a ServiceAccount of its own`,
			"webhook.serviceAccount.create=false":                                    `at '/webhook/serviceAccount/name'`,
			"metrics.serviceMonitor.interval=1.5m":                                   `at '/metrics/serviceMonitor/interval'`,
			"metrics.service.enabled=false,metrics.serviceMonitor.enabled=true":      "metrics.serviceMonitor.enabled needs metrics.service.enabled",
		} {
			out, code := tool(t, c, nil, "helm", "template", "spot-rebalancer", chart, "--set", set)
			if code == 0 || !strings.Contains(out, want) {
				t.Errorf("%s: exit %d, want an error naming %q\n%s", set, code, want, out)
			}
		}
	})

	// The real install. Its webhook has no reachable endpoint here (kwok
	// pods do not run), so it is uninstalled as soon as the checks end. Its
	// pods go on a node of the test's own: helm waits for the migration
	// hook's Job, whose pod kwok completes once it is bound.
	c.AddNode(t, cluster.Node{Pool: "chart"})
	// The chart owns the reservations' PriorityClass: the one the in-process
	// rebalancers of other tests made goes first.
	if err := c.Client.SchedulingV1().PriorityClasses().Delete(cluster.Context(t), reserve.PriorityClass, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
		t.Fatal(err)
	}
	values := filepath.Join(t.TempDir(), "values.yaml")
	if err := os.WriteFile(values, fmt.Appendf(nil, "controller:\n  nodeSelector: {%q: %q}\n", cluster.OwnerLabel, cluster.Owner(t)), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, code := tool(t, c, nil, "helm", "install", "spot-rebalancer", chart, "--namespace", ns, "--values", values, "--timeout", "90s"); code != 0 {
		dumpNamespace(t, c, ns)
		t.Fatalf("helm install: exit %d\n%s", code, out)
	}
	t.Cleanup(func() {
		if out, code := tool(t, c, nil, "helm", "uninstall", "spot-rebalancer", "--namespace", ns, "--wait"); code != 0 {
			t.Errorf("helm uninstall: %s", out)
		}
	})
	if out := mustTool(t, c, nil, "helm", "status", "spot-rebalancer", "--namespace", ns); !strings.Contains(out, "STATUS: deployed") {
		t.Errorf("helm status:\n%s", out)
	}
	for _, name := range []string{"spot-rebalancer-webhook", "spot-rebalancer-controller"} {
		if _, err := c.Client.AppsV1().Deployments(ns).Get(cluster.Context(t), name, metav1.GetOptions{}); err != nil {
			t.Errorf("deployment %s: %v", name, err)
		}
	}
	if _, err := c.Client.AppsV1().DaemonSets(ns).Get(cluster.Context(t), "spot-rebalancer-agent", metav1.GetOptions{}); err != nil {
		t.Errorf("agent daemonset: %v", err)
	}
	t.Run("the agent can change only its own node's Spot signals", func(t *testing.T) { checkAgentOwnNode(t, c, ns) })
	t.Run("the controller writes only pod marks, its own Leases; no one else a surge record", func(t *testing.T) { checkControllerWrites(t, c, ns) })
	t.Run("the surge-record migration ran as a hook and its rights are gone", func(t *testing.T) {
		if out := mustTool(t, c, nil, "helm", "get", "hooks", "spot-rebalancer", "--namespace", ns); !strings.Contains(out, "name: spot-rebalancer-migrate") {
			t.Errorf("helm get hooks lacks the migration Job:\n%s", out)
		}
		events, err := c.Client.CoreV1().Events(ns).List(cluster.Context(t), metav1.ListOptions{
			FieldSelector: "involvedObject.kind=Job,involvedObject.name=spot-rebalancer-migrate,reason=Completed"})
		if err != nil || len(events.Items) == 0 {
			t.Errorf("no Completed Event of Job spot-rebalancer-migrate (err %v)", err)
		}
		if _, err := c.Client.RbacV1().ClusterRoles().Get(cluster.Context(t), "spot-rebalancer-migrate", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("ClusterRole spot-rebalancer-migrate outlived its Job: %v", err)
		}
	})

	type check struct {
		verb, resource string
		namespace      string // "" for cluster scope, "*" for all namespaces
		want           bool
	}
	rbac := map[string][]check{
		"controller": {
			{"create", "pods/eviction", "*", true},
			{"delete", "pods", "*", true},
			{"patch", "pods", "*", true},
			{"patch", "nodes", "", true},
			{"update", "nodes", "", false},
			{"watch", "poddisruptionbudgets.policy", "*", true},
			{"watch", "statefulsets.apps", "*", true},
			{"update", "deployments.apps/scale", "*", true},
			{"patch", "deployments.apps/scale", "*", false},
			// No pod template: the surge record is a Lease of its own.
			{"patch", "deployments.apps", "*", false},
			{"update", "deployments.apps", "*", false},
			{"create", "leases.coordination.k8s.io", ns, true},
			{"update", "leases.coordination.k8s.io", ns, true},
			{"delete", "leases.coordination.k8s.io", ns, true},
			{"list", "leases.coordination.k8s.io", "*", false},
			{"create", "leases.coordination.k8s.io", "kube-system", false},
			{"create", "tokenreviews.authentication.k8s.io", "", true},
			{"create", "subjectaccessreviews.authorization.k8s.io", "", true},
			{"list", "horizontalpodautoscalers.autoscaling", "*", true},
			// The simulation's volume filters: read only.
			{"watch", "persistentvolumeclaims", "*", true},
			{"list", "persistentvolumes", "", true},
			{"watch", "storageclasses.storage.k8s.io", "", true},
			{"list", "csinodes.storage.k8s.io", "", true},
			{"update", "persistentvolumeclaims", "*", false},
			{"delete", "persistentvolumes", "", false},
			{"create", "storageclasses.storage.k8s.io", "", false},
			{"create", "events", "*", true},
			{"get", "secrets/spot-rebalancer-ca", ns, true},
			{"update", "secrets/spot-rebalancer-webhook-tls", ns, true},
			{"create", "secrets", ns, true},
			{"update", "leases.coordination.k8s.io/spot-rebalancer-controller", ns, true},
			{"update", "mutatingwebhookconfigurations.admissionregistration.k8s.io/spot-rebalancer", "", true},
			{"list", "secrets", "*", false},
			{"get", "secrets/other", ns, false},
			{"get", "secrets", "kube-system", false},
			{"update", "mutatingwebhookconfigurations.admissionregistration.k8s.io/someone-else", "", false},
			{"delete", "nodes", "", false},
			{"create", "pods", "*", false},
			{"create", "pods", ns, true}, // reservations (a policy narrows them)
			{"create", "pods", "default", false},
			{"delete", "nodeclaims.karpenter.sh", "", true}, // retire
			{"update", "nodeclaims.karpenter.sh", "", false},
			{"delete", "deployments.apps", "*", false},
			{"update", "leases.coordination.k8s.io/kube-scheduler", "kube-system", false},
		},
		"webhook": {
			{"list", "namespaces", "", true},
			{"watch", "poddisruptionbudgets.policy", "*", true},
			{"watch", "mutatingwebhookconfigurations.admissionregistration.k8s.io", "", true},
			{"get", "secrets/spot-rebalancer-webhook-tls", ns, true},
			{"get", "secrets/spot-rebalancer-ca", ns, false},
			{"list", "secrets", "*", false},
			{"create", "pods", "*", false},
			{"patch", "nodes", "", false},
			{"update", "mutatingwebhookconfigurations.admissionregistration.k8s.io/spot-rebalancer", "", false},
			{"create", "tokenreviews.authentication.k8s.io", "", true},
		},
		// The migration Job's rights are hooks deleted once it succeeded
		// (kwok completes the Job's pod without running it).
		"migrate": {
			{"patch", "deployments.apps", "*", false},
			{"list", "deployments.apps", "*", false},
			{"create", "leases.coordination.k8s.io", ns, false},
		},
		"agent": {
			{"get", "nodes", "", true},
			{"patch", "nodes", "", true},
			{"patch", "nodes/status", "", true},
			{"list", "pods", "*", false},
			{"create", "pods/eviction", "*", false},
			{"list", "secrets", "*", false},
			{"delete", "nodes", "", false},
		},
	}
	// The NodeClaim rules are checked against Karpenter's CRDs.
	if err := c.StartKarpenter(); err != nil {
		t.Fatal(err)
	}
	for component, checks := range rbac {
		t.Run("RBAC of the "+component, func(t *testing.T) {
			as := fmt.Sprintf("--as=system:serviceaccount:%s:spot-rebalancer-%s", ns, component)
			for _, ch := range checks {
				args := []string{"auth", "can-i", ch.verb, ch.resource, as}
				if resource, sub, ok := strings.Cut(ch.resource, "/"); ok && (sub == "eviction" || sub == "status" || sub == "scale") {
					args = []string{"auth", "can-i", ch.verb, resource, "--subresource", sub, as}
				}
				switch ch.namespace {
				case "":
				case "*":
					args = append(args, "--all-namespaces")
				default:
					args = append(args, "--namespace", ch.namespace)
				}
				// Exit code 0 is yes, 1 is no.
				out, code := tool(t, c, nil, "kubectl", args...)
				if code > 1 || (code == 0) != ch.want {
					t.Errorf("%s can-i %s %s (namespace %q) = %q, want %v", component, ch.verb, ch.resource, ch.namespace, strings.TrimSpace(out), ch.want)
				}
			}
		})
	}
}

// The chart's scheduling defaults: the controller stays off every node a
// Spot label marks (signals.SpotLabels, what the controller itself reads),
// the agent runs on each of them, and the components' own PDBs exist only
// with more than one replica (with one they would block every drain).
func TestChartSchedulingDefaults(t *testing.T) {
	c := cluster.Get(t)
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	chart := filepath.Join(root, "deploy", "chart", "spot-rebalancer")
	render := func(sets ...string) (controller *appsv1.Deployment, agent *appsv1.DaemonSet, pdbs []string) {
		args := []string{"template", "spot-rebalancer", chart, "--namespace", "spot-rebalancer"}
		for _, s := range sets {
			args = append(args, "--set", s)
		}
		decoder := utilyaml.NewYAMLReader(bufio.NewReader(strings.NewReader(mustTool(t, c, nil, "helm", args...))))
		for {
			doc, err := decoder.Read()
			if err != nil {
				return controller, agent, pdbs
			}
			var meta metav1.TypeMeta
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatal(err)
			}
			switch meta.Kind {
			case "Deployment":
				var d appsv1.Deployment
				if err := yaml.Unmarshal(doc, &d); err != nil {
					t.Fatal(err)
				}
				if strings.HasSuffix(d.Name, "-controller") {
					controller = &d
				}
			case "DaemonSet":
				agent = &appsv1.DaemonSet{}
				if err := yaml.Unmarshal(doc, agent); err != nil {
					t.Fatal(err)
				}
			case "PodDisruptionBudget":
				var p policyv1.PodDisruptionBudget
				if err := yaml.Unmarshal(doc, &p); err != nil {
					t.Fatal(err)
				}
				pdbs = append(pdbs, p.Name)
			}
		}
	}
	controller, agent, pdbs := render()
	if controller == nil || agent == nil {
		t.Fatal("the rendering lacks the controller Deployment or the agent DaemonSet")
	}
	na := controller.Spec.Template.Spec.Affinity.NodeAffinity
	if na == nil || na.RequiredDuringSchedulingIgnoredDuringExecution == nil || len(na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms) != 1 {
		t.Fatalf("the controller has no single required node affinity term: %+v", na)
	}
	avoid := na.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms[0].MatchExpressions
	for label, spot := range signals.SpotLabels {
		if !slices.ContainsFunc(avoid, func(r corev1.NodeSelectorRequirement) bool {
			return r.Key == label && r.Operator == corev1.NodeSelectorOpNotIn && slices.Contains(r.Values, spot)
		}) {
			t.Errorf("the controller may land on nodes labelled %s=%s: %v", label, spot, avoid)
		}
		terms := agent.Spec.Template.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms
		if !slices.ContainsFunc(terms, func(term corev1.NodeSelectorTerm) bool {
			return len(term.MatchExpressions) == 1 && term.MatchExpressions[0].Key == label &&
				term.MatchExpressions[0].Operator == corev1.NodeSelectorOpIn && slices.Contains(term.MatchExpressions[0].Values, spot)
		}) {
			t.Errorf("the agent does not run on nodes labelled %s=%s: %v", label, spot, terms)
		}
	}
	slices.Sort(pdbs)
	if want := []string{"spot-rebalancer-controller", "spot-rebalancer-webhook"}; !slices.Equal(pdbs, want) {
		t.Errorf("PDBs with 2 replicas each: %v, want %v", pdbs, want)
	}
	if _, _, pdbs := render("webhook.replicas=1", "controller.replicas=1"); len(pdbs) != 0 {
		t.Errorf("PDBs with one replica each: %v, want none", pdbs)
	}
	if controller, _, _ := render("controller.avoidSpot=false"); controller.Spec.Template.Spec.Affinity.NodeAffinity != nil {
		t.Errorf("controller.avoidSpot=false still sets a node affinity: %+v", controller.Spec.Template.Spec.Affinity.NodeAffinity)
	}
}
