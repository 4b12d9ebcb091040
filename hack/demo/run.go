package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster/inproc"
	"github.com/spot-rebalancer/spot-rebalancer/webhook"
)

const (
	systemNamespace = "spot-rebalancer"
	appNamespace    = "shop"
	owner           = "demo"
)

// narrator prints timestamped lines.
type narrator struct {
	out   io.Writer
	start time.Time
}

func (n *narrator) say(format string, args ...any) {
	fmt.Fprintf(n.out, "[%6.1fs] %s\n", time.Since(n.start).Seconds(), fmt.Sprintf(format, args...))
}

// process is one component the demo runs, logging to a file.
type process struct {
	name string
	cmd  *exec.Cmd
	log  string
	done chan struct{}
}

func startProcess(dir, name, bin string, args ...string) (*process, error) {
	logPath := filepath.Join(dir, name+".log")
	f, err := os.Create(logPath)
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = f, f
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		f.Close()
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	p := &process{name: name, cmd: cmd, log: logPath, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); f.Close(); close(p.done) }()
	return p, nil
}

func (p *process) stop() {
	_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = syscall.Kill(-p.cmd.Process.Pid, syscall.SIGKILL)
		<-p.done
	}
}

func (p *process) exited() bool {
	select {
	case <-p.done:
		return true
	default:
		return false
	}
}

// workload is one sample Deployment.
type workload struct {
	name     string
	replicas int32
	// cpu is each pod's request; karpenterCPU on Karpenter, where all the
	// pods fit one node of the pool's instance type.
	cpu, karpenterCPU string
	pdb               *policyv1.PodDisruptionBudgetSpec
}

var workloads = []workload{
	{name: "web", replicas: 6, cpu: "500m", karpenterCPU: "250m", pdb: &policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1))}},
	{name: "api", replicas: 4, cpu: "500m", karpenterCPU: "250m", pdb: &policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(3))}},
	{name: "worker", replicas: 3, cpu: "250m", karpenterCPU: "100m"},
}

// karpenterPool is the NodePool of the --karpenter demo.
const karpenterPool = "spot-k"

