package e2e

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
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

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg/asgtest"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster/inproc"
)

// The capacity loop with the real Karpenter (its kwok provider): a
// rebalance recommendation on a Karpenter node with no room anywhere else.
// Karpenter launches nothing for a node at risk and reacts only to Pending
// pods; the reservations are those.

// karpenterLaunchDelay is how long a Karpenter node takes from launch to
// Ready in these tests (the hand-off benchmark uses a realistic one).
const karpenterLaunchDelay = 5 * time.Second

// poolDeployment runs replicas pods of 400m CPU on the test's Karpenter
// pool, Ready startup after they are bound.
func poolDeployment(t *testing.T, c *cluster.Cluster, ns, pool, app string, replicas int32, startup string) {
	t.Helper()
	selector, tolerations := cluster.PoolScheduling(pool)
	labels := map[string]string{"app": app}
	_, err := c.Client.AppsV1().Deployments(ns).Create(cluster.Context(t), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels, Annotations: map[string]string{cluster.PodReadyDelayAnnotation: startup}},
				Spec: corev1.PodSpec{NodeSelector: selector, Tolerations: tolerations, TerminationGracePeriodSeconds: ptr.To[int64](5),
					Containers: []corev1.Container{{Name: app, Image: "registry.example/" + app + ":1",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("400m")}}}}},
			}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

// poolNodes lists the nodes Karpenter launched for pool.
func poolNodes(ctx context.Context, c *cluster.Cluster, pool string) ([]corev1.Node, error) {
	list, err := c.Client.CoreV1().Nodes().List(ctx, metav1.ListOptions{LabelSelector: cluster.PoolTaint + "=" + pool})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// reservationsLeft counts the reservation pods in namespace.
func reservationsLeft(ctx context.Context, c *cluster.Cluster, namespace string) (int, error) {
	list, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: reserve.LabelNode})
	if err != nil {
		return 0, err
	}
	return len(list.Items), nil
}

// karpenterStory sets up the done-when scenario of the capacity loop: a
// Karpenter Spot node running a 6-replica Deployment under a PDB
// maxUnavailable 1 and a 1-replica Deployment, and no other node in the
// pool. It returns the pool, the namespace and the node.
func karpenterStory(t *testing.T, c *cluster.Cluster) (pool, ns string, node corev1.Node) {
	t.Helper()
	pool = cluster.Owner(t)
	c.KarpenterPool(t, pool, karpenterLaunchDelay)
	ns = c.Namespace(t, nil)
	poolDeployment(t, c, ns, pool, "web", 6, "2s")
	poolDeployment(t, c, ns, pool, "solo", 1, "2s")
	budget(t, c, ns, "web", policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1))})
	waitReady(t, c, ns, "web", 6)
	waitReady(t, c, ns, "solo", 1)
	c.WaitFor(t, 30*time.Second, "the PDB to see 6 healthy pods", func(ctx context.Context) (bool, error) {
		p, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && p.Status.CurrentHealthy == 6 && p.Status.DisruptionsAllowed == 1, err
	})
	nodes, err := poolNodes(cluster.Context(t), c, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 {
		t.Fatalf("Karpenter launched %d nodes for 7 pods of 400m, want 1", len(nodes))
	}
	return pool, ns, nodes[0]
}

// storyWatch samples the story every 50 ms: when a pod first left the
// at-risk node (its deletion began, or it was gone), when each node of the pool was first
// seen Ready, and the pods the scheduler found no node for.
type storyWatch struct {
	mu            sync.Mutex
	firstLeft     time.Time
	onNode        map[string]bool // pods seen live on the at-risk node
	readySince    map[string]time.Time
	unschedulable map[string]bool
}

