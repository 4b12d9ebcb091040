package executor

import (
	"context"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/decide"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// Surge carries out one step of a surge off node (nil when the node is
// gone).
func (w *Writer) Surge(ctx context.Context, node *corev1.Node, a decide.SurgeAction) error {
	d := a.Deployment
	for _, name := range a.Delete {
		if err := w.Kube.CoreV1().Pods(d.Namespace).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting pod %s/%s of a node that is gone: %w", d.Namespace, name, err)
		}
	}
	switch a.Op {
	case decide.SurgeWait:
		return nil
	case decide.SurgeStart:
		return w.startSurge(ctx, node, a)
	case decide.SurgeScaleUp:
		// Resumed after a restart: the pods may not be marked yet.
		if err := w.markPods(ctx, d.Namespace, a.Record.Pods, ptr.To(signals.SurgeDeletionCost)); err != nil {
			return err
		}
		return w.scale(ctx, d, a.Record.From, a.Record.To)
	case decide.SurgeRecordWaiting:
		return w.writeRecord(ctx, a.Lease, a.Record)
	case decide.SurgeScaleDown:
		if err := w.writeRecord(ctx, a.Lease, a.Record); err != nil {
			return err
		}
		return w.scale(ctx, d, a.Record.To, a.Record.From)
	case decide.SurgeResumeScaleDown:
		return w.scale(ctx, d, a.Record.To, a.Record.From)
	case decide.SurgeComplete:
		if err := w.clearRecord(ctx, a.Lease); err != nil {
			return err
		}
		w.Metrics.Surges.WithLabelValues("completed").Inc()
		w.Recorder.Eventf(d, corev1.EventTypeNormal, "SurgeCompleted", "moved %d pod(s) off at-risk node %s; back at %d replicas",
			a.Record.To-a.Record.From, nodeList(a.Record), a.Record.From)
		return nil
	case decide.SurgeAbandon:
		return w.abandonSurge(ctx, node, a)
	case decide.SurgeForget:
		if err := w.clearRecord(ctx, a.Lease); err != nil {
			return err
		}
		ctrllog.FromContext(ctx).Info("Surge record removed: its Deployment is gone", "record", klog.KObj(a.Lease),
			"deployment", a.Lease.Annotations[signals.AnnotationSurgeDeployment])
		return nil
	}
	return fmt.Errorf("unknown surge step %q", a.Op)
}

