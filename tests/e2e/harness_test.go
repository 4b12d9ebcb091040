package e2e

import (
	"context"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// The rebalancer trusts four behaviours of the real control plane; this test
// pins each of them down so that a change of version cannot pull the floor
// away silently: the scheduler places a Deployment on kwok Spot nodes, the
// disruption controller computes disruptionsAllowed, the Eviction API
// enforces it (429 when the budget is spent), and the ReplicaSet controller
// recreates an evicted pod on another node.
func TestControlPlaneEnforcesDisruptionBudgets(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)

	spotTaint := corev1.Taint{Key: cluster.CapacityTypeLabel, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}
	nodeA := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-a", Taints: []corev1.Taint{spotTaint}})
	nodeB := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-a", Taints: []corev1.Taint{spotTaint}})

	app := map[string]string{"app": "web"}
	deploy := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: ptr.To[int32](4),
			Selector: &metav1.LabelSelector{MatchLabels: app},
			Template: corev1.PodTemplateSpec{
				// A replacement is not Ready for 15 s: the second eviction
				// below must meet the budget the first one spent, even when
				// a loaded machine delays it and kube-controller-manager
				// recomputes the PDB in between (a replacement Ready at once
				// would give the budget back, and the eviction would rightly
				// succeed).
				ObjectMeta: metav1.ObjectMeta{Labels: app, Annotations: map[string]string{cluster.PodReadyDelayAnnotation: "15s"}},
				Spec: corev1.PodSpec{
					NodeSelector: map[string]string{cluster.OwnerLabel: cluster.Owner(t)},
					Tolerations:  []corev1.Toleration{{Key: spotTaint.Key, Operator: corev1.TolerationOpEqual, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}},
					Containers: []corev1.Container{{
						Name:      "web",
						Image:     "registry.example/web:1",
						Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("500m")}},
					}},
				},
			},
		},
	}
	if _, err := c.Client.AppsV1().Deployments(ns).Create(ctx, deploy, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	pdb := &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: policyv1.PodDisruptionBudgetSpec{
			MinAvailable: ptr.To(intstr.FromInt32(3)),
			Selector:     &metav1.LabelSelector{MatchLabels: app},
		},
	}
	if _, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, pdb, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	readyPods := func(ctx context.Context) ([]corev1.Pod, error) {
		return c.ReadyPods(ctx, ns, labels.SelectorFromSet(app).String())
	}
	var pods []corev1.Pod
	c.WaitFor(t, 60*time.Second, "4 web pods Running and Ready on the Spot nodes", func(ctx context.Context) (bool, error) {
		var err error
		pods, err = readyPods(ctx)
		return len(pods) == 4, err
	})
	for _, p := range pods {
		if p.Spec.NodeName != nodeA.Name && p.Spec.NodeName != nodeB.Name {
			t.Fatalf("pod %s landed on %q, not on the test's Spot nodes", p.Name, p.Spec.NodeName)
		}
	}

	waitForBudget := func(want int32) {
		t.Helper()
		c.WaitFor(t, 60*time.Second, "the PDB to allow disruptions", func(ctx context.Context) (bool, error) {
			got, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
			if err != nil {
				return false, err
			}
			return got.Status.ObservedGeneration == got.Generation &&
				got.Status.CurrentHealthy == 4 && got.Status.DesiredHealthy == 3 &&
				got.Status.DisruptionsAllowed == want, nil
		})
	}
	waitForBudget(1)

	// Take pods from whichever node has at least two, with that node
	// cordoned so the replacement must go to the other one.
	from, to := nodeA.Name, nodeB.Name
	var victims []corev1.Pod
	for _, p := range pods {
		if p.Spec.NodeName == from {
			victims = append(victims, p)
		}
	}
	if len(victims) < 2 {
		from, to = to, from
		victims = victims[:0]
		for _, p := range pods {
			if p.Spec.NodeName == from {
				victims = append(victims, p)
			}
		}
	}
	if len(victims) < 2 {
		t.Fatalf("expected one node to carry at least 2 of the 4 pods, got %v", pods)
	}
	cordon(t, c, from)

	evict := func(p corev1.Pod) error {
		return c.Client.PolicyV1().Evictions(ns).Evict(ctx, &policyv1.Eviction{
			ObjectMeta:    metav1.ObjectMeta{Name: p.Name, Namespace: ns},
			DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &p.UID}},
		})
	}
	if err := evict(victims[0]); err != nil {
		t.Fatalf("the first eviction is within the budget and must succeed: %v", err)
	}
	err := evict(victims[1])
	if !apierrors.IsTooManyRequests(err) {
		t.Fatalf("the second eviction exceeds minAvailable 3 and must answer 429, got %v", err)
	}

	c.WaitFor(t, 60*time.Second, "the evicted pod to be replaced on the other node", func(ctx context.Context) (bool, error) {
		ready, err := readyPods(ctx)
		if err != nil || len(ready) != 4 {
			return false, err
		}
		for _, p := range ready {
			if p.UID == victims[0].UID {
				return false, nil
			}
		}
		return true, nil
	})
	original := map[types.UID]bool{}
	for _, p := range pods {
		original[p.UID] = true
	}
	ready, err := readyPods(ctx)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range ready {
		if !original[p.UID] && p.Spec.NodeName != to {
			t.Errorf("replacement pod %s landed on %s, want %s (the evicted pod's node is cordoned)", p.Name, p.Spec.NodeName, to)
		}
	}
	waitForBudget(1)
	if err := evict(victims[1]); err != nil {
		t.Fatalf("once the budget has recovered the eviction must succeed: %v", err)
	}
}

func cordon(t *testing.T, c *cluster.Cluster, node string) {
	t.Helper()
	patch := []byte(`{"spec":{"unschedulable":true}}`)
	if _, err := c.Client.CoreV1().Nodes().Patch(cluster.Context(t), node, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		t.Fatalf("cordoning %s: %v", node, err)
	}
}