func run(ctx context.Context, opts options, out io.Writer) (summary Summary, err error) {
	n := &narrator{out: out, start: time.Now()}
	root, err := cluster.RepoRoot()
	if err != nil {
		return summary, err
	}
	bin := opts.binary
	if bin == "" {
		bin = filepath.Join(root, "bin", "spot-rebalancer")
	}
	if _, err := os.Stat(bin); err != nil {
		n.say("building bin/spot-rebalancer")
		build := exec.CommandContext(ctx, "go", "build", "-o", bin, "./cmd/spot-rebalancer")
		build.Dir = root
		if b, err := build.CombinedOutput(); err != nil {
			return summary, fmt.Errorf("go build: %v\n%s", err, b)
		}
	}
	logs := opts.logs
	if logs == "" {
		if logs, err = logDir(); err != nil {
			return summary, err
		}
		n.say("component logs: %s (removed when the demo succeeds)", logs)
		defer func() {
			if err == nil && summary.OK() {
				_ = os.RemoveAll(logs)
			}
		}()
	} else if err := os.MkdirAll(logs, 0o755); err != nil {
		return summary, err
	}

	n.say("starting a local cluster: etcd, kube-apiserver, kube-controller-manager, kube-scheduler, kwok")
	c, err := cluster.Start("demo")
	if err != nil {
		return summary, err
	}
	defer func() {
		n.say("tearing down the cluster")
		c.Stop()
	}()
	if err := ctx.Err(); err != nil {
		return summary, err
	}
	kube := c.Client

	// Configuration and ports.
	cfgData := defaultConfig
	if opts.configFile != "" {
		if cfgData, err = os.ReadFile(opts.configFile); err != nil {
			return summary, err
		}
	}
	cfg, err := config.Decode(cfgData)
	if err != nil {
		return summary, err
	}
	cfgPath := filepath.Join(logs, "config.yaml")
	if err := os.WriteFile(cfgPath, cfgData, 0o600); err != nil {
		return summary, err
	}
	var ports [4]int
	for i := range ports {
		if ports[i], err = cluster.FreePort(); err != nil {
			return summary, err
		}
	}
	webhookPort, webhookHealth, controllerHealth, imdsPort := ports[0], ports[1], ports[2], ports[3]

	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: cfg.Webhook.Namespace}}, metav1.CreateOptions{}); err != nil {
		return summary, err
	}
	if err := registerWebhook(ctx, kube, cfg, webhookPort); err != nil {
		return summary, err
	}
	// What the chart creates for the reservations that ask for capacity.
	if err := inproc.EnsurePriorityClass(ctx, c); err != nil {
		return summary, err
	}
	common := []string{"--kubeconfig", c.Kubeconfig, "--config", cfgPath, "--log-format", "text", "--log-level", "debug"}
	var procs []*process
	defer func() {
		for i := len(procs) - 1; i >= 0; i-- {
			procs[i].stop()
		}
	}()
	start := func(name, binary string, args ...string) error {
		p, err := startProcess(logs, name, binary, args...)
		if err != nil {
			return err
		}
		procs = append(procs, p)
		return nil
	}
	n.say("starting the controller (rebalancer + certificate rotation) and the webhook")
	if err := start("controller", bin, append([]string{"controller", "--leader-elect=false", "--metrics-bind-address", "0",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", controllerHealth)}, common...)...); err != nil {
		return summary, err
	}
	if err := start("webhook", bin, append([]string{"webhook", "--port", strconv.Itoa(webhookPort), "--metrics-bind-address", "0",
		"--health-probe-bind-address", fmt.Sprintf("127.0.0.1:%d", webhookHealth)}, common...)...); err != nil {
		return summary, err
	}
	if err := waitFor(ctx, 60*time.Second, "the webhook to be ready (certificate issued and published)", procs, func(ctx context.Context) (bool, error) {
		return cluster.Ready(ctx, webhookHealth), nil
	}); err != nil {
		return summary, err
	}
	n.say("webhook ready: the controller issued its certificate and published the CA bundle in MutatingWebhookConfiguration %s", cfg.Certs.WebhookConfigurations[0])

	// The fleet.
	spotTaint := corev1.Taint{Key: config.EKSCapacityTypeLabel, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}
	fleet := []cluster.Node{
		{Name: "on-demand-1", Pool: "on-demand"}, {Name: "on-demand-2", Pool: "on-demand"},
		{Name: "spot-a-1", Pool: "spot-a", Spot: true, Taints: []corev1.Taint{spotTaint}},
		{Name: "spot-a-2", Pool: "spot-a", Spot: true, Taints: []corev1.Taint{spotTaint}},
		{Name: "spot-b-1", Pool: "spot-b", Spot: true, Taints: []corev1.Taint{spotTaint}},
		{Name: "spot-b-2", Pool: "spot-b", Spot: true, Taints: []corev1.Taint{spotTaint}},
	}
	if opts.karpenter {
		fleet = fleet[:2] // the Spot capacity is Karpenter's
	}
	for _, node := range fleet {
		if _, err := kube.CoreV1().Nodes().Create(ctx, cluster.NodeObject(node, owner), metav1.CreateOptions{}); err != nil {
			return summary, err
		}
	}
	if err := waitFor(ctx, 60*time.Second, "the nodes to be Ready", procs, func(ctx context.Context) (bool, error) {
		nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := 0
		for i := range nodes.Items {
			if nodeUsable(&nodes.Items[i]) {
				ready++
			}
		}
		return ready == len(fleet), nil
	}); err != nil {
		return summary, err
	}
	if opts.karpenter {
		n.say("starting Karpenter (its kwok provider) with NodePool %s: Spot, one instance type, new nodes Ready %s after launch", karpenterPool, opts.launchDelay)
		remove, err := c.CreateKarpenterPool(ctx, karpenterPool, owner, opts.launchDelay)
		if err != nil {
			return summary, err
		}
		defer func() {
			// The workloads first: their PDBs would hold Karpenter's drain.
			_ = kube.CoreV1().Namespaces().Delete(context.Background(), appNamespace, metav1.DeleteOptions{})
			_ = cluster.WaitFor(context.Background(), time.Minute, func(ctx context.Context) (bool, error) {
				pods, err := kube.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{})
				return err == nil && len(pods.Items) == 0, nil
			})
			if err := remove(); err != nil {
				n.say("cleaning up: %v", err)
			}
		}()
		n.say("fleet ready: 2 on-demand nodes; the Spot nodes are launched by Karpenter when pods need them")
	} else {
		n.say("fleet ready: 2 on-demand nodes, Spot pools spot-a (2 nodes) and spot-b (2 nodes), Spot nodes tainted %s=SPOT:NoSchedule", config.EKSCapacityTypeLabel)
	}

	// The workloads, in a namespace opted in to the spot profile.
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{
		Name: appNamespace, Labels: map[string]string{webhook.ProfileKey: "spot"}}}, metav1.CreateOptions{}); err != nil {
		return summary, err
	}
	if err := waitFor(ctx, 30*time.Second, "the default ServiceAccount of "+appNamespace, procs, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().ServiceAccounts(appNamespace).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return summary, err
	}
	seen := &cluster.Warnings{}
	warnConfig := rest.CopyConfig(c.Config)
	warnConfig.WarningHandler = seen
	userClient, err := kubernetes.NewForConfig(warnConfig)
	if err != nil {
		return summary, err
	}
	n.say("namespace %s is labelled %s=spot; creating Deployments web (6, PDB maxUnavailable 1), api (4, PDB minAvailable 3), worker (3, no PDB)", appNamespace, webhook.ProfileKey)
	for _, w := range workloads {
		if w.pdb != nil {
			spec := *w.pdb
			spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": w.name}}
			if _, err := kube.PolicyV1().PodDisruptionBudgets(appNamespace).Create(ctx, &policyv1.PodDisruptionBudget{
				ObjectMeta: metav1.ObjectMeta{Name: w.name}, Spec: spec}, metav1.CreateOptions{}); err != nil {
				return summary, err
			}
		}
		if _, err := userClient.AppsV1().Deployments(appNamespace).Create(ctx, deployment(w, opts.karpenter), metav1.CreateOptions{}); err != nil {
			return summary, err
		}
		for _, msg := range seen.Take() {
			n.say("kubectl would print: Warning: %s", msg)
		}
	}
	total := int32(0)
	for _, w := range workloads {
		total += w.replicas
	}
	if opts.karpenter {
		n.say("the pods are Pending: Karpenter launches a node of %s for them", karpenterPool)
	}
	if err := waitFor(ctx, 90*time.Second+opts.launchDelay, "every sample pod to be Ready", procs, func(ctx context.Context) (bool, error) {
		pods, err := kube.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, err
		}
		ready := int32(0)
		for i := range pods.Items {
			if cluster.PodIsReady(&pods.Items[i]) {
				ready++
			}
		}
		return ready == total, nil
	}); err != nil {
		return summary, err
	}
	pods, err := kube.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return summary, err
	}
	perNode := map[string]int{}
	for _, p := range pods.Items {
		perNode[p.Spec.NodeName]++
	}
	target := "spot-a-1"
	if perNode["spot-a-2"] > perNode[target] {
		target = "spot-a-2"
	}
	if opts.karpenter {
		target = ""
		for name, count := range perNode {
			if target == "" || count > perNode[target] {
				target = name
			}
		}
	}
	summary.Node = target
	summary.PlacementBefore = perNode
	n.say("%d pods Running with Spot tolerations injected by the webhook: %s", total, placement(perNode))

	// The dry run, through kubectl: the binary named kubectl-spot_rebalancer
	// on the PATH is a kubectl plugin.
	kubeconfig, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		return summary, err
	}
	plugins := filepath.Join(filepath.Dir(cfgPath), "plugins")
	if err := os.MkdirAll(plugins, 0o755); err != nil {
		return summary, err
	}
	if err := os.Symlink(bin, filepath.Join(plugins, "kubectl-spot_rebalancer")); err != nil && !os.IsExist(err) {
		return summary, err
	}
	n.say("the dry-run plan for %s (kubectl spot-rebalancer plan %s --context %s):", target, target, kubeconfig.CurrentContext)
	plan := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), "spot-rebalancer", "plan", target,
		"--kubeconfig", c.Kubeconfig, "--context", kubeconfig.CurrentContext, "--config", cfgPath)
	plan.Env = append(os.Environ(), "PATH="+plugins+string(os.PathListSeparator)+os.Getenv("PATH"))
	var planOut bytes.Buffer
	plan.Stdout, plan.Stderr = &planOut, &planOut
	if err := plan.Run(); err != nil && plan.ProcessState == nil {
		return summary, err
	}
	for _, line := range strings.Split(strings.TrimRight(planOut.String(), "\n"), "\n") {
		fmt.Fprintln(out, "    "+line)
	}

	// Budgets as they stand before anything moves.
	budgets := map[string]int32{}
	for _, w := range workloads {
		if w.pdb == nil {
			continue
		}
		pdb, err := kube.PolicyV1().PodDisruptionBudgets(appNamespace).Get(ctx, w.name, metav1.GetOptions{})
		if err != nil {
			return summary, err
		}
		budgets[w.name] = pdb.Status.DesiredHealthy
	}

	// The signal.
	aemm := []string{"spot", "-p", strconv.Itoa(imdsPort), "--rebalance-delay-sec", "0", "-d", "86400"}
	if opts.signal == signalInterruption {
		// The instance action at once (its time two minutes ahead), no
		// recommendation before it.
		n.say("triggering a two-minute interruption notice for %s: ec2-metadata-mock now answers spot/instance-action for it, and the agent polls it", target)
		aemm = []string{"spot", "-p", strconv.Itoa(imdsPort), "--rebalance-delay-sec", "86400", "-d", "0"}
	} else {
		n.say("triggering a rebalance recommendation for %s: ec2-metadata-mock now answers for it, and the agent polls it", target)
	}
	summary.Signal = opts.signal
	if err := start("ec2-metadata-mock", filepath.Join(c.BinDir, "ec2-metadata-mock"), aemm...); err != nil {
		return summary, err
	}
	if err := waitFor(ctx, 10*time.Second, "ec2-metadata-mock to answer", procs, func(ctx context.Context) (bool, error) {
		conn, err := net.Dial("tcp", fmt.Sprintf("127.0.0.1:%d", imdsPort))
		if err == nil {
			conn.Close()
		}
		return err == nil, nil
	}); err != nil {
		return summary, err
	}
	signalAt := time.Now()
	if err := start("agent", bin, append([]string{"agent", "--node-name", target,
		"--imds-endpoint", fmt.Sprintf("http://127.0.0.1:%d", imdsPort)}, common...)...); err != nil {
		return summary, err
	}

	w := &watcher{kube: kube, n: n, node: target, budgets: budgets, signalAt: signalAt,
		seenEvents: map[string]bool{}, minReady: map[string]int32{}, replacement: "spot-a-3"}
	if opts.karpenter {
		w.replacement, w.pool = "", karpenterPool
	}
	for _, wl := range workloads {
		w.minReady[wl.name] = wl.replicas
	}
	onNode := 0
	for _, p := range pods.Items {
		if p.Spec.NodeName == target {
			onNode++
		}
	}
	replacementAdded := false
	what := "node " + target + " to be drained"
	if opts.karpenter {
		what = "node " + target + " to be drained, retired and removed by Karpenter"
	}
	err = waitFor(ctx, opts.timeout, what, procs, func(ctx context.Context) (bool, error) {
		if !opts.karpenter && !replacementAdded && time.Since(signalAt) >= opts.replacementDelay {
			replacementAdded = true
			n.say("a replacement node spot-a-3 is joining pool spot-a")
			if _, err := kube.CoreV1().Nodes().Create(ctx, cluster.NodeObject(cluster.Node{Name: "spot-a-3", Pool: "spot-a", Spot: true,
				Taints: []corev1.Taint{spotTaint}}, owner), metav1.CreateOptions{}); err != nil {
				return false, err
			}
		}
		drained, err := w.sample(ctx)
		if opts.karpenter {
			return w.gone, err
		}
		return drained, err
	})
	summary.FinalState = w.state
	summary.Drained = w.drainedAfter > 0
	summary.SignalToDrained = w.drainedAfter.Seconds()
	summary.Karpenter = opts.karpenter
	if w.gone {
		summary.SignalToGone = w.goneAfter.Seconds()
	}
	summary.ReplacementJoined = w.replacementAfter.Seconds()
	summary.PodsMoved = onNode
	summary.Evictions = w.evictions
	summary.PDBBreached = w.breached
	summary.PendingPodSeconds = w.pendingPodSeconds
	if err != nil {
		summary.print(out)
		return summary, err
	}
	// Everything back to full strength elsewhere.
	if err := waitFor(ctx, 60*time.Second, "every Deployment to be back at full strength", procs, func(ctx context.Context) (bool, error) {
		if _, err := w.sample(ctx); err != nil {
			return false, err
		}
		return w.allReady, nil
	}); err != nil {
		return summary, err
	}
	summary.PodsLeft = w.podsOnNode
	if pods, err = kube.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{}); err != nil {
		return summary, err
	}
	summary.PlacementAfter = map[string]int{}
	for _, p := range pods.Items {
		summary.PlacementAfter[p.Spec.NodeName]++
	}
	summary.PendingPodSeconds = w.pendingPodSeconds
	summary.PDBBreached = w.breached
	for _, wl := range workloads {
		summary.Workloads = append(summary.Workloads, WorkloadStat{Name: wl.name, Desired: wl.replicas, MinReady: w.minReady[wl.name],
			PDBMinHealth: budgets[wl.name], HasPDB: wl.pdb != nil})
	}
	summary.print(out)
	return summary, nil
}

