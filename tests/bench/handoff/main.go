// Command handoff is `make bench-handoff`: the same Spot hand-off on the
// local cluster, once per drainer, sampled all along, in two scenarios.
//
// The static scenario: an at-risk Spot node carries three Deployments whose pods
// take a few seconds to start (web: 6 replicas, PDB maxUnavailable 1; api:
// 4 replicas, PDB minAvailable 3; solo: 1 replica, no PDB), 500m CPU each;
// another node has room for 2 of them; a rebalance recommendation arrives
// and a replacement node joins --replacement-after later. The drainers:
// spot-rebalancer in replacement mode node (surge on, the default),
// spot-rebalancer in mode none with surge off (draining at once, in budget
// waves), and kubectl drain (what AWS Node Termination Handler runs).
//
// The Karpenter scenario (karpenter.go): the same workloads on a node of a
// Karpenter NodePool, the real Karpenter supplying the replacement.
package main

import (
	"bufio"
	"cmp"
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/executor"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster/inproc"
)

// Scenarios.
const (
	scenarioStatic    = "static"
	scenarioKarpenter = "karpenter"
	// scenarioInterruption: the Karpenter scenario's node gets an
	// interruption notice (interruption.go).
	scenarioInterruption = "karpenter-interruption"
)

// scenarios in the order they run and are reported.
var scenarios = []string{scenarioStatic, scenarioKarpenter, scenarioInterruption}

// workloadsOf are the workloads of scenario sc.
func workloadsOf(sc string) []workload {
	if sc == scenarioInterruption {
		return interruptionWorkloads
	}
	return workloads
}

// Drainers.
const (
	drainerNode    = "spot-rebalancer, mode node"
	drainerNone    = "spot-rebalancer, mode none, no surge"
	drainerKubectl = "kubectl drain"
)

type workload struct {
	name     string
	replicas int32
	pdb      *policyv1.PodDisruptionBudgetSpec
	// statefulSet runs it as a StatefulSet (a Deployment otherwise).
	statefulSet bool
}

var workloads = []workload{
	{name: "web", replicas: 6, pdb: &policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1))}},
	{name: "api", replicas: 4, pdb: &policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(3))}},
	{name: "solo", replicas: 1},
}

// sample is the cluster at one moment of a run.
type sample struct {
	At    float64          `json:"t"` // seconds since the signal
	Ready map[string]int32 `json:"ready"`
	// Pending are the pods with no node that replace a pod gone;
	// SurgePending a surge's extra pods with no node (beyond the
	// workload's count, while the pods they replace still run).
	Pending      int `json:"pendingNoNode"`
	SurgePending int `json:"surgePendingNoNode,omitempty"`
	OnNode       int `json:"onNode"`
}

// Result is one run's figures.
type Result struct {
	Scenario          string           `json:"scenario"`
	Drainer           string           `json:"drainer"`
	Workloads         []WorkloadResult `json:"workloads"`
	PendingPodSeconds float64          `json:"pendingPodSeconds"`
	Evictions         int              `json:"evictions"`
	Rejections429     int              `json:"rejections429"`
	Surges            int              `json:"surges"`
	SignalToDrained   float64          `json:"signalToDrainedSeconds"`
	// Karpenter scenario only: reservations made, and when the at-risk
	// node was gone (nil: never given back).
	Reservations    int      `json:"reservations,omitempty"`
	SignalToRetired *float64 `json:"signalToRetiredSeconds,omitempty"`
	// Interruption scenario only: when Karpenter first launched a node,
	// the pod-seconds a surge's extra pods waited for it (not displaced:
	// the pods they replace still serve), and the pods the controller
	// deleted at their latest start.
	FirstLaunch         *float64 `json:"firstLaunchSeconds,omitempty"`
	SurgePendingSeconds float64  `json:"surgePendingPodSeconds,omitempty"`
	DeletedAtDeadline   int      `json:"deletedAtDeadline,omitempty"`
	Samples             []sample `json:"samples"`
}

// WorkloadResult is one Deployment's lowest point.
type WorkloadResult struct {
	Name          string  `json:"name"`
	Desired       int32   `json:"desired"`
	PDBHealthy    int32   `json:"pdbDesiredHealthy"`
	MinReady      int32   `json:"minReady"`
	SecondsBelow  float64 `json:"secondsBelowDesired"`
	SecondsAtZero float64 `json:"secondsAtZero"`
}

