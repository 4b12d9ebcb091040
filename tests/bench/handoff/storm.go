package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"slices"
	"text/tabwriter"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// The storm: --storm-nodes nodes of a Karpenter NodePool, each full (the
// Deployments app-0..app-N-1, 4 pods of 900m each, PDB maxUnavailable 1:
// Karpenter packs four to a 4-CPU node), get interruption notices at the
// same moment; capacity comes only from the real Karpenter, which launches
// for Pending pods. Run by spot-rebalancer alone and by Karpenter's own
// handling (every NodeClaim deleted at the notice), in one cluster one
// after the other. The figure: the pods Ready on nodes that are not going,
// at the termination time.
const scenarioStorm = "karpenter-storm"

var stormDrainers = []string{drainerOurs, drainerKarpenterOwn}

// stormPods is each Deployment's replicas, and the CPU each pod asks for.
const (
	stormPods = 4
	stormCPU  = "900m"
)

// StormResult is one storm run's figures.
type StormResult struct {
	Drainer string `json:"drainer"`
	Nodes   int    `json:"nodes"`
	Pods    int    `json:"pods"`
	// ReadyElsewhereAtTermination counts the pods Ready on nodes not
	// at risk at the termination time (or when everything was whole
	// before it).
	ReadyElsewhereAtTermination int `json:"readyElsewhereAtTermination"`
	// LowestHeadroom is the least, over Deployments and samples, of Ready
	// pods minus what the PDB needs (negative: below the budget).
	LowestHeadroom int `json:"lowestHeadroom"`
	// LowestReady is the least Ready count of any Deployment.
	LowestReady       int      `json:"lowestReady"`
	PendingPodSeconds float64  `json:"pendingPodSeconds"`
	FirstLaunch       *float64 `json:"firstLaunchSeconds,omitempty"`
	// WholeAfter is when every Deployment was whole again off the
	// at-risk nodes (nil: not within the run).
	WholeAfter *float64 `json:"wholeAfterSeconds,omitempty"`
	// DeletedAtDeadline are the pods the controller deleted at their
	// latest start.
	DeletedAtDeadline int `json:"deletedAtDeadline"`
}

func stormScenario(ctx context.Context, c *cluster.Cluster, o options, i int, drainer string) (StormResult, error) {
	res := StormResult{Drainer: drainer, Nodes: o.stormNodes, Pods: o.stormNodes * stormPods, LowestHeadroom: 1 << 30, LowestReady: 1 << 30}
	pool := fmt.Sprintf("handoff-storm-%d", i)
	ns := pool
	cleanup, err := karpenterPool(ctx, c, pool, ns, i, o.launchDelay)
	if err != nil {
		return res, err
	}
	defer cleanup()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		return res, err
	}
	selector, tolerations := cluster.PoolScheduling(pool)
	for k := range o.stormNodes {
		name := fmt.Sprintf("app-%d", k)
		labels := map[string]string{"app": name}
		if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
			ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](stormPods), Selector: &metav1.LabelSelector{MatchLabels: labels},
				Template: corev1.PodTemplateSpec{
					ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{cluster.PodReadyDelayAnnotation: o.startup.String()}},
					Spec: corev1.PodSpec{NodeSelector: selector, Tolerations: tolerations, TerminationGracePeriodSeconds: ptr.To[int64](0),
						Containers: []corev1.Container{{Name: "app", Image: "registry.example/app:1",
							Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse(stormCPU)}}}}},
				}},
		}, metav1.CreateOptions{}); err != nil {
			return res, err
		}
		if _, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: name},
			Spec: policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: labels}, MaxUnavailable: ptr.To(intstr.FromInt32(1))}},
			metav1.CreateOptions{}); err != nil {
			return res, err
		}
	}
	if err := cluster.WaitFor(ctx, 3*time.Minute+o.launchDelay, func(ctx context.Context) (bool, error) {
		pods, err := c.ReadyPods(ctx, ns, "")
		return len(pods) == res.Pods, err
	}); err != nil {
		return res, fmt.Errorf("waiting for the storm's pods: %w", err)
	}
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cluster.PoolTaint + "=" + pool})
	if err != nil {
		return res, err
	}
	if len(nodes.Items) != o.stormNodes {
		return res, fmt.Errorf("karpenter launched %d nodes for the storm, want %d", len(nodes.Items), o.stormNodes)
	}
	atRisk := sets.New[string]()
	for _, n := range nodes.Items {
		atRisk.Insert(n.Name)
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return res, err
	}
	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := &drain{}
	if drainer == drainerOurs {
		if d.metrics, err = startController(runCtx, c, i, ns, false); err != nil {
			return res, err
		}
	}
	start := time.Now()
	termination := start.Add(interruptionNoticeIn)
	for _, n := range sets.List(atRisk) {
		if err := notice(ctx, c, n, termination); err != nil {
			return res, err
		}
	}
	if drainer == drainerKarpenterOwn {
		claims, err := dyn.Resource(cluster.NodeClaimGVR()).List(ctx, metav1.ListOptions{LabelSelector: "karpenter.sh/nodepool=" + pool})
		if err != nil {
			return res, err
		}
		for _, cl := range claims.Items {
			if err := dyn.Resource(cluster.NodeClaimGVR()).Delete(ctx, cl.GetName(), metav1.DeleteOptions{}); err != nil {
				return res, err
			}
		}
	}
	var last time.Duration
	elsewhere := 0
	err = cluster.WaitFor(ctx, interruptionNoticeIn+time.Minute, func(ctx context.Context) (bool, error) {
		now := time.Since(start)
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cluster.PoolTaint + "=" + pool})
		if err != nil {
			return false, nil
		}
		if res.FirstLaunch == nil && slices.ContainsFunc(nodes.Items, func(n corev1.Node) bool { return !atRisk.Has(n.Name) }) {
			res.FirstLaunch = new(now.Seconds())
		}
		ready, pending, here := map[string]int{}, 0, 0
		for _, p := range pods.Items {
			if reserve.Is(&p) {
				continue
			}
			switch {
			case p.DeletionTimestamp == nil && cluster.PodIsReady(&p):
				ready[p.Labels["app"]]++
				if !atRisk.Has(p.Spec.NodeName) {
					here++
				}
			case p.Spec.NodeName == "" && p.DeletionTimestamp == nil:
				pending++
			}
		}
		for k := range o.stormNodes {
			r := ready[fmt.Sprintf("app-%d", k)]
			res.LowestReady = min(res.LowestReady, r)
			res.LowestHeadroom = min(res.LowestHeadroom, r-(stormPods-1))
		}
		// A surge's Pending pods are new ones beside pods that still serve:
		// only those beyond the Ready count's shortfall are displaced.
		short := 0
		for k := range o.stormNodes {
			short += max(stormPods-ready[fmt.Sprintf("app-%d", k)], 0)
		}
		res.PendingPodSeconds += float64(min(pending, short)) * (now - last).Seconds()
		last = now
		if now <= interruptionNoticeIn {
			elsewhere = here
		}
		if here == res.Pods && res.WholeAfter == nil {
			res.WholeAfter = new(now.Seconds())
		}
		return res.WholeAfter != nil || now > interruptionNoticeIn, nil
	})
	if err != nil {
		return res, fmt.Errorf("the storm did not end: %w", err)
	}
	res.ReadyElsewhereAtTermination = elsewhere
	if d.metrics != nil {
		res.DeletedAtDeadline = int(testutil.ToFloat64(d.metrics.Evictions.WithLabelValues("deleted")))
	}
	return res, nil
}