// deployment is workload w's Deployment; on Karpenter it runs on the
// demo's NodePool (its node selector and taint), with smaller requests so
// that all the pods fit one of its nodes.
func deployment(w workload, karpenter bool) *appsv1.Deployment {
	labels := map[string]string{"app": w.name}
	var selector map[string]string
	var tolerations []corev1.Toleration
	if karpenter {
		selector, tolerations = cluster.PoolScheduling(karpenterPool)
		w.cpu = w.karpenterCPU
	}
	return &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: w.name},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(w.replicas),
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				// Like real applications, the pods take a moment to start.
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{cluster.PodReadyDelayAnnotation: "2s"}},
				Spec: corev1.PodSpec{
					NodeSelector: selector, Tolerations: tolerations,
					Containers: []corev1.Container{{Name: w.name, Image: "registry.example/" + w.name + ":1",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{
							corev1.ResourceCPU: resource.MustParse(w.cpu), corev1.ResourceMemory: resource.MustParse("256Mi")}}}},
				},
			},
		},
	}
}

// registerWebhook creates the MutatingWebhookConfiguration as the chart
// does, with a URL instead of a Service (the API server runs on this host)
// and no CA bundle: the controller publishes it.
func registerWebhook(ctx context.Context, kube kubernetes.Interface, cfg *config.Config, port int) error {
	url := fmt.Sprintf("https://127.0.0.1:%d%s", port, webhook.Path)
	hook := func(name string, rule admissionregistrationv1.RuleWithOperations) admissionregistrationv1.MutatingWebhook {
		return admissionregistrationv1.MutatingWebhook{
			Name: name, ClientConfig: admissionregistrationv1.WebhookClientConfig{URL: &url},
			Rules: []admissionregistrationv1.RuleWithOperations{rule},
			NamespaceSelector: &metav1.LabelSelector{MatchExpressions: []metav1.LabelSelectorRequirement{{
				Key: corev1.LabelMetadataName, Operator: metav1.LabelSelectorOpNotIn, Values: []string{metav1.NamespaceSystem, cfg.Webhook.Namespace}}}},
			FailurePolicy:           ptr.To(admissionregistrationv1.Ignore),
			SideEffects:             ptr.To(admissionregistrationv1.SideEffectClassNone),
			ReinvocationPolicy:      ptr.To(admissionregistrationv1.IfNeededReinvocationPolicy),
			AdmissionReviewVersions: []string{"v1"},
			TimeoutSeconds:          ptr.To[int32](3),
		}
	}
	_, err := kube.AdmissionregistrationV1().MutatingWebhookConfigurations().Create(ctx, &admissionregistrationv1.MutatingWebhookConfiguration{
		ObjectMeta: metav1.ObjectMeta{Name: cfg.Certs.WebhookConfigurations[0]},
		Webhooks: []admissionregistrationv1.MutatingWebhook{
			hook("pods.spot-rebalancer.io", admissionregistrationv1.RuleWithOperations{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{""}, APIVersions: []string{"v1"}, Resources: []string{"pods"}}}),
			hook("workloads.spot-rebalancer.io", admissionregistrationv1.RuleWithOperations{
				Operations: []admissionregistrationv1.OperationType{admissionregistrationv1.Create, admissionregistrationv1.Update},
				Rule:       admissionregistrationv1.Rule{APIGroups: []string{"apps"}, APIVersions: []string{"v1"}, Resources: []string{"deployments", "statefulsets"}}}),
		},
	}, metav1.CreateOptions{})
	return err
}

