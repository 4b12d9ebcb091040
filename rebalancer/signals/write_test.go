package signals

import (
	"context"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"
	clocktesting "k8s.io/utils/clock/testing"
)

func TestInterruptionReplacesATerminationTimeLeftByAnEarlierNotice(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)
	kube := fake.NewClientset(&corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: "a",
		Annotations: map[string]string{AnnotationTerminationTime: "2026-11-20T08:00:00Z"}}})
	w := Writer{Kube: kube, Clock: clocktesting.NewFakePassiveClock(now)}
	ctx := context.Background()

	wrote, err := w.Interruption(ctx, "a", now.Add(2*time.Minute), "SpotInterruptionNotice", "test")
	if err != nil || !wrote {
		t.Fatalf("first notice: wrote %v, err %v", wrote, err)
	}
	n, _ := kube.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	if got := n.Annotations[AnnotationTerminationTime]; got != "2026-11-26T12:02:00Z" {
		t.Errorf("termination time %s, want the new notice's 2026-11-26T12:02:00Z", got)
	}

	// The same notice read again with another time (instance metadata
	// moves it) writes nothing: the first time stands.
	wrote, err = w.Interruption(ctx, "a", now.Add(3*time.Minute), "SpotInterruptionNotice", "test")
	if err != nil || wrote {
		t.Fatalf("same notice again: wrote %v, err %v", wrote, err)
	}
	n, _ = kube.CoreV1().Nodes().Get(ctx, "a", metav1.GetOptions{})
	if got := n.Annotations[AnnotationTerminationTime]; got != "2026-11-26T12:02:00Z" {
		t.Errorf("termination time %s after the same notice, want it unchanged", got)
	}
}