type options struct {
	scenario         string
	replacementAfter time.Duration
	launchDelay      time.Duration
	startup          time.Duration
	png, jsonOut     string
	fromJSON         string
	stormNodes       int
}

func main() {
	var o options
	flag.StringVar(&o.scenario, "scenario", "all", "which scenario to run: static (a replacement node joins at a fixed time), karpenter (the real Karpenter supplies it), karpenter-interruption (the Karpenter node gets an interruption notice), or all")
	flag.DurationVar(&o.replacementAfter, "replacement-after", 20*time.Second, "static scenario: when the replacement node joins, after the signal")
	flag.DurationVar(&o.launchDelay, "launch-delay", 30*time.Second, "karpenter scenario: how long a node Karpenter launches takes to become Ready")
	flag.DurationVar(&o.startup, "startup", 3*time.Second, "how long each pod takes to become Ready")
	flag.StringVar(&o.png, "png", "docs/img/handoff.png", "where to draw Ready replicas over time (the karpenter scenario's plot gets -karpenter before the extension)")
	flag.StringVar(&o.jsonOut, "json", "", "also write every run's figures and samples as JSON here")
	flag.StringVar(&o.fromJSON, "from-json", "", "do not run: print the tables and draw the plot of an earlier --json")
	flag.IntVar(&o.stormNodes, "storm-nodes", 10, "karpenter-storm scenario (run only when named): how many full Karpenter nodes get an interruption notice at once")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	ctrllog.SetLogger(logr.Discard())
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "bench-handoff:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options, out io.Writer) error {
	if o.scenario == scenarioStorm {
		return runStorm(ctx, o, out)
	}
	if o.fromJSON != "" {
		data, err := os.ReadFile(o.fromJSON)
		if err != nil {
			return err
		}
		var results []Result
		if err := json.Unmarshal(data, &results); err != nil {
			return fmt.Errorf("%s: %w", o.fromJSON, err)
		}
		report(out, o, results)
		return plots(out, o, results)
	}
	type run struct {
		scenario, drainer string
	}
	var runs []run
	switch o.scenario {
	case "all", scenarioStatic, scenarioKarpenter, scenarioInterruption:
	default:
		return fmt.Errorf("--scenario %q: want static, karpenter, karpenter-interruption, karpenter-storm or all", o.scenario)
	}
	if o.scenario == "all" || o.scenario == scenarioStatic {
		for _, d := range []string{drainerNode, drainerNone, drainerKubectl} {
			runs = append(runs, run{scenarioStatic, d})
		}
	}
	if o.scenario == "all" || o.scenario == scenarioKarpenter {
		for _, d := range []string{drainerDefaults, drainerKubectl} {
			runs = append(runs, run{scenarioKarpenter, d})
		}
	}
	if o.scenario == "all" || o.scenario == scenarioInterruption {
		for _, d := range interruptionDrainers {
			runs = append(runs, run{scenarioInterruption, d})
		}
	}
	fmt.Fprintln(out, "starting a local cluster")
	c, err := cluster.Start("bench")
	if err != nil {
		return err
	}
	defer c.Stop()
	var results []Result
	for i, r := range runs {
		fmt.Fprintf(out, "run %d: %s scenario, %s\n", i+1, r.scenario, r.drainer)
		do := scenario
		switch r.scenario {
		case scenarioKarpenter:
			do = karpenterScenario
		case scenarioInterruption:
			do = interruptionScenario
		}
		res, err := do(ctx, c, o, i+1, r.drainer)
		if err != nil {
			return fmt.Errorf("run %d (%s scenario, %s): %w", i+1, r.scenario, r.drainer, err)
		}
		results = append(results, res)
	}
	report(out, o, results)
	if o.jsonOut != "" {
		if err := os.MkdirAll(filepath.Dir(o.jsonOut), 0o755); err != nil {
			return err
		}
		data, _ := json.MarshalIndent(results, "", "  ")
		if err := os.WriteFile(o.jsonOut, data, 0o644); err != nil {
			return err
		}
	}
	if o.png != "" {
		if err := os.MkdirAll(filepath.Dir(o.png), 0o755); err != nil {
			return err
		}
		return plots(out, o, results)
	}
	return nil
}

// ofScenario are the results of scenario sc (an older --json has no
// scenario: static).
func ofScenario(results []Result, sc string) []Result {
	var of []Result
	for _, r := range results {
		if cmp.Or(r.Scenario, scenarioStatic) == sc {
			of = append(of, r)
		}
	}
	return of
}

