package decide

import (
	"fmt"
	"sort"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

var now = time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC)

const componentsNS = "spot-rebalancer"

// cluster is a small cluster for one story: the at-risk node "risky" of
// pool spot-a, and the other nodes and pods it holds.
type cluster struct {
	risky       *corev1.Node
	nodes       []*corev1.Node
	pods        []*corev1.Pod
	pdbs        []*policyv1.PodDisruptionBudget
	deployments []*appsv1.Deployment
	replicaSets []*appsv1.ReplicaSet
	// records are surge records (of any node).
	records []*coordinationv1.Lease
	config  config.Rebalancer
}

func newCluster() *cluster {
	c := &cluster{risky: node("risky", now.Add(-time.Hour)), config: config.Default().Rebalancer}
	c.config.Surge.Enabled = ptr.To(false)
	return c
}

func node(name string, created time.Time) *corev1.Node {
	return &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{Name: name, CreationTimestamp: metav1.NewTime(created), Annotations: map[string]string{},
			Labels: map[string]string{"eks.amazonaws.com/nodegroup": "spot-a", "kubernetes.io/hostname": name, "eks.amazonaws.com/capacityType": "SPOT"}},
		Status: corev1.NodeStatus{
			Allocatable: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("8"), corev1.ResourceMemory: resource.MustParse("32Gi"), corev1.ResourcePods: resource.MustParse("110")},
			Conditions:  []corev1.NodeCondition{{Type: corev1.NodeReady, Status: corev1.ConditionTrue}},
		},
	}
}

// rebalance gives the at-risk node a rebalance recommendation since at.
func (c *cluster) rebalance(at time.Time) *cluster {
	c.risky.Status.Conditions = append(c.risky.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionRebalance,
		Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(at)})
	return c
}

// interrupt gives it an interruption notice since at, ending at end ("" for
// none).
func (c *cluster) interrupt(at time.Time, end string) *cluster {
	c.risky.Status.Conditions = append(c.risky.Status.Conditions, corev1.NodeCondition{Type: signals.ConditionInterruption,
		Status: corev1.ConditionTrue, LastTransitionTime: metav1.NewTime(at)})
	if end != "" {
		c.risky.Annotations[signals.AnnotationTerminationTime] = end
	}
	return c
}

// state records the rebalancer's state and reason code on the node.
func (c *cluster) state(s signals.State, r signals.Reason) *cluster {
	c.risky.Annotations[signals.AnnotationState] = string(s)
	c.risky.Annotations[signals.AnnotationStateReasonCode] = string(r)
	c.risky.Annotations[signals.AnnotationStateReason] = "recorded earlier"
	return c
}

// replacement adds a Ready node of the pool created at created.
func (c *cluster) replacement(name string, created time.Time) *cluster {
	c.nodes = append(c.nodes, node(name, created))
	return c
}

// deploy adds Deployment app with replicas pods, the first onRisky of them
// on the at-risk node, the others on "other" (which it adds).
func (c *cluster) deploy(app string, replicas, onRisky int, mods ...func(*corev1.Pod)) *cluster {
	if c.nodeNamed("other") == nil {
		c.nodes = append(c.nodes, node("other", now.Add(-2*time.Hour)))
		c.nodeNamed("other").Labels["eks.amazonaws.com/nodegroup"] = "on-demand"
	}
	d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "shop", UID: types.UID("deploy-" + app), Generation: 1, Annotations: map[string]string{}},
		Spec:   appsv1.DeploymentSpec{Replicas: ptr.To(int32(replicas)), Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}},
		Status: appsv1.DeploymentStatus{ObservedGeneration: 1, Replicas: int32(replicas), UpdatedReplicas: int32(replicas), ReadyReplicas: int32(replicas)}}
	rs := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: app + "-h", Namespace: "shop", UID: types.UID("rs-" + app),
		OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "Deployment", Name: app, UID: d.UID, Controller: ptr.To(true)}}},
		Spec: appsv1.ReplicaSetSpec{Replicas: ptr.To(int32(replicas))}}
	c.deployments, c.replicaSets = append(c.deployments, d), append(c.replicaSets, rs)
	for i := range replicas {
		on := "other"
		if i < onRisky {
			on = "risky"
		}
		p := &corev1.Pod{
			ObjectMeta: metav1.ObjectMeta{Name: fmt.Sprintf("%s-h-%d", app, i), Namespace: "shop", UID: types.UID(fmt.Sprintf("%s-%d", app, i)),
				Labels: map[string]string{"app": app, "pod-template-hash": "h"}, Annotations: map[string]string{},
				OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: app + "-h", UID: rs.UID, Controller: ptr.To(true)}}},
			Spec: corev1.PodSpec{NodeName: on, Containers: []corev1.Container{{Name: "c", Resources: corev1.ResourceRequirements{
				Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning, Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}}},
		}
		for _, m := range mods {
			m(p)
		}
		c.pods = append(c.pods, p)
	}
	return c
}

