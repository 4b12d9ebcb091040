package controller

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/decide"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// surgeNodeIndex indexes Deployments by the node their surge record names;
// records that do not parse are indexed under unreadableRecord.
const (
	surgeNodeIndex   = "spot-rebalancer.io/surge-node"
	unreadableRecord = "(unreadable)"
)

func surgeNodeOf(o client.Object) []string {
	if _, ok := o.GetAnnotations()[signals.AnnotationSurgeState]; !ok {
		return nil
	}
	d, ok := o.(*appsv1.Deployment)
	if !ok {
		return nil
	}
	st, err := signals.SurgeOf(d)
	if err != nil {
		return []string{unreadableRecord}
	}
	return []string{st.Node}
}

// recordsOff lists, from the cache, the Deployments with a surge record
// naming node (and, with unreadable, those whose record does not parse).
func (r *Reconciler) recordsOff(ctx context.Context, node string, unreadable bool) ([]*appsv1.Deployment, error) {
	keys := []string{node}
	if unreadable {
		keys = append(keys, unreadableRecord)
	}
	var out []*appsv1.Deployment
	for _, key := range keys {
		var list appsv1.DeploymentList
		if err := r.Client.List(ctx, &list, client.MatchingFields{surgeNodeIndex: key}); err != nil {
			return nil, fmt.Errorf("listing surges off node %s: %w", node, err)
		}
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

// gatherSurges reads the surges off a draining node: from the cache for one
// that can only go on waiting (decide.Quiet), else from the live
// Deployment, since the cache may show a record that has moved on (or
// ended, and another node's begun).
func (r *Reconciler) gatherSurges(ctx context.Context, node *corev1.Node, snap *snapshot.Snapshot) ([]decide.Surge, error) {
	records, err := r.recordsOff(ctx, node.Name, true)
	if err != nil {
		return nil, err
	}
	var out []decide.Surge
	for _, d := range records {
		s, ok, err := r.surge(ctx, d, node.Name, snap)
		if err != nil {
			return nil, err
		}
		if ok {
			out = append(out, s)
		}
	}
	return out, nil
}

// surge builds what a surge's step depends on, reading the Deployment live
// unless the cached one can only go on waiting (its step writes nothing).
// ok is false when the Deployment is gone.
func (r *Reconciler) surge(ctx context.Context, cached *appsv1.Deployment, node string, snap *snapshot.Snapshot) (decide.Surge, bool, error) {
	s := surgeOf(cached, node, snap)
	if decide.Quiet(s, r.Clock.Now(), r.Config.Surge.Timeout.Duration) {
		return s, true, nil
	}
	d, err := r.Kube.AppsV1().Deployments(cached.Namespace).Get(ctx, cached.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return decide.Surge{}, false, nil
	}
	if err != nil {
		return decide.Surge{}, false, fmt.Errorf("reading deployment %s/%s: %w", cached.Namespace, cached.Name, err)
	}
	fresh := surgeOf(d, node, snap)
	switch {
	case fresh.Unreadable:
		return fresh, true, nil
	case fresh.Record == nil || fresh.Record.Node != node:
		// Ended, or another node's now: the cache catches up.
		return decide.Surge{Deployment: d, Stale: true}, true, nil
	}
	return fresh, true, nil
}

// surgeOf reads the record on d and counts its pods.
func surgeOf(d *appsv1.Deployment, node string, snap *snapshot.Snapshot) decide.Surge {
	s := decide.Surge{Deployment: d, Replicas: ptr.Deref(d.Spec.Replicas, 1)}
	st, err := signals.SurgeOf(d)
	s.Record, s.Unreadable = st, err != nil
	for _, p := range snap.PodsIn(d.Namespace) {
		if !sameDeployment(snap.DeploymentOf(p), d) {
			continue
		}
		switch {
		case p.Spec.NodeName == node:
			if p.Annotations[signals.AnnotationPodDeletionCost] == signals.SurgeDeletionCost {
				s.Marked = append(s.Marked, p.Name)
			}
			if p.DeletionTimestamp == nil {
				s.OnNode = append(s.OnNode, p.Name)
			}
		case p.Spec.NodeName != "" && p.DeletionTimestamp == nil && snapshot.PodReady(p):
			s.ReadyElsewhere++
		}
	}
	return s
}

// sweepOrphans steps the surges off a node that is gone (node nil) or no
// longer draining: nothing else would. It reports whether one goes on.
func (r *Reconciler) sweepOrphans(ctx context.Context, name string, node *corev1.Node) (bool, error) {
	records, err := r.recordsOff(ctx, name, false)
	if err != nil || len(records) == 0 {
		return false, err
	}
	snap, err := snapshot.Read(ctx, r.Client, r.Clock.Now(), 0)
	if err != nil {
		return false, fmt.Errorf("reading the cache: %w", err)
	}
	running := false
	for _, d := range records {
		s, ok, err := r.surge(ctx, d, name, snap)
		if err != nil {
			return true, err
		}
		if !ok {
			continue
		}
		a := decide.Orphan(s, node == nil, r.Clock.Now(), r.Config.Surge.Timeout.Duration)
		running = running || a.Running()
		if err := r.writer.Surge(ctx, node, a); err != nil {
			return true, err
		}
	}
	return running, nil
}

// sameDeployment compares by UID: the live object and the cached one are
// different values of one Deployment.
func sameDeployment(a, b *appsv1.Deployment) bool {
	return a != nil && b != nil && a.UID == b.UID
}