// plots draws one plot per scenario run.
func plots(out io.Writer, o options, results []Result) error {
	for _, sc := range scenarios {
		of := ofScenario(results, sc)
		if len(of) == 0 {
			continue
		}
		path, title := o.png, fmt.Sprintf("replacement node at +%s", o.replacementAfter)
		ext := filepath.Ext(o.png)
		switch sc {
		case scenarioKarpenter:
			path = strings.TrimSuffix(o.png, ext) + "-karpenter" + ext
			title = fmt.Sprintf("Karpenter, nodes Ready %s after launch", o.launchDelay)
		case scenarioInterruption:
			path = strings.TrimSuffix(o.png, ext) + fmt.Sprintf("-interruption-%s", o.launchDelay) + ext
			title = fmt.Sprintf("interruption notice, Karpenter nodes Ready %s after launch", o.launchDelay)
		}
		if err := plotReady(path, title, of, workloadsOf(sc)); err != nil {
			return err
		}
		fmt.Fprintf(out, "wrote %s\n", path)
	}
	return nil
}

func report(out io.Writer, o options, results []Result) {
	for _, sc := range scenarios {
		of := ofScenario(results, sc)
		if len(of) == 0 {
			continue
		}
		if sc == scenarioInterruption {
			reportInterruption(out, o, of)
			continue
		}
		if sc == scenarioStatic {
			fmt.Fprintf(out, "\nStatic: replacement node after %s; pods take %s to start; 500m CPU each; room for 2 pods elsewhere.\n\n", o.replacementAfter, o.startup)
		} else {
			fmt.Fprintf(out, "\nKarpenter: new nodes Ready %s after launch; pods take %s to start; 300m CPU each; no room elsewhere.\n\n", o.launchDelay, o.startup)
		}
		writeWorkloads(out, of)
		fmt.Fprintln(out)
		tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
		if sc == scenarioStatic {
			fmt.Fprintln(tw, "DRAINER\tPOD-S PENDING\tEVICTIONS\t429s\tSURGES\tSIGNAL TO DRAINED")
			for _, r := range of {
				fmt.Fprintf(tw, "%s\t%.1f\t%d\t%d\t%d\t%.1fs\n", r.Drainer, r.PendingPodSeconds, r.Evictions, r.Rejections429, r.Surges, r.SignalToDrained)
			}
		} else {
			fmt.Fprintln(tw, "DRAINER\tPOD-S PENDING\tEVICTIONS\t429s\tSURGES\tRESERVATIONS\tSIGNAL TO DRAINED\tSIGNAL TO RETIRED")
			for _, r := range of {
				retired := "never (stays cordoned)"
				if r.SignalToRetired != nil {
					retired = fmt.Sprintf("%.1fs", *r.SignalToRetired)
				}
				fmt.Fprintf(tw, "%s\t%.1f\t%d\t%d\t%d\t%d\t%.1fs\t%s\n", r.Drainer, r.PendingPodSeconds, r.Evictions, r.Rejections429, r.Surges, r.Reservations, r.SignalToDrained, retired)
			}
		}
		tw.Flush()
	}
}

