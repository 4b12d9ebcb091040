package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// startupTime is how long the surge tests' pods take to become Ready.
const startupTime = "3s"

func withSurge(c *config.Rebalancer) { c.Surge.Enabled = ptr.To(true) }

// deploySlow creates a Deployment whose pods take startupTime to be Ready
// and ask for 500m CPU, and waits until they are.
func deploySlow(t *testing.T, c *cluster.Cluster, ns, name string, replicas int32, annotations map[string]string) {
	t.Helper()
	app := map[string]string{"app": name}
	_, err := c.Client.AppsV1().Deployments(ns).Create(cluster.Context(t), &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Annotations: annotations},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To(replicas), Selector: &metav1.LabelSelector{MatchLabels: app},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: app, Annotations: map[string]string{cluster.PodReadyDelayAnnotation: startupTime}},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{cluster.OwnerLabel: cluster.Owner(t)},
					Tolerations:  []corev1.Toleration{{Key: spotTaint.Key, Operator: corev1.TolerationOpExists}},
					Containers: []corev1.Container{{Name: name, Image: "registry.example/" + name + ":1",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}}}},
				}},
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 60*time.Second, fmt.Sprintf("%d %s pods Ready and the Deployment settled", replicas, name), func(ctx context.Context) (bool, error) {
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		return d.Status.ObservedGeneration == d.Generation && d.Status.ReadyReplicas == replicas && d.Status.UpdatedReplicas == replicas, nil
	})
}

// readySampler records the lowest count of Ready pods of an app, and the
// highest replica count of its Deployment, every 50 ms.
type readySampler struct {
	mu          sync.Mutex
	minReady    int
	maxReplicas int32
	samples     int
}

func sampleReady(t *testing.T, c *cluster.Cluster, ns, app string) *readySampler {
	s := &readySampler{minReady: 1 << 30}
	everyTick(t, func(ctx context.Context) {
		pods, err := c.ReadyPods(ctx, ns, "app="+app)
		if err != nil {
			return
		}
		d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, app, metav1.GetOptions{})
		if err != nil {
			return
		}
		s.mu.Lock()
		s.minReady = min(s.minReady, len(pods))
		s.maxReplicas = max(s.maxReplicas, ptr.Deref(d.Spec.Replicas, 0))
		s.samples++
		s.mu.Unlock()
	})
	return s
}

// everyTick calls sample every 50 ms until the test ends (and waits for
// the last call then).
func everyTick(t *testing.T, sample func(ctx context.Context)) {
	ctx, stop := context.WithCancel(cluster.Context(t))
	done := make(chan struct{})
	go func() {
		defer close(done)
		tick := time.NewTicker(50 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
			}
			sample(ctx)
		}
	}()
	t.Cleanup(func() { stop(); <-done })
}

// expect checks that Ready pods never fell below atLeast and that the
// replica count peaked at exactly peak (the count plus the pods surged).
func (s *readySampler) expect(t *testing.T, atLeast int, peak int32) {
	t.Helper()
	minReady, maxReplicas, samples := s.read()
	t.Logf("%d samples: lowest Ready %d, highest replica count %d", samples, minReady, maxReplicas)
	if minReady < atLeast {
		t.Errorf("Ready replicas fell to %d, below %d", minReady, atLeast)
	}
	if maxReplicas != peak {
		t.Errorf("the Deployment peaked at %d replicas, want %d", maxReplicas, peak)
	}
}

func (s *readySampler) read() (minReady int, maxReplicas int32, samples int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.minReady, s.maxReplicas, s.samples
}

// surgeRecord returns the record of the Deployment's surge in the
// namespace records, or nil, with the Deployment.
func surgeRecord(ctx context.Context, c *cluster.Cluster, records, ns, name string) (*coordinationv1.Lease, *appsv1.Deployment, error) {
	d, err := c.Client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, nil, err
	}
	record, err := c.Client.CoordinationV1().Leases(records).Get(ctx, signals.SurgeRecordName(d.UID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, d, nil
	}
	return record, d, err
}

