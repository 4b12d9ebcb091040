// Command soak is `make soak`: 40 Spot nodes in two pools receive rebalance
// recommendations at once while about 1,500 pods of 60 Deployments with
// PDBs run on them, and replacement nodes join over a few minutes. It runs
// the real controller binary (defaults: replacement mode node, surges) behind
// a counting proxy to the API server, and reports whether everything ended
// drained, whether any budget was exceeded, the controller's memory and its
// request rate against its client rate limit.
//
// With --signal interruption (`make soak-itn`) the nodes get interruption
// notices instead, all at once, with a two-minute deadline, and the run
// reports what stands at the deadline: the pods Ready elsewhere, the pods
// still on the reclaimed nodes, deletions at the deadline and budget
// breaches before it. --drainer kubectl-drain runs `kubectl drain` on every
// node at once instead of the controller, as AWS Node Termination Handler
// does, for comparison.
package main

import (
	"bufio"
	"cmp"
	"context"
	"flag"
	"fmt"
	"io"
	"maps"
	"math"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
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
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster/inproc"
)

type options struct {
	nodesPerPool, deployments, replicas int
	replacementEvery                    time.Duration
	qps                                 float64
	burst                               int
	timeout                             time.Duration
	maxConcurrent                       int
	maxRSSMiB                           int64
	binary                              string
	// signal is "rebalance" or "interruption"; drainer "spot-rebalancer"
	// or "kubectl-drain" (interruption only); notice the interruption's
	// deadline after the signal.
	signal, drainer string
	notice          time.Duration
}

const (
	signalRebalance    = "rebalance"
	signalInterruption = "interruption"
	drainerOurs        = "spot-rebalancer"
	drainerKubectl     = "kubectl-drain"
)

func main() {
	var o options
	flag.IntVar(&o.nodesPerPool, "nodes-per-pool", 20, "at-risk Spot nodes in each of the two pools")
	flag.IntVar(&o.deployments, "deployments", 60, "Deployments, each with a PDB")
	flag.IntVar(&o.replicas, "replicas", 25, "replicas per Deployment")
	flag.DurationVar(&o.replacementEvery, "replacement-every", 4*time.Second, "one replacement node joins this often")
	flag.Float64Var(&o.qps, "qps", 50, "the controller's --kube-api-qps")
	flag.IntVar(&o.burst, "burst", 100, "the controller's --kube-api-burst")
	flag.DurationVar(&o.timeout, "timeout", 20*time.Minute, "give up after this long")
	flag.IntVar(&o.maxConcurrent, "max-concurrent-nodes", 5, "rebalancer.maxConcurrentNodes: nodes of one pool draining at once")
	flag.Int64Var(&o.maxRSSMiB, "max-rss-mib", 512, "fail when the controller's resident memory ever exceeds this")
	flag.StringVar(&o.binary, "binary", "bin/spot-rebalancer", "the spot-rebalancer binary")
	flag.StringVar(&o.signal, "signal", signalRebalance, "the signal every node gets at once: rebalance (run until all drained) or interruption (report at the deadline)")
	flag.StringVar(&o.drainer, "drainer", drainerOurs, "with --signal interruption: spot-rebalancer, or kubectl-drain (every node drained at once, as NTH does)")
	flag.DurationVar(&o.notice, "notice", 2*time.Minute, "with --signal interruption: the time from the notice to the deadline")
	flag.Parse()
	if err := o.validate(); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(2)
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, o, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "soak:", err)
		os.Exit(1)
	}
}

func (o options) validate() error {
	switch {
	case o.signal != signalRebalance && o.signal != signalInterruption:
		return fmt.Errorf("--signal %q: want %s or %s", o.signal, signalRebalance, signalInterruption)
	case o.drainer != drainerOurs && o.drainer != drainerKubectl:
		return fmt.Errorf("--drainer %q: want %s or %s", o.drainer, drainerOurs, drainerKubectl)
	case o.drainer == drainerKubectl && o.signal != signalInterruption:
		return fmt.Errorf("--drainer %s needs --signal %s", drainerKubectl, signalInterruption)
	case o.notice <= 0:
		return fmt.Errorf("--notice %s: want a positive duration", o.notice)
	}
	return nil
}

// counter counts the requests passing through the proxy, per second.
type counter struct {
	mu      sync.Mutex
	perSec  map[int64]int
	byKind  map[string]int // "PATCH pods", "PUT deployments/scale", ...
	total   atomic.Int64
	watches atomic.Int64
}

func (c *counter) add(r *http.Request) {
	c.total.Add(1)
	if r.URL.Query().Get("watch") == "true" {
		// Long-running and not rate-limited by client-go: not counted
		// against the limit.
		c.watches.Add(1)
		return
	}
	c.mu.Lock()
	c.perSec[time.Now().Unix()]++
	c.byKind[r.Method+" "+resourceOf(r.URL.Path)]++
	c.mu.Unlock()
}