func watchStory(t *testing.T, c *cluster.Cluster, ns, pool, atRisk string) *storyWatch {
	w := &storyWatch{onNode: map[string]bool{}, readySince: map[string]time.Time{}, unschedulable: map[string]bool{}}
	everyTick(t, func(ctx context.Context) {
		now := time.Now()
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
		here := map[string]bool{}
		for _, p := range pods.Items {
			if p.Spec.NodeName == atRisk {
				here[p.Name] = p.DeletionTimestamp == nil
				if p.DeletionTimestamp == nil {
					w.onNode[p.Name] = true
				}
			}
			for _, cond := range p.Status.Conditions {
				if cond.Type == corev1.PodScheduled && cond.Status == corev1.ConditionFalse && cond.Reason == corev1.PodReasonUnschedulable {
					w.unschedulable[p.Name] = true
				}
			}
		}
		// A pod left when it is seen terminating, or gone between two
		// samples: kwok removes a deleted pod at once, often before the
		// next sample could see it terminating.
		for name := range w.onNode {
			if !here[name] && w.firstLeft.IsZero() {
				w.firstLeft = now
			}
		}
		for _, n := range nodes {
			if _, seen := w.readySince[n.Name]; !seen && cluster.NodeIsReady(&n) {
				w.readySince[n.Name] = now
			}
		}
	})
	return w
}

func (w *storyWatch) read() (firstLeft time.Time, readySince map[string]time.Time, unschedulable []string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	for name := range w.unschedulable {
		unschedulable = append(unschedulable, name)
	}
	slices.Sort(unschedulable)
	return w.firstLeft, maps.Clone(w.readySince), unschedulable
}

// A rebalance recommendation on a Karpenter node, defaults but for the
// surge: reservations make Karpenter launch a node; nothing leaves the
// at-risk node before that node is Ready; Ready web pods never fall below
// the 6 replicas (surge) or the PDB's 5 (surge off); no pod is Pending for
// want of a node; no reservation is left.
func TestKarpenterLaunchesTheReplacementForReservations(t *testing.T) {
	for _, surge := range []bool{true, false} {
		t.Run(fmt.Sprintf("surge=%v", surge), func(t *testing.T) {
			c := cluster.Get(t)
			pool, ns, risky := karpenterStory(t, c)
			records := c.RecordsNamespace(t)
			web := sampleReady(t, c, ns, "web")
			story := watchStory(t, c, ns, pool, risky.Name)
			metrics := startRebalancer(t, c, func(r *config.Rebalancer) { r.Surge.Enabled = ptr.To(surge) })

			annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
			c.WaitFor(t, 30*time.Second, "reservations for the 7 pods", func(ctx context.Context) (bool, error) {
				n, err := reservationsLeft(ctx, c, records)
				return n == 7, err
			})
			var replacement string
			c.WaitFor(t, 60*time.Second, "Karpenter to launch a node for the reservations", func(ctx context.Context) (bool, error) {
				nodes, err := poolNodes(ctx, c, pool)
				for _, n := range nodes {
					if n.Name != risky.Name {
						replacement = n.Name
					}
				}
				return replacement != "", err
			})
			c.WaitFor(t, 120*time.Second, "the node to be drained (or retired and gone already)", func(ctx context.Context) (bool, error) {
				_, state, err := nodeState(ctx, c, risky.Name)
				if apierrors.IsNotFound(err) {
					return true, nil
				}
				return state == signals.StateDrained || state == signals.StateRetired, err
			})
			c.WaitFor(t, 60*time.Second, "every pod Ready on the replacement", func(ctx context.Context) (bool, error) {
				for app, n := range map[string]int{"web": 6, "solo": 1} {
					pods, err := c.ReadyPods(ctx, ns, "app="+app)
					if err != nil || len(pods) != n {
						return false, err
					}
					for _, p := range pods {
						if p.Spec.NodeName != replacement {
							return false, nil
						}
					}
				}
				return true, nil
			})
			c.WaitFor(t, 30*time.Second, "no reservation left", func(ctx context.Context) (bool, error) {
				n, err := reservationsLeft(ctx, c, records)
				return n == 0, err
			})
			// Given back: its NodeClaim deleted, Karpenter removes the node.
			c.WaitFor(t, 60*time.Second, "Karpenter to remove the retired node", func(ctx context.Context) (bool, error) {
				_, err := c.Client.CoreV1().Nodes().Get(ctx, risky.Name, metav1.GetOptions{})
				if apierrors.IsNotFound(err) {
					return true, nil
				}
				return false, err
			})
			if n := testutil.ToFloat64(metrics.Transitions.WithLabelValues(string(signals.StateRetired))); n != 1 {
				t.Errorf("transitions to retired = %v, want 1", n)
			}
			if nodes, err := poolNodes(cluster.Context(t), c, pool); err != nil || len(nodes) != 1 || nodes[0].Name != replacement {
				t.Errorf("pool nodes after the hand-off: %d (%v), want only the replacement %s", len(nodes), err, replacement)
			}

			firstLeft, readySince, unschedulable := story.read()
			minWeb, _, samples := web.read()
			t.Logf("%d samples: lowest Ready web %d of 6; replacement %s Ready at %s, first pod left at %s",
				samples, minWeb, replacement, readySince[replacement].Format(time.StampMilli), firstLeft.Format(time.StampMilli))
			if firstLeft.IsZero() {
				t.Errorf("no pod was seen leaving the at-risk node, yet they all run on the replacement")
			} else if ready, ok := readySince[replacement]; !ok || firstLeft.Before(ready) {
				t.Errorf("a pod left the at-risk node at %s, before the replacement was Ready (%s)", firstLeft.Format(time.StampMilli), ready.Format(time.StampMilli))
			}
			want := 5 // the PDB
			if surge {
				want = 6 // the surge keeps every replica
			}
			if minWeb < want {
				t.Errorf("lowest Ready web pods %d, want at least %d", minWeb, want)
			}
			// The reservations were Pending for want of a node: that is their
			// job. No workload pod may be.
			if len(unschedulable) > 0 {
				t.Errorf("pods Pending for want of a node: %v", unschedulable)
			}
		})
	}
}

