package signals

import (
	"context"
	"encoding/json"
	"fmt"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
)

// Writer records Spot signals on Nodes the way FromNode reads them. Both
// writes are idempotent: a signal already on the node is not written
// again, whatever time the source now reports. A new interruption notice
// always writes its own termination time, replacing one an earlier notice
// left behind.
type Writer struct {
	Kube  kubernetes.Interface
	Clock clock.PassiveClock
}

// Interruption records an interruption notice: the termination time first
// (so that whoever sees the condition also sees the deadline), then the
// SpotInterruptionNotice condition. It reports whether it wrote anything.
func (w Writer) Interruption(ctx context.Context, node string, at time.Time, reason, message string) (bool, error) {
	n, err := w.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("reading node %s: %w", node, err)
	}
	if hasTrue(n, ConditionInterruption) {
		return false, nil
	}
	if value := at.UTC().Format(time.RFC3339); n.Annotations[AnnotationTerminationTime] != value {
		if _, err := w.Kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType, AnnotationPatch(AnnotationTerminationTime, &value, ""), metav1.PatchOptions{}); err != nil {
			return false, fmt.Errorf("annotating node %s: %w", node, err)
		}
	}
	return true, w.condition(ctx, node, ConditionInterruption, reason, message)
}

// Rebalance records a rebalance recommendation. It reports whether it
// wrote anything.
func (w Writer) Rebalance(ctx context.Context, node, reason, message string) (bool, error) {
	n, err := w.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
	if err != nil {
		return false, fmt.Errorf("reading node %s: %w", node, err)
	}
	if hasTrue(n, ConditionRebalance) {
		return false, nil
	}
	return true, w.condition(ctx, node, ConditionRebalance, reason, message)
}

// condition adds or replaces one condition by type: a strategic merge
// patch keyed by type, as the kubelet writes its own.
func (w Writer) condition(ctx context.Context, node string, t corev1.NodeConditionType, reason, message string) error {
	now := metav1.NewTime(w.Clock.Now())
	patch, _ := json.Marshal(map[string]any{"status": map[string]any{"conditions": []corev1.NodeCondition{{
		Type: t, Status: corev1.ConditionTrue, Reason: reason, Message: message, LastTransitionTime: now, LastHeartbeatTime: now,
	}}}})
	if _, err := w.Kube.CoreV1().Nodes().PatchStatus(ctx, node, patch); err != nil {
		return fmt.Errorf("writing condition %s on node %s: %w", t, node, err)
	}
	return nil
}

func hasTrue(n *corev1.Node, t corev1.NodeConditionType) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == t {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// AnnotationPatch is a JSON merge patch that sets (or, with nil, removes)
// one annotation. With a resourceVersion, the patch fails if the object
// changed since.
func AnnotationPatch(key string, value *string, resourceVersion string) []byte {
	var v any
	if value != nil {
		v = *value
	}
	meta := map[string]any{"annotations": map[string]any{key: v}}
	if resourceVersion != "" {
		meta["resourceVersion"] = resourceVersion
	}
	data, _ := json.Marshal(map[string]any{"metadata": meta})
	return data
}