// startSurge claims the Deployment by creating its record, a Lease named
// after its UID: of two drains deciding on a stale cache, one creates it
// and the other finds it and leaves the Deployment alone. Without that,
// the second would scale the Deployment again and the first surge would
// never be scaled back.
func (w *Writer) startSurge(ctx context.Context, node *corev1.Node, a decide.SurgeAction) error {
	d := a.Deployment
	live, err := w.Kube.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	if live.UID != d.UID || live.Annotations[signals.AnnotationSurgeState] != "" {
		return nil // replaced since read, or an older version's record: decided again on the next look
	}
	st := *a.Record
	st.Pods = slices.Sorted(slices.Values(st.Pods))
	st.From = ptr.Deref(live.Spec.Replicas, 1)
	st.To = st.From + int32(len(st.Pods))
	record, err := signals.NewSurgeRecord(w.RecordsNamespace, live, &st)
	if err != nil {
		return err
	}
	if _, err := w.Kube.CoordinationV1().Leases(w.RecordsNamespace).Create(ctx, record, metav1.CreateOptions{}); err != nil {
		if apierrors.IsAlreadyExists(err) {
			// Another node's surge (this node's pods wait or are evicted),
			// or a record the cache does not show yet.
			ctrllog.FromContext(ctx).V(1).Info("Surge already recorded", "deployment", klog.KObj(d), "record", klog.KObj(record))
			return nil
		}
		return fmt.Errorf("recording the surge of deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	// Recorded before anything else: a restart finds it and goes on.
	if err := w.markPods(ctx, d.Namespace, st.Pods, ptr.To(signals.SurgeDeletionCost)); err != nil {
		return err
	}
	if err := w.scale(ctx, live, st.From, st.To); err != nil {
		return err
	}
	w.Metrics.Surges.WithLabelValues("started").Inc()
	w.Recorder.Eventf(d, corev1.EventTypeNormal, "SurgeStarted",
		"moving %d pod(s) off at-risk node %s: scaled from %d to %d; they leave once %d pods are Ready elsewhere", len(st.Pods), nodeList(&st), st.From, st.To, st.From)
	also := ""
	if others := st.OffNodes()[1:]; len(others) > 0 {
		also = " and " + names(others)
	}
	w.Recorder.Eventf(node, corev1.EventTypeNormal, "SurgeStarted", "deployment %s/%s scaled from %d to %d to move %d pod(s) off this node%s",
		d.Namespace, d.Name, st.From, st.To, len(st.Pods), also)
	return nil
}

// abandonSurge gives a surge up: the marked pods lose their mark (before
// any scale-down, so that the ReplicaSet controller does not prefer them),
// the Deployment is scaled back when the decision says the count is still
// ours, the record goes, and the node may remember not to surge this
// Deployment again.
func (w *Writer) abandonSurge(ctx context.Context, node *corev1.Node, a decide.SurgeAction) error {
	d := a.Deployment
	if err := w.markPods(ctx, d.Namespace, a.Unmark, nil); err != nil {
		return err
	}
	if a.Restore {
		if err := w.scale(ctx, d, a.Record.To, a.Record.From); err != nil {
			return err
		}
	}
	if a.Fallback {
		// Every node the surge moved pods off evicts them now (the
		// node's own when the record does not say), written before the
		// record goes: nothing would write them after.
		var nodes []string
		switch {
		case a.Record != nil:
			nodes = a.Record.OffNodes()
		case node != nil:
			nodes = []string{node.Name}
		}
		for _, name := range nodes {
			if err := w.addSurgeFallback(ctx, name, d.Namespace+"/"+d.Name); err != nil {
				return err
			}
		}
	}
	if err := w.clearRecord(ctx, a.Lease); err != nil {
		return err
	}
	nodeName := "(unknown)"
	switch {
	case a.Record != nil:
		nodeName = nodeList(a.Record)
	case node != nil:
		nodeName = node.Name
	}
	w.Metrics.Surges.WithLabelValues("abandoned").Inc()
	w.Recorder.Eventf(d, corev1.EventTypeWarning, "SurgeAbandoned", "surge off node %s given up: %s", nodeName, a.Why)
	if node != nil {
		w.Recorder.Eventf(node, corev1.EventTypeWarning, "SurgeAbandoned", "surge of deployment %s/%s given up: %s", d.Namespace, d.Name, a.Why)
	}
	ctrllog.FromContext(ctx).Info("Surge abandoned", "deployment", klog.KObj(d), "node", nodeName, "reason", a.Why)
	return nil
}

// nodeList names the nodes a surge moves pods off, for people: the first
// few, so that an event stays short.
func nodeList(st *signals.SurgeState) string {
	return names(st.OffNodes())
}

func names(list []string) string {
	const shown = 5
	if len(list) <= shown {
		return strings.Join(list, ", ")
	}
	return fmt.Sprintf("%s and %d more", strings.Join(list[:shown], ", "), len(list)-shown)
}

// markPods sets (or, with nil, removes) the pods' deletion cost. Marking
// twice is harmless; a pod that is gone needs nothing.
func (w *Writer) markPods(ctx context.Context, namespace string, names []string, cost *string) error {
	for _, name := range names {
		_, err := w.Kube.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType,
			signals.AnnotationPatch(signals.AnnotationPodDeletionCost, cost, ""), metav1.PatchOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("marking pod %s/%s: %w", namespace, name, err)
		}
	}
	return nil
}

// scale sets the Deployment's replicas from one count to another through
// the scale subresource, only if the live count is still from. When d says
// from, the first try writes on d's own resourceVersion without reading
// (callers mostly hold a Deployment just read or written; a stale one
// conflicts, and every retry reads the scale first).
func (w *Writer) scale(ctx context.Context, d *appsv1.Deployment, from, to int32) error {
	deployments := w.Kube.AppsV1().Deployments(d.Namespace)
	var known *autoscalingv1.Scale
	if d.ResourceVersion != "" && ptr.Deref(d.Spec.Replicas, 1) == from {
		known = &autoscalingv1.Scale{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace, ResourceVersion: d.ResourceVersion},
			Spec:       autoscalingv1.ScaleSpec{Replicas: from},
		}
	}
	// The scale's resourceVersion is the Deployment's, which its status
	// changes all the time: on a conflict, read again and scale only if the
	// count is still from.
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		scale := known
		known = nil
		if scale == nil {
			var err error
			if scale, err = deployments.GetScale(ctx, d.Name, metav1.GetOptions{}); err != nil {
				return fmt.Errorf("reading the scale of deployment %s/%s: %w", d.Namespace, d.Name, err)
			}
		}
		if scale.Spec.Replicas != from {
			return fmt.Errorf("deployment %s/%s has %d replicas, not %d: not scaling", d.Namespace, d.Name, scale.Spec.Replicas, from)
		}
		scale.Spec.Replicas = to
		if _, err := deployments.UpdateScale(ctx, d.Name, scale, metav1.UpdateOptions{}); err != nil {
			return fmt.Errorf("scaling deployment %s/%s from %d to %d: %w", d.Namespace, d.Name, from, to, err)
		}
		return nil
	})
}

