package e2e

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/testutil"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/executor"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster/inproc"
)

// rebalancers numbers rebalancers: controller names are unique per process.
var rebalancers atomic.Int64

var spotTaint = corev1.Taint{Key: cluster.CapacityTypeLabel, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}

// startRebalancer runs the rebalance controller until the test ends.
func startRebalancer(t *testing.T, c *cluster.Cluster, mutate func(*config.Rebalancer)) *executor.Metrics {
	t.Helper()
	r, _ := startStoppableRebalancer(t, c, mutate)
	return r.Metrics
}

// startStoppableRebalancer also returns a function that stops it, as a
// killed process stops: at once, mid-step.
func startStoppableRebalancer(t *testing.T, c *cluster.Cluster, mutate func(*config.Rebalancer), opts ...inproc.Option) (*inproc.Rebalancer, func()) {
	t.Helper()
	cfg := config.Default().Rebalancer
	// These stories are about eviction waves; the surge tests turn surges
	// on again.
	cfg.Surge.Enabled = ptr.To(false)
	if mutate != nil {
		mutate(&cfg)
	}
	ctx := logr.NewContext(cluster.Context(t), cluster.Logger())
	r, err := inproc.Start(ctx, c, cfg, fmt.Sprintf("rebalancer-%s-%d", cluster.Owner(t), rebalancers.Add(1)), c.RecordsNamespace(t), opts...)
	if err != nil {
		t.Fatal(err)
	}
	stop := func() {
		if err := r.Stop(); err != nil {
			t.Errorf("manager: %v", err)
		}
	}
	t.Cleanup(stop)
	return r, stop
}

// deployWeb creates a Deployment pinned to the test's nodes, tolerating
// Spot, and a PDB with minAvailable, and waits until all replicas run.
func deployWeb(t *testing.T, c *cluster.Cluster, ns string, replicas, minAvailable int32) {
	t.Helper()
	ctx := cluster.Context(t)
	app := map[string]string{"app": "web"}
	_, err := c.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: app},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: app}, Spec: corev1.PodSpec{
				NodeSelector: map[string]string{cluster.OwnerLabel: cluster.Owner(t)},
				Tolerations:  []corev1.Toleration{{Key: spotTaint.Key, Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1",
					Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}}}},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if minAvailable > 0 {
		_, err = c.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
			ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
			Spec:       policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(minAvailable)), Selector: &metav1.LabelSelector{MatchLabels: app}},
		}, metav1.CreateOptions{})
		if err != nil {
			t.Fatal(err)
		}
	}
	c.WaitFor(t, 60*time.Second, fmt.Sprintf("%d web pods Ready", replicas), func(ctx context.Context) (bool, error) {
		pods, err := readyWeb(ctx, c, ns)
		return len(pods) == int(replicas), err
	})
	if minAvailable > 0 {
		c.WaitFor(t, 60*time.Second, "the PDB to count every pod", func(ctx context.Context) (bool, error) {
			pdb, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
			return err == nil && pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == replicas, err
		})
	}
}

func readyWeb(ctx context.Context, c *cluster.Cluster, ns string) ([]corev1.Pod, error) {
	return c.ReadyPods(ctx, ns, "app=web")
}

// watcher samples the web pods all along.
type watcher struct {
	mu            sync.Mutex
	minReady      int
	firstEviction time.Time
	samples       int
}

func watch(t *testing.T, c *cluster.Cluster, ns string) *watcher {
	w := &watcher{minReady: 1 << 30}
	ctx, stop := context.WithCancel(cluster.Context(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		var seen map[types.UID]bool
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=web"})
			if err != nil {
				continue
			}
			ready := 0
			present := map[types.UID]bool{}
			w.mu.Lock()
			for _, p := range list.Items {
				present[p.UID] = true
				if cluster.PodIsReady(&p) {
					ready++
				}
				if p.DeletionTimestamp != nil && w.firstEviction.IsZero() {
					w.firstEviction = time.Now()
				}
			}
			// kwok can remove an evicted pod between two samples.
			for uid := range seen {
				if !present[uid] && w.firstEviction.IsZero() {
					w.firstEviction = time.Now()
				}
			}
			seen = present
			w.minReady = min(w.minReady, ready)
			w.samples++
			w.mu.Unlock()
		}
	}()
	t.Cleanup(func() { stop(); <-done })
	return w
}

func (w *watcher) read() (minReady int, firstEviction time.Time, samples int) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.minReady, w.firstEviction, w.samples
}