// surgeLeftovers reports a surge record of the Deployment (in the
// namespace records, or on the Deployment), a replica count other than
// want, or a deletion-cost mark on any of its pods.
func surgeLeftovers(ctx context.Context, c *cluster.Cluster, records, ns, name string, want int32) (string, error) {
	record, d, err := surgeRecord(ctx, c, records, ns, name)
	if err != nil {
		return "", err
	}
	if record != nil {
		return "surge record left: " + record.Annotations[signals.AnnotationSurgeState], nil
	}
	if v, ok := d.Annotations[signals.AnnotationSurgeState]; ok {
		return "surge record left on the Deployment: " + v, nil
	}
	if got := ptr.Deref(d.Spec.Replicas, 0); got != want {
		return fmt.Sprintf("%d replicas, want %d", got, want), nil
	}
	pods, err := podsOf(ctx, c, ns, name)
	if err != nil {
		return "", err
	}
	for _, p := range pods {
		if v, ok := p.Annotations[signals.AnnotationPodDeletionCost]; ok {
			return fmt.Sprintf("pod %s keeps %s=%s", p.Name, signals.AnnotationPodDeletionCost, v), nil
		}
	}
	return "", nil
}

// signalAndReplace marks node at risk and, once the controller waits for a
// replacement, adds one to pool.
func signalAndReplace(t *testing.T, c *cluster.Cluster, node, pool string) *corev1.Node {
	t.Helper()
	annotate(t, c, node, signals.AnnotationAtRisk, ptr.To("true"))
	c.WaitFor(t, 30*time.Second, "node "+node+" to await a replacement", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, node)
		return state == signals.StateAwaitingReplacement, err
	})
	return c.AddNode(t, cluster.Node{Spot: true, Pool: pool, Taints: []corev1.Taint{spotTaint}})
}

func waitDrained(t *testing.T, c *cluster.Cluster, node string) {
	t.Helper()
	c.WaitFor(t, 90*time.Second, "node "+node+" to be drained", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, node)
		return state == signals.StateDrained, err
	})
}

func deploymentEvents(ctx context.Context, c *cluster.Cluster, ns, name string) (map[string]int, error) {
	list, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		return nil, err
	}
	out := map[string]int{}
	for _, e := range list.Items {
		if e.InvolvedObject.Kind == "Deployment" && e.InvolvedObject.Name == name {
			out[e.Reason]++
		}
	}
	return out, nil
}

// A one-replica Deployment moves off a node with a rebalance
// recommendation without ever having no Ready pod; its replica count is
// restored exactly and no mark is left behind.
func TestSurgeMovesASingleReplicaWithoutDowntime(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-1", Taints: []corev1.Taint{spotTaint}})
	deploySlow(t, c, ns, "solo", 1, nil)
	s := sampleReady(t, c, ns, "solo")
	m := startRebalancer(t, c, withSurge)

	replacement := signalAndReplace(t, c, risky.Name, "surge-1")
	waitDrained(t, c, risky.Name)
	c.WaitFor(t, 30*time.Second, "the Deployment back at 1 replica, Ready on the replacement, nothing left behind", func(ctx context.Context) (bool, error) {
		left, err := surgeLeftovers(ctx, c, c.RecordsNamespace(t), ns, "solo", 1)
		if err != nil || left != "" {
			return false, err
		}
		pods, err := c.ReadyPods(ctx, ns, "app=solo")
		return len(pods) == 1 && pods[0].Spec.NodeName == replacement.Name, err
	})
	s.expect(t, 1, 2)
	events, err := deploymentEvents(cluster.Context(t), c, ns, "solo")
	if err != nil {
		t.Fatal(err)
	}
	if events["SurgeStarted"] != 1 || events["SurgeCompleted"] != 1 || events["SurgeAbandoned"] != 0 {
		t.Errorf("surge events on the Deployment: %v", events)
	}
	if got := testutil.ToFloat64(m.Surges.WithLabelValues("completed")); got != 1 {
		t.Errorf("surges completed metric = %v, want 1", got)
	}
}

// A 4-replica Deployment with 3 pods on the at-risk node never has fewer
// than 4 Ready pods.
func TestSurgeKeepsEveryReplicaReady(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-4", Taints: []corev1.Taint{spotTaint}})
	// Room for exactly one pod beside the at-risk node.
	c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-4-other", CPU: "700m", Taints: []corev1.Taint{spotTaint}})
	deploySlow(t, c, ns, "web4", 4, nil)
	pods, err := podsOf(cluster.Context(t), c, ns, "web4")
	if err != nil {
		t.Fatal(err)
	}
	onRisky := 0
	for _, p := range pods {
		if p.Spec.NodeName == risky.Name {
			onRisky++
		}
	}
	if onRisky != 3 {
		t.Fatalf("%d of 4 pods on the at-risk node, want 3", onRisky)
	}
	s := sampleReady(t, c, ns, "web4")
	startRebalancer(t, c, withSurge)
	signalAndReplace(t, c, risky.Name, "surge-4")
	waitDrained(t, c, risky.Name)
	c.WaitFor(t, 30*time.Second, "4 Ready pods and nothing left behind", func(ctx context.Context) (bool, error) {
		left, err := surgeLeftovers(ctx, c, c.RecordsNamespace(t), ns, "web4", 4)
		if err != nil || left != "" {
			return false, err
		}
		pods, err := c.ReadyPods(ctx, ns, "app=web4")
		return len(pods) == 4, err
	})
	s.expect(t, 4, 7)
}