func scenario(ctx context.Context, c *cluster.Cluster, o options, i int, drainer string) (Result, error) {
	res := Result{Drainer: drainer, Scenario: scenarioStatic}
	owner := fmt.Sprintf("bench-%d", i)
	ns := fmt.Sprintf("handoff-%d", i)
	kube := c.Client
	spotTaint := corev1.Taint{Key: config.EKSCapacityTypeLabel, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}
	pool := fmt.Sprintf("spot-%d", i)
	atRisk := fmt.Sprintf("at-risk-%d", i)
	addNode := func(n cluster.Node) error {
		if _, err := kube.CoreV1().Nodes().Create(ctx, cluster.NodeObject(n, owner), metav1.CreateOptions{}); err != nil {
			return err
		}
		return cluster.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
			got, err := kube.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			for _, t := range got.Spec.Taints {
				if t.Key == corev1.TaintNodeNotReady {
					return false, nil
				}
			}
			return cluster.NodeIsReady(got), nil
		})
	}
	if err := addNode(cluster.Node{Name: atRisk, Spot: true, Pool: pool, CPU: "8", Taints: []corev1.Taint{spotTaint}}); err != nil {
		return res, err
	}
	at := placement{selector: map[string]string{cluster.OwnerLabel: owner}, cpu: "500m",
		tolerations: []corev1.Toleration{{Key: config.EKSCapacityTypeLabel, Operator: corev1.TolerationOpExists}}}
	pdbHealthy, err := settle(ctx, c, ns, at, workloads, o.startup, 2*time.Minute)
	if err != nil {
		return res, err
	}
	// Room for two pods elsewhere, added once the pods are in place.
	if err := addNode(cluster.Node{Name: fmt.Sprintf("other-%d", i), Spot: true, Pool: fmt.Sprintf("other-%d", i), CPU: "1200m",
		Taints: []corev1.Taint{spotTaint}}); err != nil {
		return res, err
	}

	// The drainer.
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	d, err := begin(runCtx, c, i, ns, drainer, atRisk)
	if err != nil {
		return res, err
	}
	// The replacement node joins at its time; until then the run is not over.
	replacementAdded := false
	samples, drainedAt, err := d.sample(ctx, c, ns, atRisk, workloads, 4*time.Minute, func(_ context.Context, now time.Duration) bool {
		if !replacementAdded && now >= o.replacementAfter {
			replacementAdded = true
			go func() {
				_ = addNode(cluster.Node{Name: fmt.Sprintf("replacement-%d", i), Spot: true, Pool: pool, CPU: "8", Taints: []corev1.Taint{spotTaint}})
			}()
		}
		return replacementAdded
	})
	if err != nil {
		return res, err
	}
	cancel()
	d.wait()
	res.SignalToDrained = drainedAt.Seconds()
	res.figures(samples, workloads, pdbHealthy, d.metrics, d.output())
	// Clean up for the next run.
	for _, n := range []string{atRisk, fmt.Sprintf("other-%d", i), fmt.Sprintf("replacement-%d", i)} {
		_ = kube.CoreV1().Nodes().Delete(context.Background(), n, metav1.DeleteOptions{})
	}
	_ = kube.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	return res, nil
}

// drain is a drainer at work on one node.
type drain struct {
	signalAt time.Time
	metrics  *executor.Metrics // the controller's; nil for kubectl
	out      *lockedWriter     // kubectl's output
	done     chan error
}

// begin starts drainer on node atRisk: the controller, then the signal;
// or kubectl drain. It runs until ctx ends.
func begin(ctx context.Context, c *cluster.Cluster, i int, ns, drainer, atRisk string) (*drain, error) {
	d := &drain{out: &lockedWriter{w: &strings.Builder{}}}
	switch drainer {
	case drainerKubectl:
		d.signalAt = time.Now()
		if err := d.kubectlDrain(ctx, c, atRisk); err != nil {
			return nil, err
		}
	default:
		var err error
		if d.metrics, err = startController(ctx, c, i, ns, drainer == drainerNone); err != nil {
			return nil, err
		}
		d.signalAt = time.Now()
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, signals.AnnotationAtRisk)
		if _, err := c.Client.CoreV1().Nodes().Patch(ctx, atRisk, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
			return nil, err
		}
	}
	return d, nil
}

// kubectlDrain starts kubectl drain of node; it runs until ctx ends.
func (d *drain) kubectlDrain(ctx context.Context, c *cluster.Cluster, node string) error {
	d.done = make(chan error, 1)
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), "--kubeconfig", c.Kubeconfig, "drain", node,
		"--ignore-daemonsets", "--delete-emptydir-data", "--force", "--timeout=5m")
	cmd.Stdout, cmd.Stderr = d.out, d.out
	if err := cmd.Start(); err != nil {
		return err
	}
	go func() { d.done <- cmd.Wait() }()
	return nil
}

// sample reads the scenario's pods every 100 ms from the signal on, until
// the at-risk node is empty, every workload whole, over holds, and two
// seconds more have passed (for the plot). over sees the time since the
// signal. It returns the samples and when the node was first empty.
func (d *drain) sample(ctx context.Context, c *cluster.Cluster, ns, atRisk string, ws []workload, timeout time.Duration,
	over func(ctx context.Context, now time.Duration) bool) ([]sample, time.Duration, error) {
	var samples []sample
	var drainedAt time.Duration
	err := cluster.WaitFor(ctx, timeout, func(ctx context.Context) (bool, error) {
		now := time.Since(d.signalAt)
		done := over(ctx, now)
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		s := take(pods.Items, now, atRisk, ws)
		samples = append(samples, s)
		if s.OnNode == 0 && drainedAt == 0 {
			drainedAt = now
		}
		return drainedAt > 0 && s.whole(ws) && done && now > drainedAt+2*time.Second, nil
	})
	if err != nil {
		return nil, 0, fmt.Errorf("waiting for the node to drain and the workloads to recover: %w\n%s", err, d.output())
	}
	return samples, drainedAt, nil
}