// The same story with provision none: nothing asks Karpenter for a node, so
// none comes, and the node waits as before reservations existed, then is
// blocked with its pods in place. This is what the reservations buy.
func TestKarpenterWithoutReservationsLaunchesNothing(t *testing.T) {
	c := cluster.Get(t)
	pool, ns, risky := karpenterStory(t, c)
	startRebalancer(t, c, func(r *config.Rebalancer) {
		r.Replacement.Provision = config.ProvisionNone
		r.Replacement.Timeout = metav1.Duration{Duration: 15 * time.Second}
	})
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 60*time.Second, "the node to be blocked after the 15s timeout", func(ctx context.Context) (bool, error) {
		n, state, err := nodeState(ctx, c, risky.Name)
		return state == signals.StateBlocked && signals.ReasonOf(n.Annotations) == signals.ReasonNoReplacement, err
	})
	nodes, err := poolNodes(cluster.Context(t), c, pool)
	if err != nil {
		t.Fatal(err)
	}
	if len(nodes) != 1 {
		t.Errorf("pool has %d nodes, want only the at-risk one: nothing asked Karpenter for another", len(nodes))
	}
	for app, n := range map[string]int{"web": 6, "solo": 1} {
		pods, err := c.ReadyPods(cluster.Context(t), ns, "app="+app)
		if err != nil {
			t.Fatal(err)
		}
		if len(pods) != n {
			t.Errorf("%d %s pods Ready, want %d left in place", len(pods), app, n)
		}
	}
	if n, err := reservationsLeft(cluster.Context(t), c, c.RecordsNamespace(t)); err != nil || n != 0 {
		t.Errorf("reservations: %d (%v), want none with provision none", n, err)
	}
}

