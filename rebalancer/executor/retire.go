package executor

import (
	"context"
	"fmt"

	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime/schema"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/decide"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
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

// raise asks the node's group for one more instance. Raises are made one
// at a time on the group as read just now (nodes of one group at risk
// together each add one; none is lost to a stale read), and recorded on
// the node before the call (pending) and after it: a restart never raises
// the group twice for one node.
func (w *Writer) raise(ctx context.Context, node *corev1.Node, r asg.Record) error {
	if r.Group == "" {
		if err := w.record(ctx, node, r); err != nil {
			return err
		}
		w.Recorder.Eventf(node, corev1.EventTypeWarning, "NoAutoScalingGroup", "provision asg: the node's instance is in no Auto Scaling group; nothing asked")
		return nil
	}
	if w.ASG == nil {
		return fmt.Errorf("provision asg needs an Auto Scaling client")
	}
	w.groupMu.Lock()
	defer w.groupMu.Unlock()
	g, err := asg.Read(ctx, w.ASG, r.Group)
	if err != nil {
		return err
	}
	r = asg.Record{Group: g.Name, From: g.Desired, To: min(g.Desired+1, max(g.Max, g.Desired))}
	if r.To == r.From {
		if err := w.record(ctx, node, r); err != nil {
			return err
		}
		w.Recorder.Eventf(node, corev1.EventTypeWarning, "AutoScalingGroupAtMax", "provision asg: Auto Scaling group %s is at its MaxSize (%d); nothing asked", r.Group, r.From)
		return nil
	}
	r.Pending = true
	if err := w.record(ctx, node, r); err != nil {
		return err
	}
	r.Pending = false
	if err := asg.Raise(ctx, w.ASG, r.Group, r.To); err != nil {
		// Recorded as not raised: the node is never terminated with a
		// decrement for it; the replacement timeout covers the rest.
		w.Recorder.Eventf(node, corev1.EventTypeWarning, "ReplacementRequestFailed", "%v", err)
		r.To = r.From
		return w.record(ctx, node, r)
	}
	if err := w.record(ctx, node, r); err != nil {
		return err
	}
	w.Recorder.Eventf(node, corev1.EventTypeNormal, "ReplacementRequested", "Auto Scaling group %s: desired capacity %d -> %d", r.Group, r.From, r.To)
	return nil
}

func (w *Writer) record(ctx context.Context, node *corev1.Node, r asg.Record) error {
	value := r.Value()
	if _, err := w.Kube.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType,
		signals.AnnotationPatch(asg.AnnotationRaised, &value, ""), metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("recording the raise of node %s's Auto Scaling group: %w", node.Name, err)
	}
	return nil
}