// The controller stops mid-surge (the Deployment scaled up, its new pod
// not Ready yet); a new one finishes the surge from the record: the
// Deployment ends at its original count and the node drains.
func TestSurgeResumesAfterARestart(t *testing.T) {
	c := cluster.Get(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-r", Taints: []corev1.Taint{spotTaint}})
	deploySlow(t, c, ns, "resume", 2, nil)
	_, stop := startStoppableRebalancer(t, c, withSurge)
	signalAndReplace(t, c, risky.Name, "surge-r")
	c.WaitFor(t, 30*time.Second, "the surge to be recorded and the Deployment scaled to 4", func(ctx context.Context) (bool, error) {
		record, d, err := surgeRecord(ctx, c, c.RecordsNamespace(t), ns, "resume")
		if err != nil {
			return false, err
		}
		return record != nil && ptr.Deref(d.Spec.Replicas, 0) == 4, nil
	})
	stop()
	startRebalancer(t, c, withSurge)
	waitDrained(t, c, risky.Name)
	c.WaitFor(t, 30*time.Second, "the Deployment back at 2 replicas with nothing left behind", func(ctx context.Context) (bool, error) {
		left, err := surgeLeftovers(ctx, c, c.RecordsNamespace(t), ns, "resume", 2)
		if err != nil || left != "" {
			return false, err
		}
		pods, err := c.ReadyPods(ctx, ns, "app=resume")
		return len(pods) == 2, err
	})
}

// A Deployment an HPA scales and one that opts out are evicted in waves:
// never scaled, never surged.
func TestNoSurgeForHPATargetsAndOptOuts(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-no", Taints: []corev1.Taint{spotTaint}})
	deploySlow(t, c, ns, "scaled", 2, nil)
	deploySlow(t, c, ns, "optout", 2, map[string]string{signals.AnnotationSurge: "false"})
	_, err := c.Client.AutoscalingV2().HorizontalPodAutoscalers(ns).Create(ctx, &autoscalingv2.HorizontalPodAutoscaler{
		ObjectMeta: metav1.ObjectMeta{Name: "scaled"},
		Spec: autoscalingv2.HorizontalPodAutoscalerSpec{
			ScaleTargetRef: autoscalingv2.CrossVersionObjectReference{APIVersion: "apps/v1", Kind: "Deployment", Name: "scaled"},
			MinReplicas:    ptr.To[int32](2), MaxReplicas: 2,
		},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	scaled, optout := sampleReady(t, c, ns, "scaled"), sampleReady(t, c, ns, "optout")
	startRebalancer(t, c, withSurge)
	signalAndReplace(t, c, risky.Name, "surge-no")
	waitDrained(t, c, risky.Name)
	for name, s := range map[string]*readySampler{"scaled": scaled, "optout": optout} {
		_, maxReplicas, _ := s.read()
		if maxReplicas != 2 {
			t.Errorf("%s was scaled to %d replicas", name, maxReplicas)
		}
		events, err := deploymentEvents(ctx, c, ns, name)
		if err != nil {
			t.Fatal(err)
		}
		if events["SurgeStarted"] != 0 {
			t.Errorf("%s was surged: %v", name, events)
		}
	}
	evicted, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=Evicted"})
	if err != nil {
		t.Fatal(err)
	}
	if len(evicted.Items) != 4 {
		t.Errorf("%d Evicted events in the namespace, want 4 (2 pods of each Deployment)", len(evicted.Items))
	}
}

// A Deployment with pods on two nodes draining together moves them in one
// surge: one record naming both nodes, one scale-up by all four pods, one
// wait. The controller is stopped mid-surge and the next one finishes it
// from the record. Ready pods never fall below the replica count.
func TestOneSurgeMovesADeploymentOffTwoDrainingNodes(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	// Room for two 500m pods each: the four pods split two and two.
	a := c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-m", CPU: "1", Taints: []corev1.Taint{spotTaint}})
	b := c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-m", CPU: "1", Taints: []corev1.Taint{spotTaint}})
	deploySlow(t, c, ns, "pair", 4, nil)
	pods, err := podsOf(ctx, c, ns, "pair")
	if err != nil {
		t.Fatal(err)
	}
	on := map[string]int{}
	for _, p := range pods {
		on[p.Spec.NodeName]++
	}
	if on[a.Name] != 2 || on[b.Name] != 2 {
		t.Fatalf("pods per node %v, want 2 on %s and 2 on %s", on, a.Name, b.Name)
	}
	// A budget that allows one eviction at a time: moved by surge, no pod
	// is evicted.
	pdbFor(t, c, ns, "pair", "pair", 3)
	s := sampleReady(t, c, ns, "pair")
	c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-m", Taints: []corev1.Taint{spotTaint}})
	c.AddNode(t, cluster.Node{Spot: true, Pool: "surge-m", Taints: []corev1.Taint{spotTaint}})
	// Both nodes draining, as a controller that admitted both and stopped
	// leaves them: whichever node the next one looks at first starts the
	// surge, with the pods of both. (Admitted by a running controller, the
	// first could start its surge before the second drains.)
	for _, n := range []*corev1.Node{a, b} {
		markDraining(t, c, n)
	}

	two := func(cfg *config.Rebalancer) { cfg.MaxConcurrentNodes = 2 }
	surging := func(cfg *config.Rebalancer) { two(cfg); withSurge(cfg) }
	_, stop := startStoppableRebalancer(t, c, surging)
	var st *signals.SurgeState
	c.WaitFor(t, 30*time.Second, "one surge recorded off both nodes and the Deployment scaled to 8", func(ctx context.Context) (bool, error) {
		record, d, err := surgeRecord(ctx, c, c.RecordsNamespace(t), ns, "pair")
		if err != nil || record == nil {
			return false, err
		}
		if st, err = signals.SurgeOf(record); err != nil {
			return false, err
		}
		return ptr.Deref(d.Spec.Replicas, 0) == 8, nil
	})
	if got := sets.New(st.OffNodes()...); !got.Equal(sets.New(a.Name, b.Name)) || st.From != 4 || st.To != 8 || len(st.Pods) != 4 {
		t.Fatalf("surge record %+v, want one off %s and %s from 4 to 8 with 4 pods", st, a.Name, b.Name)
	}
	// Stopped mid-surge: the next controller resumes from the record.
	stop()
	startRebalancer(t, c, surging)
	waitDrained(t, c, a.Name)
	waitDrained(t, c, b.Name)
	c.WaitFor(t, 30*time.Second, "the Deployment back at 4 Ready replicas with nothing left behind", func(ctx context.Context) (bool, error) {
		left, err := surgeLeftovers(ctx, c, c.RecordsNamespace(t), ns, "pair", 4)
		if err != nil || left != "" {
			return false, err
		}
		pods, err := c.ReadyPods(ctx, ns, "app=pair")
		for _, p := range pods {
			if p.Spec.NodeName == a.Name || p.Spec.NodeName == b.Name {
				return false, err
			}
		}
		return len(pods) == 4, err
	})
	s.expect(t, 4, 8) // one surge of all four
	events, err := deploymentEvents(ctx, c, ns, "pair")
	if err != nil {
		t.Fatal(err)
	}
	if events["SurgeStarted"] != 1 || events["SurgeCompleted"] != 1 || events["SurgeAbandoned"] != 0 {
		t.Errorf("surge events on the Deployment: %v, want one started and one completed", events)
	}
	evicted, err := c.Client.CoreV1().Events(ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=Evicted"})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evicted.Items {
		t.Errorf("pod %s evicted (%s, by %s): the pods were to move by surge only", e.InvolvedObject.Name, e.Message, e.Source.Component+e.ReportingController)
	}
}

// markDraining writes on node the state a controller leaves on a node it
// admitted to drain for a rebalance recommendation: the signal, the state
// with its reason, the draining taint and the cordon.
func markDraining(t *testing.T, c *cluster.Cluster, node *corev1.Node) {
	t.Helper()
	patch, err := json.Marshal(map[string]any{
		"metadata": map[string]any{"annotations": map[string]string{
			signals.AnnotationAtRisk:          "true",
			signals.AnnotationState:           string(signals.StateDraining),
			signals.AnnotationStateReasonCode: string(signals.ReasonReplacementReady),
			signals.AnnotationStateReason:     "admitted by the test",
		}},
		"spec": map[string]any{
			"unschedulable": true,
			"taints": append(slices.Clone(node.Spec.Taints),
				corev1.Taint{Key: signals.TaintDraining, Value: string(signals.StateDraining), Effect: corev1.TaintEffectNoSchedule}),
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.CoreV1().Nodes().Patch(cluster.Context(t), node.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
}