// writeRecord writes st into the record, on the record's resourceVersion:
// a record changed since read conflicts, and the step is decided again.
func (w *Writer) writeRecord(ctx context.Context, record *coordinationv1.Lease, st *signals.SurgeState) error {
	updated, err := signals.SetSurgeState(record, st)
	if err != nil {
		return err
	}
	if _, err := w.Kube.CoordinationV1().Leases(record.Namespace).Update(ctx, updated, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("recording phase %s in surge record %s/%s: %w", st.Phase, record.Namespace, record.Name, err)
	}
	return nil
}

// clearRecord removes the record (this one: a record made again since is
// another surge's).
func (w *Writer) clearRecord(ctx context.Context, record *coordinationv1.Lease) error {
	if record == nil {
		return nil
	}
	err := w.Kube.CoordinationV1().Leases(record.Namespace).Delete(ctx, record.Name,
		metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &record.UID}})
	if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
		return fmt.Errorf("removing surge record %s/%s: %w", record.Namespace, record.Name, err)
	}
	return nil
}

// addSurgeFallback records on the node that the Deployment's pods there
// are evicted, not surged: only on a node the rebalancer has a state on (a
// record's list of nodes is not trusted to name only those), retried when
// the node changed since read.
func (w *Writer) addSurgeFallback(ctx context.Context, node, key string) error {
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		current, err := w.Kube.CoreV1().Nodes().Get(ctx, node, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading node %s: %w", node, err)
		}
		if signals.StateOf(current.Annotations) == "" {
			return nil
		}
		var list []string
		if v := current.Annotations[signals.AnnotationSurgeFallback]; v != "" {
			list = strings.Split(v, ",")
		}
		if slices.Contains(list, key) {
			return nil
		}
		value := strings.Join(append(list, key), ",")
		if _, err := w.Kube.CoreV1().Nodes().Patch(ctx, node, types.MergePatchType,
			signals.AnnotationPatch(signals.AnnotationSurgeFallback, &value, current.ResourceVersion), metav1.PatchOptions{}); err != nil {
			return fmt.Errorf("recording the surge fallback on node %s: %w", node, err)
		}
		return nil
	})
}
