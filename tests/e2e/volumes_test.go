package e2e

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/simulation"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// A StatefulSet's pod whose volume is pinned to zone a, on an at-risk node
// in zone a, with room only in zone b: the plan says blocked with the
// scheduler's reason, the controller does not evict it for a rebalance
// recommendation, and its reservation asks for zone a.
func TestStatefulPodStaysWithItsVolumesZone(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	owner := cluster.Owner(t)
	records := c.RecordsNamespace(t)
	const zoneA, zoneB = "us-east-1a", "us-east-1b"
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-vol", Zone: zoneA, Taints: []corev1.Taint{spotTaint}})

	// The volume, in zone a, and its claim, bound by the PV controller.
	pvName := owner + "-data"
	if _, err := c.Client.CoreV1().PersistentVolumes().Create(ctx, &corev1.PersistentVolume{ObjectMeta: metav1.ObjectMeta{Name: pvName},
		Spec: corev1.PersistentVolumeSpec{
			Capacity:    corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")},
			AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce},
			PersistentVolumeSource: corev1.PersistentVolumeSource{CSI: &corev1.CSIPersistentVolumeSource{
				Driver: "ebs.csi.aws.com", VolumeHandle: "vol-" + owner}},
			NodeAffinity: &corev1.VolumeNodeAffinity{Required: &corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{
				MatchExpressions: []corev1.NodeSelectorRequirement{{Key: corev1.LabelTopologyZone, Operator: corev1.NodeSelectorOpIn, Values: []string{zoneA}}}}}}},
			ClaimRef: &corev1.ObjectReference{Kind: "PersistentVolumeClaim", Namespace: ns, Name: "data-db-0"},
		}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = c.Client.CoreV1().PersistentVolumes().Delete(context.Background(), pvName, metav1.DeleteOptions{})
	})
	claimSpec := corev1.PersistentVolumeClaimSpec{AccessModes: []corev1.PersistentVolumeAccessMode{corev1.ReadWriteOnce}, StorageClassName: ptr.To(""),
		Resources: corev1.VolumeResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceStorage: resource.MustParse("10Gi")}}}
	claim := &corev1.PersistentVolumeClaim{ObjectMeta: metav1.ObjectMeta{Name: "data-db-0", Namespace: ns}, Spec: *claimSpec.DeepCopy()}
	claim.Spec.VolumeName = pvName
	if _, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Create(ctx, claim, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 60*time.Second, "the claim bound", func(ctx context.Context) (bool, error) {
		got, err := c.Client.CoreV1().PersistentVolumeClaims(ns).Get(ctx, "data-db-0", metav1.GetOptions{})
		return err == nil && got.Status.Phase == corev1.ClaimBound, err
	})

	// The StatefulSet, its pod on the only node there is, using the claim.
	labels := map[string]string{"app": "db"}
	if _, err := c.Client.AppsV1().StatefulSets(ns).Create(ctx, &appsv1.StatefulSet{ObjectMeta: metav1.ObjectMeta{Name: "db", Namespace: ns},
		Spec: appsv1.StatefulSetSpec{Replicas: ptr.To[int32](1), ServiceName: "db", Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: labels}, Spec: corev1.PodSpec{
				NodeSelector: map[string]string{cluster.OwnerLabel: owner},
				Tolerations:  []corev1.Toleration{{Key: spotTaint.Key, Operator: corev1.TolerationOpExists}},
				Containers: []corev1.Container{{Name: "db", Image: "registry.example/db:1",
					Resources:    corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}},
					VolumeMounts: []corev1.VolumeMount{{Name: "data", MountPath: "/data"}}}},
			}},
			VolumeClaimTemplates: []corev1.PersistentVolumeClaim{{ObjectMeta: metav1.ObjectMeta{Name: "data"}, Spec: claimSpec}},
		}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	var running *corev1.Pod
	c.WaitFor(t, 60*time.Second, "db-0 Running on the Spot node in zone a", func(ctx context.Context) (bool, error) {
		p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "db-0", metav1.GetOptions{})
		if err != nil {
			return false, nil
		}
		running = p
		return p.Spec.NodeName == risky.Name && p.Status.Phase == corev1.PodRunning, nil
	})
	// Room, but in zone b only.
	c.AddNode(t, cluster.Node{Pool: "on-demand-b", Zone: zoneB})

	out, stderr, code := runBinary(t, buildBinary(t), "plan", risky.Name, "-o", "json", "--kubeconfig", c.Kubeconfig)
	if code != 3 {
		t.Fatalf("plan: exit %d, want 3 (blocked)\n%s%s", code, out, stderr)
	}
	var plan planner.Plan
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatal(err)
	}
	var db *planner.PodPlan
	for i := range plan.Nodes[0].Pods {
		if plan.Nodes[0].Pods[i].Name == "db-0" {
			db = &plan.Nodes[0].Pods[i]
		}
	}
	if db == nil || db.Destination != "" || !strings.Contains(strings.Join(db.Reasons, "; "), simulation.ReasonVolumeAffinity) {
		t.Fatalf("db-0 in the plan: %+v, want no destination and the reason %q", db, simulation.ReasonVolumeAffinity)
	}

	startRebalancer(t, c, nil)
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	var reservation corev1.Pod
	c.WaitFor(t, 60*time.Second, "the node awaiting a replacement and db-0's reservation made", func(ctx context.Context) (bool, error) {
		_, state, err := nodeState(ctx, c, risky.Name)
		if err != nil || state != signals.StateAwaitingReplacement {
			return false, err
		}
		list, err := c.Client.CoreV1().Pods(records).List(ctx, metav1.ListOptions{LabelSelector: reserve.LabelNode + "=" + reserve.NodeLabel(risky.Name)})
		if err != nil || len(list.Items) != 1 {
			return false, err
		}
		reservation = list.Items[0]
		return true, nil
	})
	// The reservation asks for zone a, where the data is: every term does.
	na := reservation.Spec.Affinity
	if na == nil || na.NodeAffinity == nil || na.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		t.Fatalf("reservation %s has no required node affinity", reservation.Name)
	}
	for _, term := range na.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		if !slices.ContainsFunc(term.MatchExpressions, func(e corev1.NodeSelectorRequirement) bool {
			return e.Key == corev1.LabelTopologyZone && e.Operator == corev1.NodeSelectorOpIn && slices.Equal(e.Values, []string{zoneA})
		}) {
			t.Errorf("reservation term %+v does not ask for %s", term, zoneA)
		}
	}
	// Nothing was evicted: the pod is the same one, not terminating.
	p, err := c.Client.CoreV1().Pods(ns).Get(ctx, "db-0", metav1.GetOptions{})
	if err != nil || p.UID != running.UID || p.DeletionTimestamp != nil {
		t.Errorf("db-0 was evicted or replaced while its node waits (err %v)", err)
	}
}
