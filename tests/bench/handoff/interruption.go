package main

import (
	"context"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"
	"time"

	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// The interruption scenario: the Karpenter scenario's workloads plus a
// one-pod StatefulSet under a PDB, on one node of a Karpenter NodePool with
// no room elsewhere; the node gets a two-minute interruption notice.
// Karpenter launches only for Pending pods. The drainers: spot-rebalancer
// alone (its defaults; Karpenter's interruption handling off), Karpenter's
// own handling (its interruption controller deletes the NodeClaim at the
// notice; here the bench does, as the kwok provider has no queue), both at
// once, and kubectl drain at the notice (what AWS Node Termination Handler
// runs). At the termination time the bench removes every pod still on the
// node at once, as the instance's termination does.
const (
	drainerOurs          = "spot-rebalancer"
	drainerKarpenterOwn  = "Karpenter's own handling"
	drainerBoth          = "spot-rebalancer + Karpenter's handling"
	interruptionNoticeIn = 2 * time.Minute
)

var interruptionDrainers = []string{drainerOurs, drainerKarpenterOwn, drainerBoth, drainerKubectl}

var interruptionWorkloads = append(append([]workload{}, workloads...),
	workload{name: "db", replicas: 1, statefulSet: true, pdb: &policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1))}})

func interruptionScenario(ctx context.Context, c *cluster.Cluster, o options, i int, drainer string) (Result, error) {
	res := Result{Drainer: drainer, Scenario: scenarioInterruption}
	pool := fmt.Sprintf("handoff-itn-%d", i)
	ns := pool
	cleanup, err := karpenterPool(ctx, c, pool, ns, i, o.launchDelay)
	if err != nil {
		return res, err
	}
	defer cleanup()
	ws := interruptionWorkloads
	selector, tolerations := cluster.PoolScheduling(pool)
	pdbHealthy, err := settle(ctx, c, ns, placement{selector: selector, tolerations: tolerations, cpu: "300m"}, ws, o.startup, 2*time.Minute+o.launchDelay)
	if err != nil {
		return res, err
	}
	nodes, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cluster.PoolTaint + "=" + pool})
	if err != nil {
		return res, err
	}
	if len(nodes.Items) != 1 {
		return res, fmt.Errorf("karpenter launched %d nodes for the workloads, want 1", len(nodes.Items))
	}
	atRisk := nodes.Items[0].Name
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return res, err
	}
	claims, err := dyn.Resource(cluster.NodeClaimGVR()).List(ctx, metav1.ListOptions{LabelSelector: "karpenter.sh/nodepool=" + pool})
	if err != nil || len(claims.Items) != 1 {
		return res, fmt.Errorf("NodeClaims of pool %s: %d (%v), want 1", pool, len(claims.Items), err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	d := &drain{out: &lockedWriter{w: &strings.Builder{}}}
	if drainer == drainerOurs || drainer == drainerBoth {
		if d.metrics, err = startController(runCtx, c, i, ns, false); err != nil {
			return res, err
		}
	}
	d.signalAt = time.Now()
	if err := notice(ctx, c, atRisk, d.signalAt.Add(interruptionNoticeIn)); err != nil {
		return res, err
	}
	switch drainer {
	case drainerKarpenterOwn, drainerBoth:
		if err := dyn.Resource(cluster.NodeClaimGVR()).Delete(ctx, claims.Items[0].GetName(), metav1.DeleteOptions{}); err != nil {
			return res, fmt.Errorf("deleting the NodeClaim as Karpenter's interruption handling does: %w", err)
		}
	case drainerKubectl:
		if err := d.kubectlDrain(runCtx, c, atRisk); err != nil {
			return res, err
		}
	}
	var launched time.Duration
	reclaimed := false
	samples, drainedAt, err := d.sample(ctx, c, ns, atRisk, ws, 5*time.Minute, func(ctx context.Context, now time.Duration) bool {
		if !reclaimed && now >= interruptionNoticeIn {
			// The termination time: EC2 takes the instance, and every pod
			// still on it stops at once, whoever drains.
			reclaimed = true
			if err := reclaim(ctx, c, ns, atRisk); err != nil {
				fmt.Println("bench-handoff: reclaiming the instance:", err)
			}
		}
		if launched == 0 {
			list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cluster.PoolTaint + "=" + pool})
			if err == nil && len(list.Items) > 1 || err == nil && len(list.Items) == 1 && list.Items[0].Name != atRisk {
				launched = now
			}
		}
		return true
	})
	if err != nil {
		return res, err
	}
	cancel()
	d.wait()
	res.SignalToDrained = drainedAt.Seconds()
	if launched > 0 {
		res.FirstLaunch = new(launched.Seconds())
	}
	res.figures(samples, ws, pdbHealthy, d.metrics, d.output())
	return res, nil
}

// reclaim removes every pod of namespace still on node, at once (grace
// period 0), as the instance's termination does.
func reclaim(ctx context.Context, c *cluster.Cluster, ns, node string) error {
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{FieldSelector: "spec.nodeName=" + node})
	if err != nil {
		return err
	}
	for _, p := range pods.Items {
		err := c.Client.CoreV1().Pods(ns).Delete(ctx, p.Name, metav1.DeleteOptions{GracePeriodSeconds: new(int64(0))})
		if err != nil && !apierrors.IsNotFound(err) {
			return err
		}
	}
	return nil
}

// notice writes an interruption notice on node as the agent does: the
// termination time, then the condition.
func notice(ctx context.Context, c *cluster.Cluster, node string, at time.Time) error {
	_, err := signals.Writer{Kube: c.Client, Clock: clock.RealClock{}}.Interruption(ctx, node, at, "InstanceActionTerminate", "bench-handoff")
	return err
}

func reportInterruption(out io.Writer, o options, of []Result) {
	fmt.Fprintf(out, "\nInterruption notice (%s): Karpenter's new nodes Ready %s after launch; pods take %s to start; 300m CPU each; no room elsewhere.\n\n",
		interruptionNoticeIn, o.launchDelay, o.startup)
	writeWorkloads(out, of)
	tw := tabwriter.NewWriter(out, 0, 4, 2, ' ', 0)
	fmt.Fprintln(out)
	fmt.Fprintln(tw, "DRAINER\tPOD-S PENDING (DISPLACED)\tPOD-S PENDING (SURGE)\tFIRST LAUNCH\tEVICTIONS\tSURGES\tRESERVATIONS\tDELETED AT LATEST START\tNODE EMPTY")
	for _, r := range of {
		launch := "-"
		if r.FirstLaunch != nil {
			launch = fmt.Sprintf("%.1fs", *r.FirstLaunch)
		}
		fmt.Fprintf(tw, "%s\t%.1f\t%.1f\t%s\t%d\t%d\t%d\t%d\t%.1fs\n", r.Drainer, r.PendingPodSeconds, r.SurgePendingSeconds, launch,
			r.Evictions, r.Surges, r.Reservations, r.DeletedAtDeadline, r.SignalToDrained)
	}
	tw.Flush()
}
