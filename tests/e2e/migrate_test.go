package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/migrate"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// A surge that version 0.1 left mid-way (its record on the Deployment, the
// Deployment at its surged count, the pods marked) is moved by `migrate
// surge-records` into a Lease of the controller's namespace, the
// annotation removed; a second run moves nothing; the controller, which
// may not change Deployments, then finishes the surge from the Lease and
// leaves nothing behind.
func TestMigratedSurgeRecordIsFinished(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	records := c.RecordsNamespace(t)
	risky := c.AddNode(t, cluster.Node{Spot: true, Pool: "mig-a", Taints: []corev1.Taint{spotTaint}})
	deployment(t, c, ns, "web", 2, "2s", nil)
	c.AddNode(t, cluster.Node{Pool: "on-demand"})

	// What 0.1 wrote: mark, record on the Deployment, scale up.
	pods, err := podsOn(ctx, c, ns, "web", risky.Name)
	if err != nil || len(pods) != 2 {
		t.Fatalf("pods on %s: %d (err %v)", risky.Name, len(pods), err)
	}
	var names []string
	for _, p := range pods {
		names = append(names, p.Name)
		patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, signals.AnnotationPodDeletionCost, signals.SurgeDeletionCost)
		if _, err := c.Client.CoreV1().Pods(ns).Patch(ctx, p.Name, types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	raw, err := json.Marshal(signals.SurgeState{Node: risky.Name, From: 2, To: 4, Phase: signals.SurgeWaiting, Since: time.Now().UTC(), Pods: names})
	if err != nil {
		t.Fatal(err)
	}
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:%q}}}`, signals.AnnotationSurgeState, raw)
	if _, err := c.Client.AppsV1().Deployments(ns).Patch(ctx, "web", types.MergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Client.AppsV1().Deployments(ns).UpdateScale(ctx, "web", &autoscalingv1.Scale{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns}, Spec: autoscalingv1.ScaleSpec{Replicas: 4}}, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}

	run := func(dryRun bool) (int, string) {
		t.Helper()
		var out strings.Builder
		moved, err := migrate.Run(ctx, c.Client, migrate.Options{Namespace: records, DryRun: dryRun, Out: &out, Timeout: time.Minute})
		if err != nil {
			t.Fatalf("migrate (dry run %v): %v", dryRun, err)
		}
		return moved, out.String()
	}
	wantLine := fmt.Sprintf("the surge off node %s (phase waiting, 2 to 4 replicas) of deployment %s/web to lease %s/surge-", risky.Name, ns, records)
	if _, out := run(true); !strings.Contains(out, "would move "+wantLine) {
		t.Errorf("dry run printed %q, want a line with %q", out, "would move "+wantLine)
	}
	if record, d, err := surgeRecord(ctx, c, records, ns, "web"); err != nil || record != nil || d.Annotations[signals.AnnotationSurgeState] == "" {
		t.Fatalf("the dry run changed something: record %v, annotation %q (err %v)", record, d.Annotations[signals.AnnotationSurgeState], err)
	}
	if moved, out := run(false); moved != 1 || !strings.Contains(out, "moved "+wantLine) {
		t.Errorf("migrate moved %d and printed %q, want 1 and %q", moved, out, "moved "+wantLine)
	}
	record, d, err := surgeRecord(ctx, c, records, ns, "web")
	if err != nil || record == nil {
		t.Fatalf("no surge record in %s after migrating (err %v)", records, err)
	}
	if got := record.Annotations[signals.AnnotationSurgeState]; got != string(raw) || ptr.Deref(record.Spec.HolderIdentity, "") != risky.Name ||
		record.Labels[signals.LabelRecord] != signals.SurgeRecordLabel {
		t.Errorf("record %s: state %s, holder %v, labels %v", record.Name, got, record.Spec.HolderIdentity, record.Labels)
	}
	if v, ok := d.Annotations[signals.AnnotationSurgeState]; ok {
		t.Errorf("the Deployment keeps its old record: %s", v)
	}
	if moved, _ := run(false); moved != 0 {
		t.Errorf("a second run moved %d, want 0", moved)
	}

	startRebalancer(t, c, func(r *config.Rebalancer) {
		withSurge(r)
		r.Replacement.Mode = config.ReplacementCapacity
	})
	annotate(t, c, risky.Name, signals.AnnotationAtRisk, ptr.To("true"))
	waitDrained(t, c, risky.Name)
	c.WaitFor(t, 60*time.Second, "the surge finished: 2 replicas, no record, no marks", func(ctx context.Context) (bool, error) {
		left, err := surgeLeftovers(ctx, c, records, ns, "web", 2)
		return left == "", err
	})
	checkKeptReady(t, c, ns, "web", 2)
	if _, err := c.Client.CoordinationV1().Leases(records).Get(ctx, record.Name, metav1.GetOptions{}); !apierrors.IsNotFound(err) {
		t.Errorf("record %s is left: %v", record.Name, err)
	}
}