func nodeState(ctx context.Context, c *cluster.Cluster, name string) (*corev1.Node, signals.State, error) {
	n, err := c.Client.CoreV1().Nodes().Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, "", err
	}
	return n, signals.StateOf(n.Annotations), nil
}

func annotate(t *testing.T, c *cluster.Cluster, node, key string, value *string) {
	t.Helper()
	v := "null"
	if value != nil {
		v = fmt.Sprintf("%q", *value)
	}
	patch := []byte(fmt.Sprintf(`{"metadata":{"annotations":{%q:%s}}}`, key, v))
	if _, err := c.Client.CoreV1().Nodes().Patch(cluster.Context(t), node, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}

// 1. A rebalance recommendation in mode node: nothing is evicted before a
// replacement node of the pool is Ready; then pods move in waves and Ready
// replicas never fall below the PDB's minAvailable; the node ends drained
// and cordoned with every pod Running elsewhere.
func TestRebalanceWaitsForReplacementThenDrainsInWaves(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-a", Taints: []corev1.Taint{spotTaint}})
	deployWeb(t, c, ns, 4, 3)
	w := watch(t, c, ns)
	startRebalancer(t, c, nil)

	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "the node to await a replacement", func(ctx context.Context) (bool, error) {
		n, state, err := nodeState(ctx, c, risky.Name)
		return err == nil && state == signals.StateAwaitingReplacement && hasTaint(n, signals.TaintDraining), err
	})
	replacementAt := time.Now()
	replacement := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-a", Taints: []corev1.Taint{spotTaint}})

	c.WaitFor(t, 90*time.Second, "the node to be drained", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, risky.Name)
		return state == signals.StateDrained, err
	})
	c.WaitFor(t, 30*time.Second, "4 web pods Ready on the replacement", func(ctx context.Context) (bool, error) {
		pods, err := readyWeb(ctx, c, ns)
		on := 0
		for _, p := range pods {
			if p.Spec.NodeName == replacement.Name {
				on++
			}
		}
		return on == 4, err
	})
	minReady, firstEviction, samples := w.read()
	t.Logf("%d samples: lowest Ready replicas %d; first eviction %s after the replacement was created",
		samples, minReady, firstEviction.Sub(replacementAt).Round(time.Millisecond))
	if firstEviction.IsZero() || firstEviction.Before(replacementAt) {
		t.Errorf("first eviction at %s, before the replacement node was created at %s", firstEviction, replacementAt)
	}
	if minReady < 3 {
		t.Errorf("Ready replicas fell to %d, below the PDB's minAvailable 3", minReady)
	}
	n, _, err := nodeState(ctx, c, risky.Name)
	if err != nil {
		t.Fatal(err)
	}
	if !n.Spec.Unschedulable {
		t.Error("a drained node must stay cordoned")
	}
}

// 2. No replacement and onTimeout keep-cordoned: nothing is evicted and the
// node is blocked with a reason.
func TestNoReplacementKeepsTheNodeCordonedAndBlocked(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-b", Taints: []corev1.Taint{spotTaint}})
	deployWeb(t, c, ns, 2, 0)
	w := watch(t, c, ns)
	startRebalancer(t, c, func(r *config.Rebalancer) {
		r.Replacement.Timeout = metav1.Duration{Duration: 3 * time.Second}
		r.Replacement.OnTimeout = config.OnTimeoutKeepCordoned
	})
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "the node to be blocked", func(ctx context.Context) (bool, error) {
		n, state, err := nodeState(ctx, c, risky.Name)
		return err == nil && state == signals.StateBlocked && hasTaint(n, signals.TaintDraining) &&
			n.Annotations[signals.AnnotationStateReason] != "", err
	})
	if _, first, _ := w.read(); !first.IsZero() {
		t.Error("a pod was evicted although no replacement came")
	}
}

// 3. Mode capacity with room on an existing node: drains without a new node.
func TestCapacityModeDrainsOntoExistingNodes(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-c", Taints: []corev1.Taint{spotTaint}})
	deployWeb(t, c, ns, 3, 2)
	other := c.AddNode(t, cluster.Node{Pool: "on-demand"})
	startRebalancer(t, c, func(r *config.Rebalancer) { r.Replacement.Mode = config.ReplacementCapacity })
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 60*time.Second, "the node to be drained onto the existing node", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, risky.Name)
		if err != nil || state != signals.StateDrained {
			return false, err
		}
		pods, err := readyWeb(ctx, c, ns)
		on := 0
		for _, p := range pods {
			if p.Spec.NodeName == other.Name {
				on++
			}
		}
		return on == 3, err
	})
}

