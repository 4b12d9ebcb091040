package e2e

import (
	"context"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/executor"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// Interruption notices on a Karpenter NodePool (the real Karpenter, its
// kwok provider): Karpenter launches only for Pending pods, so the
// controller asks at the notice (reservations for what cannot surge, the
// surges' own Pending pods), moves each pod once its room is there, and
// steps aside when Karpenter itself drains the node.

// poolStatefulSet runs a StatefulSet of one 300m pod on the test's
// Karpenter pool, Ready startup after it is bound.
func poolStatefulSet(t *testing.T, c *cluster.Cluster, ns, pool, app, startup string) {
	t.Helper()
	selector, tolerations := cluster.PoolScheduling(pool)
	labels := map[string]string{"app": app}
	_, err := c.Client.AppsV1().StatefulSets(ns).Create(cluster.Context(t), &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: labels}, ServiceName: app,
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{cluster.PodReadyDelayAnnotation: startup}},
				Spec: corev1.PodSpec{NodeSelector: selector, Tolerations: tolerations, TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{Name: app, Image: "registry.example/" + app + ":1",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("300m")}}}}},
			}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// sinceNotice records, every 50 ms, when things first happened after the
// notice: the first reservation of the node, the first pod created by a
// surge, the first new node of the pool, when it was Ready, and where the
// reservations ran.
type sinceNotice struct {
	mu                                sync.Mutex
	reserved, surged, launched, ready time.Time
	reservedOn                        map[string]bool
	dbLeft, dbReady                   time.Time
	dbSeen                            string
}

