package controller

import (
	"context"
	"fmt"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/decide"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// surgeNodeIndex indexes surge records by the node they name; records
// that do not parse are indexed under unreadableRecord.
const (
	surgeNodeIndex   = "spot-rebalancer.io/surge-node"
	unreadableRecord = "(unreadable)"
)

func surgeNodeOf(o client.Object) []string {
	record, ok := o.(*coordinationv1.Lease)
	if !ok || record.Labels[signals.LabelRecord] != signals.SurgeRecordLabel {
		return nil
	}
	st, err := signals.SurgeOf(record)
	if err != nil {
		return []string{unreadableRecord}
	}
	return []string{st.Node}
}

// recordsOff lists, from the cache, the surge records naming node (and,
// with unreadable, those that do not parse).
func (r *Reconciler) recordsOff(ctx context.Context, node string, unreadable bool) ([]*coordinationv1.Lease, error) {
	keys := []string{node}
	if unreadable {
		keys = append(keys, unreadableRecord)
	}
	var out []*coordinationv1.Lease
	for _, key := range keys {
		var list coordinationv1.LeaseList
		if err := r.Client.List(ctx, &list, client.InNamespace(r.Namespace), client.MatchingFields{surgeNodeIndex: key}); err != nil {
			return nil, fmt.Errorf("listing surges off node %s: %w", node, err)
		}
		for i := range list.Items {
			out = append(out, &list.Items[i])
		}
	}
	return out, nil
}

// gatherSurges reads the surges off a draining node: from the cache for one
// that can only go on waiting (decide.Quiet), else live, since the cache
// may show a record that has moved on (or ended, and another node's
// begun).
func (r *Reconciler) gatherSurges(ctx context.Context, node *corev1.Node, snap *snapshot.Snapshot) ([]decide.Surge, error) {
	records, err := r.recordsOff(ctx, node.Name, true)
	if err != nil {
		return nil, err
	}
	var out []decide.Surge
	for _, record := range records {
		s, err := r.surge(ctx, record, node.Name, snap)
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

// surge builds what a surge's step depends on, reading the record and its
// Deployment live unless the cached ones can only go on waiting (its step
// writes nothing).
func (r *Reconciler) surge(ctx context.Context, cached *coordinationv1.Lease, node string, snap *snapshot.Snapshot) (decide.Surge, error) {
	namespace, name, named := signals.SurgeDeploymentOf(cached)
	cachedD := snap.Deployment(namespace, name)
	if named && cachedD != nil && signals.SurgeRecordName(cachedD.UID) == cached.Name {
		if s := surgeOf(cached, cachedD, node, snap); decide.Quiet(s, r.Clock.Now(), r.Config.Surge.Timeout.Duration) {
			return s, nil
		}
	}
	// A stale record still names its Deployment: no other surge of it
	// starts until the cache catches up.
	stale := decide.Surge{Stale: true, Deployment: cachedD}
	record, err := r.Kube.CoordinationV1().Leases(cached.Namespace).Get(ctx, cached.Name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return stale, nil // ended
	}
	if err != nil {
		return decide.Surge{}, fmt.Errorf("reading surge record %s/%s: %w", cached.Namespace, cached.Name, err)
	}
	if !named {
		return decide.Surge{Lease: record, Unreadable: true, NoDeployment: true}, nil
	}
	d, err := r.Kube.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
	switch {
	case apierrors.IsNotFound(err) || err == nil && signals.SurgeRecordName(d.UID) != record.Name:
		// Deleted, or replaced by another of the same name: its pods went
		// with it, and its replicas are another Deployment's business.
		s := decide.Surge{Lease: record, NoDeployment: true}
		s.Record, err = signals.SurgeOf(record)
		s.Unreadable = err != nil
		return s, nil
	case err != nil:
		return decide.Surge{}, fmt.Errorf("reading deployment %s/%s: %w", namespace, name, err)
	}
	if _, legacy := d.Annotations[signals.AnnotationSurgeState]; legacy {
		// The migration created the record and has not removed the old
		// one yet: the record is not ours to step until it has (it may
		// still rewrite it from the annotation).
		return stale, nil
	}
	fresh := surgeOf(record, d, node, snap)
	if !fresh.Unreadable && fresh.Record.Node != node {
		return stale, nil // another node's now
	}
	return fresh, nil
}

// surgeOf reads the record of d, owned by node, and counts d's pods on
// the nodes it moves pods off and elsewhere. A pod on another draining
// node is not counted Ready elsewhere: it is leaving too (evicted beside
// the surge, or in a later one), and the scale-down, which removes the
// moved pods outside the Eviction API, must leave as many Ready pods as
// the Deployment had once it has gone as well.
func surgeOf(record *coordinationv1.Lease, d *appsv1.Deployment, node string, snap *snapshot.Snapshot) decide.Surge {
	s := decide.Surge{Deployment: d, Lease: record, Replicas: ptr.Deref(d.Spec.Replicas, 1)}
	st, err := signals.SurgeOf(record)
	s.Record, s.Unreadable = st, err != nil
	off, moving := sets.New(node), sets.New[string]()
	if st != nil {
		off.Insert(st.OffNodes()...)
		moving.Insert(st.Pods...)
	}
	for _, p := range snap.PodsIn(d.Namespace) {
		if !sameDeployment(snap.DeploymentOf(p), d) {
			continue
		}
		live := p.DeletionTimestamp == nil
		switch {
		case off.Has(p.Spec.NodeName):
			if p.Annotations[signals.AnnotationPodDeletionCost] == signals.SurgeDeletionCost {
				s.Marked = append(s.Marked, p.Name)
			}
			if !live {
				continue
			}
			if moving.Has(p.Name) {
				s.Leaving++
			}
			switch {
			case p.Spec.NodeName == node:
				s.OnNode = append(s.OnNode, p.Name)
			case snap.Node(p.Spec.NodeName) == nil:
				s.Stranded = append(s.Stranded, p.Name)
			}
		case p.Spec.NodeName != "" && live && snapshot.PodReady(p) && !draining(snap.Node(p.Spec.NodeName)):
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
	snap, err := snapshot.Read(ctx, r.Client, r.Clock.Now(), 0, r.Namespace)
	if err != nil {
		return false, fmt.Errorf("reading the cache: %w", err)
	}
	running := false
	for _, record := range records {
		s, err := r.surge(ctx, record, name, snap)
		if err != nil {
			return true, err
		}
		a := decide.Orphan(s, node == nil, r.Clock.Now(), r.Config.Surge.Timeout.Duration)
		running = running || a.Running()
		if err := r.writer.Surge(ctx, node, a); err != nil {
			return true, err
		}
	}
	return running, nil
}

// draining tells whether the rebalancer drains node now.
func draining(node *corev1.Node) bool {
	return node != nil && signals.StateOf(node.Annotations) == signals.StateDraining
}

// sameDeployment compares by UID: the live object and the cached one are
// different values of one Deployment.
func sameDeployment(a, b *appsv1.Deployment) bool {
	return a != nil && b != nil && a.UID == b.UID
}
