package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/webhook"
)

// The fault tests: each kills or cuts off a part mid-drain and checks that
// the drain completes, no PodDisruptionBudget is exceeded, and no node is
// left tainted by us without a state that explains it.

// drainFixture is an at-risk node carrying a 4-replica Deployment whose
// pods take startupTime to start, with a PDB minAvailable 3, and an
// on-demand node with room: a drain in four slow waves.
type drainFixture struct {
	ns, risky string
	sampler   *readySampler
}

func newDrainFixture(t *testing.T, c *cluster.Cluster, pool string) *drainFixture {
	t.Helper()
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: pool, Taints: []corev1.Taint{spotTaint}})
	deploySlow(t, c, ns, "web", 4, nil)
	pdbFor(t, c, ns, "web", "web", 3)
	c.WaitFor(t, 30*time.Second, "the PDB to count every pod", func(ctx context.Context) (bool, error) {
		pdb, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == 4, err
	})
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	return &drainFixture{ns: ns, risky: risky.Name, sampler: sampleReady(t, c, ns, "web")}
}

// waitMidDrain waits until the node is draining and has lost a pod.
func (f *drainFixture) waitMidDrain(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	c.WaitFor(t, 60*time.Second, "the drain to be under way", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, f.risky)
		if err != nil || state != signals.StateDraining {
			return false, err
		}
		pods, err := podsOf(ctx, c, f.ns, "web")
		on := 0
		for _, p := range pods {
			if p.Spec.NodeName == f.risky && p.DeletionTimestamp == nil {
				on++
			}
		}
		return on < 4, err
	})
}

// finish waits for the drain to end and checks the budget and the taints.
func (f *drainFixture) finish(t *testing.T, c *cluster.Cluster) {
	t.Helper()
	if err := cluster.WaitFor(cluster.Context(t), 2*time.Minute, func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, f.risky)
		return state == signals.StateDrained, err
	}); err != nil {
		n, state, _ := nodeState(context.Background(), c, f.risky)
		pods, _ := podsOf(context.Background(), c, f.ns, "web")
		var where []string
		for _, p := range pods {
			where = append(where, fmt.Sprintf("%s on %q phase %s ready %v deleting %v", p.Name, p.Spec.NodeName, p.Status.Phase, cluster.PodIsReady(&p), p.DeletionTimestamp != nil))
		}
		reason := ""
		if n != nil {
			reason = n.Annotations[signals.AnnotationStateReason]
		}
		t.Fatalf("node %s not drained: state %q (%s); pods:\n%s", f.risky, state, reason, strings.Join(where, "\n"))
	}
	c.WaitFor(t, 30*time.Second, "4 web pods Ready elsewhere", func(ctx context.Context) (bool, error) {
		pods, err := c.ReadyPods(ctx, f.ns, "app=web")
		return len(pods) == 4, err
	})
	minReady, _, samples := f.sampler.read()
	t.Logf("%d samples: lowest Ready %d", samples, minReady)
	if minReady < 3 {
		t.Errorf("Ready replicas fell to %d, below the PDB's minAvailable 3", minReady)
	}
	nodes, err := c.Client.CoreV1().Nodes().List(cluster.Context(t), metav1.ListOptions{})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range nodes.Items {
		if hasTaint(&n, signals.TaintDraining) && n.Annotations[signals.AnnotationState] == "" {
			t.Errorf("node %s carries %s without a state", n.Name, signals.TaintDraining)
		}
	}
}

// controllerConfig writes a controller configuration for the fault tests:
// capacity mode, no surges (they have their own restart test), no
// certificate rotation, the Lease in namespace.
func controllerConfig(t *testing.T, namespace string) string {
	t.Helper()
	cfg := config.Default()
	cfg.Webhook.Namespace = namespace
	cfg.Certs.Mode = config.CertModeExternal
	cfg.Rebalancer.Replacement.Mode = config.ReplacementCapacity
	cfg.Rebalancer.Surge.Enabled = ptr.To(false)
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := config.WriteFile(path, cfg); err != nil {
		t.Fatal(err)
	}
	return path
}