// resourceOf names the resource of an API path, with its subresource:
// /api/v1/namespaces/x/pods/y/eviction -> pods/eviction.
func resourceOf(path string) string {
	parts := strings.Split(strings.Trim(path, "/"), "/")
	switch {
	case len(parts) > 0 && parts[0] == "api":
		parts = parts[min(2, len(parts)):] // api, v1
	case len(parts) > 0 && parts[0] == "apis":
		parts = parts[min(3, len(parts)):] // apis, group, version
	}
	if len(parts) >= 2 && parts[0] == "namespaces" && len(parts) != 2 {
		parts = parts[2:]
	}
	switch len(parts) {
	case 0:
		return path
	case 1, 2:
		return parts[0]
	default:
		return parts[0] + "/" + parts[2]
	}
}

// proxy forwards plain HTTP from the controller to the API server with the
// cluster's credentials, counting every request.
func proxy(cfg *rest.Config, cnt *counter) (string, func(), error) {
	transport, err := rest.TransportFor(cfg)
	if err != nil {
		return "", nil, err
	}
	target, err := url.Parse(cfg.Host)
	if err != nil {
		return "", nil, err
	}
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.Transport = transport
	rp.FlushInterval = -1 // watches stream
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", nil, err
	}
	srv := &http.Server{Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		cnt.add(r)
		rp.ServeHTTP(w, r)
	}), ReadHeaderTimeout: 10 * time.Second}
	go func() { _ = srv.Serve(l) }()
	return "http://" + l.Addr().String(), func() { _ = srv.Close() }, nil
}

