package decide

import (
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// Input is everything a node's next step depends on.
type Input struct {
	Now    time.Time
	Config *config.Rebalancer
	Node   *corev1.Node
	// Signal is the node's signal, when AtRisk.
	Signal signals.Signal
	AtRisk bool
	// Plan is the node's plan and Snapshot what it was made from (both
	// needed when AtRisk).
	Plan     *planner.NodePlan
	Snapshot *snapshot.Snapshot
	// PlannedSurges are the plan's surges that would move pods off the
	// node (planner.Plan.SurgesWith): a draining node starts them, with
	// the pods on the nodes draining beside it.
	PlannedSurges []planner.SurgePlan
	// Surges are the surges recorded off the node (and records that do
	// not parse, which no node owns).
	Surges []Surge
	// Draining counts the other nodes of the node's pool that drain now:
	// maxConcurrentNodes admits this one only below it.
	Draining int
	// Evicted are pods evicted a moment ago that the cache may still show
	// untouched: they are not evicted again.
	Evicted sets.Set[types.UID]
	// Backoff is how long a PodDisruptionBudget's 429 still holds the
	// node's evictions.
	Backoff time.Duration
	// Reservations are the reservation pods that hold room for the node's
	// pods now (reserve.Holds), whatever the node's state.
	Reservations []*corev1.Pod
	// Namespace is where reservations are created (the components' own).
	Namespace string
	// HoldReservations: creating them failed a moment ago; none is made
	// now (those there stay, and go as usual).
	HoldReservations bool
	// Retirement is what giving a drained node back depends on, gathered
	// when Retirable.
	Retirement *Retirement
	// Group is the at-risk node's Auto Scaling group as read, gathered
	// when WantsGroup (nil: the instance is in none).
	Group *asg.Group
}

// Retirement is what giving a drained node back depends on.
type Retirement struct {
	// NodeClaim is the Karpenter NodeClaim of the node (its
	// status.providerID and status.nodeName both the node's); nil when
	// none is.
	NodeClaim *NodeClaim
	// PodsLeft are the pods still on the node that a drain moves (not
	// DaemonSet, mirror or finished pods), terminating ones included.
	PodsLeft []string
	// Instance is the node's EC2 instance when the controller raised its
	// Auto Scaling group for it and the instance is still in that group
	// ("" otherwise): it is terminated with a decrement.
	Instance string
	Group    string
	// Terminating: the group is terminating the instance already.
	Terminating bool
}

// NodeClaim names a Karpenter NodeClaim: deleting it makes Karpenter
// terminate the instance and remove the node.
type NodeClaim struct {
	Name string
	UID  types.UID
}

// Surge is one surge record with what its step depends on.
type Surge struct {
	// Deployment is the live Deployment, or the cached one when the
	// surge can only go on waiting (Quiet).
	Deployment *appsv1.Deployment
	// Lease is the record as stored (live, or cached when Quiet): the
	// writer changes and removes it on its resourceVersion.
	Lease *coordinationv1.Lease
	// Record is the surge the record holds; nil when Unreadable.
	Record     *signals.SurgeState
	Unreadable bool
	// Stale is a record the cache showed for this node that is gone or
	// another node's now: the cache catches up.
	Stale bool
	// NoDeployment is a record whose Deployment is gone (or was replaced
	// by one of the same name, or was never named): it is removed.
	NoDeployment bool
	// Replicas is the Deployment's replica count.
	Replicas int32
	// ReadyElsewhere counts its Ready pods not terminating, not on the
	// nodes the surge moves pods off and not on other draining nodes.
	ReadyElsewhere int
	// Marked are its pods on those nodes that carry the surge's deletion
	// cost; OnNode all of its pods on the node that owns the surge, not
	// terminating yet.
	Marked []string
	OnNode []string
	// Leaving counts the pods the record names that are still on those
	// nodes and not terminating: scaled back, the surge ends once the
	// ReplicaSet controller has removed them (a pod still there when the
	// record goes would be planned again, as if it had never moved).
	Leaving int
	// Stranded are its pods, not terminating, on nodes of the surge
	// other than its owner that are gone: they are deleted.
	Stranded []string
}

// Decision is what to do about one node now. The executor applies it in
// this order: deletions, surges, evictions, then the transition.
type Decision struct {
	// Transition records a state; nil leaves the node's state as it is.
	Transition *Transition
	// Clear removes the rebalancer's state and taint: the signal went
	// away before the node started draining.
	Clear bool
	// ClearedFrom is the state Clear ends; Uncordon makes the node
	// schedulable too (it was cordoned for a drain).
	ClearedFrom signals.State
	Uncordon    bool
	// InterruptionSeen records when an interruption without a time of its
	// own was first seen (signals.AnnotationInterruptionSeen).
	InterruptionSeen *time.Time
	Evictions        []Eviction
	Deletions        []Deletion
	// Reserve are reservation pods to create, Unreserve reservations to
	// delete (before anything else: they only hold room).
	Reserve   []*corev1.Pod
	Unreserve []*corev1.Pod
	// Retire deletes this NodeClaim before the transition to retired;
	// Terminate terminates this instance in its Auto Scaling group.
	Retire    *NodeClaim
	Terminate string
	// Raise records this raise of the node's Auto Scaling group on the
	// node, then raises the group (provision asg).
	Raise  *asg.Record
	Surges []SurgeAction
	// Requeue is when to look again (0: on the next change).
	Requeue time.Duration
	// WaitingOnBudgets: pods that must move wait for their
	// PodDisruptionBudgets (in a later wave, or after a 429), for the
	// metric of the time drains spend so.
	WaitingOnBudgets bool
}

// Transition is a state recorded on the node with its reason.
type Transition struct {
	State   signals.State
	Reason  signals.Reason
	Message string
	// Taint keeps new pods off the node with the draining taint.
	Taint bool
	// Cordon marks the node unschedulable (draining and drained).
	Cordon bool
	// ExcludeFromLoadBalancers labels the node so that cloud load
	// balancers send it no new connections (rebalancer.excludeFromLoadBalancers).
	ExcludeFromLoadBalancers bool
}

// Eviction is one pod to evict through the Eviction API.
type Eviction struct {
	Pod         *corev1.Pod
	Destination string
	// Granted: its PDB already granted the eviction and the delete never
	// came (planner.Granted); the pod is deleted with its own grace period.
	Granted bool
}

// Deletion is one pod deleted at an interruption's deadline, or at its
// own latest start before it (planner.LatestStart).
type Deletion struct {
	Pod *corev1.Pod
	// Grace is the grace period in seconds, never 0.
	Grace int64
}

// SurgeOp is one step of the surge protocol.
type SurgeOp string

const (
	// SurgeWait: nothing to do until its new pods are Ready.
	SurgeWait SurgeOp = "wait"
	// SurgeStart: claim the record on the live Deployment, mark the pods,
	// scale up.
	SurgeStart SurgeOp = "start"
	// SurgeScaleUp: mark the pods (again) and scale From to To: resumed
	// after a restart between the record and the scale.
	SurgeScaleUp SurgeOp = "scale-up"
	// SurgeRecordWaiting: the Deployment is at To; record phase waiting.
	SurgeRecordWaiting SurgeOp = "record-waiting"
	// SurgeScaleDown: enough pods are Ready elsewhere; record phase
	// scaling-down, then scale To to From.
	SurgeScaleDown SurgeOp = "scale-down"
	// SurgeResumeScaleDown: scale To to From (recorded already).
	SurgeResumeScaleDown SurgeOp = "resume-scale-down"
	// SurgeComplete: back at From; remove the record.
	SurgeComplete SurgeOp = "complete"
	// SurgeAbandon: unmark the pods, scale back if Restore, remove the
	// record and, if Fallback, record on the node that this Deployment's
	// pods are evicted instead.
	SurgeAbandon SurgeOp = "abandon"
	// SurgeForget: the record's Deployment is gone; remove the record.
	SurgeForget SurgeOp = "forget"
)

// SurgeAction is one surge's step.
type SurgeAction struct {
	Op         SurgeOp
	Deployment *appsv1.Deployment
	// Lease is the stored record being stepped (nil for SurgeStart).
	Lease *coordinationv1.Lease
	// Record is the surge to record (start and the phase changes) or the
	// one being stepped.
	Record *signals.SurgeState
	// Why a surge is abandoned, for people.
	Why      string
	Restore  bool
	Fallback bool
	// Unmark are the pods on the node whose deletion cost is removed.
	Unmark []string
	// Delete are pods of a node that is gone, deleted before the step.
	Delete []string
}

// Running tells whether the surge is still under way after this step.
func (a SurgeAction) Running() bool {
	return a.Op != SurgeComplete && a.Op != SurgeAbandon && a.Op != SurgeForget
}
