package e2e

import (
	"context"
	"fmt"
	"regexp"
	"slices"
	"strconv"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// The stories of the controller's decisions that touch the API: deadlines
// from untrusted times, the implicit budget over time, a signal that goes
// mid-drain, surges at a deadline and surges whose node is gone.

// podTemplate is a pod of app pinned to the test's nodes, tolerating Spot,
// 500m CPU, Ready startup after it is bound.
func podTemplate(t *testing.T, app, startup string, annotations map[string]string) corev1.PodTemplateSpec {
	a := map[string]string{cluster.PodReadyDelayAnnotation: startup}
	for k, v := range annotations {
		a[k] = v
	}
	return corev1.PodTemplateSpec{
		ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": app}, Annotations: a},
		Spec: corev1.PodSpec{
			NodeSelector:                  map[string]string{cluster.OwnerLabel: cluster.Owner(t)},
			Tolerations:                   []corev1.Toleration{{Key: spotTaint.Key, Operator: corev1.TolerationOpExists}},
			TerminationGracePeriodSeconds: ptr.To[int64](30),
			Containers: []corev1.Container{{Name: app, Image: "registry.example/" + app + ":1",
				Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}}}},
		},
	}
}

// deployment creates a Deployment and waits until its replicas are Ready.
func deployment(t *testing.T, c *cluster.Cluster, ns, app string, replicas int32, startup string, annotations map[string]string) {
	t.Helper()
	_, err := c.Client.AppsV1().Deployments(ns).Create(cluster.Context(t), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}},
			Template: podTemplate(t, app, startup, annotations)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	waitReady(t, c, ns, app, int(replicas))
}

func waitReady(t *testing.T, c *cluster.Cluster, ns, app string, n int) {
	t.Helper()
	c.WaitFor(t, 90*time.Second, fmt.Sprintf("%d %s pods Ready", n, app), func(ctx context.Context) (bool, error) {
		pods, err := c.ReadyPods(ctx, ns, "app="+app)
		return len(pods) == n, err
	})
}

// budget creates a PDB over app.
func budget(t *testing.T, c *cluster.Cluster, ns, app string, spec policyv1.PodDisruptionBudgetSpec) {
	t.Helper()
	spec.Selector = &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}
	if _, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Create(cluster.Context(t), &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns}, Spec: spec}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
}

// podsOn returns app's pods bound to node, terminating ones included.
func podsOn(ctx context.Context, c *cluster.Cluster, ns, app, node string) ([]corev1.Pod, error) {
	pods, err := podsOf(ctx, c, ns, app)
	var out []corev1.Pod
	for _, p := range pods {
		if p.Spec.NodeName == node {
			out = append(out, p)
		}
	}
	return out, err
}

func waitState(t *testing.T, c *cluster.Cluster, node string, state signals.State, reason signals.Reason, within time.Duration) *corev1.Node {
	t.Helper()
	var got *corev1.Node
	c.WaitFor(t, within, fmt.Sprintf("node %s %s (%s)", node, state, reason), func(ctx context.Context) (bool, error) {
		n, s, err := nodeState(ctx, c, node)
		got = n
		return err == nil && s == state && (reason == "" || signals.ReasonOf(n.Annotations) == reason), err
	})
	return got
}

var graceInEvent = regexp.MustCompile(`deleted with a (\d+)s grace period`)

// deadlineGrace returns the grace period the DeletedAtDeadline Event of
// the pod reports, or -1.
func deadlineGrace(ctx context.Context, c *cluster.Cluster, ns, pod string) (int, error) {
	list, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + pod + ",reason=DeletedAtDeadline"})
	if err != nil || len(list.Items) == 0 {
		return -1, err
	}
	m := graceInEvent.FindStringSubmatch(list.Items[0].Message)
	if m == nil {
		return -1, fmt.Errorf("event %q names no grace period", list.Items[0].Message)
	}
	return strconv.Atoi(m[1])
}