func run(ctx context.Context, o options, out io.Writer) (err error) {
	bin, err := cluster.Binary(o.binary)
	if err != nil {
		return err
	}
	say := func(format string, args ...any) {
		fmt.Fprintf(out, "%s %s\n", time.Now().UTC().Format("15:04:05"), fmt.Sprintf(format, args...))
	}
	say("starting a local cluster")
	c, err := cluster.Start("soak")
	if err != nil {
		return err
	}
	defer c.Stop()
	kube := c.Client
	dir, err := os.MkdirTemp("", "spot-rebalancer-soak-")
	if err != nil {
		return err
	}
	defer func() {
		if err == nil {
			_ = os.RemoveAll(dir)
		} else {
			fmt.Fprintf(out, "the controller's log is kept in %s\n", dir)
		}
	}()

	var atRisk []string
	for _, pool := range []string{"soak-a", "soak-b"} {
		for i := range o.nodesPerPool {
			n := cluster.Node{Name: fmt.Sprintf("%s-%02d", pool, i), Spot: true, Pool: pool, CPU: "16", Memory: "64Gi", Taints: []corev1.Taint{spotTaint}}
			if _, err := kube.CoreV1().Nodes().Create(ctx, cluster.NodeObject(n, "soak"), metav1.CreateOptions{}); err != nil {
				return err
			}
			atRisk = append(atRisk, n.Name)
		}
	}
	if err := waitUsable(ctx, c, len(atRisk)); err != nil {
		return err
	}
	say("%d Spot nodes Ready in pools soak-a and soak-b", len(atRisk))

	ns := "soak"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return err
	}
	// The reservations' PriorityClass, as the chart creates it.
	if err := inproc.EnsurePriorityClass(ctx, c); err != nil {
		return err
	}
	if err := cluster.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return err
	}
	// Budgets: every other Deployment maxUnavailable 1, the rest 20%.
	minReady := map[string]int{}
	for i := range o.deployments {
		name := fmt.Sprintf("app-%02d", i)
		budget := intstr.FromInt32(1)
		minReady[name] = o.replicas - 1
		if i%2 == 1 {
			budget = intstr.FromString("20%")
			minReady[name] = o.replicas - o.replicas*20/100
		}
		labels := map[string]string{"app": name}
		if _, err := kube.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: policyv1.PodDisruptionBudgetSpec{MaxUnavailable: &budget, Selector: &metav1.LabelSelector{MatchLabels: labels}}}, metav1.CreateOptions{}); err != nil {
			return err
		}
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, appDeployment(name, o.replicas), metav1.CreateOptions{}); err != nil {
			return err
		}
	}
	total := o.deployments * o.replicas
	if err := cluster.WaitFor(ctx, 10*time.Minute, func(ctx context.Context) (bool, error) {
		ready, err := c.ReadyPods(ctx, ns, "")
		return len(ready) == total, err
	}); err != nil {
		return fmt.Errorf("waiting for %d pods: %w", total, err)
	}
	say("%d pods of %d Deployments Ready, each Deployment with a PDB", total, o.deployments)

	if o.signal == signalInterruption {
		return storm(ctx, o, out, c, bin, ns, atRisk, minReady, dir, say)
	}
	// The controller, through the counting proxy.
	ctlRun, err := startController(ctx, c, o, bin, ns, dir)
	if err != nil {
		return err
	}
	defer ctlRun.stop()
	ctl, cnt, metricsPort := ctlRun.cmd, ctlRun.cnt, ctlRun.metricsPort
	baseline := cnt.total.Load()

	// The signal, on every node at once.
	signalAt := time.Now()
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, signals.AnnotationAtRisk)
	for _, n := range atRisk {
		if _, err := kube.CoreV1().Nodes().Patch(ctx, n, "application/merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
			return err
		}
	}
	say("rebalance recommendations on all %d nodes", len(atRisk))

	// Replacements join one by one, alternating pools.
	replacementsDone := joinReplacements(ctx, kube, len(atRisk), o.replacementEvery)

	var peakRSS, lastRSS int64
	seen := newPhases()
	budget, samples := newTally(), 0
	peakDraining, overConcurrent := 0, 0
	lastReport := time.Now()
	err = cluster.WaitFor(ctx, o.timeout, func(ctx context.Context) (bool, error) {
		if ctl.ProcessState != nil {
			return false, fmt.Errorf("the controller exited")
		}
		rss, _ := rssKB(ctl.Process.Pid)
		lastRSS, peakRSS = rss, max(peakRSS, rss)
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		ready := map[string]int{}
		for i := range pods.Items {
			p := &pods.Items[i]
			if p.DeletionTimestamp == nil && cluster.PodIsReady(p) {
				ready[p.Labels["app"]]++
			}
		}
		samples++
		budget.add(ready, minReady)
		whole := true
		for name := range minReady {
			if ready[name] != o.replicas {
				whole = false
			}
		}
		nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		states := map[string]int{}
		drainingIn := map[string]int{}
		for _, n := range nodes.Items {
			if n.Annotations[signals.AnnotationAtRisk] == "true" {
				states[n.Annotations[signals.AnnotationState]]++
				state := signals.StateOf(n.Annotations)
				seen.see(n.Name, state, time.Since(signalAt))
				if state == signals.StateDraining {
					drainingIn[n.Labels[cluster.PoolLabel]]++
				}
			}
		}
		for pool, n := range drainingIn {
			peakDraining = max(peakDraining, n)
			if n > o.maxConcurrent {
				overConcurrent++
				say("%3.0fs: %d nodes of pool %s draining, over maxConcurrentNodes %d", time.Since(signalAt).Seconds(), n, pool, o.maxConcurrent)
			}
		}
		if time.Since(lastReport) > 15*time.Second {
			lastReport = time.Now()
			say("%3.0fs: nodes by state %v; controller RSS %d MiB", time.Since(signalAt).Seconds(), states, rss/1024)
		}
		return states[string(signals.StateDrained)] == len(atRisk) && whole, nil
	})
	if err != nil {
		if left := checkEnd(ctx, kube, ns, int32(o.replicas)); left != nil {
			return fmt.Errorf("not every node drained and settled: %w; %v", err, left)
		}
		return fmt.Errorf("not every node drained and settled: %w", err)
	}
	elapsed := time.Since(signalAt)
	lastJoin := <-replacementsDone
	metrics, err := scrape(metricsPort)
	if err != nil {
		return err
	}
	// The physical limit: the last replacement joined, then the same pods
	// started at once (scheduling and start-up), measured now.
	say("all drained in %.0fs; measuring the same %d pods created at once", elapsed.Seconds(), total)
	atOnce, err := podsAtOnce(ctx, c, o.deployments, o.replicas)
	if err != nil {
		return err
	}
	joined := lastJoin.Sub(signalAt)
	limit := joined + atOnce

	// Request rate: a token bucket of qps and burst allows at most
	// burst + qps*w requests in any w seconds.
	windows := []int{1, 10, 60}
	peaks := make([]int, len(windows))
	cnt.mu.Lock()
	first, last := signalAt.Unix(), time.Now().Unix()
	for s := first; s <= last; s++ {
		for i, w := range windows {
			sum := 0
			for k := s; k < s+int64(w); k++ {
				sum += cnt.perSec[k]
			}
			peaks[i] = max(peaks[i], sum)
		}
	}
	cnt.mu.Unlock()
	requests := cnt.total.Load() - baseline
	fmt.Fprintf(out, "\n=== Soak ===\n")
	fmt.Fprintf(out, "nodes at risk             %d in 2 pools, replacements joining every %s, maxConcurrentNodes %d\n", len(atRisk), o.replacementEvery, o.maxConcurrent)
	fmt.Fprintf(out, "pods                      %d of %d Deployments, every one with a PDB\n", total, o.deployments)
	fmt.Fprintf(out, "signal to all drained     %.0fs\n", elapsed.Seconds())
	fmt.Fprintf(out, "physical limit            %.0fs: the last replacement joined at %.0fs, and the same %d pods created at once were all Ready in %.0fs; the drain took %.2f times that\n",
		limit.Seconds(), joined.Seconds(), total, atOnce.Seconds(), elapsed.Seconds()/limit.Seconds())
	fmt.Fprintf(out, "evictions / surges        %s / %s (abandoned %s)\n", metrics[`spot_rebalancer_evictions_total{result="evicted"}`],
		metrics[`spot_rebalancer_surges_total{result="completed"}`], metrics[`spot_rebalancer_surges_total{result="abandoned"}`])
	seen.report(out, atRisk)
	// Absent before any wait: 0.
	budgetWait, _ := strconv.ParseFloat(metrics[fmt.Sprintf(`spot_rebalancer_budget_wait_seconds_total{signal=%q}`, signals.RebalanceRecommendation)], 64)
	fmt.Fprintf(out, "  of which on budgets     %.0f node-seconds with pods waiting for their PDBs (a later wave, or after a 429: the controller's spot_rebalancer_budget_wait_seconds_total)\n", budgetWait)
	fmt.Fprintf(out, "budget breaches           %d in %d samples (lowest headroom %d)\n", budget.breaches, samples, budget.lowest)
	fmt.Fprintf(out, "nodes draining per pool   at most %d (maxConcurrentNodes %d; %d samples over)\n", peakDraining, o.maxConcurrent, overConcurrent)
	fmt.Fprintf(out, "controller RSS            peak %d MiB, at the end %d MiB\n", peakRSS/1024, lastRSS/1024)
	fmt.Fprintf(out, "controller requests       %d (%d watches) in %.0fs: mean %.1f/s; --kube-api-qps %.0f, --kube-api-burst %d\n",
		requests, cnt.watches.Load(), elapsed.Seconds(), float64(requests)/elapsed.Seconds(), o.qps, o.burst)
	cnt.mu.Lock()
	kinds := slices.SortedFunc(maps.Keys(cnt.byKind), func(a, b string) int { return cmp.Compare(cnt.byKind[b], cnt.byKind[a]) })
	for _, k := range kinds[:min(12, len(kinds))] {
		fmt.Fprintf(out, "  %-24s %6d  (%.1f per pod)\n", k, cnt.byKind[k], float64(cnt.byKind[k])/float64(total))
	}
	cnt.mu.Unlock()
	var over []string
	for i, w := range windows {
		allowed := o.burst + int(o.qps*float64(w))
		fmt.Fprintf(out, "  busiest %2d s             %d requests (the limit allows %d)\n", w, peaks[i], allowed)
		if peaks[i] > allowed {
			over = append(over, fmt.Sprintf("%d requests in %d s, over the %d allowed", peaks[i], w, allowed))
		}
	}
	if budget.breaches > 0 {
		return fmt.Errorf("%d samples below a budget", budget.breaches)
	}
	if overConcurrent > 0 {
		return fmt.Errorf("%d samples with a pool draining more than maxConcurrentNodes %d nodes", overConcurrent, o.maxConcurrent)
	}
	if peakRSS/1024 > o.maxRSSMiB {
		return fmt.Errorf("the controller's RSS peaked at %d MiB, over --max-rss-mib %d", peakRSS/1024, o.maxRSSMiB)
	}
	if err := checkEnd(ctx, kube, ns, int32(o.replicas)); err != nil {
		return err
	}
	if len(over) > 0 {
		return fmt.Errorf("the controller exceeded its client rate limit: %s", strings.Join(over, "; "))
	}
	return nil
}