// pdb adds a PDB over app with its live status.
func (c *cluster) pdb(app string, allowed, expected, desired int32) *cluster {
	c.pdbs = append(c.pdbs, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: app, Namespace: "shop", Generation: 1},
		Spec:       policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": app}}, MaxUnavailable: ptr.To(intstr.FromInt(1))},
		Status:     policyv1.PodDisruptionBudgetStatus{ObservedGeneration: 1, DisruptionsAllowed: allowed, ExpectedPods: expected, DesiredHealthy: desired, CurrentHealthy: expected},
	})
	return c
}

func (c *cluster) nodeNamed(name string) *corev1.Node {
	for _, n := range c.nodes {
		if n.Name == name {
			return n
		}
	}
	return nil
}

// input gathers what the controller would at time at: the snapshot, the
// node's signal and its plan (with the nodes draining beside it).
func (c *cluster) input(t *testing.T, at time.Time) Input {
	t.Helper()
	snap := snapshot.New(at, snapshot.Objects{Nodes: append([]*corev1.Node{c.risky}, c.nodes...), Pods: c.pods, PDBs: c.pdbs,
		Deployments: c.deployments, ReplicaSets: c.replicaSets, SurgeRecords: c.records, Namespace: componentsNS})
	cfg := c.config
	in := Input{Now: at, Config: &cfg, Node: c.risky, Snapshot: snap, Evicted: sets.New[types.UID](),
		Reservations: snap.Reservations(c.risky.Name), Namespace: componentsNS}
	in.Signal, in.AtRisk = signals.FromNode(c.risky, at)
	if !in.AtRisk {
		return in
	}
	plan, err := planner.New(snap, planner.Options{Config: &cfg, Among: []string{c.risky.Name}})
	if err != nil {
		t.Fatal(err)
	}
	in.Plan, in.PlannedSurges = &plan.Nodes[0], plan.SurgesWith(c.risky.Name)
	return in
}

// outcome is a Decision in a few words, for comparing.
type outcome struct {
	State    signals.State
	Reason   signals.Reason
	Taint    bool
	Cordon   bool
	Clear    bool
	Uncordon bool
	// Seen: the interruption's first sighting is recorded.
	Seen  bool
	Evict []string
	// Complete: pods deleted whose eviction their PDB already granted.
	Complete  []string
	Delete    map[string]int64
	Surges    []string
	RequeueIn time.Duration
	// Budgets: pods wait on their budgets (WaitingOnBudgets).
	Budgets bool
}

func summarize(d Decision) outcome {
	o := outcome{Clear: d.Clear, Uncordon: d.Uncordon, Seen: d.InterruptionSeen != nil, RequeueIn: d.Requeue, Budgets: d.WaitingOnBudgets}
	if t := d.Transition; t != nil {
		o.State, o.Reason, o.Taint, o.Cordon = t.State, t.Reason, t.Taint, t.Cordon
	}
	for _, e := range d.Evictions {
		if e.Granted {
			o.Complete = append(o.Complete, e.Pod.Name)
		} else {
			o.Evict = append(o.Evict, e.Pod.Name)
		}
	}
	sort.Strings(o.Evict)
	for _, del := range d.Deletions {
		if o.Delete == nil {
			o.Delete = map[string]int64{}
		}
		o.Delete[del.Pod.Name] = del.Grace
	}
	for _, s := range d.Surges {
		o.Surges = append(o.Surges, s.Deployment.Name+":"+string(s.Op))
	}
	return o
}