// AWS Node Termination Handler's interruption taint carries no time: the
// node is still reclaimed two minutes after the notice, so the pod a PDB
// holds (a StatefulSet with maxUnavailable 0) is deleted at its latest
// start, its own 30 s grace period before that time, with the seconds left
// as its grace period.
func TestInterruptionWithoutATimeIsForcedTwoMinutesAfterItsSignal(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "itn-a", Taints: []corev1.Taint{spotTaint}})
	_, err := c.Client.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{
		ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "db"}},
			Template: podTemplate(t, "db", "0s", nil)},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	budget(t, c, ns, "db", policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(0))})
	waitReady(t, c, ns, "db", 1)
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	startRebalancer(t, c, nil)

	// The taint was added 80 s ago and seen then (a controller that
	// restarts finds when it first saw it): the instance goes 40 s from
	// now, the pod 30 s before (its grace period).
	added := time.Now().Add(-80 * time.Second).Truncate(time.Second)
	deadline := added.Add(signals.NoticePeriod - 30*time.Second)
	n, err := c.Client.CoreV1().Nodes().Get(ctx, risky.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Spec.Taints = append(n.Spec.Taints, corev1.Taint{Key: signals.TaintNTHInterruption, Effect: corev1.TaintEffectNoSchedule,
		TimeAdded: ptr.To(metav1.NewTime(added))})
	n.Annotations[signals.AnnotationInterruptionSeen] = added.UTC().Format(time.RFC3339)
	if _, err := c.Client.CoreV1().Nodes().Update(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	var deletedAt time.Time
	c.WaitFor(t, 60*time.Second, "the StatefulSet's pod on the node deleted at its latest start", func(ctx context.Context) (bool, error) {
		pod, err := c.Client.CoreV1().Pods(ns).Get(ctx, "db-0", metav1.GetOptions{})
		if err == nil && pod.Spec.NodeName == risky.Name && pod.DeletionTimestamp == nil {
			return false, nil
		}
		if err != nil && !apierrors.IsNotFound(err) {
			return false, err
		}
		deletedAt = time.Now()
		return true, nil
	})
	if deletedAt.Before(deadline.Add(-time.Second)) {
		t.Errorf("the pod was deleted at %s, before its latest start %s", deletedAt.Format(time.RFC3339Nano), deadline.Format(time.RFC3339))
	}
	// With the pod gone the node is drained before its own deadline.
	node := waitState(t, c, risky.Name, signals.StateDrained, "", 30*time.Second)
	t.Logf("deleted %s after its latest start; node %s: %s", deletedAt.Sub(deadline).Round(time.Millisecond), node.Name, node.Annotations[signals.AnnotationStateReason])
	c.WaitFor(t, 10*time.Second, "the DeletedAtDeadline Event with its grace period", func(ctx context.Context) (bool, error) {
		grace, err := deadlineGrace(ctx, c, ns, "db-0")
		if grace >= 0 && (grace < 27 || grace > 30) {
			t.Errorf("deleted with a %ds grace period, want its own 30 s (all that was left)", grace)
		}
		return grace >= 0, err
	})
}

// A termination time left from long ago (1970 here; a leftover annotation
// or a delayed message in life) does not send the node to its deadline:
// the evictable pods leave, the one that cannot be evicted waits for a
// deadline two minutes after the notice.
func TestAStaleTerminationTimeForcesNothingAtOnce(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "itn-b", Taints: []corev1.Taint{spotTaint}})
	deployment(t, c, ns, "keep", 1, "0s", map[string]string{signals.AnnotationDoNotEvict: "true"})
	deployment(t, c, ns, "web", 2, "0s", nil)
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	startRebalancer(t, c, nil)

	annotate(t, c, risky.Name, signals.AnnotationTerminationTime, ptr.To("1970-01-01T00:00:00Z"))
	n, err := c.Client.CoreV1().Nodes().Get(ctx, risky.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	noticed := metav1.Now()
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionInterruption, Status: corev1.ConditionTrue,
		Reason: "InstanceActionTerminate", Message: "e2e", LastTransitionTime: noticed, LastHeartbeatTime: noticed})
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	waitState(t, c, risky.Name, signals.StateDraining, signals.ReasonWaitingForDeadline, 30*time.Second)
	keep, err := podsOn(ctx, c, ns, "keep", risky.Name)
	if err != nil {
		t.Fatal(err)
	}
	if len(keep) != 1 || keep[0].DeletionTimestamp != nil {
		t.Fatalf("the pod that cannot be evicted was removed at once: %d on the node", len(keep))
	}
	web, err := podsOn(ctx, c, ns, "web", risky.Name)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range web {
		if p.DeletionTimestamp == nil {
			t.Errorf("web pod %s still on the node while it waits for the deadline", p.Name)
		}
	}
	// The plan the controller acts on, read from the same cluster.
	snap := c.Snapshot(t)
	cfg := config.Default().Rebalancer
	plan, err := planner.New(snap, planner.Options{Config: &cfg, Among: []string{risky.Name}})
	if err != nil {
		t.Fatal(err)
	}
	np := plan.Nodes[0]
	want := noticed.Truncate(time.Second).Add(signals.NoticePeriod - cfg.DeadlineSafety.Duration)
	if np.Deadline == nil || np.Deadline.Sub(want).Abs() > time.Second {
		t.Errorf("deadline %v, want the notice's time plus 2m less 15s, %s (note %q)", np.Deadline, want, np.SignalNote)
	}
	t.Logf("note: %s", np.SignalNote)
}

