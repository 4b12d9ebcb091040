package controller

import (
	"context"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/util/retry"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// The surge hand-off, per Deployment with pods on a draining node:
//
//  1. mark the pods there with the lowest pod-deletion-cost;
//  2. record the surge on the Deployment (annotation surge-state, phase
//     scaling-up), then scale it up by their number through the scale
//     subresource;
//  3. wait (phase waiting) until as many of its pods as it had replicas are
//     Ready on other nodes;
//  4. record phase scaling-down, scale back: the ReplicaSet controller
//     removes the pods with the lowest deletion cost, the ones on the node;
//  5. remove the record.
//
// Every step reads the live replica count first. If it is neither what the
// record expects nor what the step writes, someone else (an HPA, GitOps, a
// person) changed it: the surge gives up without restoring anything, and
// the pods fall back to eviction. If the new pods are not Ready within
// rebalancer.surge.timeout, the Deployment is scaled back and the pods fall
// back to eviction. A restart or a new leader resumes from the record.

// surgeRecord is a Deployment with a surge off some node.
type surgeRecord struct {
	d     *appsv1.Deployment
	state *signals.SurgeState
}

// surgesOff returns the surges recorded for node. Records that do not
// parse are returned with a nil state.
func surgesOff(snap *snapshot.Snapshot, node string) []surgeRecord {
	var out []surgeRecord
	for _, d := range snap.Deployments {
		if _, ok := d.Annotations[signals.AnnotationSurgeState]; !ok {
			continue
		}
		st, err := signals.SurgeOf(d)
		if err != nil {
			out = append(out, surgeRecord{d: d})
			continue
		}
		if st.Node == node {
			out = append(out, surgeRecord{d: d, state: st})
		}
	}
	return out
}

// advanceSurges moves every surge off node one step: it finishes or gives up
// the ones in progress and starts the ones the plan asks for. It reports
// whether one is still running; evictions wait until none is.
func (r *Reconciler) advanceSurges(ctx context.Context, node *corev1.Node, np *planner.NodePlan, snap *snapshot.Snapshot) (bool, error) {
	running := false
	inProgress := map[string]bool{}
	for _, rec := range surgesOff(snap, node.Name) {
		key := rec.d.Namespace + "/" + rec.d.Name
		inProgress[key] = true
		if rec.state == nil {
			// Unreadable: trust nothing in it, restore nothing.
			if err := r.abandonSurge(ctx, node, rec.d, nil, "its surge record does not parse", false, snap); err != nil {
				return true, err
			}
			continue
		}
		if r.waitingQuietly(rec, snap, node.Name) {
			running = true
			continue
		}
		// The cache may show a record that has moved on (or ended and been
		// replaced by another node's): step only on the live one.
		live, err := r.Kube.AppsV1().Deployments(rec.d.Namespace).Get(ctx, rec.d.Name, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return true, fmt.Errorf("reading deployment %s/%s: %w", rec.d.Namespace, rec.d.Name, err)
		}
		st, err := signals.SurgeOf(live)
		if err != nil || st == nil || st.Node != node.Name {
			running = true // ended or not ours: the cache catches up
			continue
		}
		done, err := r.stepSurge(ctx, node, live, st, snap)
		if err != nil {
			return true, err
		}
		running = running || !done
	}
	for key, pods := range surgeGroups(np) {
		if inProgress[key] {
			continue
		}
		ns, name, _ := strings.Cut(key, "/")
		var d *appsv1.Deployment
		for _, cand := range snap.Deployments {
			if cand.Namespace == ns && cand.Name == name {
				d = cand
			}
		}
		if d == nil {
			continue
		}
		if err := r.startSurge(ctx, node, d, pods, snap); err != nil {
			return true, err
		}
		running = true
	}
	return running, nil
}

// waitingQuietly reports whether the cache shows a surge that can only go
// on waiting: in its waiting phase, at the surged count, within its timeout,
// fewer of its pods Ready elsewhere than it had replicas. Nothing is read
// for it then: a draining node is reconciled every second, and reading each
// of its surges live (the Deployment and its scale) made waiting the
// controller's biggest use of its API rate limit. If the cache is behind,
// waiting one more round is all that happens; any step reads the live
// record first.
func (r *Reconciler) waitingQuietly(rec surgeRecord, snap *snapshot.Snapshot, node string) bool {
	st := rec.state
	return st.Phase == signals.SurgeWaiting && ptr.Deref(rec.d.Spec.Replicas, 1) == st.To &&
		r.Clock.Since(st.Since) < r.Config.Surge.Timeout.Duration &&
		readyElsewhere(snap, rec.d, node) < int(st.From)
}

// surgeGroups are the plan's surge pods by Deployment (namespace/name).
func surgeGroups(np *planner.NodePlan) map[string][]planner.PodPlan {
	out := map[string][]planner.PodPlan{}
	for _, p := range np.Pods {
		if p.Action == planner.ActionSurge {
			name := strings.TrimPrefix(p.Workload, "Deployment/")
			out[p.Namespace+"/"+name] = append(out[p.Namespace+"/"+name], p)
		}
	}
	return out
}

func (r *Reconciler) startSurge(ctx context.Context, node *corev1.Node, d *appsv1.Deployment, pods []planner.PodPlan, snap *snapshot.Snapshot) error {
	// The record is claimed on the live Deployment, with its
	// resourceVersion: of two drains deciding on a stale cache, one writes
	// it and the other finds it (or conflicts) and leaves the Deployment
	// alone. Without that, the second would overwrite the first's record
	// and the first surge would never be scaled back.
	deployments := r.Kube.AppsV1().Deployments(d.Namespace)
	live, err := deployments.Get(ctx, d.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	if _, taken := live.Annotations[signals.AnnotationSurgeState]; taken {
		return nil // another node's surge; this node's pods wait or are evicted
	}
	names := make([]string, 0, len(pods))
	for _, p := range pods {
		names = append(names, p.Name)
	}
	slices.Sort(names)
	from := ptr.Deref(live.Spec.Replicas, 1)
	st := &signals.SurgeState{Node: node.Name, From: from, To: from + int32(len(pods)), Phase: signals.SurgeScalingUp,
		Since: r.Clock.Now().UTC(), Pods: names}
	raw, err := json.Marshal(st)
	if err != nil {
		return err
	}
	if live.Annotations == nil {
		live.Annotations = map[string]string{}
	}
	live.Annotations[signals.AnnotationSurgeState] = string(raw)
	recorded, err := deployments.Update(ctx, live, metav1.UpdateOptions{})
	if err != nil {
		if apierrors.IsConflict(err) {
			return nil // changed since read: decided again on the next reconcile
		}
		return fmt.Errorf("recording the surge on deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	// Recorded before anything else: a restart finds it and goes on.
	if err := r.markPods(ctx, d.Namespace, names); err != nil {
		return err
	}
	if err := r.scale(ctx, recorded, st.From, st.To); err != nil {
		return err
	}
	r.Metrics.Surges.WithLabelValues("started").Inc()
	r.Recorder.Eventf(d, corev1.EventTypeNormal, "SurgeStarted",
		"moving %d pod(s) off at-risk node %s: scaled from %d to %d; they leave once %d pods are Ready elsewhere", len(pods), node.Name, st.From, st.To, st.From)
	r.Recorder.Eventf(node, corev1.EventTypeNormal, "SurgeStarted", "deployment %s/%s scaled from %d to %d to move %d pod(s) off this node",
		d.Namespace, d.Name, st.From, st.To, len(pods))
	return nil
}

// markPods gives the pods a surge moves the lowest deletion cost: when the
// Deployment scales back, these go. Marking twice is harmless.
func (r *Reconciler) markPods(ctx context.Context, namespace string, names []string) error {
	for _, name := range names {
		if err := r.patchPodAnnotation(ctx, namespace, name, signals.SurgeDeletionCost); err != nil {
			return err
		}
	}
	return nil
}

// stepSurge advances one surge, given the live Deployment (its replica
// count is what its scale subresource shows); it reports whether the surge
// is over.
func (r *Reconciler) stepSurge(ctx context.Context, node *corev1.Node, d *appsv1.Deployment, st *signals.SurgeState, snap *snapshot.Snapshot) (bool, error) {
	cur := ptr.Deref(d.Spec.Replicas, 1)
	someoneElse := fmt.Sprintf("its replica count was changed to %d by someone else (expected %d or %d)", cur, st.From, st.To)
	switch st.Phase {
	case signals.SurgeScalingUp:
		switch cur {
		case st.From:
			// Resumed after a restart: the pods may not be marked yet.
			if err := r.markPods(ctx, d.Namespace, st.Pods); err != nil {
				return false, err
			}
			return false, r.scale(ctx, d, st.From, st.To)
		case st.To:
			st.Phase = signals.SurgeWaiting
			_, err := r.writeSurge(ctx, d, st)
			return false, err
		}
		return true, r.abandonSurge(ctx, node, d, st, someoneElse, false, snap)
	case signals.SurgeWaiting:
		if cur != st.To {
			return true, r.abandonSurge(ctx, node, d, st, someoneElse, false, snap)
		}
		if r.Clock.Since(st.Since) >= r.Config.Surge.Timeout.Duration {
			if err := r.scale(ctx, d, st.To, st.From); err != nil {
				return false, err
			}
			return true, r.abandonSurge(ctx, node, d, st, fmt.Sprintf("the new pods were not Ready within %s: scaled back to %d", r.Config.Surge.Timeout.Duration, st.From), false, snap)
		}
		if readyElsewhere(snap, d, node.Name) < int(st.From) {
			return false, nil
		}
		st.Phase = signals.SurgeScalingDown
		written, err := r.writeSurge(ctx, d, st)
		if err != nil {
			return false, err
		}
		return false, r.scale(ctx, written, st.To, st.From)
	case signals.SurgeScalingDown:
		switch cur {
		case st.To:
			return false, r.scale(ctx, d, st.To, st.From)
		case st.From:
			if err := r.clearSurge(ctx, d); err != nil {
				return false, err
			}
			r.Metrics.Surges.WithLabelValues("completed").Inc()
			r.Recorder.Eventf(d, corev1.EventTypeNormal, "SurgeCompleted", "moved %d pod(s) off at-risk node %s; back at %d replicas", st.To-st.From, node.Name, st.From)
			return true, nil
		}
		return true, r.abandonSurge(ctx, node, d, st, someoneElse, false, snap)
	}
	return true, r.abandonSurge(ctx, node, d, st, "unknown phase "+st.Phase, false, snap)
}

// undoSurges ends every surge off node at once: at an interruption's
// deadline, or when the signal goes away. A Deployment still at the
// surged count is scaled back; the node's pods lose their mark.
func (r *Reconciler) undoSurges(ctx context.Context, node *corev1.Node, snap *snapshot.Snapshot, why string) error {
	for _, rec := range surgesOff(snap, node.Name) {
		if rec.state == nil {
			if err := r.abandonSurge(ctx, node, rec.d, nil, "its surge record does not parse", false, snap); err != nil {
				return err
			}
			continue
		}
		restore := false
		scale, err := r.Kube.AppsV1().Deployments(rec.d.Namespace).GetScale(ctx, rec.d.Name, metav1.GetOptions{})
		if err == nil && scale.Spec.Replicas == rec.state.To {
			restore = true
		}
		if err := r.abandonSurge(ctx, node, rec.d, rec.state, why, restore, snap); err != nil {
			return err
		}
	}
	return nil
}

// abandonSurge gives a surge up: the pods on the node lose their mark, the
// Deployment is scaled back only when restore says the count is still ours,
// the record goes, and the node remembers not to surge this Deployment again.
func (r *Reconciler) abandonSurge(ctx context.Context, node *corev1.Node, d *appsv1.Deployment, st *signals.SurgeState, why string, restore bool, snap *snapshot.Snapshot) error {
	for _, p := range snap.PodsOn(node.Name) {
		if p.Annotations[signals.AnnotationPodDeletionCost] == signals.SurgeDeletionCost && sameDeployment(snap.DeploymentOf(p), d) {
			if err := r.patchPodAnnotation(ctx, p.Namespace, p.Name, ""); err != nil {
				return err
			}
		}
	}
	if restore && st != nil {
		if err := r.scale(ctx, d, st.To, st.From); err != nil {
			return err
		}
	}
	if err := r.clearSurge(ctx, d); err != nil {
		return err
	}
	if err := r.addSurgeFallback(ctx, node, d.Namespace+"/"+d.Name); err != nil {
		return err
	}
	r.Metrics.Surges.WithLabelValues("abandoned").Inc()
	r.Recorder.Eventf(d, corev1.EventTypeWarning, "SurgeAbandoned", "surge off node %s given up: %s; its pods there are evicted instead", node.Name, why)
	r.Recorder.Eventf(node, corev1.EventTypeWarning, "SurgeAbandoned", "surge of deployment %s/%s given up: %s; its pods are evicted instead", d.Namespace, d.Name, why)
	ctrllog.FromContext(ctx).Info("Surge abandoned", "deployment", klog.KObj(d), "node", node.Name, "reason", why)
	return nil
}

// readyElsewhere counts the Deployment's Ready pods that are not on node
// and not terminating.
func readyElsewhere(snap *snapshot.Snapshot, d *appsv1.Deployment, node string) int {
	n := 0
	for _, p := range snap.PodsIn(d.Namespace) {
		if p.Spec.NodeName != node && p.Spec.NodeName != "" && p.DeletionTimestamp == nil && podReady(p) && sameDeployment(snap.DeploymentOf(p), d) {
			n++
		}
	}
	return n
}

// scale sets the Deployment's replicas from one count to another through
// the scale subresource, only if the live count is still from. When d says
// from, the first try writes on d's own resourceVersion without reading
// (callers mostly hold a Deployment they have just read or written; a stale
// one conflicts, and every retry reads the scale first).
func (r *Reconciler) scale(ctx context.Context, d *appsv1.Deployment, from, to int32) error {
	deployments := r.Kube.AppsV1().Deployments(d.Namespace)
	var known *autoscalingv1.Scale
	if d.ResourceVersion != "" && ptr.Deref(d.Spec.Replicas, 1) == from {
		known = &autoscalingv1.Scale{
			ObjectMeta: metav1.ObjectMeta{Name: d.Name, Namespace: d.Namespace, ResourceVersion: d.ResourceVersion},
			Spec:       autoscalingv1.ScaleSpec{Replicas: ptr.Deref(d.Spec.Replicas, 1)},
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

// writeSurge records st on the Deployment and returns it as written.
func (r *Reconciler) writeSurge(ctx context.Context, d *appsv1.Deployment, st *signals.SurgeState) (*appsv1.Deployment, error) {
	raw, err := json.Marshal(st)
	if err != nil {
		return nil, err
	}
	return r.patchDeploymentAnnotation(ctx, d, string(raw))
}

func (r *Reconciler) clearSurge(ctx context.Context, d *appsv1.Deployment) error {
	_, err := r.patchDeploymentAnnotation(ctx, d, "")
	return err
}

// patchDeploymentAnnotation sets (or, with "", removes) the surge record.
func (r *Reconciler) patchDeploymentAnnotation(ctx context.Context, d *appsv1.Deployment, value string) (*appsv1.Deployment, error) {
	var v any
	if value != "" {
		v = value
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{signals.AnnotationSurgeState: v}}})
	patched, err := r.Kube.AppsV1().Deployments(d.Namespace).Patch(ctx, d.Name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !(value == "" && apierrors.IsNotFound(err)) {
		return nil, fmt.Errorf("recording the surge on deployment %s/%s: %w", d.Namespace, d.Name, err)
	}
	return patched, nil
}

// patchPodAnnotation sets (or, with "", removes) the pod's deletion cost. A
// pod that is gone needs nothing.
func (r *Reconciler) patchPodAnnotation(ctx context.Context, namespace, name, cost string) error {
	var v any
	if cost != "" {
		v = cost
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{signals.AnnotationPodDeletionCost: v}}})
	_, err := r.Kube.CoreV1().Pods(namespace).Patch(ctx, name, types.MergePatchType, patch, metav1.PatchOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return fmt.Errorf("marking pod %s/%s: %w", namespace, name, err)
	}
	return nil
}

// addSurgeFallback records on the node that the Deployment's pods there
// are evicted, not surged.
func (r *Reconciler) addSurgeFallback(ctx context.Context, node *corev1.Node, key string) error {
	current, err := r.Kube.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	if err != nil {
		return err
	}
	var list []string
	if v := current.Annotations[signals.AnnotationSurgeFallback]; v != "" {
		list = strings.Split(v, ",")
	}
	if slices.Contains(list, key) {
		return nil
	}
	list = append(list, key)
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{
		"resourceVersion": current.ResourceVersion,
		"annotations":     map[string]string{signals.AnnotationSurgeFallback: strings.Join(list, ",")}}})
	if _, err := r.Kube.CoreV1().Nodes().Patch(ctx, node.Name, types.MergePatchType, patch, metav1.PatchOptions{}); err != nil {
		return fmt.Errorf("recording the surge fallback on node %s: %w", node.Name, err)
	}
	return nil
}

func podReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// sameDeployment compares by UID: the live object and the cached one are
// different values of one Deployment.
func sameDeployment(a, b *appsv1.Deployment) bool {
	return a != nil && b != nil && a.UID == b.UID
}