func nodeUsable(n *corev1.Node) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == corev1.TaintNodeNotReady || t.Key == corev1.TaintNodeUnreachable {
			return false
		}
	}
	return cluster.NodeIsReady(n)
}

// waitFor polls cond until it holds, failing early when a component exits
// (with the tail of its log) and on timeout.
func waitFor(ctx context.Context, timeout time.Duration, what string, procs []*process, cond func(ctx context.Context) (bool, error)) error {
	err := cluster.WaitFor(ctx, timeout, func(ctx context.Context) (bool, error) {
		for _, p := range procs {
			if p.exited() {
				return false, fmt.Errorf("%s exited; the end of %s:\n%s", p.name, p.log, tail(p.log, 20))
			}
		}
		return cond(ctx)
	})
	if err != nil && ctx.Err() == nil {
		return fmt.Errorf("waiting for %s: %w", what, err)
	}
	return err
}

func tail(path string, lines int) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return err.Error()
	}
	all := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	if len(all) > lines {
		all = all[len(all)-lines:]
	}
	return strings.Join(all, "\n")
}

// watcher samples the cluster and narrates what changed.
type watcher struct {
	kube     kubernetes.Interface
	n        *narrator
	node     string
	budgets  map[string]int32
	signalAt time.Time

	// replacement is the node added by hand; pool, when set, is the
	// Karpenter NodePool whose new node is the replacement.
	replacement, pool string

	state, lastStatus string
	gone              bool
	goneAfter         time.Duration
	conditionSeen     bool
	replacementReady  bool
	replacementAfter  time.Duration
	drainedAfter      time.Duration
	seenEvents        map[string]bool
	evictions         int
	minReady          map[string]int32
	breached          bool
	allReady          bool
	podsOnNode        int
	pendingPodSeconds float64
	lastSample        time.Time
}