// A workload without a PDB keeps the implicit budget (25% of 4: one pod)
// over time: while an evicted pod's replacement starts, the next waits.
func TestImplicitBudgetHoldsWhileReplacementsStart(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "ib-a", Taints: []corev1.Taint{spotTaint}})
	deployment(t, c, ns, "worker", 4, "3s", nil)
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	s := sampleReady(t, c, ns, "worker")
	startRebalancer(t, c, func(r *config.Rebalancer) { r.Replacement.Mode = config.ReplacementCapacity })
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	waitDrained(t, c, risky.Name)
	waitReady(t, c, ns, "worker", 4)
	minReady, _, samples := s.read()
	t.Logf("%d samples: lowest Ready %d of 4", samples, minReady)
	if minReady < 3 {
		t.Errorf("Ready workers fell to %d: the implicit budget (25%% of 4, one pod down at a time) was broken", minReady)
	}
}

// The signal goes away while the node drains: the drain finishes and the
// node ends drained, never stranded cordoned in draining.
func TestSignalWithdrawnMidDrainFinishesTheDrain(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "wd-a", Taints: []corev1.Taint{spotTaint}})
	deployment(t, c, ns, "web", 4, "2s", nil)
	budget(t, c, ns, "web", policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(3))})
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	w := watch(t, c, ns)
	startRebalancer(t, c, func(r *config.Rebalancer) { r.Replacement.Mode = config.ReplacementCapacity })
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "the first eviction", func(context.Context) (bool, error) {
		_, first, _ := w.read()
		return !first.IsZero(), nil
	})
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, nil)
	n := waitState(t, c, risky.Name, signals.StateDrained, signals.ReasonDrained, 90*time.Second)
	if !n.Spec.Unschedulable {
		t.Error("the drained node is schedulable")
	}
	if minReady, _, _ := w.read(); minReady < 3 {
		t.Errorf("Ready replicas fell to %d, below the PDB's minAvailable 3", minReady)
	}
}

// surgeUnderWay puts web (2 pods that take startup to be Ready) on a Spot
// node of pool, with room on an on-demand node, starts a surge of it off
// that node for a rebalance recommendation (mode capacity), and returns the
// node once the surge's two new pods are scheduled elsewhere.
func surgeUnderWay(t *testing.T, c *cluster.Cluster, ns, pool, startup string) *corev1.Node {
	t.Helper()
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: pool, Taints: []corev1.Taint{spotTaint}})
	deployment(t, c, ns, "web", 2, startup, nil)
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	startRebalancer(t, c, func(r *config.Rebalancer) {
		withSurge(r)
		r.Replacement.Mode = config.ReplacementCapacity
	})
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "the surge's two new pods elsewhere", func(ctx context.Context) (bool, error) {
		pods, err := podsOf(ctx, c, ns, "web")
		elsewhere := 0
		for _, p := range pods {
			if p.Spec.NodeName != risky.Name && p.Spec.NodeName != "" {
				elsewhere++
			}
		}
		return elsewhere == 2, err
	})
	return risky
}

// checkKeptReady waits until app is down to n pods that are not
// terminating and checks that they are all Ready: a surge that ends must
// leave the ReplicaSet controller a surplus it can remove without
// removing a Ready pod while it keeps one still starting (it ranks by
// readiness first; among pods that are all Ready it picks any).
func checkKeptReady(t *testing.T, c *cluster.Cluster, ns, app string, n int) {
	t.Helper()
	var kept []corev1.Pod
	c.WaitFor(t, 30*time.Second, fmt.Sprintf("%d %s pods left", n, app), func(ctx context.Context) (bool, error) {
		pods, err := podsOf(ctx, c, ns, app)
		kept = kept[:0]
		for _, p := range pods {
			if p.DeletionTimestamp == nil {
				kept = append(kept, p)
			}
		}
		return len(kept) == n, err
	})
	for _, p := range kept {
		if !snapshot.PodReady(&p) {
			t.Errorf("pod %s was kept while still starting: a Ready pod was removed in its place", p.Name)
			dumpNamespace(t, c, ns)
			return
		}
	}
}

