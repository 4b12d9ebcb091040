package main

import (
	"context"
	"fmt"
	"time"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// The Karpenter scenario: the same three Deployments (300m CPU each, so
// that all eleven fit one node of the pool's instance type) run on one
// node of a Karpenter NodePool (the real Karpenter, its kwok provider),
// with no room anywhere else; the node gets a rebalance recommendation.
// Karpenter launches a node only for Pending pods, and a new node becomes
// Ready --launch-delay after launch. The drainers: spot-rebalancer with
// its defaults (reservations ask Karpenter for the node before any pod
// moves, surge on, the drained node retired through its NodeClaim) and
// kubectl drain (what AWS Node Termination Handler runs on a rebalance
// recommendation: the evicted pods are what makes Karpenter launch).
const drainerDefaults = "spot-rebalancer, defaults"

func karpenterScenario(ctx context.Context, c *cluster.Cluster, o options, i int, drainer string) (Result, error) {
	res := Result{Drainer: drainer, Scenario: scenarioKarpenter}
	pool := fmt.Sprintf("handoff-karpenter-%d", i)
	ns := pool
	cleanup, err := karpenterPool(ctx, c, pool, ns, i, o.launchDelay)
	if err != nil {
		return res, err
	}
	defer cleanup()
	selector, tolerations := cluster.PoolScheduling(pool)
	pdbHealthy, err := settle(ctx, c, ns, placement{selector: selector, tolerations: tolerations, cpu: "300m"}, workloads, o.startup, 2*time.Minute+o.launchDelay)
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

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	d, err := begin(runCtx, c, i, ns, drainer, atRisk)
	if err != nil {
		return res, err
	}
	// The run is over once the node is gone; kubectl drain gives nothing
	// back: the node stays cordoned until the instance is reclaimed (or
	// consolidation removes it).
	var goneAt time.Duration
	samples, drainedAt, err := d.sample(ctx, c, ns, atRisk, workloads, 5*time.Minute, func(ctx context.Context, now time.Duration) bool {
		if goneAt == 0 {
			if _, err := c.Client.CoreV1().Nodes().Get(ctx, atRisk, metav1.GetOptions{}); apierrors.IsNotFound(err) {
				goneAt = now
			}
		}
		return goneAt > 0 || drainer == drainerKubectl
	})
	if err != nil {
		return res, err
	}
	cancel()
	d.wait()
	res.SignalToDrained = drainedAt.Seconds()
	if goneAt > 0 {
		res.SignalToRetired = new(goneAt.Seconds())
	}
	res.figures(samples, workloads, pdbHealthy, d.metrics, d.output())
	return res, nil
}

// karpenterPool creates the run's Karpenter NodePool pool; cleanup deletes
// namespace ns first (the workloads' PDBs would hold Karpenter's drain of
// the pool's nodes), then the pool.
func karpenterPool(ctx context.Context, c *cluster.Cluster, pool, ns string, i int, launchDelay time.Duration) (cleanup func(), err error) {
	remove, err := c.CreateKarpenterPool(ctx, pool, fmt.Sprintf("bench-%d", i), launchDelay)
	if err != nil {
		return nil, err
	}
	return func() {
		ctx := context.Background()
		_ = c.Client.CoreV1().Namespaces().Delete(ctx, ns, metav1.DeleteOptions{})
		err := cluster.WaitFor(ctx, 3*time.Minute, func(ctx context.Context) (bool, error) {
			_, err := c.Client.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
			return apierrors.IsNotFound(err), nil
		})
		if err == nil {
			err = remove()
		}
		if err != nil {
			fmt.Println("bench-handoff: cleaning up:", err)
		}
	}, nil
}