// appDeployment is one of the soak's Deployments: pods of 100m CPU and
// 128Mi that are Ready 1 s after they start.
func appDeployment(name string, replicas int) *appsv1.Deployment {
	labels := map[string]string{"app": name}
	return &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: name},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(int32(replicas)), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{cluster.PodReadyDelayAnnotation: "1s"}},
				Spec: corev1.PodSpec{
					NodeSelector:                  map[string]string{cluster.OwnerLabel: "soak"},
					Tolerations:                   []corev1.Toleration{{Key: config.EKSCapacityTypeLabel, Operator: corev1.TolerationOpExists}},
					TerminationGracePeriodSeconds: ptr.To[int64](0),
					Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1", Resources: corev1.ResourceRequirements{
						Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m"), corev1.ResourceMemory: resource.MustParse("128Mi")}}}},
				}}}}
}

// podsAtOnce measures the other half of the physical limit in the same
// cluster: the same pods (deployments Deployments of replicas), created at
// once in a namespace of their own on the nodes that are not at risk, until
// all are Ready. The namespace is deleted after.
func podsAtOnce(ctx context.Context, c *cluster.Cluster, deployments, replicas int) (time.Duration, error) {
	kube := c.Client
	ns := "soak-limit"
	if _, err := kube.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return 0, err
	}
	defer func() { _ = kube.CoreV1().Namespaces().Delete(context.WithoutCancel(ctx), ns, metav1.DeleteOptions{}) }()
	if err := cluster.WaitFor(ctx, 30*time.Second, func(ctx context.Context) (bool, error) {
		_, err := kube.CoreV1().ServiceAccounts(ns).Get(ctx, "default", metav1.GetOptions{})
		return err == nil, nil
	}); err != nil {
		return 0, err
	}
	start := time.Now()
	for i := range deployments {
		if _, err := kube.AppsV1().Deployments(ns).Create(ctx, appDeployment(fmt.Sprintf("app-%02d", i), replicas), metav1.CreateOptions{}); err != nil {
			return 0, err
		}
	}
	total := deployments * replicas
	if err := cluster.WaitFor(ctx, 10*time.Minute, func(ctx context.Context) (bool, error) {
		ready, err := c.ReadyPods(ctx, ns, "")
		return len(ready) == total, err
	}); err != nil {
		return 0, fmt.Errorf("waiting for %d pods created at once: %w", total, err)
	}
	return time.Since(start), nil
}