// wait waits for kubectl to end (its context is done).
func (d *drain) wait() {
	if d.done != nil {
		<-d.done
	}
}

func (d *drain) output() string {
	if d.done == nil {
		return ""
	}
	d.out.mu.Lock()
	defer d.out.mu.Unlock()
	return d.out.w.(*strings.Builder).String()
}

// settle creates namespace ns and the workloads in it, placed at, and
// waits until every pod is Ready and every PDB counts them. It returns
// each PDB's desiredHealthy.
func settle(ctx context.Context, c *cluster.Cluster, ns string, at placement, workloads []workload, startup, timeout time.Duration) (map[string]int32, error) {
	kube := c.Client
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return nil, err
	}
	if err := cluster.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return nil, err
	}
	for _, w := range workloads {
		if err := deploy(ctx, c, ns, at, w, startup); err != nil {
			return nil, err
		}
	}
	if err := cluster.WaitFor(ctx, timeout, func(ctx context.Context) (bool, error) {
		for _, w := range workloads {
			pods, err := c.ReadyPods(ctx, ns, "app="+w.name)
			if err != nil || int32(len(pods)) != w.replicas {
				return false, err
			}
		}
		return true, nil
	}); err != nil {
		return nil, fmt.Errorf("waiting for the workloads: %w", err)
	}
	pdbHealthy := map[string]int32{}
	for _, w := range workloads {
		if w.pdb == nil {
			continue
		}
		if err := cluster.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
			pdb, err := kube.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, w.name, metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			pdbHealthy[w.name] = pdb.Status.DesiredHealthy
			return pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == w.replicas, nil
		}); err != nil {
			return nil, err
		}
	}
	return pdbHealthy, nil
}

// figures fills in what the samples, the controller's metrics (nil for
// kubectl) or kubectl's output say.
func (res *Result) figures(samples []sample, workloads []workload, pdbHealthy map[string]int32, metrics *executor.Metrics, drainOut string) {
	res.Samples = samples
	for k := 1; k < len(samples); k++ {
		res.PendingPodSeconds += float64(samples[k-1].Pending) * (samples[k].At - samples[k-1].At)
		res.SurgePendingSeconds += float64(samples[k-1].SurgePending) * (samples[k].At - samples[k-1].At)
	}
	for _, w := range workloads {
		wr := WorkloadResult{Name: w.name, Desired: w.replicas, PDBHealthy: pdbHealthy[w.name], MinReady: w.replicas}
		for k, s := range samples {
			wr.MinReady = min(wr.MinReady, s.Ready[w.name])
			if k == 0 {
				continue
			}
			dt := s.At - samples[k-1].At
			if samples[k-1].Ready[w.name] < w.replicas {
				wr.SecondsBelow += dt
			}
			if samples[k-1].Ready[w.name] == 0 {
				wr.SecondsAtZero += dt
			}
		}
		res.Workloads = append(res.Workloads, wr)
	}
	if metrics != nil {
		res.Evictions = int(testutil.ToFloat64(metrics.Evictions.WithLabelValues("evicted")))
		res.Rejections429 = int(testutil.ToFloat64(metrics.Evictions.WithLabelValues("blocked-by-pdb")))
		res.Surges = int(testutil.ToFloat64(metrics.Surges.WithLabelValues("completed")))
		res.Reservations = int(testutil.ToFloat64(metrics.Reservations.WithLabelValues("created")))
		res.DeletedAtDeadline = int(testutil.ToFloat64(metrics.Evictions.WithLabelValues("deleted")))
		return
	}
	sc := bufio.NewScanner(strings.NewReader(drainOut))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.Contains(line, "evicted"):
			res.Evictions++
		case strings.Contains(line, "disruption budget"):
			res.Rejections429++
		}
	}
}