// 5. A node tainted by AWS Node Termination Handler for a rebalance
// recommendation is handled like one.
func TestNTHTaintIsARebalanceRecommendation(t *testing.T) {
	c := cluster.Get(t)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-d", Taints: []corev1.Taint{spotTaint,
		{Key: signals.TaintNTHRebalance, Effect: corev1.TaintEffectNoSchedule}}})
	startRebalancer(t, c, nil)
	c.WaitFor(t, 30*time.Second, "the node to be taken in hand", func(ctx context.Context) (bool, error) {
		n, state, err := nodeState(ctx, c, risky.Name)
		return err == nil && state == signals.StateAwaitingReplacement && hasTaint(n, signals.TaintDraining), err
	})
}

// 8. The operator's annotation removed while waiting for a replacement:
// the node is untainted and schedulable again.
func TestSignalWithdrawnRollsBack(t *testing.T) {
	c := cluster.Get(t)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-e", Taints: []corev1.Taint{spotTaint}})
	startRebalancer(t, c, nil)
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "the node to await a replacement", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, risky.Name)
		return state == signals.StateAwaitingReplacement, err
	})
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, nil)
	c.WaitFor(t, 30*time.Second, "the node to be rolled back", func(ctx context.Context) (bool, error) {
		n, state, err := nodeState(ctx, c, risky.Name)
		return err == nil && state == "" && !hasTaint(n, signals.TaintDraining) && !n.Spec.Unschedulable, err
	})
}

func hasTaint(n *corev1.Node, key string) bool {
	for _, t := range n.Spec.Taints {
		if t.Key == key {
			return true
		}
	}
	return false
}

// deployApp creates a Deployment named name on the test's nodes.
func deployApp(t *testing.T, c *cluster.Cluster, ns, name string, replicas int32) {
	t.Helper()
	app := map[string]string{"app": name}
	_, err := c.Client.AppsV1().Deployments(ns).Create(cluster.Context(t), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: app},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: app}, Spec: corev1.PodSpec{
				NodeSelector:                  map[string]string{cluster.OwnerLabel: cluster.Owner(t)},
				Tolerations:                   []corev1.Toleration{{Key: spotTaint.Key, Operator: corev1.TolerationOpExists}},
				TerminationGracePeriodSeconds: ptr.To[int64](30),
				Containers:                    []corev1.Container{{Name: name, Image: "registry.example/" + name + ":1"}},
			}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func pdbFor(t *testing.T, c *cluster.Cluster, ns, name, app string, minAvailable int32) {
	t.Helper()
	_, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Create(cluster.Context(t), &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns},
		Spec: policyv1.PodDisruptionBudgetSpec{MinAvailable: ptr.To(intstr.FromInt32(minAvailable)),
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
}

func podsOf(ctx context.Context, c *cluster.Cluster, ns, app string) ([]corev1.Pod, error) {
	list, err := c.Client.CoreV1().Pods(ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + app})
	if err != nil {
		return nil, err
	}
	return list.Items, nil
}

// interruptionNotice sets SpotInterruptionNotice on the node, as the agent
// does, with the termination time in.
func interruptionNotice(t *testing.T, c *cluster.Cluster, node string, in time.Duration) time.Time {
	t.Helper()
	ctx := cluster.Context(t)
	at := time.Now().Add(in).Truncate(time.Second)
	annotate(t, c, node, signals.AnnotationTerminationTime, ptr.To(at.UTC().Format(time.RFC3339)))
	n, err := c.Client.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	n.Status.Conditions = append(n.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionInterruption, Status: corev1.ConditionTrue,
		Reason: "InstanceActionTerminate", Message: "e2e", LastTransitionTime: metav1.Now(), LastHeartbeatTime: metav1.Now()})
	if _, err := c.Client.CoreV1().Nodes().UpdateStatus(ctx, n, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	return at
}