func watchNotice(t *testing.T, c *cluster.Cluster, ns, pool, records, atRisk string) *sinceNotice {
	w := &sinceNotice{reservedOn: map[string]bool{}}
	everyTick(t, func(ctx context.Context) {
		now := time.Now()
		res, err := c.Client.CoreV1().Pods(records).List(ctx, metav1.ListOptions{LabelSelector: reserve.LabelNode + "=" + reserve.NodeLabel(atRisk)})
		if err != nil {
			return
		}
		pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
		if err != nil {
			return
		}
		nodes, err := poolNodes(ctx, c, pool)
		if err != nil {
			return
		}
		w.mu.Lock()
		defer w.mu.Unlock()
		if len(res.Items) > 0 && w.reserved.IsZero() {
			w.reserved = now
		}
		for _, r := range res.Items {
			if reserve.Running(&r) {
				w.reservedOn[r.Spec.NodeName] = true
			}
		}
		for _, p := range pods.Items {
			switch {
			case p.Labels["app"] != "db" && p.Spec.NodeName != atRisk && w.surged.IsZero():
				w.surged = now
			case p.Labels["app"] == "db" && p.Spec.NodeName == atRisk && p.DeletionTimestamp == nil:
				w.dbSeen = p.Name
			case p.Labels["app"] == "db" && p.Spec.NodeName != atRisk && p.Spec.NodeName != "" && w.dbReady.IsZero() && podReady(&p):
				w.dbReady = now
			}
		}
		if w.dbSeen != "" && w.dbLeft.IsZero() && !slices.ContainsFunc(pods.Items, func(p corev1.Pod) bool {
			return p.Labels["app"] == "db" && p.Spec.NodeName == atRisk && p.DeletionTimestamp == nil
		}) {
			w.dbLeft = now
		}
		for _, n := range nodes {
			if n.Name == atRisk {
				continue
			}
			if w.launched.IsZero() {
				w.launched = now
			}
			if w.ready.IsZero() && cluster.NodeIsReady(&n) {
				w.ready = now
			}
		}
	})
	return w
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// An interruption notice on a Karpenter node with no room elsewhere: web
// (6, PDB maxUnavailable 1) and solo (1) surge into the capacity their
// Pending pods make Karpenter launch; the StatefulSet's pod gets a
// reservation (kept off the reclaimed instance type in its zone) and moves
// once it runs. Karpenter is asked within seconds, no Deployment drops
// below its replicas, the node is empty before the termination time with
// nothing deleted at a deadline, and load balancers were told to leave it.
func TestKarpenterInterruptionAsksAtTheNoticeAndLosesNothing(t *testing.T) {
	c := cluster.Get(t)
	pool := cluster.Owner(t)
	c.KarpenterPool(t, pool, karpenterLaunchDelay)
	ns := c.Namespace(t, nil)
	poolDeployment(t, c, ns, pool, "web", 6, "2s")
	poolDeployment(t, c, ns, pool, "solo", 1, "2s")
	poolStatefulSet(t, c, ns, pool, "db", "2s")
	budget(t, c, ns, "web", policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1))})
	budget(t, c, ns, "db", policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1))})
	waitReady(t, c, ns, "web", 6)
	waitReady(t, c, ns, "solo", 1)
	waitReady(t, c, ns, "db", 1)
	c.WaitFor(t, 30*time.Second, "the PDBs to see their pods healthy", func(ctx context.Context) (bool, error) {
		for _, name := range []string{"web", "db"} {
			p, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, name, metav1.GetOptions{})
			if err != nil || p.Status.DisruptionsAllowed != 1 {
				return false, err
			}
		}
		return true, nil
	})
	nodes, err := poolNodes(cluster.Context(t), c, pool)
	if err != nil || len(nodes) != 1 {
		t.Fatalf("Karpenter launched %d nodes (%v) for the workloads, want 1", len(nodes), err)
	}
	risky := nodes[0]
	records := c.RecordsNamespace(t)
	web, solo := sampleReady(t, c, ns, "web"), sampleReady(t, c, ns, "solo")
	metrics := startRebalancer(t, c, func(r *config.Rebalancer) { r.Surge.Enabled = ptr.To(true) })
	notice := watchNotice(t, c, ns, pool, records, risky.Name)

	noticed := time.Now()
	termination := interruptionNotice(t, c, risky.Name, 2*time.Minute)
	// The plan as the controller makes it now, for the log.
	cfg := config.Default().Rebalancer
	if plan, err := planner.New(c.Snapshot(t), planner.Options{Config: &cfg, Among: []string{risky.Name}}); err == nil {
		for _, p := range plan.Nodes[0].Pods {
			t.Logf("plan at the notice: %s %s: %s", p.Name, p.Action, strings.Join(p.Reasons, "; "))
		}
	}
	c.WaitFor(t, 30*time.Second, "the node to drain, labelled for load balancers to leave it", func(ctx context.Context) (bool, error) {
		n, state, err := nodeState(ctx, c, risky.Name)
		return err == nil && state == signals.StateDraining && n.Labels[corev1.LabelNodeExcludeBalancers] == "true", err
	})
	c.WaitFor(t, 10*time.Second, "the StatefulSet pod's reservation, kept off the reclaimed offering", func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().Pods(records).List(ctx, metav1.ListOptions{LabelSelector: reserve.LabelNode + "=" + reserve.NodeLabel(risky.Name)})
		if err != nil || len(list.Items) == 0 {
			return false, err
		}
		for _, r := range list.Items {
			if r.Annotations[reserve.AnnotationPod] != ns+"/db-0" {
				t.Errorf("reservation %s for %s: only the StatefulSet's pod needs one (the Deployments surge)", r.Name, r.Annotations[reserve.AnnotationPod])
			}
			want := reserve.Offering{InstanceType: risky.Labels[corev1.LabelInstanceTypeStable], Zone: risky.Labels[corev1.LabelTopologyZone]}
			if r.Annotations[reserve.AnnotationAvoids] != want.String() {
				t.Errorf("reservation %s avoids %q, want %q", r.Name, r.Annotations[reserve.AnnotationAvoids], want)
			}
		}
		return true, nil
	})
	c.WaitFor(t, 110*time.Second, "the node to be drained (or retired and gone)", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, risky.Name)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return state == signals.StateDrained || state == signals.StateRetired, err
	})
	drained := time.Now()
	waitReady(t, c, ns, "web", 6)
	waitReady(t, c, ns, "solo", 1)
	waitReady(t, c, ns, "db", 1)

	notice.mu.Lock()
	defer notice.mu.Unlock()
	t.Logf("after the notice: reservation %s, surge pod %s, Karpenter node %s, Ready %s; db left %s, Ready again %s; drained %s (termination at %s)",
		notice.reserved.Sub(noticed), notice.surged.Sub(noticed), notice.launched.Sub(noticed), notice.ready.Sub(noticed),
		notice.dbLeft.Sub(noticed), notice.dbReady.Sub(noticed), drained.Sub(noticed), termination.Sub(noticed))
	if notice.reserved.IsZero() || notice.reserved.Sub(noticed) > 5*time.Second || notice.surged.IsZero() || notice.surged.Sub(noticed) > 5*time.Second {
		t.Errorf("Karpenter was not asked within 5 s of the notice: reservation after %s, first surge pod after %s",
			notice.reserved.Sub(noticed), notice.surged.Sub(noticed))
	}
	if notice.launched.IsZero() {
		t.Errorf("Karpenter launched no node")
	}
	if !drained.Before(termination) {
		t.Errorf("drained at %s, after the termination time %s", drained, termination)
	}
	if n := testutil.ToFloat64(metrics.Evictions.WithLabelValues(string(executor.Deleted))); n != 0 {
		t.Errorf("%v pods deleted at a deadline, want none: every pod had room before it", n)
	}
	if notice.dbLeft.IsZero() || notice.ready.IsZero() || notice.dbLeft.Before(notice.ready) {
		t.Errorf("the StatefulSet's pod left at %s, before the new node was Ready (%s): it must wait for its room", notice.dbLeft, notice.ready)
	}
	for node := range notice.reservedOn {
		n, err := c.Client.CoreV1().Nodes().Get(cluster.Context(t), node, metav1.GetOptions{})
		if err != nil {
			continue
		}
		if n.Labels[corev1.LabelTopologyZone] == risky.Labels[corev1.LabelTopologyZone] && n.Labels[corev1.LabelInstanceTypeStable] == risky.Labels[corev1.LabelInstanceTypeStable] {
			t.Errorf("the reservation ran on %s, of the reclaimed offering %s in %s", node, risky.Labels[corev1.LabelInstanceTypeStable], risky.Labels[corev1.LabelTopologyZone])
		}
	}
	web.expect(t, 6, 12)
	solo.expect(t, 1, 2)
}

