// Package executor carries out what the planner decided, one call at a
// time: evictions through the Eviction API and, at an interruption's
// deadline, deletions. It decides nothing; it reports what the API said.
package executor

import (
	"context"
	"strings"

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
	// MultiplePDBs: 500, more than one PDB selects the pod; eviction can
	// never succeed.
	MultiplePDBs Outcome = "multiple-pdbs"
	// Deleted: deleted at an interruption deadline.
	Deleted Outcome = "deleted"
	// Failed: anything else.
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
	case apierrors.IsInternalError(err) && strings.Contains(err.Error(), "more than one PodDisruptionBudget"):
		return MultiplePDBs, err
	default:
		return Failed, err
	}
}