// process is a binary the test runs, its output in a log file.
type process struct {
	cmd  *exec.Cmd
	done chan struct{}
}

// startProcess runs the binary; it is killed when the test ends, and its
// log shown if the test failed.
func startProcess(t *testing.T, bin string, args ...string) *process {
	t.Helper()
	logPath := filepath.Join(t.TempDir(), fmt.Sprintf("%s.log", args[0]))
	f, err := os.Create(logPath)
	if err != nil {
		t.Fatal(err)
	}
	p := &process{cmd: exec.Command(bin, args...), done: make(chan struct{})}
	p.cmd.Stdout, p.cmd.Stderr = f, f
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { _ = p.cmd.Wait(); f.Close(); close(p.done) }()
	t.Cleanup(func() {
		p.kill()
		if t.Failed() {
			data, _ := os.ReadFile(logPath)
			t.Logf("%s log:\n%s", args[0], tail(string(data), 40))
		}
	})
	return p
}

// kill SIGKILLs the process and waits until it is gone.
func (p *process) kill() {
	_ = p.cmd.Process.Signal(syscall.SIGKILL)
	<-p.done
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// The controller process is SIGKILLed mid-drain and started again.
func TestControllerKilledMidDrainResumes(t *testing.T) {
	c := cluster.Get(t)
	bin := buildBinary(t)
	f := newDrainFixture(t, c, "fault-kill")
	cfg := controllerConfig(t, f.ns)
	args := []string{"controller", "--kubeconfig", c.Kubeconfig, "--config", cfg, "--leader-elect=false",
		"--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-format", "text"}
	first := startProcess(t, bin, args...)
	annotate(t, c, f.risky, signals.AnnotationAtRisk, ptr.To("true"))
	f.waitMidDrain(t, c)
	first.kill()
	startProcess(t, bin, args...)
	f.finish(t, c)
}

// Two controllers elect a leader; the leader is SIGKILLed mid-drain and
// the other one takes over once the Lease expires.
func TestLeaderKilledMidDrainTheOtherTakesOver(t *testing.T) {
	c := cluster.Get(t)
	bin := buildBinary(t)
	f := newDrainFixture(t, c, "fault-leader")
	cfg := controllerConfig(t, f.ns)
	args := []string{"controller", "--kubeconfig", c.Kubeconfig, "--config", cfg, "--leader-elect=true",
		"--leader-election-namespace", f.ns, "--metrics-bind-address", "0", "--health-probe-bind-address", "0", "--log-format", "text"}
	leader := startProcess(t, bin, args...)
	c.WaitFor(t, 30*time.Second, "the first controller to hold the Lease", func(ctx context.Context) (bool, error) {
		lease, err := c.Client.CoordinationV1().Leases(f.ns).Get(ctx, "spot-rebalancer-controller", metav1.GetOptions{})
		return err == nil && ptr.Deref(lease.Spec.HolderIdentity, "") != "", nil
	})
	startProcess(t, bin, args...) // the standby
	annotate(t, c, f.risky, signals.AnnotationAtRisk, ptr.To("true"))
	f.waitMidDrain(t, c)
	leader.kill()
	f.finish(t, c)
}

// kube-apiserver goes away for 20 s mid-drain and comes back.
func TestAPIServerOutageMidDrain(t *testing.T) {
	c, err := cluster.Start("fault")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(c.Stop)
	f := newDrainFixture(t, c, "fault-outage")
	startRebalancer(t, c, func(r *config.Rebalancer) { r.Replacement.Mode = config.ReplacementCapacity })
	annotate(t, c, f.risky, signals.AnnotationAtRisk, ptr.To("true"))
	f.waitMidDrain(t, c)
	restart, err := c.StopAPIServer()
	if err != nil {
		t.Fatal(err)
	}
	// The outage itself: the fault lasts 20 s by design.
	select {
	case <-time.After(20 * time.Second):
	case <-cluster.Context(t).Done():
		return
	}
	if err := restart(); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, time.Minute, "kube-apiserver to answer again", func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Namespaces().Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	})
	f.finish(t, c)
}

