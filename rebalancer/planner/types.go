// Package planner decides what the rebalancer does about at-risk nodes:
// which pods move and where the scheduler would put them, which are
// skipped or blocked and why, and in which waves they are evicted so that
// no PodDisruptionBudget (or, for workloads without one, the implicit
// budget) is ever exceeded. It is pure: a Snapshot and options in, a Plan
// out. The controller executes plans; `spot-rebalancer plan` prints them.
package planner

import (
	"slices"
	"time"

	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// Action is what happens to one pod.
type Action string

const (
	// ActionEvict evicts the pod through the Eviction API in its wave.
	ActionEvict Action = "evict"
	// ActionSkip leaves the pod: DaemonSet, mirror, finished or already
	// terminating pods.
	ActionSkip Action = "skip"
	// ActionBlocked cannot move now; the reasons say why.
	ActionBlocked Action = "blocked"
	// ActionSurge moves a Deployment's pod by scaling the Deployment up
	// first: the pod leaves only once a new one is Ready elsewhere.
	ActionSurge Action = "surge"
)

// Plan is the decision for every planned node. Its JSON field names are a
// stable interface (docs/plan.md).
type Plan struct {
	// Complete is true when nothing blocks: every pod that must move has
	// a destination and a wave.
	Complete bool       `json:"complete"`
	Nodes    []NodePlan `json:"nodes"`
	// Surges are the surges the plan would start: each moves a
	// Deployment's pods off every planned node it may surge them off, in
	// one scale-up.
	Surges []SurgePlan `json:"surges,omitempty"`
}

// SurgePlan is one surge to start: a Deployment scaled up by its pods on
// the nodes, and back once as many new pods are Ready elsewhere.
type SurgePlan struct {
	Namespace  string `json:"namespace"`
	Deployment string `json:"deployment"`
	// Nodes the pods move off, in the plan's order.
	Nodes []string `json:"nodes"`
	// Pods are the names of the pods that move.
	Pods []string `json:"pods"`
}

// SurgesWith are the plan's surges that move pods off node.
func (p *Plan) SurgesWith(node string) []SurgePlan {
	var out []SurgePlan
	for _, s := range p.Surges {
		if slices.Contains(s.Nodes, node) {
			out = append(out, s)
		}
	}
	return out
}

// NodePlan is the decision for one at-risk node.
type NodePlan struct {
	Name         string       `json:"name"`
	Signal       signals.Kind `json:"signal"`
	SignalSource string       `json:"signalSource"`
	// Deadline is when pods still there are deleted (interruptions).
	Deadline *time.Time `json:"deadline,omitempty"`
	// SignalNote says when a time on the node was not believed or the
	// signal is handled as another kind.
	SignalNote string `json:"signalNote,omitempty"`
	// DrainedBy names who else drains the node ("karpenter": its
	// NodeClaim is being deleted): the rebalancer leaves its pods alone.
	DrainedBy   string        `json:"drainedBy,omitempty"`
	State       signals.State `json:"state"`
	Pool        string        `json:"pool"`
	Replacement Replacement   `json:"replacement"`
	Pods        []PodPlan     `json:"pods"`
	// Unplaceable counts the pods that must move and fit on no node.
	Unplaceable int           `json:"unplaceable"`
	Blockers    []Blocker     `json:"blockers"`
	Unprotected []Unprotected `json:"unprotected"`
}

// Replacement is whether the capacity this node waits for is there.
type Replacement struct {
	Mode config.ReplacementMode `json:"mode"`
	// Ready is true when draining may start as far as capacity goes.
	Ready bool `json:"ready"`
	// Nodes are the replacement nodes found (mode node).
	Nodes []string `json:"nodes"`
	// Reason explains Ready.
	Reason string `json:"reason"`
	// Provision is how the capacity is asked for (reservations or none).
	Provision config.Provision `json:"provision"`
	// Reservations are the placeholder pods that ask an autoscaler for
	// the room of the pods that must move (provision reservations): all of
	// them while a rebalance waits, those that fit nowhere and do not
	// surge at an interruption notice.
	Reservations []Reservation `json:"reservations"`
	// Avoid is the at-risk node's offering, which reservations keep off
	// where the pods' constraints allow (a Reservation's note says where
	// they do not).
	Avoid *reserve.Offering `json:"avoid,omitempty"`
}

// Reservation holds room for one pod that must move.
type Reservation struct {
	// Pod is the pod it holds room for (namespace/name).
	Pod string `json:"pod"`
	// Name is the reservation pod's, once created.
	Name string `json:"name,omitempty"`
	// Node is where it runs, once it runs.
	Node string `json:"node,omitempty"`
	// Fits is the node the simulation places the pod on now; empty when
	// it needs new capacity.
	Fits string `json:"fits,omitempty"`
	// Note says why it cannot keep off the offering being reclaimed.
	Note string `json:"note,omitempty"`
}

// Tally counts the node's evictions and blocked pods, and its last wave.
func (np *NodePlan) Tally() (evict, blocked, waves int) {
	for _, p := range np.Pods {
		switch p.Action {
		case ActionEvict:
			evict++
			waves = max(waves, p.Wave)
		case ActionBlocked:
			blocked++
		}
	}
	return evict, blocked, waves
}

// Surges counts the node's pods that move by surge.
func (np *NodePlan) Surges() int {
	n := 0
	for _, p := range np.Pods {
		if p.Action == ActionSurge {
			n++
		}
	}
	return n
}

// PodPlan is the decision for one pod.
type PodPlan struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Action    Action `json:"action"`
	// Wave is 1-based for evictions, 0 otherwise.
	Wave int `json:"wave"`
	// Destination is where the scheduler is predicted to place the pod.
	Destination string   `json:"destination"`
	Reasons     []string `json:"reasons"`
	PDBs        []PDBRef `json:"pdbs"`
	// Workload is the Deployment a surge scales ("Deployment/web").
	Workload string `json:"workload,omitempty"`
	// Critical pods (system-*-critical) go last.
	Critical bool  `json:"critical,omitempty"`
	Priority int32 `json:"priority"`
	// Granted: its PDB already granted its eviction (status.disruptedPods
	// names it) and the delete never came; it is deleted in wave 1 without
	// spending the budget again.
	Granted bool `json:"granted,omitempty"`
	// DataLoss names the volumes whose data does not move with the pod
	// (emptyDir, local PersistentVolumes).
	DataLoss []string `json:"dataLoss,omitempty"`
	// WaitsForRoom: the pod fits nowhere now. At an interruption notice it
	// waits for the room asked for (its reservation, or its surge's
	// Pending pods) and moves as soon as there is some.
	WaitsForRoom bool `json:"waitsForRoom,omitempty"`
	// LatestStart is, at an interruption notice, when the pod is deleted
	// if it is still on the node: early enough to get its own grace
	// period (at most rebalancer.maxGraceAtDeadline, at least
	// MinGraceAtDeadline) before the termination time.
	LatestStart *time.Time `json:"latestStart,omitempty"`
}

// PDBRef is a PodDisruptionBudget covering a pod, with its live allowance.
type PDBRef struct {
	Name               string `json:"name"`
	DisruptionsAllowed int32  `json:"disruptionsAllowed"`
}

// Blocker is a pod that stops the node from draining.
type Blocker struct {
	Namespace string `json:"namespace"`
	Name      string `json:"name"`
	Reason    string `json:"reason"`
}

// Unprotected is a workload with pods on the node and no PDB.
type Unprotected struct {
	Namespace    string       `json:"namespace"`
	Kind         string       `json:"kind"`
	Name         string       `json:"name"`
	Pods         int          `json:"pods"`
	SuggestedPDB SuggestedPDB `json:"suggestedPDB"`
}

// SuggestedPDB is a budget that would protect an unprotected workload.
type SuggestedPDB struct {
	Name string `json:"name"`
	// Selector and MatchExpressions are the workload's own selector (its
	// matchLabels and matchExpressions).
	Selector         map[string]string                 `json:"selector"`
	MatchExpressions []metav1.LabelSelectorRequirement `json:"matchExpressions,omitempty"`
	MaxUnavailable   int                               `json:"maxUnavailable"`
}
