// Package migrate moves surge records that versions before 0.2 wrote on
// Deployments (annotation spot-rebalancer.io/surge-state) into the records
// the controller keeps now: one Lease per surge in its own namespace. The
// controller no longer has the right to change Deployments, so it can
// neither step nor remove such a record; until it is moved, the
// Deployment's pods are evicted instead of surged, and a surge that was
// under way stays at its surged count.
//
// Plan decides purely; Run reads, plans and writes: it creates each
// record (the controller then finishes or gives up the surge, as after any
// restart) and only then removes the annotation, on the Deployment's
// resourceVersion. A run that stops half-way is run again.
package migrate

import (
	"context"
	"fmt"
	"io"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/retry"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// Move is one record to move off a Deployment.
type Move struct {
	Deployment *appsv1.Deployment
	// Record is the Lease to create.
	Record *coordinationv1.Lease
	// State is the surge the record holds; nil when it does not parse
	// (Problem says why): the controller then gives the surge up without
	// restoring anything, as it does any record it cannot read.
	State   *signals.SurgeState
	Problem string
}

// Plan returns a Move for each Deployment that carries a record, its
// record to be created in namespace.
func Plan(namespace string, deployments []appsv1.Deployment) []Move {
	var out []Move
	for i := range deployments {
		d := &deployments[i]
		raw, ok := d.Annotations[signals.AnnotationSurgeState]
		if !ok {
			continue
		}
		m := Move{Deployment: d}
		st, err := signals.LegacySurgeOf(d)
		if err != nil {
			m.Problem = err.Error()
		}
		m.State = st
		holder := ""
		if st != nil {
			holder = st.Node
		}
		// As written: a record that does not parse stays so.
		m.Record = signals.SurgeRecordAsWritten(namespace, d, raw, holder)
		out = append(out, m)
	}
	return out
}

// Options configure Run.
type Options struct {
	// Namespace is the controller's namespace, where the records go.
	Namespace string
	// WaitForRollout, when set, names the controller's Deployment in
	// Namespace: Run first waits until it runs only pods of its current
	// version, so that no controller of an older version, which still
	// writes records on Deployments, runs beside the move.
	WaitForRollout string
	// Timeout bounds that wait.
	Timeout time.Duration
	// DryRun prints the moves and writes nothing.
	DryRun bool
	// Out receives one line per record.
	Out io.Writer
}

// Run moves every record and returns how many it moved. With nothing to
// move it returns at once, without waiting for the rollout.
func Run(ctx context.Context, kube kubernetes.Interface, opts Options) (int, error) {
	moves, err := find(ctx, kube, opts.Namespace)
	if err != nil || len(moves) == 0 {
		return 0, err
	}
	if opts.WaitForRollout != "" && !opts.DryRun {
		if err := waitForRollout(ctx, kube, opts.Namespace, opts.WaitForRollout, opts.Timeout); err != nil {
			return 0, err
		}
		// Read again: an older controller may have stepped its surges.
		if moves, err = find(ctx, kube, opts.Namespace); err != nil {
			return 0, err
		}
	}
	moved := 0
	for _, m := range moves {
		fmt.Fprintln(opts.Out, describe(m, opts.DryRun))
		if opts.DryRun {
			continue
		}
		if err := apply(ctx, kube, m); err != nil {
			return moved, err
		}
		moved++
	}
	return moved, nil
}

// find lists the Deployments and plans their moves.
func find(ctx context.Context, kube kubernetes.Interface, namespace string) ([]Move, error) {
	var moves []Move
	next := ""
	for {
		list, err := kube.AppsV1().Deployments(metav1.NamespaceAll).List(ctx, metav1.ListOptions{Limit: 500, Continue: next})
		if err != nil {
			return nil, fmt.Errorf("listing Deployments: %w", err)
		}
		moves = append(moves, Plan(namespace, list.Items)...)
		if next = list.Continue; next == "" {
			return moves, nil
		}
	}
}

func describe(m Move, dryRun bool) string {
	verb := "moved"
	if dryRun {
		verb = "would move"
	}
	what := "an unreadable surge record (" + m.Problem + ")"
	if m.State != nil {
		what = fmt.Sprintf("the surge off node %s (phase %s, %d to %d replicas)", m.State.Node, m.State.Phase, m.State.From, m.State.To)
	}
	return fmt.Sprintf("%s %s of deployment %s/%s to lease %s/%s", verb, what, m.Deployment.Namespace, m.Deployment.Name, m.Record.Namespace, m.Record.Name)
}

// apply creates the record, then removes the annotation on the
// Deployment's resourceVersion. If the Deployment changed in between (a
// controller of an older version stepped its surge), the record is written
// again from the Deployment as it is now.
func apply(ctx context.Context, kube kubernetes.Interface, m Move) error {
	leases := kube.CoordinationV1().Leases(m.Record.Namespace)
	if _, err := leases.Create(ctx, m.Record, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating surge record %s/%s: %w", m.Record.Namespace, m.Record.Name, err)
	}
	d := m.Deployment
	return retry.RetryOnConflict(retry.DefaultRetry, func() error {
		raw, ok := d.Annotations[signals.AnnotationSurgeState]
		if !ok {
			// A controller of an older version ended the surge meanwhile.
			err := leases.Delete(ctx, m.Record.Name, metav1.DeleteOptions{})
			if err != nil && !apierrors.IsNotFound(err) {
				return fmt.Errorf("removing surge record %s/%s of a surge that ended: %w", m.Record.Namespace, m.Record.Name, err)
			}
			return nil
		}
		if err := syncRecord(ctx, kube, m.Record, raw); err != nil {
			return err
		}
		_, err := kube.AppsV1().Deployments(d.Namespace).Patch(ctx, d.Name, types.MergePatchType,
			signals.AnnotationPatch(signals.AnnotationSurgeState, nil, d.ResourceVersion), metav1.PatchOptions{})
		switch {
		case apierrors.IsNotFound(err):
			return nil // gone: the controller removes its record
		case apierrors.IsConflict(err):
			live, getErr := kube.AppsV1().Deployments(d.Namespace).Get(ctx, d.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(getErr) {
				return nil
			}
			if getErr != nil {
				return getErr
			}
			d = live
			return err
		case err != nil:
			return fmt.Errorf("removing the surge record from deployment %s/%s: %w", d.Namespace, d.Name, err)
		}
		return nil
	})
}

// syncRecord makes the record hold raw.
func syncRecord(ctx context.Context, kube kubernetes.Interface, record *coordinationv1.Lease, raw string) error {
	leases := kube.CoordinationV1().Leases(record.Namespace)
	live, err := leases.Get(ctx, record.Name, metav1.GetOptions{})
	if err != nil {
		return fmt.Errorf("reading surge record %s/%s: %w", record.Namespace, record.Name, err)
	}
	if live.Annotations[signals.AnnotationSurgeState] == raw {
		return nil
	}
	if live.Annotations == nil {
		live.Annotations = map[string]string{}
	}
	live.Annotations[signals.AnnotationSurgeState] = raw
	if _, err := leases.Update(ctx, live, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("updating surge record %s/%s: %w", record.Namespace, record.Name, err)
	}
	return nil
}

// waitForRollout waits until the Deployment runs only pods of its current
// template.
func waitForRollout(ctx context.Context, kube kubernetes.Interface, namespace, name string, timeout time.Duration) error {
	var last string
	err := wait.PollUntilContextTimeout(ctx, 2*time.Second, timeout, true, func(ctx context.Context) (bool, error) {
		d, err := kube.AppsV1().Deployments(namespace).Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return false, fmt.Errorf("reading deployment %s/%s: %w", namespace, name, err)
		}
		want := ptr.Deref(d.Spec.Replicas, 1)
		s := d.Status
		last = fmt.Sprintf("generation %d observed %d, %d replicas of which %d updated, want %d", d.Generation, s.ObservedGeneration, s.Replicas, s.UpdatedReplicas, want)
		return s.ObservedGeneration >= d.Generation && s.UpdatedReplicas == want && s.Replicas == want, nil
	})
	if err != nil {
		return fmt.Errorf("waiting for deployment %s/%s to run only its current version (%s): %w", namespace, name, last, err)
	}
	return nil
}