// 4. An interruption notice: everything evictable leaves before the
// deadline; a pod behind a PDB that allows 0 is deleted at the deadline
// when forceAtDeadline is true, and left alone when it is false.
func TestInterruptionNoticeDrainsBeforeTheDeadline(t *testing.T) {
	for _, force := range []bool{true, false} {
		t.Run(fmt.Sprintf("forceAtDeadline=%v", force), func(t *testing.T) {
			c := cluster.Get(t)
			ns := c.Namespace(t, nil)
			risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-f", Taints: []corev1.Taint{spotTaint}})
			deployApp(t, c, ns, "web", 2)
			deployApp(t, c, ns, "db", 1)
			pdbFor(t, c, ns, "db", "db", 1)
			c.WaitFor(t, 60*time.Second, "3 pods Ready on the node", func(ctx context.Context) (bool, error) {
				web, err1 := podsOf(ctx, c, ns, "web")
				db, err2 := podsOf(ctx, c, ns, "db")
				ready := 0
				for _, p := range append(web, db...) {
					if cluster.PodIsReady(&p) {
						ready++
					}
				}
				return ready == 3, errors.Join(err1, err2)
			})
			c.AddNode(t, cluster.Node{Pool: "on-demand"})
			startRebalancer(t, c, func(r *config.Rebalancer) {
				r.DeadlineSafety = metav1.Duration{Duration: 2 * time.Second}
				r.MaxGraceAtDeadline = metav1.Duration{Duration: 5 * time.Second}
				r.ForceAtDeadline = ptr.To(force)
			})
			dbPods, err := podsOf(cluster.Context(t), c, ns, "db")
			if err != nil || len(dbPods) != 1 {
				t.Fatalf("db pods: %v %v", dbPods, err)
			}
			termination := interruptionNotice(t, c, risky.Name, 15*time.Second)
			deadline := termination.Add(-2 * time.Second)
			// The db pod's latest start: its grace period, capped at 5 s.
			latest := termination.Add(-5 * time.Second)

			c.WaitFor(t, 30*time.Second, "the web pods to leave the node", func(ctx context.Context) (bool, error) {
				pods, err := podsOf(ctx, c, ns, "web")
				for _, p := range pods {
					if p.Spec.NodeName == risky.Name && p.DeletionTimestamp == nil {
						return false, err
					}
				}
				return err == nil, err
			})
			if now := time.Now(); !now.Before(deadline) {
				t.Errorf("the evictable pods left at %s, not before the deadline %s", now, deadline)
			}
			want := signals.StateDrained
			if !force {
				want = signals.StateBlocked
			}
			c.WaitFor(t, 40*time.Second, "the node to end "+string(want), func(ctx context.Context) (bool, error) {
				_, state, err := nodeState(ctx, c, risky.Name)
				return state == want, err
			})
			got, err := c.Client.CoreV1().Pods(ns).Get(cluster.Context(t), dbPods[0].Name, metav1.GetOptions{})
			deleted := apierrors.IsNotFound(err) || (err == nil && got.DeletionTimestamp != nil)
			if deleted != force {
				t.Errorf("db pod deleted = %v, want %v (forceAtDeadline %v)", deleted, force, force)
			}
			if force && time.Now().Before(latest) {
				t.Errorf("the db pod was removed before its latest start %s", latest)
			}
		})
	}
}

// 6. A pod covered by two PDBs is a blocker and is never retried in a loop.
func TestPodWithTwoPDBsIsABlockerWithoutAHotLoop(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-g", Taints: []corev1.Taint{spotTaint}})
	deployApp(t, c, ns, "web", 1)
	pdbFor(t, c, ns, "web", "web", 0)
	pdbFor(t, c, ns, "web-extra", "web", 0)
	c.WaitFor(t, 60*time.Second, "the web pod Ready", func(ctx context.Context) (bool, error) {
		pods, err := podsOf(ctx, c, ns, "web")
		return len(pods) == 1 && cluster.PodIsReady(&pods[0]), err
	})
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	metrics := startRebalancer(t, c, func(r *config.Rebalancer) { r.Replacement.Mode = config.ReplacementCapacity })
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "the node to be blocked by the pod", func(ctx context.Context) (bool, error) {
		n, state, err := nodeState(ctx, c, risky.Name)
		return err == nil && state == signals.StateBlocked &&
			strings.Contains(n.Annotations[signals.AnnotationStateReason], "covered by 2 PDBs"), err
	})
	attempts := 0.0
	for _, r := range []string{"evicted", "gone", "blocked-by-pdb", "multiple-pdbs", "failed"} {
		attempts += testutil.ToFloat64(metrics.Evictions.WithLabelValues(r))
	}
	if attempts > 0 {
		t.Errorf("%v eviction attempts for a pod the Eviction API can never evict", attempts)
	}
}