// Karpenter's own interruption handling deletes the node's NodeClaim at
// the notice: the controller leaves the node to Karpenter (its state says
// so, an Event and a metric), asks for nothing and evicts nothing;
// Karpenter's drain moves the pods within their budget.
func TestKarpenterDrainingTheNodeIsLeftToIt(t *testing.T) {
	c := cluster.Get(t)
	pool, ns, risky := karpenterStory(t, c)
	web := sampleReady(t, c, ns, "web")
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		t.Fatal(err)
	}
	metrics := startRebalancer(t, c, nil)
	// As Karpenter's interruption controller does: the NodeClaim goes at
	// the notice. The notice is written once Karpenter holds the node, so
	// that no reservation is made in between.
	claims, err := dyn.Resource(cluster.NodeClaimGVR()).List(cluster.Context(t), metav1.ListOptions{LabelSelector: "karpenter.sh/nodepool=" + pool})
	if err != nil || len(claims.Items) != 1 {
		t.Fatalf("NodeClaims of the pool: %d (%v), want 1", len(claims.Items), err)
	}
	if err := dyn.Resource(cluster.NodeClaimGVR()).Delete(cluster.Context(t), claims.Items[0].GetName(), metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 30*time.Second, "Karpenter to hold the node", func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, risky.Name, metav1.GetOptions{})
		return err == nil && planner.DrainedBy(n) == planner.DrainerKarpenter, err
	})
	interruptionNotice(t, c, risky.Name, 2*time.Minute)
	c.WaitFor(t, 30*time.Second, "the node recorded as drained by Karpenter (or gone)", func(ctx context.Context) (bool, error) {
		n, _, err := nodeState(ctx, c, risky.Name)
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return err == nil && signals.ReasonOf(n.Annotations) == signals.ReasonDrainedByKarpenter, err
	})
	c.WaitFor(t, 120*time.Second, "Karpenter to move every pod and remove the node", func(ctx context.Context) (bool, error) {
		if _, err := c.Client.CoreV1().Nodes().Get(ctx, risky.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			return false, client404(err)
		}
		ready, err := c.ReadyPods(ctx, ns, "app=web")
		return len(ready) == 6, err
	})
	if n := testutil.ToFloat64(metrics.Reservations.WithLabelValues("created")); n != 0 {
		t.Errorf("%v reservations created for a node Karpenter drains, want none", n)
	}
	if n := testutil.ToFloat64(metrics.Evictions.WithLabelValues(string(executor.Evicted))); n != 0 {
		t.Errorf("%v evictions by the controller beside Karpenter's drain, want none", n)
	}
	if n := testutil.ToFloat64(metrics.LeftToOthers.WithLabelValues("karpenter")); n != 1 {
		t.Errorf("drains left to Karpenter: %v, want 1", n)
	}
	events, err := c.Client.CoreV1().Events("").List(cluster.Context(t), metav1.ListOptions{FieldSelector: "involvedObject.name=" + risky.Name + ",reason=DrainedByKarpenter"})
	if err != nil || len(events.Items) == 0 {
		t.Errorf("no DrainedByKarpenter Event on the node (%v)", err)
	}
	minWeb, _, samples := web.read()
	t.Logf("%d samples: lowest Ready web %d of 6 under Karpenter's drain", samples, minWeb)
	if minWeb < 5 {
		t.Errorf("Ready web pods fell to %d, below the PDB's 5", minWeb)
	}
}

