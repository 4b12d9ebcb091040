package executor

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"sigs.k8s.io/controller-runtime/pkg/client"
)

// patchNode writes the difference between the node as read and updated as
// a JSON merge patch carrying the read resourceVersion: only the fields
// that changed are sent (a typed Update would drop fields this client does
// not know on a newer API server), and a node changed in between is a
// conflict, decided again, never overwritten.
func patchNode(ctx context.Context, kube kubernetes.Interface, read, updated *corev1.Node) error {
	data, err := client.MergeFromWithOptions(read, client.MergeFromWithOptimisticLock{}).Data(updated)
	if err != nil {
		return fmt.Errorf("computing the patch: %w", err)
	}
	_, err = kube.CoreV1().Nodes().Patch(ctx, read.Name, types.MergePatchType, data, metav1.PatchOptions{})
	return err
}