// tally counts, over samples, the Deployments below their budget (a
// breach each) and the lowest headroom any had.
type tally struct{ breaches, lowest int }

func newTally() tally { return tally{lowest: 1 << 30} }

func (t *tally) add(ready, minReady map[string]int) {
	for name, want := range minReady {
		t.lowest = min(t.lowest, ready[name]-want)
		if ready[name] < want {
			t.breaches++
		}
	}
}

// phases records when the soak first saw each node draining and drained,
// to split its time into waiting to drain (for capacity or, queued, for a
// maxConcurrentNodes slot: the signal to draining) and
// moving pods (draining to drained), at the samples' resolution.
type phases struct {
	draining, drained map[string]time.Duration
}

func newPhases() *phases {
	return &phases{draining: map[string]time.Duration{}, drained: map[string]time.Duration{}}
}

func (p *phases) see(node string, st signals.State, at time.Duration) {
	switch st {
	case signals.StateDraining:
		if _, ok := p.draining[node]; !ok {
			p.draining[node] = at
		}
	case signals.StateDrained:
		if _, ok := p.drained[node]; !ok {
			p.drained[node] = at
			if _, ok := p.draining[node]; !ok {
				p.draining[node] = at // drained between two samples
			}
		}
	}
}

func (p *phases) report(out io.Writer, nodes []string) {
	var waiting, moving []time.Duration
	for _, n := range nodes {
		start, ok := p.draining[n]
		if !ok {
			continue
		}
		waiting = append(waiting, start)
		if end, ok := p.drained[n]; ok {
			moving = append(moving, end-start)
		}
	}
	for _, row := range []struct {
		name string
		ds   []time.Duration
	}{{"waiting to drain", waiting}, {"moving pods (draining)", moving}} {
		med, p90, most, sum := summarize(row.ds)
		fmt.Fprintf(out, "  %-23s %d nodes: median %.0fs, p90 %.0fs, max %.0fs; %.0f node-seconds in all\n",
			row.name, len(row.ds), med.Seconds(), p90.Seconds(), most.Seconds(), sum.Seconds())
	}
}

// summarize returns the median, the 90th percentile (nearest rank), the
// maximum and the sum of ds.
func summarize(ds []time.Duration) (median, p90, most, sum time.Duration) {
	if len(ds) == 0 {
		return 0, 0, 0, 0
	}
	sorted := slices.Sorted(slices.Values(ds))
	for _, d := range sorted {
		sum += d
	}
	rank := func(q float64) time.Duration {
		i := int(math.Ceil(q*float64(len(sorted)))) - 1
		return sorted[max(i, 0)]
	}
	return rank(0.5), rank(0.9), sorted[len(sorted)-1], sum
}

// controllerRun is the controller binary running behind the counting proxy.
type controllerRun struct {
	cmd         *exec.Cmd
	cnt         *counter
	metricsPort int
	stop        func()
}