// 7. The controller is killed mid-drain and started again: it resumes from
// the state on the node, and the PDB is never exceeded.
func TestRestartMidDrainResumes(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-h", Taints: []corev1.Taint{spotTaint}})
	deployWeb(t, c, ns, 4, 3)
	w := watch(t, c, ns)
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	capacity := func(r *config.Rebalancer) { r.Replacement.Mode = config.ReplacementCapacity }
	_, stop := startStoppableRebalancer(t, c, capacity)
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "the first eviction", func(context.Context) (bool, error) {
		_, first, _ := w.read()
		return !first.IsZero(), nil
	})
	stop()
	_, state, err := nodeState(cluster.Context(t), c, risky.Name)
	if err != nil {
		t.Fatal(err)
	}
	if state != signals.StateDraining {
		t.Fatalf("stopped in state %q, want draining (the test needs a drain in progress)", state)
	}
	startRebalancer(t, c, capacity)
	c.WaitFor(t, 60*time.Second, "the node to be drained after the restart", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, risky.Name)
		return state == signals.StateDrained, err
	})
	if minReady, _, _ := w.read(); minReady < 3 {
		t.Errorf("Ready replicas fell to %d, below the PDB's minAvailable 3", minReady)
	}
}

// An eviction the API server granted (the PDB's status.disruptedPods names
// the pod) whose delete never came, as when the evicting process is killed
// mid-request, is finished by deleting the pod: otherwise the PDB refuses
// every eviction until the entry expires two minutes later.
func TestGrantedEvictionWithoutDeleteIsCompleted(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-h", Taints: []corev1.Taint{spotTaint}})
	deployWeb(t, c, ns, 4, 3)
	pods, err := readyWeb(ctx, c, ns)
	if err != nil {
		t.Fatal(err)
	}
	granted := pods[0].Name
	// Times here have whole seconds, and a grant in the second the pod was
	// created may be an earlier pod's of the same name: the grant comes a
	// second later at least.
	c.WaitFor(t, 5*time.Second, "the clock to pass the pod's creation second", func(context.Context) (bool, error) {
		return metav1.Now().Rfc3339Copy().After(pods[0].CreationTimestamp.Time), nil
	})
	// What the Eviction API writes before it deletes the pod (the
	// disruption controller may write the status at the same time).
	at := metav1.Now().Rfc3339Copy()
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		pdb, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
		if err != nil {
			return err
		}
		pdb.Status.DisruptedPods = map[string]metav1.Time{granted: at}
		pdb.Status.DisruptionsAllowed = 0
		_, err = c.Client.PolicyV1().PodDisruptionBudgets(ns).UpdateStatus(ctx, pdb, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 30*time.Second, "the PDB to count the granted pod as disrupted", func(ctx context.Context) (bool, error) {
		pdb, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
		_, named := pdb.Status.DisruptedPods[granted]
		return err == nil && named && pdb.Status.CurrentHealthy == 3 && pdb.Status.DisruptionsAllowed == 0, err
	})
	w := watch(t, c, ns)
	c.AddNode(t, cluster.Node{Pool: "on-demand"})
	startRebalancer(t, c, func(r *config.Rebalancer) { r.Replacement.Mode = config.ReplacementCapacity })
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	expires := at.Add(planner.DisruptedPodTimeout)
	if left := time.Until(at.Add(planner.GrantTrust)); left < 20*time.Second {
		t.Fatalf("the set-up took too long: the grant is trusted for only %s more", left)
	}
	c.WaitFor(t, time.Until(expires), "the node to be drained before the PDB's entry expires", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, risky.Name)
		return state == signals.StateDrained, err
	})
	if minReady, _, _ := w.read(); minReady < 3 {
		t.Errorf("Ready replicas fell to %d, below the PDB's minAvailable 3", minReady)
	}
	events, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "involvedObject.name=" + granted + ",reason=Evicted"})
	if err != nil {
		t.Fatal(err)
	}
	if len(events.Items) == 0 || !strings.Contains(events.Items[0].Message, "already granted") {
		t.Errorf("no Event says pod %s was deleted for an eviction its PDB had granted: %v", granted, events.Items)
	}
}

// --dry-run computes and reports plans as Events and writes nothing else.
func TestDryRunWritesOnlyEvents(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-i", Taints: []corev1.Taint{spotTaint}})
	startRebalancer(t, c, func(r *config.Rebalancer) { r.DryRun = true })
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "a DryRunPlan Event on the node", func(ctx context.Context) (bool, error) {
		events, err := c.Client.CoreV1().Events(metav1.NamespaceDefault).List(ctx, metav1.ListOptions{
			FieldSelector: "involvedObject.name=" + risky.Name + ",reason=DryRunPlan"})
		return err == nil && len(events.Items) > 0, err
	})
	n, err := c.Client.CoreV1().Nodes().Get(ctx, risky.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := n.Annotations[signals.AnnotationState]; ok || hasTaint(n, signals.TaintDraining) || n.Spec.Unschedulable {
		t.Errorf("a dry run wrote to the node: annotations %v, taints %v", n.Annotations, n.Spec.Taints)
	}
}
