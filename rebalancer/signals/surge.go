package signals

import (
	"encoding/json"
	"fmt"
	"time"

	appsv1 "k8s.io/api/apps/v1"
)

// The surge hand-off's names.
const (
	// AnnotationSurge set to "false" on a Deployment opts it out of surges:
	// its pods are evicted in waves.
	AnnotationSurge = "spot-rebalancer.io/surge"
	// AnnotationSurgeState on a Deployment records a surge in progress
	// (SurgeState as JSON), written before the Deployment is scaled so that
	// a restart or a new leader finishes or undoes it.
	AnnotationSurgeState = "spot-rebalancer.io/surge-state"
	// AnnotationSurgeFallback on a Node lists the Deployments
	// (namespace/name) whose surge off this node was given up: their pods
	// are evicted instead.
	AnnotationSurgeFallback = "spot-rebalancer.io/surge-fallback"
	// AnnotationPodDeletionCost is the ReplicaSet controller's hint: on a
	// scale-down it removes the pods with the lowest cost first.
	AnnotationPodDeletionCost = "controller.kubernetes.io/pod-deletion-cost"
	// SurgeDeletionCost marks the pods a surge moves.
	SurgeDeletionCost = "-2147483648"
)

// Surge phases.
const (
	SurgeScalingUp   = "scaling-up"
	SurgeWaiting     = "waiting"
	SurgeScalingDown = "scaling-down"
)

// SurgeState is one surge of a Deployment's pods off one node.
type SurgeState struct {
	Node string `json:"node"`
	// From is the replica count before the surge, restored at its end;
	// To is From plus the pods moving.
	From  int32     `json:"from"`
	To    int32     `json:"to"`
	Phase string    `json:"phase"`
	Since time.Time `json:"since"`
	// Pods are the names of the pods that move.
	Pods []string `json:"pods"`
}

// SurgeOf returns the Deployment's surge in progress, if any. A record
// that does not parse is reported as an error, never guessed at.
func SurgeOf(d *appsv1.Deployment) (*SurgeState, error) {
	raw, ok := d.Annotations[AnnotationSurgeState]
	if !ok {
		return nil, nil
	}
	var s SurgeState
	if err := json.Unmarshal([]byte(raw), &s); err != nil {
		return nil, fmt.Errorf("deployment %s/%s: annotation %s: %w", d.Namespace, d.Name, AnnotationSurgeState, err)
	}
	if s.Node == "" || s.To <= s.From || s.From < 0 {
		return nil, fmt.Errorf("deployment %s/%s: annotation %s: incomplete record %q", d.Namespace, d.Name, AnnotationSurgeState, raw)
	}
	return &s, nil
}