// startController runs the controller with its defaults (but
// maxConcurrentNodes and the client rate limit from o) against c, through
// a proxy counting its requests, and waits until it serves its metrics.
func startController(ctx context.Context, c *cluster.Cluster, o options, bin, ns, dir string) (_ *controllerRun, err error) {
	cnt := &counter{perSec: map[int64]int{}, byKind: map[string]int{}}
	proxyURL, closeProxy, err := proxy(c.Config, cnt)
	if err != nil {
		return nil, err
	}
	r := &controllerRun{cnt: cnt, stop: closeProxy}
	defer func() {
		if err != nil {
			r.stop()
		}
	}()
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(fmt.Sprintf(`apiVersion: v1
kind: Config
clusters: [{name: soak, cluster: {server: %q}}]
contexts: [{name: soak, context: {cluster: soak, user: soak}}]
users: [{name: soak, user: {}}]
current-context: soak
`, proxyURL)), 0o600); err != nil {
		return nil, err
	}
	cfg := config.Default()
	cfg.Webhook.Namespace = ns
	cfg.Certs.Mode = config.CertModeExternal
	cfg.Rebalancer.MaxConcurrentNodes = int32(o.maxConcurrent)
	cfgPath := filepath.Join(dir, "config.yaml")
	if err := config.WriteFile(cfgPath, cfg); err != nil {
		return nil, err
	}
	metricsPort, err := cluster.FreePort()
	if err != nil {
		return nil, err
	}
	logFile, err := os.Create(filepath.Join(dir, "controller.log"))
	if err != nil {
		return nil, err
	}
	ctl := exec.Command(bin, "controller", "--kubeconfig", kubeconfig, "--config", cfgPath, "--leader-elect=false",
		"--metrics-bind-address", fmt.Sprintf("127.0.0.1:%d", metricsPort), "--metrics-secure=false", "--health-probe-bind-address", "0",
		"--kube-api-qps", strconv.FormatFloat(o.qps, 'f', -1, 64), "--kube-api-burst", strconv.Itoa(o.burst), "--log-level", "info")
	ctl.Stdout, ctl.Stderr = logFile, logFile
	if err := ctl.Start(); err != nil {
		return nil, err
	}
	r.cmd, r.metricsPort = ctl, metricsPort
	r.stop = func() { _ = ctl.Process.Signal(syscall.SIGTERM); _ = ctl.Wait(); logFile.Close(); closeProxy() }
	if err := cluster.WaitFor(ctx, time.Minute, func(ctx context.Context) (bool, error) {
		_, err := scrape(metricsPort)
		return err == nil, nil
	}); err != nil {
		return nil, fmt.Errorf("the controller's metrics never answered: %w", err)
	}
	return r, nil
}

// joinReplacements adds one replacement node to each pool in turn, every
// every, n in all; the channel gives when the last joined, then closes.
func joinReplacements(ctx context.Context, kube kubernetes.Interface, n int, every time.Duration) <-chan time.Time {
	done := make(chan time.Time, 1)
	go func() {
		defer close(done)
		defer func() { done <- time.Now() }()
		for i := range n {
			select {
			case <-ctx.Done():
				return
			case <-time.After(every):
			}
			pool := []string{"soak-a", "soak-b"}[i%2]
			node := cluster.Node{Name: fmt.Sprintf("%s-new-%02d", pool, i/2), Spot: true, Pool: pool, CPU: "16", Memory: "64Gi", Taints: []corev1.Taint{spotTaint}}
			_, _ = kube.CoreV1().Nodes().Create(ctx, cluster.NodeObject(node, "soak"), metav1.CreateOptions{})
		}
	}()
	return done
}

var spotTaint = corev1.Taint{Key: config.EKSCapacityTypeLabel, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}

// checkEnd fails when the rebalancer left something behind: a Deployment
// not back at its replica count, a surge record, or a
// node tainted by us that is not drained.
func checkEnd(ctx context.Context, kube kubernetes.Interface, ns string, replicas int32) error {
	deps, err := kube.AppsV1().Deployments(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	var left []string
	for _, d := range deps.Items {
		if got := ptr.Deref(d.Spec.Replicas, 1); got != replicas {
			left = append(left, fmt.Sprintf("Deployment %s has %d replicas, not %d", d.Name, got, replicas))
		}
	}
	// The controller's namespace is ns too (webhook.namespace).
	records, err := kube.CoordinationV1().Leases(ns).List(ctx, metav1.ListOptions{LabelSelector: signals.LabelRecord + "=" + signals.SurgeRecordLabel})
	if err != nil {
		return err
	}
	for _, r := range records.Items {
		left = append(left, fmt.Sprintf("surge record %s is left: %s", r.Name, r.Annotations[signals.AnnotationSurgeState]))
	}
	reservations, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: reserve.LabelNode})
	if err != nil {
		return err
	}
	for _, r := range reservations.Items {
		left = append(left, fmt.Sprintf("reservation %s is left (for %s)", r.Name, r.Annotations[reserve.AnnotationPod]))
	}
	nodes, err := kube.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
	if err != nil {
		return err
	}
	for _, n := range nodes.Items {
		for _, t := range n.Spec.Taints {
			if t.Key == signals.TaintDraining && signals.StateOf(n.Annotations) != signals.StateDrained {
				left = append(left, fmt.Sprintf("node %s has the %s taint in state %q", n.Name, t.Key, n.Annotations[signals.AnnotationState]))
			}
		}
	}
	if len(left) > 0 {
		return fmt.Errorf("left behind:\n  %s", strings.Join(left, "\n  "))
	}
	return nil
}