// An interruption notice comes while a surge's new pods still start: at
// the deadline the node's pods are deleted and the surge goes on, so the
// new pods on the healthy node stay while they start; once they are Ready
// it scales back, and the ReplicaSet controller removes the surplus (the
// replacements of the deleted pods, or any of them once all are Ready),
// never a Ready pod in place of one still starting.
func TestSurgeAtTheDeadlineKeepsTheNewPods(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := surgeUnderWay(t, c, ns, "sd-a", "20s")
	interruptionNotice(t, c, risky.Name, 20*time.Second)
	// Its pods (30 s grace periods) are past their latest start at once:
	// deleted, the node is drained (by the deadline or before it).
	waitState(t, c, risky.Name, signals.StateDrained, "", 40*time.Second)
	c.WaitFor(t, 45*time.Second, "the Deployment back at 2 with its new pods", func(ctx context.Context) (bool, error) {
		left, err := surgeLeftovers(ctx, c, c.RecordsNamespace(t), ns, "web", 2)
		if err != nil || left != "" {
			return false, err
		}
		old, err := podsOn(ctx, c, ns, "web", risky.Name)
		for _, p := range old {
			if p.DeletionTimestamp == nil {
				return false, err
			}
		}
		return true, err
	})
	checkKeptReady(t, c, ns, "web", 2)
	waitReady(t, c, ns, "web", 2)
}

// The at-risk node is deleted mid-surge (the instance went): its pods are
// deleted, the surge finishes once its new pods are Ready, and the
// Deployment is back at its own count with Ready pods only.
func TestSurgeOffADeletedNodeIsUndone(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	risky := surgeUnderWay(t, c, ns, "so-a", "15s")
	if err := c.Client.CoreV1().Nodes().Delete(ctx, risky.Name, metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 45*time.Second, "the surge finished: the Deployment at 2, no record", func(ctx context.Context) (bool, error) {
		record, d, err := surgeRecord(ctx, c, c.RecordsNamespace(t), ns, "web")
		if err != nil {
			return false, err
		}
		return record == nil && ptr.Deref(d.Spec.Replicas, 0) == 2, nil
	})
	checkKeptReady(t, c, ns, "web", 2)
	waitReady(t, c, ns, "web", 2)
}

// dumpNamespace logs the namespace's pods and Events, for a failure's
// story: who deleted what, and when.
func dumpNamespace(t *testing.T, c *cluster.Cluster, ns string) {
	t.Helper()
	ctx := cluster.Context(t)
	pods, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("listing pods: %v", err)
		return
	}
	for _, p := range pods.Items {
		t.Logf("pod %s uid=%s node=%q phase=%s ready=%t created=%s deleting=%v cost=%q", p.Name, p.UID, p.Spec.NodeName, p.Status.Phase,
			snapshot.PodReady(&p), p.CreationTimestamp.Format(time.RFC3339), p.DeletionTimestamp, p.Annotations[signals.AnnotationPodDeletionCost])
	}
	events, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Logf("listing events: %v", err)
		return
	}
	slices.SortFunc(events.Items, func(a, b corev1.Event) int { return a.LastTimestamp.Compare(b.LastTimestamp.Time) })
	for _, e := range events.Items {
		t.Logf("event %s %s/%s %s: %s", e.LastTimestamp.Format(time.RFC3339), e.InvolvedObject.Kind, e.InvolvedObject.Name, e.Reason, e.Message)
	}
}

// The Deployment is deleted mid-surge: its record (a Lease in the
// controller's namespace, which no owner reference ties to the Deployment)
// is removed, and the node's drain ends.
func TestSurgeRecordOfADeletedDeploymentIsRemoved(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	records := c.RecordsNamespace(t)
	risky := surgeUnderWay(t, c, ns, "sr-a", "30s")
	record, _, err := surgeRecord(ctx, c, records, ns, "web")
	if err != nil || record == nil {
		t.Fatalf("no surge record under way (err %v)", err)
	}
	if err := c.Client.AppsV1().Deployments(ns).Delete(ctx, "web", metav1.DeleteOptions{PropagationPolicy: ptr.To(metav1.DeletePropagationForeground)}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 60*time.Second, "the record of the deleted Deployment removed", func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoordinationV1().Leases(records).Get(ctx, record.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return true, nil
		}
		return false, err
	})
	waitState(t, c, risky.Name, signals.StateDrained, "", 60*time.Second)
}
