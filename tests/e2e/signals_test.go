package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// The at-risk annotation dates from when the API server says it was
// written (the Node's managed fields), however late the rebalancer looks,
// and a later change by another field manager does not move it.
func TestAnnotationSignalDatesFromItsWrite(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	node := c.AddNode(t, cluster.Node{Spot: true, Pool: "signal-time"})
	before := time.Now().Truncate(time.Second)
	patch := fmt.Sprintf(`{"metadata":{"annotations":{%q:"true"}}}`, signals.AnnotationAtRisk)
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(patch),
		metav1.PatchOptions{FieldManager: "operator"}); err != nil {
		t.Fatal(err)
	}
	after := time.Now()
	// Another manager writes something else, at least a second later
	// (managed-field times have second precision).
	c.WaitFor(t, 5*time.Second, "the clock to pass the next second", func(_ context.Context) (bool, error) {
		return time.Now().Truncate(time.Second).After(after), nil
	})
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, []byte(`{"metadata":{"labels":{"other":"x"}}}`),
		metav1.PatchOptions{FieldManager: "someone-else"}); err != nil {
		t.Fatal(err)
	}
	live, err := c.Client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	late := after.Add(time.Hour) // the rebalancer's first look, an hour on
	sig, ok := signals.FromNode(live, late)
	if !ok || sig.Source != signals.SourceAnnotation {
		t.Fatalf("FromNode = %+v, %v; want the annotation's signal", sig, ok)
	}
	if sig.Since.Before(before) || sig.Since.After(after) {
		t.Errorf("signal since %s, want between %s and %s (the write), not the first look at %s", sig.Since, before, after, late)
	}
}
