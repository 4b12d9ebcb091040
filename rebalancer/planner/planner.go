package planner

import (
	"cmp"
	"fmt"
	"maps"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/sets"
	schedcorev1 "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/simulation"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// Options say what to plan and how.
type Options struct {
	Config *config.Rebalancer
	// Nodes, when set, are planned as if they had just received a
	// rebalance recommendation. Otherwise every node with a signal is.
	Nodes []string
	// Among, when set, limits the nodes with a signal that are planned to
	// these (with their own signals); the others still take no pods. The
	// controller plans a node with the nodes draining beside it, not with
	// every node that waits.
	Among []string
}

// target is a node being planned with its signal.
type target struct {
	node   *corev1.Node
	signal signals.Signal
}

// New plans every at-risk node of the snapshot (or opts.Nodes).
func New(snap *snapshot.Snapshot, opts Options) (*Plan, error) {
	targets, err := targetsOf(snap, opts)
	if err != nil {
		return nil, err
	}
	atRisk := sets.New[string]()
	for name := range signalsOf(snap) {
		atRisk.Insert(name)
	}
	for _, t := range targets {
		atRisk.Insert(t.node.Name)
	}

	p := &planning{snap: snap, cfg: opts.Config, pdbsByNS: pdbsOf(snap)}

	// Classify every pod of every planned node, then place all pods that
	// must move in one simulation.
	plan := &Plan{Complete: true}
	var moving []*corev1.Pod
	pods := map[types.UID]*PodPlan{}
	for _, t := range targets {
		np := NodePlan{Name: t.node.Name, Signal: t.signal.Kind, SignalSource: t.signal.Source,
			State: cmp.Or(signals.StateOf(t.node.Annotations), signals.StateAtRisk), Pool: p.pool(t.node), SignalNote: t.signal.Note,
			DrainedBy: DrainedBy(t.node), Pods: []PodPlan{}, Blockers: []Blocker{}, Unprotected: []Unprotected{}}
		if t.signal.Kind == signals.InterruptionNotice {
			d := t.signal.TerminationTime.Add(-opts.Config.DeadlineSafety.Duration)
			np.Deadline = &d
		}
		for _, pod := range snap.PodsOn(t.node.Name) {
			pp := p.classify(pod)
			if np.DrainedBy != "" && pp.Action != ActionSkip {
				pp = skip(pp, "Karpenter drains this node (its NodeClaim is being deleted): its pods are left to it")
			}
			if np.Deadline != nil && pp.Action != ActionSkip {
				pp.LatestStart = new(LatestStart(pod, t.signal.TerminationTime, opts.Config))
			}
			np.Pods = append(np.Pods, pp)
			if pp.Action == ActionEvict {
				moving = append(moving, pod)
			}
		}
		plan.Nodes = append(plan.Nodes, np)
	}
	for i := range plan.Nodes {
		for j, pod := range snap.PodsOn(plan.Nodes[i].Name) {
			pods[pod.UID] = &plan.Nodes[i].Pods[j]
		}
	}

	// The targets' own reservations make room for their pods: they go
	// just before the pods move (and the scheduler would preempt them).
	leaving := slices.Clone(moving)
	for _, t := range targets {
		leaving = append(leaving, snap.Reservations(t.node.Name)...)
	}
	sim := simulation.New(snap, atRisk, leaving)
	nodeOf := map[string]*NodePlan{}
	for i := range plan.Nodes {
		nodeOf[plan.Nodes[i].Name] = &plan.Nodes[i]
	}
	for _, r := range sim.Place(moving) {
		pp := pods[r.Pod.UID]
		if r.Node == "" {
			pp.Action, pp.WaitsForRoom = ActionBlocked, true
			pp.Reasons = append(pp.Reasons, r.Reason)
			nodeOf[r.Pod.Spec.NodeName].Unplaceable++
			continue
		}
		pp.Destination = r.Node
	}

	p.surge(plan)
	p.assignWaves(targets, plan, moving, pods)
	for i, t := range targets {
		np := &plan.Nodes[i]
		np.Replacement = p.replacement(t, np, p.reservations(t, np, moving, pods))
		for _, pp := range np.Pods {
			if pp.Action == ActionBlocked {
				np.Blockers = append(np.Blockers, Blocker{Namespace: pp.Namespace, Name: pp.Name, Reason: strings.Join(pp.Reasons, "; ")})
				plan.Complete = false
			}
		}
		np.Unprotected = p.unprotected(snap.PodsOn(t.node.Name), np.Pods)
	}
	return plan, nil
}

func targetsOf(snap *snapshot.Snapshot, opts Options) ([]target, error) {
	var out []target
	if len(opts.Nodes) > 0 {
		for _, name := range opts.Nodes {
			n := snap.Node(name)
			if n == nil {
				return nil, fmt.Errorf("node %q not found", name)
			}
			out = append(out, target{node: n, signal: signals.Signal{Kind: signals.RebalanceRecommendation, Source: signals.SourcePlan, Since: snap.Now}})
		}
		return out, nil
	}
	sigs := signalsOf(snap)
	among := sets.New(opts.Among...)
	for _, n := range snap.Nodes {
		if s, ok := sigs[n.Name]; ok && (among.Len() == 0 || among.Has(n.Name)) {
			out = append(out, target{node: n, signal: s})
		}
	}
	return out, nil
}

// pdbsOf parses every PDB's selector once per snapshot, by namespace.
func pdbsOf(snap *snapshot.Snapshot) map[string][]compiledPDB {
	return snap.Memo("planner.pdbs", func() any {
		out := map[string][]compiledPDB{}
		for _, pdb := range snap.PDBs {
			// A nil selector selects nothing in policy/v1.
			if pdb.Spec.Selector == nil {
				continue
			}
			sel, err := metav1.LabelSelectorAsSelector(pdb.Spec.Selector)
			if err != nil {
				continue
			}
			out[pdb.Namespace] = append(out[pdb.Namespace], compiledPDB{pdb: pdb, selector: sel})
		}
		return out
	}).(map[string][]compiledPDB)
}

// health is how many pods a workload wants and how many of them are
// healthy (Ready and not terminating) right now.
type health struct {
	expected, healthy int
}

// healthOf counts every controller's pods once per snapshot, as the
// disruption controller does for a PDB: the implicit budget holds over
// time only if the pods already down count against it. A workload's
// expected count is its ReplicaSet's or StatefulSet's replicas when the
// snapshot has it, else the number of its pods that have not finished.
func healthOf(snap *snapshot.Snapshot) map[types.UID]health {
	return snap.Memo("planner.health", func() any {
		out := map[types.UID]health{}
		for _, pod := range snap.Pods {
			o := metav1.GetControllerOfNoCopy(pod)
			if o == nil || pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed {
				continue
			}
			h := out[o.UID]
			h.expected++
			if pod.DeletionTimestamp == nil && snapshot.PodReady(pod) {
				h.healthy++
			}
			out[o.UID] = h
		}
		for _, rs := range snap.ReplicaSets {
			h := out[rs.UID]
			h.expected = int(ptr.Deref(rs.Spec.Replicas, 1))
			out[rs.UID] = h
		}
		for _, sts := range snap.StatefulSets {
			h := out[sts.UID]
			h.expected = int(ptr.Deref(sts.Spec.Replicas, 1))
			out[sts.UID] = h
		}
		return out
	}).(map[types.UID]health)
}

// signalsOf returns the signal of every at-risk node, once per snapshot.
func signalsOf(snap *snapshot.Snapshot) map[string]signals.Signal {
	return snap.Memo("planner.signals", func() any {
		out := map[string]signals.Signal{}
		for _, n := range snap.Nodes {
			if s, ok := signals.FromNode(n, snap.Now); ok {
				out[n.Name] = s
			}
		}
		return out
	}).(map[string]signals.Signal)
}

type planning struct {
	snap     *snapshot.Snapshot
	cfg      *config.Rebalancer
	pdbsByNS map[string][]compiledPDB
}

type compiledPDB struct {
	pdb      *policyv1.PodDisruptionBudget
	selector labels.Selector
}

func (p *planning) pool(n *corev1.Node) string { return Pool(n, p.cfg.PoolLabels) }

// Pool is a node's pool: the first of poolLabels it has, else the Auto
// Scaling group the EC2 source recorded, else "".
func Pool(n *corev1.Node, poolLabels []string) string {
	for _, l := range poolLabels {
		if v, ok := n.Labels[l]; ok {
			return v
		}
	}
	return n.Annotations[signals.AnnotationPool]
}

// classify decides skip, blocked or evict from the pod alone and its PDBs.
func (p *planning) classify(pod *corev1.Pod) PodPlan {
	pp := PodPlan{Namespace: pod.Namespace, Name: pod.Name, Action: ActionEvict, Reasons: []string{}, PDBs: []PDBRef{},
		Priority: schedcorev1.PodPriority(pod), Critical: isCritical(pod), DataLoss: dataLoss(p.snap, pod)}
	owner := metav1.GetControllerOfNoCopy(pod)
	switch {
	case reserve.Is(pod) && pod.Namespace == p.snap.Namespace:
		return skip(pp, "reservation pod (the controller removes it)")
	case owner != nil && owner.Kind == "DaemonSet":
		return skip(pp, "DaemonSet pod")
	case pod.Annotations[corev1.MirrorPodAnnotationKey] != "":
		return skip(pp, "mirror pod")
	case pod.Status.Phase == corev1.PodSucceeded || pod.Status.Phase == corev1.PodFailed:
		return skip(pp, "finished ("+string(pod.Status.Phase)+")")
	case pod.DeletionTimestamp != nil:
		return skip(pp, "already terminating")
	}
	for _, pdb := range p.pdbsFor(pod) {
		pp.PDBs = append(pp.PDBs, PDBRef{Name: pdb.Name, DisruptionsAllowed: pdb.Status.DisruptionsAllowed})
	}
	switch {
	case owner == nil:
		return block(pp, "no controller: nothing would recreate it, so it is left until the deadline")
	case pod.Annotations[signals.AnnotationDoNotEvict] == "true":
		return block(pp, "annotated "+signals.AnnotationDoNotEvict+"=true")
	case pod.Annotations[signals.AnnotationKarpenterDoNotDisrupt] == "true":
		return block(pp, "annotated "+signals.AnnotationKarpenterDoNotDisrupt+"=true")
	case len(pp.PDBs) > 1:
		names := make([]string, len(pp.PDBs))
		for i, r := range pp.PDBs {
			names[i] = r.Name
		}
		return block(pp, fmt.Sprintf("covered by %d PDBs (%s): the Eviction API refuses such pods", len(names), strings.Join(names, ", ")))
	case len(pp.PDBs) == 1:
		pdb := p.pdbsFor(pod)[0]
		if pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.ExpectedPods > 0 &&
			pdb.Status.ExpectedPods-pdb.Status.DesiredHealthy <= 0 {
			return block(pp, fmt.Sprintf("PDB %s allows 0 disruptions even with all %d pods healthy", pdb.Name, pdb.Status.ExpectedPods))
		}
		if pp.Granted = Granted(pdb, pod, p.snap.Now); pp.Granted {
			pp.Reasons = append(pp.Reasons, fmt.Sprintf("PDB %s already granted its eviction; the delete never came, so it is deleted", pdb.Name))
		}
	}
	return pp
}

// DisruptedPodTimeout is how long the API server's disruption controller
// keeps a pod in a PDB's status.disruptedPods once an eviction of it was
// granted, waiting for its delete (the controller's DeletionTimeout); then
// it counts the pod as healthy again and gives its disruption back.
const DisruptedPodTimeout = 2 * time.Minute

// GrantTrust is how long after a grant the planner still treats it as
// one: a minute short of DisruptedPodTimeout, so that clock skew and the
// time until the delete lands never let it delete a pod whose disruption
// the disruption controller has just given back (and someone else taken).
const GrantTrust = time.Minute

// grantSkew is how far in the future a grant's time may be (the API
// server's clock against ours).
const grantSkew = 10 * time.Second

// Granted tells whether the PDB already counts pod as disrupted: an
// eviction of it was granted (its name is in status.disruptedPods, written
// by the Eviction API) but its delete never came, as when the evicting
// client is killed mid-request. Until the entry expires the PDB allows no
// eviction in its place, so the pod is deleted instead, without spending
// the budget twice. Only entries of this pod (stamped after it was
// created, not of an earlier pod of the same name), at most GrantTrust old
// and at most grantSkew in the future count, and never for a Job's pod
// (the Eviction API marks a pod DisruptionTarget before deleting it, which
// a Job's podFailurePolicy may rely on; a plain delete does not).
func Granted(pdb *policyv1.PodDisruptionBudget, pod *corev1.Pod, now time.Time) bool {
	at, ok := pdb.Status.DisruptedPods[pod.Name]
	if !ok || !at.Time.After(pod.CreationTimestamp.Time) {
		return false
	}
	if owner := metav1.GetControllerOfNoCopy(pod); owner == nil || owner.Kind == "Job" {
		return false
	}
	return at.Time.After(now.Add(-GrantTrust)) && !at.Time.After(now.Add(grantSkew))
}

func skip(pp PodPlan, reason string) PodPlan {
	pp.Action, pp.Reasons = ActionSkip, append(pp.Reasons, reason)
	return pp
}

func block(pp PodPlan, reason string) PodPlan {
	pp.Action, pp.Reasons = ActionBlocked, append(pp.Reasons, reason)
	return pp
}

func isCritical(pod *corev1.Pod) bool {
	return pod.Spec.PriorityClassName == "system-node-critical" || pod.Spec.PriorityClassName == "system-cluster-critical"
}

func (p *planning) pdbsFor(pod *corev1.Pod) []*policyv1.PodDisruptionBudget {
	var out []*policyv1.PodDisruptionBudget
	for _, c := range p.pdbsByNS[pod.Namespace] {
		if c.selector.Matches(labels.Set(pod.Labels)) {
			out = append(out, c.pdb)
		}
	}
	return out
}

// budget is a disruption allowance shared by the pods of one group: a PDB,
// or for workloads without one, the implicit budget.
type budget struct {
	first, later int // allowance in the first wave and once recovered
	used         map[int]int
}

// assignWaves puts every evictable pod into the earliest wave its budget
// and maxParallelEvictions allow: non-critical pods before critical ones,
// lower priority first.
func (p *planning) assignWaves(targets []target, plan *Plan, moving []*corev1.Pod, pods map[types.UID]*PodPlan) {
	interruption := map[string]bool{}
	for _, t := range targets {
		interruption[t.node.Name] = t.signal.Kind == signals.InterruptionNotice
	}
	workloads := healthOf(p.snap)
	order := slices.Clone(moving)
	slices.SortStableFunc(order, func(a, b *corev1.Pod) int {
		pa, pb := pods[a.UID], pods[b.UID]
		// Granted pods first: their PDBs already count them as gone.
		return cmp.Or(boolCmp(!pa.Granted, !pb.Granted), boolCmp(pa.Critical, pb.Critical), cmp.Compare(pa.Priority, pb.Priority),
			strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	budgets := map[string]*budget{}
	perWave := map[int]int{}
	lastNonCritical := 0
	for _, pod := range order {
		pp := pods[pod.UID]
		if pp.Action != ActionEvict {
			continue
		}
		if pp.Granted {
			// Its PDB already counts it as gone: it goes now, and spends
			// nothing of the budget.
			pp.Wave = 1
			perWave[1]++
			continue
		}
		key, b := p.budgetOf(pod, pp, workloads, interruption[pod.Spec.NodeName], budgets)
		start := 1
		if pp.Critical {
			start = lastNonCritical + 1
		}
		wave := start
		for {
			allowance := b.later
			if wave == 1 {
				allowance = b.first
			}
			if b.used[wave] < allowance && perWave[wave] < int(p.cfg.MaxParallelEvictions) {
				break
			}
			wave++
		}
		b.used[wave]++
		perWave[wave]++
		budgets[key] = b
		pp.Wave = wave
		if !pp.Critical {
			lastNonCritical = max(lastNonCritical, wave)
		}
	}
}

func (p *planning) budgetOf(pod *corev1.Pod, pp *PodPlan, workloads map[types.UID]health, interruption bool, budgets map[string]*budget) (string, *budget) {
	if len(pp.PDBs) == 1 {
		key := "pdb/" + pod.Namespace + "/" + pp.PDBs[0].Name
		if b, ok := budgets[key]; ok {
			return key, b
		}
		pdb := p.pdbsFor(pod)[0]
		first := int(pdb.Status.DisruptionsAllowed)
		if pdb.Status.ObservedGeneration < pdb.Generation {
			first = 0 // the Eviction API refuses until the status catches up
		}
		later := int(pdb.Status.ExpectedPods - pdb.Status.DesiredHealthy)
		return key, &budget{first: first, later: max(later, 1), used: map[int]int{}}
	}
	owner := metav1.GetControllerOfNoCopy(pod)
	key := "implicit/" + string(owner.UID)
	if b, ok := budgets[key]; ok {
		return key, b
	}
	if interruption {
		// No deadline-free waiting: as fast as the PDBs allow.
		return key, &budget{first: 1 << 30, later: 1 << 30, used: map[int]int{}}
	}
	// As a PDB's disruptionsAllowed: the pods it may lose now are the
	// healthy ones beyond what must stay up, so a pod evicted a moment ago
	// and its replacement, still starting, count against it.
	h := workloads[owner.UID]
	n := ImplicitBudget(p.cfg.ImplicitBudget.MaxUnavailable, h.expected)
	return key, &budget{first: max(h.healthy-(h.expected-n), 0), later: n, used: map[int]int{}}
}

// ImplicitBudget is how many pods of a workload without a PDB may be down
// at once: maxUnavailable of its replicas, rounded down, at least 1.
func ImplicitBudget(maxUnavailable *intstr.IntOrString, replicas int) int {
	n, err := intstr.GetScaledValueFromIntOrPercent(maxUnavailable, replicas, false)
	if err != nil {
		return 1
	}
	return max(n, 1)
}

func boolCmp(a, b bool) int {
	switch {
	case a == b:
		return 0
	case a:
		return 1
	default:
		return -1
	}
}

// Waits tells whether a node in state waits for its replacement (and
// holds reservations while it does).
func Waits(state signals.State) bool {
	return state == "" || state == signals.StateAtRisk || state == signals.StateAwaitingReplacement
}

// reserves tells whether the node holds reservations now (provision
// reservations): while a rebalance recommendation waits for its
// replacement, and from an interruption notice until the node is drained,
// unless Karpenter drains it.
func (p *planning) reserves(t target, np *NodePlan) bool {
	if np.DrainedBy != "" || p.cfg.Replacement.Mode == config.ReplacementNone || p.cfg.Replacement.Provision != config.ProvisionReservations {
		return false
	}
	state := signals.StateOf(t.node.Annotations)
	if t.signal.Kind == signals.InterruptionNotice {
		return Waits(state) || state == signals.StateDraining
	}
	return Waits(state)
}

// reservations are the reservations the node holds, with where each runs
// (matched by the pod it is for) and where the simulation places the pod
// now: while a rebalance waits, one for every pod that must move; at an
// interruption notice, one for every pod that fits nowhere and does not
// surge (a surge's Pending pods ask for themselves), kept by a pod that
// fits now until it moves.
func (p *planning) reservations(t target, np *NodePlan, moving []*corev1.Pod, pods map[types.UID]*PodPlan) []Reservation {
	out := []Reservation{}
	if !p.reserves(t, np) {
		return out
	}
	have := map[string]*corev1.Pod{}
	for _, r := range p.snap.Reservations(t.node.Name) {
		if key := r.Annotations[reserve.AnnotationPod]; have[key] == nil || reserve.Running(r) {
			have[key] = r
		}
	}
	avoid := reserve.OfferingOf(t.node)
	opts := reserve.Options{Volumes: func(pod *corev1.Pod) []corev1.NodeSelector { return simulation.VolumeNodeSelectors(p.snap, pod) }}
	candidates := moving
	if t.signal.Kind == signals.InterruptionNotice {
		candidates = p.snap.PodsOn(t.node.Name)
	}
	for _, pod := range candidates {
		if pod.Spec.NodeName != t.node.Name {
			continue
		}
		pp := pods[pod.UID]
		r := Reservation{Pod: pod.Namespace + "/" + pod.Name, Fits: pp.Destination}
		// At an interruption: room is asked for a pod that fits nowhere
		// and does not surge; a pod that has room now, or is leaving,
		// keeps the reservation it has until it is gone (its room must
		// still be there when its replacement comes: a StatefulSet makes
		// it only then).
		switch {
		case t.signal.Kind != signals.InterruptionNotice:
		case pp.Action == ActionBlocked && pp.WaitsForRoom:
		case have[r.Pod] != nil && (pp.Action == ActionEvict || pod.DeletionTimestamp != nil):
		default:
			continue
		}
		if h := have[r.Pod]; h != nil {
			r.Name = h.Name
			if reserve.Running(h) {
				r.Node = h.Spec.NodeName
			}
		}
		if avoid != nil && !reserve.CanAvoid(pod, *avoid, opts) {
			r.Note = fmt.Sprintf("cannot keep off %s: the pod's own node constraints (or its volumes) allow only it", avoid)
		}
		out = append(out, r)
	}
	return out
}

// replacement reports whether the capacity the node waits for is there.
func (p *planning) replacement(t target, np *NodePlan, reservations []Reservation) Replacement {
	allPlaced := np.Unplaceable == 0
	mode := p.cfg.Replacement.Mode
	provision := p.cfg.Replacement.Provision
	if t.signal.Kind == signals.InterruptionNotice {
		r := Replacement{Mode: config.ReplacementNone, Ready: true, Nodes: []string{}, Reason: "an interruption notice never waits for a replacement",
			Provision: config.ProvisionNone, Reservations: reservations}
		if mode != config.ReplacementNone && np.DrainedBy == "" {
			r.Provision = provision
		}
		if len(reservations) > 0 {
			r.Reason += fmt.Sprintf("; %d reservation(s) ask for room for the pods that fit nowhere, which move as soon as there is some", len(reservations))
			r.Avoid = reserve.OfferingOf(t.node)
		}
		return r
	}
	switch mode {
	case config.ReplacementNone:
		return Replacement{Mode: mode, Ready: true, Nodes: []string{}, Reason: "mode none drains at once", Provision: config.ProvisionNone, Reservations: reservations}
	case config.ReplacementCapacity:
		if allPlaced {
			return Replacement{Mode: mode, Ready: true, Nodes: []string{}, Reason: "every pod fits on Ready nodes", Provision: provision, Reservations: reservations}
		}
		return Replacement{Mode: mode, Nodes: []string{}, Reason: "some pods fit nowhere yet", Provision: provision, Reservations: reservations}
	}
	// One new node per at-risk node moving at once: the k-th node of the
	// pool to drain (those draining or drained before it, plus itself)
	// needs k new nodes, so draining follows replacements as they join.
	needed := 1
	for name, sig := range signalsOf(p.snap) {
		other := p.snap.Node(name)
		if name == t.node.Name || other == nil || sig.Kind == signals.InterruptionNotice || p.pool(other) != np.Pool {
			continue
		}
		if state := signals.StateOf(other.Annotations); state == signals.StateDraining || state == signals.StateDrained {
			needed++
		}
	}
	// Creation times have second precision: a node created in the second
	// of the signal counts as new.
	since := t.signal.Since.Truncate(time.Second)
	var found []string
	for _, n := range p.snap.Nodes {
		if np.Pool == "" || p.pool(n) != np.Pool || n.CreationTimestamp.Time.Before(since) || n.Spec.Unschedulable || !simulation.NodeReady(n) {
			continue
		}
		if _, atRisk := signalsOf(p.snap)[n.Name]; atRisk {
			continue
		}
		found = append(found, n.Name)
	}
	r := Replacement{Mode: mode, Nodes: append([]string{}, found...), Provision: provision, Reservations: reservations}
	if len(reservations) > 0 {
		r.Avoid = reserve.OfferingOf(t.node)
	}
	// With reservations the room asked for is exactly what the pods need:
	// it is there when every one runs on a new node, however many nodes
	// the autoscaler chose to launch for them.
	reserved := len(reservations) > 0
	newNode := sets.New(found...)
	for _, res := range reservations {
		reserved = reserved && newNode.Has(res.Node)
	}
	if reserved && allPlaced && np.Pool != "" {
		r.Ready, r.Reason = true, fmt.Sprintf("%d reservation(s) running on new Ready node(s) in pool %s", len(reservations), np.Pool)
		return r
	}
	switch {
	case np.Pool == "":
		r.Reason = "the node belongs to no known pool (none of rebalancer.poolLabels is set)"
	case len(found) < needed:
		r.Reason = fmt.Sprintf("waiting for a new Ready node in pool %s (%d of %d)", np.Pool, len(found), needed)
	case !allPlaced:
		r.Reason = "replacement Ready, but some pods fit nowhere yet"
	default:
		r.Ready, r.Reason = true, fmt.Sprintf("%d replacement node(s) Ready in pool %s", len(found), np.Pool)
	}
	return r
}

// unprotected lists the workloads with evictable pods and no PDB.
func (p *planning) unprotected(pods []*corev1.Pod, plans []PodPlan) []Unprotected {
	byKey := map[string]*Unprotected{}
	for i, pod := range pods {
		pp := plans[i]
		if pp.Action == ActionSkip || len(pp.PDBs) > 0 {
			continue
		}
		kind, name := workloadOf(pod)
		if kind == "" {
			continue
		}
		key := pod.Namespace + "/" + kind + "/" + name
		u, ok := byKey[key]
		if !ok {
			u = &Unprotected{Namespace: pod.Namespace, Kind: kind, Name: name, SuggestedPDB: p.suggestPDB(pod, name)}
			byKey[key] = u
		}
		u.Pods++
	}
	out := make([]Unprotected, 0, len(byKey))
	for _, k := range slices.Sorted(maps.Keys(byKey)) {
		out = append(out, *byKey[k])
	}
	return out
}

// suggestPDB proposes a budget of one pod for the pod's workload, with the
// workload's own selector (a pod's labels can carry more, a zone for
// instance, and a PDB on those would protect some of its pods only). For a
// workload the snapshot does not hold, the pod's labels without those that
// differ from pod to pod.
func (p *planning) suggestPDB(pod *corev1.Pod, name string) SuggestedPDB {
	out := SuggestedPDB{Name: name, MaxUnavailable: 1}
	var sel *metav1.LabelSelector
	if d := p.snap.DeploymentOf(pod); d != nil {
		sel = d.Spec.Selector
	} else if o := metav1.GetControllerOfNoCopy(pod); o != nil {
		switch o.Kind {
		case "StatefulSet":
			if sts := p.snap.StatefulSet(pod.Namespace, o.Name); sts != nil && sts.UID == o.UID {
				sel = sts.Spec.Selector
			}
		case "ReplicaSet":
			if rs := p.snap.ReplicaSet(pod.Namespace, o.Name); rs != nil && rs.UID == o.UID {
				sel = rs.Spec.Selector
			}
		}
	}
	if sel != nil {
		out.Selector, out.MatchExpressions = maps.Clone(sel.MatchLabels), slices.Clone(sel.MatchExpressions)
		if out.Selector == nil {
			out.Selector = map[string]string{}
		}
		return out
	}
	out.Selector = maps.Clone(pod.Labels)
	for _, k := range []string{"pod-template-hash", "controller-revision-hash", "statefulset.kubernetes.io/pod-name", "apps.kubernetes.io/pod-index"} {
		delete(out.Selector, k)
	}
	return out
}

// workloadOf names the workload a pod belongs to: the Deployment behind a
// ReplicaSet (by the pod-template-hash naming convention), else its
// controller.
func workloadOf(pod *corev1.Pod) (kind, name string) {
	o := metav1.GetControllerOfNoCopy(pod)
	if o == nil {
		return "", ""
	}
	if o.Kind == "ReplicaSet" {
		if h := pod.Labels["pod-template-hash"]; h != "" && strings.HasSuffix(o.Name, "-"+h) {
			return "Deployment", strings.TrimSuffix(o.Name, "-"+h)
		}
	}
	return o.Kind, o.Name
}

// dataLoss names the pod's volumes whose data stays behind when it moves:
// emptyDir volumes (they live and die with the pod) and claims bound to
// local PersistentVolumes (on the node's own disks).
func dataLoss(snap *snapshot.Snapshot, pod *corev1.Pod) []string {
	var out []string
	for i := range pod.Spec.Volumes {
		v := &pod.Spec.Volumes[i]
		switch {
		case v.EmptyDir != nil:
			out = append(out, "emptyDir "+v.Name)
		case v.PersistentVolumeClaim != nil:
			claim := v.PersistentVolumeClaim.ClaimName
			if pv := simulation.BoundVolume(snap, pod.Namespace, claim); pv != nil && pv.Spec.Local != nil {
				out = append(out, fmt.Sprintf("local PersistentVolume %s (claim %s)", pv.Name, claim))
			}
		}
	}
	return out
}
