package executor

import (
	"context"
	"fmt"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/klog/v2"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// Reservations deletes the reservations in remove (each on its UID, so a
// pod of the same name created since is kept) and creates those in
// create. node is nil when it is gone. A reservation the API refuses to
// create (a quota, a missing PriorityClass) is recorded as a Warning
// Event on the node and returned as a *ReservationError; the rest are not
// tried.
func (w *Writer) Reservations(ctx context.Context, node *corev1.Node, create, remove []*corev1.Pod) error {
	for _, r := range remove {
		err := w.Kube.CoreV1().Pods(r.Namespace).Delete(ctx, r.Name, metav1.DeleteOptions{
			Preconditions: &metav1.Preconditions{UID: &r.UID}, GracePeriodSeconds: new(int64(0))})
		switch {
		case err == nil:
			w.Metrics.Reservations.WithLabelValues("deleted").Inc()
		case apierrors.IsNotFound(err) || apierrors.IsConflict(err):
			// Gone already, or another pod of that name.
		default:
			return fmt.Errorf("deleting reservation %s: %w", klog.KObj(r), err)
		}
	}
	if len(create) == 0 {
		return nil
	}
	made := 0
	for _, r := range create {
		_, err := w.Kube.CoreV1().Pods(r.Namespace).Create(ctx, r, metav1.CreateOptions{})
		if apierrors.IsAlreadyExists(err) {
			continue // made a moment ago; the cache catches up
		}
		if err != nil {
			// The rest would most likely fail alike (a missing PriorityClass,
			// a quota): stop, and let the caller hold off.
			w.Metrics.Reservations.WithLabelValues("failed").Inc()
			if node != nil {
				w.Recorder.Eventf(node, corev1.EventTypeWarning, "ReservationFailed", "%d of %d reservation(s) not created: %v", len(create)-made, len(create), err)
			}
			ctrllog.FromContext(ctx).Error(err, "Creating reservations failed", "node", klog.KObj(node))
			return &ReservationError{Err: err}
		}
		made++
		w.Metrics.Reservations.WithLabelValues("created").Inc()
	}
	if node != nil && made > 0 {
		w.Recorder.Eventf(node, corev1.EventTypeNormal, "Reserving", "created %d reservation(s) asking for room for the pods that must move", made)
	}
	return nil
}

// ReservationError is a reservation the API refused to create: the node
// waits as it would without it.
type ReservationError struct{ Err error }

func (e *ReservationError) Error() string { return "creating a reservation: " + e.Err.Error() }
func (e *ReservationError) Unwrap() error { return e.Err }