// The webhook process is SIGKILLed while pods are being created: every
// creation succeeds (failurePolicy Ignore), mutated before, plain after.
func TestWebhookKilledWhilePodsAreCreated(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	bin := buildBinary(t)
	system := c.Namespace(t, nil)
	selector := map[string]string{"e2e.spot-rebalancer.io/webhook": system}
	apps := c.Namespace(t, map[string]string{"e2e.spot-rebalancer.io/webhook": system, webhook.ProfileKey: "spot"})
	configName := "e2e-kill-" + system
	port := freePort(t)
	cfg := config.Default()
	cfg.Webhook.Namespace = system
	cfg.Webhook.Port = int32(port)
	cfg.Certs.ServiceName, cfg.Certs.ServingSecretName, cfg.Certs.CASecretName = "webhook", "webhook-tls", "webhook-ca"
	cfg.Certs.ExtraDNSNames = []string{"127.0.0.1"}
	cfg.Certs.WebhookConfigurations = []string{configName}
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	if err := config.WriteFile(cfgPath, cfg); err != nil {
		t.Fatal(err)
	}
	dnsNames := certs.DNSNames(cfg.Certs.ServiceName, system, cfg.Certs.ExtraDNSNames)
	startLeaderManager(t, c, system, rotatorFor(c, system, configName, dnsNames, time.Hour, 30*time.Minute))
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, webhook.Path)
	hooks := c.Client.AdmissionregistrationV1().MutatingWebhookConfigurations()
	if _, err := hooks.Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: configName},
		Webhooks: []admissionregistrationv1.MutatingWebhook{{Name: "pods.spot-rebalancer.io",
			ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{{Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule: admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}},
			NamespaceSelector:       &metav1.LabelSelector{MatchLabels: selector},
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			AdmissionReviewVersions: []string{"v1"}, TimeoutSeconds: ptr.To[int32](3)}},
	}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = hooks.Delete(context.Background(), configName, metav1.DeleteOptions{}) })
	health := freePort(t)
	hook := startProcess(t, bin, "webhook", "--kubeconfig", c.Kubeconfig, "--config", cfgPath, "--port", fmt.Sprint(port),
		"--metrics-bind-address", "0", "--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", health))
	c.WaitFor(t, 30*time.Second, "the webhook to be ready", func(ctx context.Context) (bool, error) {
		return cluster.Ready(ctx, health), nil
	})

	const total, killAt = 60, 20
	var mutated, plain atomic.Int32
	for i := range total {
		if i == killAt {
			hook.kill()
		}
		pod := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("p-%d", i)},
			Spec: corev1.PodSpec{NodeSelector: map[string]string{cluster.OwnerLabel: cluster.Owner(t)},
				Containers: []corev1.Container{{Name: "c", Image: "registry.example/app:1"}}}}
		created, err := c.Client.CoreV1().Pods(apps).Create(ctx, pod, metav1.CreateOptions{})
		if err != nil {
			t.Fatalf("creating pod %d (webhook killed at %d): %v", i, killAt, err)
		}
		if _, ok := created.Annotations[webhook.InjectedAnnotation]; ok {
			mutated.Add(1)
		} else {
			plain.Add(1)
		}
	}
	t.Logf("%d pods created: %d mutated, %d admitted unchanged after the kill", total, mutated.Load(), plain.Load())
	if mutated.Load() < killAt || plain.Load() == 0 {
		t.Errorf("mutated %d (want at least %d, before the kill), plain %d (want some, after)", mutated.Load(), killAt, plain.Load())
	}
}
