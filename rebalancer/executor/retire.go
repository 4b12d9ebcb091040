package executor

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/decide"
)

// NodeClaims is the resource of Karpenter's NodeClaims (karpenter.sh/v1).
var NodeClaims = schema.GroupVersionResource{Group: "karpenter.sh", Version: "v1", Resource: "nodeclaims"}

// retire deletes the NodeClaim on its UID (a claim of the same name made
// since is kept); one already gone is fine.
func (w *Writer) retire(ctx context.Context, claim *decide.NodeClaim) error {
	if w.Dynamic == nil {
		return fmt.Errorf("retiring needs a dynamic client")
	}
	err := w.Dynamic.Resource(NodeClaims).Delete(ctx, claim.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &claim.UID}})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("deleting NodeClaim %s: %w", claim.Name, err)
	}
	return nil
}