// client404 is err unless it is a not-found.
func client404(err error) error {
	if apierrors.IsNotFound(err) {
		return nil
	}
	return err
}

// At an interruption notice with no room anywhere, each pod that cannot
// move is deleted early enough to get its own grace period before the
// termination time: the one that needs 30 s goes about 15 s before the
// one that needs 5 s (which goes at the deadline, 15 s before).
func TestEachPodGetsItsGraceBeforeTheTerminationTime(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "grace-a", Taints: []corev1.Taint{spotTaint}})
	keep := map[string]string{signals.AnnotationDoNotEvict: "true"}
	deployment(t, c, ns, "slow", 1, "0s", keep)
	deployment(t, c, ns, "quick", 1, "0s", keep)
	quick, err := c.Client.AppsV1().Deployments(ns).Get(ctx, "quick", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	// A new grace period is a rollout: wait for it to settle on the node.
	quick.Spec.Template.Spec.TerminationGracePeriodSeconds = ptr.To[int64](5)
	if _, err := c.Client.AppsV1().Deployments(ns).Update(ctx, quick, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 60*time.Second, "quick's pod with a 5 s grace period", func(ctx context.Context) (bool, error) {
		pods, err := c.ReadyPods(ctx, ns, "app=quick")
		return err == nil && len(pods) == 1 && ptr.Deref(pods[0].Spec.TerminationGracePeriodSeconds, 0) == 5 && pods[0].DeletionTimestamp == nil, err
	})
	names := map[string]string{}
	for _, app := range []string{"slow", "quick"} {
		pods, err := podsOn(ctx, c, ns, app, risky.Name)
		if err != nil || len(pods) != 1 {
			t.Fatalf("%s pods on the node: %d (%v), want 1", app, len(pods), err)
		}
		names[app] = pods[0].Name
	}
	startRebalancer(t, c, nil)
	termination := interruptionNotice(t, c, risky.Name, 50*time.Second)

	deleted := map[string]time.Time{}
	c.WaitFor(t, 70*time.Second, "both pods deleted", func(ctx context.Context) (bool, error) {
		for _, app := range []string{"slow", "quick"} {
			if _, ok := deleted[app]; ok {
				continue
			}
			pods, err := podsOn(ctx, c, ns, app, risky.Name)
			if err != nil {
				return false, err
			}
			if len(pods) == 0 || pods[0].DeletionTimestamp != nil {
				deleted[app] = time.Now()
			}
		}
		return len(deleted) == 2, nil
	})
	t.Logf("slow deleted %s before the termination time, quick %s before", termination.Sub(deleted["slow"]), termination.Sub(deleted["quick"]))
	if gap := deleted["quick"].Sub(deleted["slow"]); gap < 10*time.Second {
		t.Errorf("slow (30 s grace) was deleted only %s before quick (5 s grace), want about 15 s", gap)
	}
	// slow: its own 30 s, all that is left when it goes; quick: its own 5 s.
	for app, want := range map[string]int{"slow": 30, "quick": 5} {
		grace := -1
		c.WaitFor(t, 10*time.Second, "the DeletedAtDeadline Event of "+names[app], func(ctx context.Context) (bool, error) {
			g, err := deadlineGrace(ctx, c, ns, names[app])
			grace = g
			return g >= 0, err
		})
		if grace < want-3 || grace > want {
			t.Errorf("%s deleted with a %ds grace period, want %d (its own, all the time left)", app, grace, want)
		}
	}
}