func reportStorm(out io.Writer, o options, results []StormResult) {
	if len(results) == 0 {
		return
	}
	fmt.Fprintf(out, "\nInterruption storm: %d Karpenter nodes with %d pods (4 x 900m per node, PDB maxUnavailable 1 each) get a %s notice at once; new nodes Ready %s after launch.\n\n",
		results[0].Nodes, results[0].Pods, interruptionNoticeIn, o.launchDelay)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "DRAINER\tREADY ELSEWHERE AT TERMINATION\tLOWEST READY (OF 4)\tLOWEST HEADROOM\tPOD-S PENDING\tFIRST LAUNCH\tALL WHOLE ELSEWHERE\tDELETED AT LATEST START")
	for _, r := range results {
		launch, whole := "-", "not before the end"
		if r.FirstLaunch != nil {
			launch = fmt.Sprintf("%.1fs", *r.FirstLaunch)
		}
		if r.WholeAfter != nil {
			whole = fmt.Sprintf("%.1fs", *r.WholeAfter)
		}
		fmt.Fprintf(tw, "%s\t%d of %d (%.1f%%)\t%d\t%d\t%.1f\t%s\t%s\t%d\n", r.Drainer, r.ReadyElsewhereAtTermination, r.Pods,
			100*float64(r.ReadyElsewhereAtTermination)/float64(r.Pods), r.LowestReady, r.LowestHeadroom, r.PendingPodSeconds, launch, whole, r.DeletedAtDeadline)
	}
	tw.Flush()
}

// runStorm runs the storm once per drainer in one cluster.
func runStorm(ctx context.Context, o options, out io.Writer) error {
	if o.stormNodes < 1 {
		return fmt.Errorf("--storm-nodes %d: want at least 1", o.stormNodes)
	}
	fmt.Fprintln(out, "starting a local cluster")
	c, err := cluster.Start("bench")
	if err != nil {
		return err
	}
	defer c.Stop()
	var results []StormResult
	for i, d := range stormDrainers {
		fmt.Fprintf(out, "run %d: storm of %d nodes, %s\n", i+1, o.stormNodes, d)
		res, err := stormScenario(ctx, c, o, i+1, d)
		if err != nil {
			return fmt.Errorf("run %d (storm, %s): %w", i+1, d, err)
		}
		results = append(results, res)
	}
	reportStorm(out, o, results)
	if o.jsonOut == "" {
		return nil
	}
	data, _ := json.MarshalIndent(results, "", "  ")
	return os.WriteFile(o.jsonOut, data, 0o644)
}