// take samples the scenario's pods at one moment. A workload's pods with
// no node count as a surge's (not displaced) as far as it has more live
// pods than its count.
func take(pods []corev1.Pod, at time.Duration, atRisk string, workloads []workload) sample {
	s := sample{At: at.Seconds(), Ready: map[string]int32{}}
	live, pending := map[string]int32{}, map[string]int32{}
	for j := range pods {
		p := &pods[j]
		if reserve.Is(p) {
			continue // placeholders, not the workloads' pods
		}
		app := p.Labels["app"]
		if p.DeletionTimestamp == nil && cluster.PodIsReady(p) {
			s.Ready[app]++
		}
		if p.DeletionTimestamp == nil {
			live[app]++
		}
		if p.Spec.NodeName == "" && p.Status.Phase == corev1.PodPending {
			pending[app]++
		}
		if p.Spec.NodeName == atRisk && p.DeletionTimestamp == nil {
			s.OnNode++
		}
	}
	for _, w := range workloads {
		surplus := min(max(live[w.name]-w.replicas, 0), pending[w.name])
		s.SurgePending += int(surplus)
		s.Pending += int(pending[w.name] - surplus)
	}
	return s
}

// whole tells whether every workload has all its replicas Ready.
func (s sample) whole(workloads []workload) bool {
	for _, w := range workloads {
		if s.Ready[w.name] != w.replicas {
			return false
		}
	}
	return true
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// placement is where a scenario's pods go and how much CPU each asks for.
type placement struct {
	selector    map[string]string
	tolerations []corev1.Toleration
	cpu         string
}

func deploy(ctx context.Context, c *cluster.Cluster, ns string, at placement, w workload, startup time.Duration) error {
	labels := map[string]string{"app": w.name}
	template := corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{cluster.PodReadyDelayAnnotation: startup.String()}},
		Spec: corev1.PodSpec{
			NodeSelector:                  at.selector,
			Tolerations:                   at.tolerations,
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			Containers: []corev1.Container{{Name: w.name, Image: "registry.example/" + w.name + ":1",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(at.cpu)}}}},
		},
	}
	var err error
	if w.statefulSet {
		// A StatefulSet's pod gets a grace period: it is one identity, and a
		// grace period of 0 is never used for it.
		template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](5)
		_, err = c.Client.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
			ObjectMeta: metav1.ObjectMeta{Name: w.name},
			Spec: appsv1.StatefulSetSpec{Replicas: ptr.To(w.replicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
				ServiceName: w.name, Template: template},
		}, metav1.CreateOptions{})
	} else {
		_, err = c.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: w.name},
			Spec:       appsv1.DeploymentSpec{Replicas: ptr.To(w.replicas), Selector: &metav1.LabelSelector{MatchLabels: labels}, Template: template},
		}, metav1.CreateOptions{})
	}
	if err != nil {
		return err
	}
	if w.pdb != nil {
		spec := *w.pdb
		spec.Selector = &metav1.LabelSelector{MatchLabels: labels}
		_, err = c.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: w.name}, Spec: spec}, metav1.CreateOptions{})
	}
	return err
}

// startController runs the rebalancer in this process until ctx ends.
// Its surge records go in namespace, the scenario's own.
func startController(ctx context.Context, c *cluster.Cluster, i int, namespace string, atOnce bool) (*executor.Metrics, error) {
	cfg := config.Default().Rebalancer
	if atOnce {
		cfg.Replacement.Mode = config.ReplacementNone
		cfg.Surge.Enabled = ptr.To(false)
	}
	r, err := inproc.Start(ctx, c, cfg, fmt.Sprintf("rebalancer-%d", i), namespace)
	if err != nil {
		return nil, err
	}
	return r.Metrics, nil
}

// writeWorkloads writes each run's lowest point per workload.
func writeWorkloads(out io.Writer, of []Result) {
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DRAINER\tWORKLOAD\tDESIRED\tPDB HEALTHY\tLOWEST READY\tS BELOW DESIRED\tS AT ZERO")
	for _, r := range of {
		for _, w := range r.Workloads {
			pdb := "-"
			if w.PDBHealthy > 0 {
				pdb = fmt.Sprint(w.PDBHealthy)
			}
			fmt.Fprintf(tw, "%s\t%s\t%d\t%s\t%d\t%.1f\t%.1f\n", r.Drainer, w.Name, w.Desired, pdb, w.MinReady, w.SecondsBelow, w.SecondsAtZero)
		}
	}
	tw.Flush()
}
