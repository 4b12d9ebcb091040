// Package executor carries out what the rebalancer decided (a
// decide.Decision), the one place its writes happen: the node's state,
// taint and cordon (as patches), evictions through the Eviction API,
// deletions at an interruption's deadline, the surge protocol's records
// and scale steps, Events and metrics. It decides nothing; it reports what
// the API said.
package executor

import (
	"context"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
)

// Outcome is what the API answered to one eviction or deletion. The values
// are metric labels.
type Outcome string

const (
	// Evicted: accepted; the pod is terminating.
	Evicted Outcome = "evicted"
	// Gone: 404 or 409 (UID precondition): the pod already left.
	Gone Outcome = "gone"
	// BlockedByPDB: 429, a PodDisruptionBudget says not now.
	BlockedByPDB Outcome = "blocked-by-pdb"
	// Deleted: deleted at an interruption deadline.
	Deleted Outcome = "deleted"
	// Failed: anything else, a pod covered by two PDBs included (500; the
	// planner makes such pods blockers, so only a PDB added since the plan
	// gets here, and the next plan sees it).
	Failed Outcome = "failed"
)

// Evict asks the Eviction API to evict exactly this pod (UID precondition).
func Evict(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod) (Outcome, error) {
	err := client.PolicyV1().Evictions(pod.Namespace).Evict(ctx, &policyv1.Eviction{
		ObjectMeta:    metav1.ObjectMeta{Name: pod.Name, Namespace: pod.Namespace},
		DeleteOptions: &metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &pod.UID}},
	})
	return classify(err)
}

// Complete deletes a pod whose eviction its PDB already granted (the
// Eviction API recorded it in status.disruptedPods) but whose delete never
// came: the delete the Eviction API would have made, with the pod's own
// grace period, without the DisruptionTarget condition it sets first
// (which is why the planner never grants a Job's pod). The UID
// precondition keeps it to that pod.
func Complete(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod) (Outcome, error) {
	return classify(client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		Preconditions: &metav1.Preconditions{UID: &pod.UID},
	}))
}

// Delete deletes the pod with the given grace period, for an interruption
// whose deadline has come.
func Delete(ctx context.Context, client kubernetes.Interface, pod *corev1.Pod, grace int64) (Outcome, error) {
	err := client.CoreV1().Pods(pod.Namespace).Delete(ctx, pod.Name, metav1.DeleteOptions{
		GracePeriodSeconds: &grace, Preconditions: &metav1.Preconditions{UID: &pod.UID},
	})
	if err == nil {
		return Deleted, nil
	}
	return classify(err)
}

func classify(err error) (Outcome, error) {
	switch {
	case err == nil:
		return Evicted, nil
	case apierrors.IsNotFound(err), apierrors.IsConflict(err):
		return Gone, nil
	case apierrors.IsTooManyRequests(err):
		return BlockedByPDB, err
	default:
		return Failed, err
	}
}