func waitUsable(ctx context.Context, c *cluster.Cluster, want int) error {
	return cluster.WaitFor(ctx, 5*time.Minute, func(ctx context.Context) (bool, error) {
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		usable := 0
		for i := range nodes.Items {
			n := &nodes.Items[i]
			tainted := false
			for _, t := range n.Spec.Taints {
				tainted = tainted || t.Key == corev1.TaintNodeNotReady
			}
			if cluster.NodeIsReady(n) && !tainted {
				usable++
			}
		}
		return usable >= want, nil
	})
}

// scrape reads the controller's metrics as name{labels} -> value.
func scrape(port int) (map[string]string, error) {
	resp, err := http.Get(fmt.Sprintf("http://127.0.0.1:%d/metrics", port))
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	out := map[string]string{}
	sc := bufio.NewScanner(resp.Body)
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "#") {
			continue
		}
		if i := strings.LastIndexByte(line, ' '); i > 0 {
			out[line[:i]] = line[i+1:]
		}
	}
	return out, sc.Err()
}

func rssKB(pid int) (int64, error) {
	data, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(line, "VmRSS:") {
			f := strings.Fields(line)
			if len(f) >= 2 {
				return strconv.ParseInt(f[1], 10, 64)
			}
		}
	}
	return 0, fmt.Errorf("no VmRSS for pid %d", pid)
}