// sample reads the cluster once; it reports true when the node is drained.
func (w *watcher) sample(ctx context.Context) (bool, error) {
	now := time.Now()
	node, err := w.kube.CoreV1().Nodes().Get(ctx, w.node, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) && w.state == string(signals.StateRetired):
		if !w.gone {
			w.gone, w.goneAfter = true, now.Sub(w.signalAt)
			w.n.say("Karpenter removed node %s: its NodeClaim was deleted, the instance is given back", w.node)
		}
		node = &corev1.Node{}
	case err != nil:
		return false, err
	}
	for _, cond := range node.Status.Conditions {
		if cond.Type == signals.ConditionRebalance && cond.Status == corev1.ConditionTrue && !w.conditionSeen {
			w.conditionSeen = true
			w.n.say("agent: condition %s=True on %s (read from instance metadata)", signals.ConditionRebalance, w.node)
		}
	}
	if state := node.Annotations[signals.AnnotationState]; !w.gone && state != w.state {
		w.state = state
		w.n.say("controller: %s is %s: %s", w.node, state, node.Annotations[signals.AnnotationStateReason])
		if (state == string(signals.StateDrained) || state == string(signals.StateRetired)) && w.drainedAfter == 0 {
			w.drainedAfter = now.Sub(w.signalAt)
		}
	}
	if !w.replacementReady {
		if name, err := w.replacementNode(ctx); err != nil {
			return false, err
		} else if name != "" {
			w.replacementReady = true
			w.replacementAfter = now.Sub(w.signalAt)
			if w.pool != "" {
				w.n.say("Karpenter's new node %s is Ready", name)
			} else {
				w.n.say("replacement node %s is Ready", name)
			}
		}
	}

	events, err := w.kube.CoreV1().Events("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, err
	}
	sort.Slice(events.Items, func(i, j int) bool {
		return events.Items[i].CreationTimestamp.Before(&events.Items[j].CreationTimestamp)
	})
	for _, e := range events.Items {
		if e.Source.Component != "spot-rebalancer" || w.seenEvents[string(e.UID)] || e.Reason == "" {
			continue
		}
		w.seenEvents[string(e.UID)] = true
		if strings.HasPrefix(e.Reason, "Rebalance") || strings.HasPrefix(e.Reason, "Certificate") {
			continue // state changes are narrated from the node itself
		}
		if e.Reason == "Evicted" {
			w.evictions++
		}
		w.n.say("event %s %s/%s: %s", e.Reason, strings.ToLower(e.InvolvedObject.Kind), e.InvolvedObject.Name, e.Message)
	}

	pods, err := w.kube.CoreV1().Pods(appNamespace).List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, err
	}
	ready := map[string]int32{}
	pending := 0
	w.podsOnNode = 0
	for i := range pods.Items {
		p := &pods.Items[i]
		app := p.Labels["app"]
		if p.DeletionTimestamp == nil && cluster.PodIsReady(p) {
			ready[app]++
		}
		// Pending for want of a node; a pod that is starting does not count.
		if p.Status.Phase == corev1.PodPending && p.Spec.NodeName == "" {
			pending++
		}
		if p.Spec.NodeName == w.node {
			w.podsOnNode++
		}
	}
	if !w.lastSample.IsZero() {
		w.pendingPodSeconds += float64(pending) * now.Sub(w.lastSample).Seconds()
	}
	w.lastSample = now
	w.allReady = true
	var parts []string
	for _, wl := range workloads {
		r := ready[wl.name]
		if r < w.minReady[wl.name] {
			w.minReady[wl.name] = r
		}
		if r < wl.replicas {
			w.allReady = false
		}
		part := fmt.Sprintf("%s %d/%d", wl.name, r, wl.replicas)
		if need, ok := w.budgets[wl.name]; ok {
			part += fmt.Sprintf(" (PDB headroom %d)", int32(r)-need)
			if r < need {
				w.breached = true
			}
		}
		parts = append(parts, part)
	}
	status := fmt.Sprintf("ready: %s | pods on %s: %d | Pending: %d", strings.Join(parts, ", "), w.node, w.podsOnNode, pending)
	if status != w.lastStatus {
		w.lastStatus = status
		w.n.say("%s", status)
	}
	return w.state == string(signals.StateDrained), nil
}

// replacementNode is the replacement once it is Ready: the node added by
// hand, or a node of the Karpenter pool other than the at-risk one.
func (w *watcher) replacementNode(ctx context.Context) (string, error) {
	if w.pool == "" {
		r, err := w.kube.CoreV1().Nodes().Get(ctx, w.replacement, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return "", nil
		}
		if err != nil || !nodeUsable(r) {
			return "", err
		}
		return r.Name, nil
	}
	nodes, err := w.kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cluster.PoolTaint + "=" + w.pool})
	if err != nil {
		return "", err
	}
	for i := range nodes.Items {
		if n := &nodes.Items[i]; n.Name != w.node && nodeUsable(n) {
			return n.Name, nil
		}
	}
	return "", nil
}