// A signal withdrawn while the node waits: its reservations go and the node
// is schedulable again. No autoscaler here, so they stay Pending until then.
func TestReservationsGoWhenTheSignalGoes(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	records := c.RecordsNamespace(t)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-a", Taints: []corev1.Taint{spotTaint}})
	deployWeb(t, c, ns, 3, 2)
	startRebalancer(t, c, nil)

	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "a reservation per web pod, Pending", func(ctx context.Context) (bool, error) {
		list, err := c.Client.CoreV1().Pods(records).List(ctx, metav1.ListOptions{LabelSelector: reserve.LabelNode + "=" + reserve.NodeLabel(risky.Name)})
		if err != nil || len(list.Items) != 3 {
			return false, err
		}
		for _, p := range list.Items {
			if p.Spec.NodeName != "" || p.Annotations[reserve.AnnotationNode] != risky.Name {
				return false, fmt.Errorf("reservation %s is bound to %q or names %q", p.Name, p.Spec.NodeName, p.Annotations[reserve.AnnotationNode])
			}
		}
		return true, nil
	})
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, nil)
	c.WaitFor(t, 30*time.Second, "the reservations to go and the node to be schedulable again", func(ctx context.Context) (bool, error) {
		n, err := reservationsLeft(ctx, c, records)
		if err != nil || n != 0 {
			return false, err
		}
		node, state, err := nodeState(ctx, c, risky.Name)
		return err == nil && state == "" && !node.Spec.Unschedulable && !hasTaint(node, signals.TaintDraining), err
	})
}

// provision asg against a server speaking the Auto Scaling Query protocol:
// the at-risk node's group is raised by one, once, across a controller
// restart; the group's new instance joins as a node of the pool; after the
// drain the old instance is terminated with a decrement.
func TestASGRaisedOnceAndTheDrainedInstanceTerminated(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	pool := "asg-" + cluster.Owner(t)[:8]
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: pool, InstanceID: "i-0risky", Taints: []corev1.Taint{spotTaint}})
	fake := asgtest.New(map[string]*asgtest.Group{pool: {Desired: 1, Max: 3, Instances: []string{"i-0risky"}}})
	api := fake.Client(t)
	deployWeb(t, c, ns, 2, 1)
	withASG := func(r *config.Rebalancer) { r.Replacement.Provision = config.ProvisionASG }
	_, stop := startStoppableRebalancer(t, c, withASG, inproc.WithASG(api))

	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "the group raised to 2 and the raise recorded on the node", func(ctx context.Context) (bool, error) {
		n, _, err := nodeState(ctx, c, risky.Name)
		if err != nil {
			return false, err
		}
		rec, ok, err := asg.RecordOf(n.Annotations)
		return ok && rec == (asg.Record{Group: pool, From: 1, To: 2}) && fake.Group(pool).Desired == 2, err
	})
	// A restart while the node waits never raises the group again.
	stop()
	again, _ := startStoppableRebalancer(t, c, withASG, inproc.WithASG(api))
	c.WaitFor(t, 30*time.Second, "the new rebalancer to look at the waiting node again", func(ctx context.Context) (bool, error) {
		return again.Settled()
	})
	// The group launches its instance: a node of the pool.
	fake.AddInstance(pool, "i-0new")
	c.AddNode(t, cluster.Node{Spot: true, Pool: pool, InstanceID: "i-0new", Taints: []corev1.Taint{spotTaint}})
	c.WaitFor(t, 60*time.Second, "the at-risk node retired", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, risky.Name)
		return state == signals.StateRetired, err
	})
	calls := fake.Calls()
	raises := 0
	for _, call := range calls {
		if strings.HasPrefix(call, "SetDesiredCapacity") {
			raises++
		}
	}
	if raises != 1 {
		t.Errorf("SetDesiredCapacity called %d times, want once: %v", raises, calls)
	}
	if !slices.Contains(calls, "TerminateInstanceInAutoScalingGroup i-0risky decrement=true") {
		t.Errorf("the drained instance was not terminated with a decrement: %v", calls)
	}
	if g := fake.Group(pool); g.Desired != 1 || !slices.Equal(g.Instances, []string{"i-0new"}) {
		t.Errorf("group after the hand-off: desired %d, instances %v; want 1, [i-0new]", g.Desired, g.Instances)
	}
	waitReady(t, c, ns, "web", 2)
}