// storm is the interruption storm: notices on every node at once with a
// deadline o.notice later, replacements joining meanwhile, and either the
// controller or `kubectl drain` of every node at once. It reports what
// stands at the deadline, when the nodes would be reclaimed.
func storm(ctx context.Context, o options, out io.Writer, c *cluster.Cluster, bin, ns string, atRisk []string, minReady map[string]int, dir string, say func(string, ...any)) error {
	kube := c.Client
	var ctl *controllerRun
	var baseline int64
	if o.drainer == drainerOurs {
		var err error
		if ctl, err = startController(ctx, c, o, bin, ns, dir); err != nil {
			return err
		}
		defer ctl.stop()
		baseline = ctl.cnt.total.Load()
	}
	total := len(minReady) * o.replicas
	reclaimed := map[string]bool{}
	for _, n := range atRisk {
		reclaimed[n] = true
	}

	// The notices, written as the agent writes them.
	signalAt := time.Now()
	deadline := signalAt.Add(o.notice).Truncate(time.Second)
	notices := signals.Writer{Kube: kube, Clock: clock.RealClock{}}
	for _, name := range atRisk {
		if _, err := notices.Interruption(ctx, name, deadline, "InstanceActionTerminate", "soak"); err != nil {
			return err
		}
	}
	say("interruption notices on all %d nodes, deadline %s (%.0fs)", len(atRisk), deadline.UTC().Format("15:04:05"), time.Until(deadline).Seconds())

	refusals := &retryCounter{}
	var drains sync.WaitGroup
	if o.drainer == drainerKubectl {
		for _, name := range atRisk {
			cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), "--kubeconfig", c.Kubeconfig, "drain", name,
				"--ignore-daemonsets", "--delete-emptydir-data", "--force", fmt.Sprintf("--timeout=%ds", int(time.Until(deadline).Seconds())))
			cmd.Stdout, cmd.Stderr = refusals, refusals
			if err := cmd.Start(); err != nil {
				return err
			}
			drains.Go(func() { _ = cmd.Wait() })
		}
		defer drains.Wait()
	}
	replacementsDone := joinReplacements(ctx, kube, len(atRisk), o.replacementEvery)

	// Sample until the deadline, then once at it.
	type sample struct {
		elsewhere, onReclaimed, readyOnReclaimed int
		elsewhereByApp                           map[string]int
	}
	take := func() (sample, map[string]int, error) {
		pods, err := kube.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return sample{}, nil, err
		}
		sm := sample{elsewhereByApp: map[string]int{}}
		ready := map[string]int{}
		for i := range pods.Items {
			p := &pods.Items[i]
			if _, reservation := p.Labels[reserve.LabelNode]; reservation {
				continue
			}
			isReady := cluster.PodIsReady(p)
			if isReady {
				ready[p.Labels["app"]]++
			}
			switch {
			case reclaimed[p.Spec.NodeName]:
				sm.onReclaimed++
				if isReady {
					sm.readyOnReclaimed++
				}
			case isReady:
				sm.elsewhere++
				sm.elsewhereByApp[p.Labels["app"]]++
			}
		}
		return sm, ready, nil
	}
	// The controller deletes what is left deadlineSafety before the
	// termination time; breaches are counted before that moment and in
	// the last stretch apart (for kubectl drain too, to compare).
	forceAt := deadline.Add(-config.Default().Rebalancer.DeadlineSafety.Duration)
	early, late, samples := newTally(), newTally(), 0
	allElsewhereAt := time.Duration(-1)
	var peakRSS int64
	lastReport := time.Now()
	for time.Now().Before(deadline) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if ctl != nil {
			if ctl.cmd.ProcessState != nil {
				return fmt.Errorf("the controller exited")
			}
			rss, _ := rssKB(ctl.cmd.Process.Pid)
			peakRSS = max(peakRSS, rss)
		}
		sm, ready, err := take()
		if err == nil {
			samples++
			if time.Now().Before(forceAt) {
				early.add(ready, minReady)
			} else {
				late.add(ready, minReady)
			}
			if sm.elsewhere == total && allElsewhereAt < 0 {
				allElsewhereAt = time.Since(signalAt)
			}
			if time.Since(lastReport) > 15*time.Second {
				lastReport = time.Now()
				say("%3.0fs: %d of %d pods Ready elsewhere, %d still on the reclaimed nodes", time.Since(signalAt).Seconds(), sm.elsewhere, total, sm.onReclaimed)
			}
		}
		select {
		case <-ctx.Done():
		case <-time.After(min(500*time.Millisecond, time.Until(deadline))):
		}
	}
	at, _, err := take()
	if err != nil {
		return err
	}
	<-replacementsDone
	belowBudget := 0
	for name, want := range minReady {
		if at.elsewhereByApp[name] < want {
			belowBudget++
		}
	}
	// Deletions at the deadline happen at it: let the controller finish
	// them before reading its counters.
	var metrics map[string]string
	if ctl != nil {
		_ = cluster.WaitFor(ctx, 15*time.Second, func(ctx context.Context) (bool, error) {
			sm, _, err := take()
			return err == nil && sm.onReclaimed == 0, nil
		})
		if metrics, err = scrape(ctl.metricsPort); err != nil {
			return err
		}
	}

	fmt.Fprintf(out, "\n=== Interruption storm: %s ===\n", o.drainer)
	fmt.Fprintf(out, "nodes                       %d in 2 pools, notices at once, deadline %.0fs after; a replacement every %s (all %d joined by %.0fs)\n",
		len(atRisk), deadline.Sub(signalAt).Seconds(), o.replacementEvery, len(atRisk), (time.Duration(len(atRisk)) * o.replacementEvery).Seconds())
	fmt.Fprintf(out, "pods                        %d of %d Deployments, every one with a PDB\n", total, len(minReady))
	fmt.Fprintf(out, "Ready elsewhere             %d of %d (%.1f%%) at the deadline\n", at.elsewhere, total, 100*float64(at.elsewhere)/float64(total))
	if allElsewhereAt >= 0 {
		fmt.Fprintf(out, "all Ready elsewhere         %.0fs after the notices\n", allElsewhereAt.Seconds())
	} else {
		fmt.Fprintf(out, "all Ready elsewhere         not before the deadline\n")
	}
	fmt.Fprintf(out, "on the reclaimed nodes      %d at the deadline (%d of them Ready): lost when the nodes go\n", at.onReclaimed, at.readyOnReclaimed)
	fmt.Fprintf(out, "Deployments below budget    %d of %d once the reclaimed nodes' pods are gone\n", belowBudget, len(minReady))
	fmt.Fprintf(out, "budget breaches             %d before the controller's deadline (%.0fs, the termination time less deadlineSafety; lowest headroom %d), %d after it (lowest headroom %d); %d samples\n",
		early.breaches, forceAt.Sub(signalAt).Seconds(), early.lowest, late.breaches, late.lowest, samples)
	if ctl != nil {
		requests := ctl.cnt.total.Load() - baseline
		fmt.Fprintf(out, "evictions / surges          %s / %s (abandoned %s)\n", metrics[`spot_rebalancer_evictions_total{result="evicted"}`],
			metrics[`spot_rebalancer_surges_total{result="completed"}`], metrics[`spot_rebalancer_surges_total{result="abandoned"}`])
		fmt.Fprintf(out, "deleted at the deadline     %s\n", metrics[`spot_rebalancer_evictions_total{result="deleted"}`])
		fmt.Fprintf(out, "controller                  peak RSS %d MiB; %d requests to the deadline and after (%.1f per pod), --kube-api-qps %.0f, --kube-api-burst %d\n",
			peakRSS/1024, requests, float64(requests)/float64(total), o.qps, o.burst)
	} else {
		fmt.Fprintf(out, "evictions refused           %d (kubectl drain: \"will retry\")\n", refusals.count.Load())
	}
	if o.drainer == drainerOurs && early.breaches > 0 {
		return fmt.Errorf("%d samples below a budget before the controller's deadline", early.breaches)
	}
	return nil
}

// retryCounter counts kubectl drain's refused evictions in its output.
type retryCounter struct{ count atomic.Int64 }

func (r *retryCounter) Write(p []byte) (int, error) {
	r.count.Add(int64(strings.Count(string(p), "will retry after")))
	return len(p), nil
}
