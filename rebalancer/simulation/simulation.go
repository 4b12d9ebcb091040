// Package simulation predicts where the kube-scheduler would place pods
// that must leave a node, with the scheduler's own filter rules (from
// k8s.io/component-helpers where it has them): node readiness and
// schedulability, taints, node selector and required node affinity,
// resources and pod count, host ports, required inter-pod affinity and
// anti-affinity, and DoNotSchedule topology spread. It places all moving
// pods together, largest first, so that two pods never count the same free
// space, and explains a pod it cannot place the way the scheduler does.
package simulation

import (
	"cmp"
	"fmt"
	"maps"
	"math"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	schedcorev1 "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// Reasons a node cannot take a pod, as they appear in explanations.
const (
	ReasonAtRisk        = "at risk"
	ReasonNotReady      = "not ready"
	ReasonUnschedulable = "unschedulable"
	ReasonTaint         = "untolerated taint"
	ReasonNodeAffinity  = "didn't match node affinity/selector"
	ReasonTooManyPods   = "Too many pods"
	ReasonHostPort      = "host port conflict"
	ReasonPodAffinity   = "didn't match pod affinity"
	ReasonAntiAffinity  = "didn't match pod anti-affinity"
	ReasonExistingAnti  = "existing pods' anti-affinity"
	ReasonSpread        = "didn't match topology spread"
)

// Result is where one pod would go.
type Result struct {
	Pod *corev1.Pod
	// Node is the predicted destination; empty when none fits.
	Node string
	// Reason explains an empty Node, scheduler style:
	// "0/7 nodes are available: 3 untolerated taint, 2 Insufficient cpu, 2 at risk".
	Reason string
}

// Simulator holds the free capacity of every node and the pods that stay.
// What does not depend on the plan is computed once per snapshot (base);
// a Simulator overlays the moving pods' departure and the placements.
type Simulator struct {
	snap  *snapshot.Snapshot
	base  *base
	nodes []*nodeState
	// scratch is reused by every placement: a plan places thousands of
	// pods, each over up to hundreds of feasible nodes, and these slices
	// were most of what a plan allocated.
	scratch scratch
	// removed are the moving pods; added the pods placed so far, with
	// their required anti-affinity terms, by namespace.
	removed sets.Set[types.UID]
	// losing is true, by node index, for the nodes moving pods leave:
	// only a pod there can be in removed (see gone).
	losing      []bool
	added       map[string][]placedPod
	addedAnti   map[string][]antiTerm
	spreadCache map[string]*spreadCounts
	// spreadList holds each of spreadCache's counts once (it names one
	// under several keys), for counting placements.
	spreadList []*spreadCounts
	// softCache holds soft spread counts by controller; softByOwner the
	// ones that count only their controller's pods (the system default),
	// softByNamespace the ones that count by selector.
	softCache       map[string]*softCounts
	softByOwner     map[types.UID]*softCounts
	softByNamespace map[string][]*softCounts
	topologies      map[string]*topology
	// storage is what the volume filters read; attachedAdded the CSI
	// volumes placements attached, by node index and driver.
	storage       *storage
	attachedAdded []map[string]sets.Set[string]
	// attachedCount is storage.attachedCount with the placements'.
	attachedCount []int32
	// chosenPVs are the static volumes placed pods' claims would bind.
	chosenPVs map[string]*corev1.PersistentVolume
	// addedAll and addedAffinity are the placements, and those with pod
	// affinity terms, for InterPodAffinity scoring.
	addedAll      []placedPod
	addedAffinity []affinityPod
	// othersAnti caches what others' anti-affinity forbids by namespace
	// and labels, antiDomains the domains of pods' own terms by what they
	// compile to; antiDomainList holds each of antiDomains.
	othersAnti     map[string]*othersAnti
	antiDomains    map[string]*termDomains
	antiDomainList []*termDomains
	// nextStart is where the next search for a node begins.
	nextStart int
}

type placedPod struct {
	pod   *corev1.Pod
	node  *corev1.Node
	index int // of node, in Simulator.nodes
}

// gone tells whether a pod of the snapshot is one of the moving pods: a
// slice read for the pods on the other nodes, which are nearly all of them,
// and a set lookup by UID only on the nodes they leave.
func (s *Simulator) gone(pp placedPod) bool {
	return s.losing[pp.index] && s.removed.Has(pp.pod.UID)
}

type nodeState struct {
	node        *corev1.Node
	index       int // in Simulator.nodes
	allocatable resources
	requested   resources
	taints      int // index of the node's taint set in base.taintSets
	// preferNoSchedule tells whether the node has PreferNoSchedule taints.
	preferNoSchedule bool
	ports            []hostPort
	// nonZero is what the scheduler's scoring counts as requested: a
	// container without a CPU or memory request counts as 100m or 200Mi.
	nonZeroCPU, nonZeroMemory int64
	// unusable is why no pod may go here at all, or "".
	unusable string
}

type hostPort struct {
	ip       string
	protocol corev1.Protocol
	port     int32
}

// base is the part of the simulation that depends on the snapshot alone.
type base struct {
	nodes       []nodeState
	index       map[string]int
	byNamespace map[string][]placedPod
	// byOwner are the pods of each controller, for default spreading.
	byOwner   map[types.UID][]placedPod
	antiTerms map[string][]antiTerm
	// withAffinity are the pods with pod affinity terms the scheduler's
	// InterPodAffinity scoring reads (required affinity, preferred
	// affinity and anti-affinity).
	withAffinity []affinityPod
	// all are every staying pod, for terms that select every namespace.
	all []placedPod
	// taintSets are the distinct NoSchedule/NoExecute taint sets; 0 is none.
	taintSets [][]corev1.Taint
}

func baseOf(snap *snapshot.Snapshot) *base {
	return snap.Memo("simulation.base", func() any { return buildBase(snap) }).(*base)
}

func buildBase(snap *snapshot.Snapshot) *base {
	b := &base{nodes: make([]nodeState, len(snap.Nodes)), index: make(map[string]int, len(snap.Nodes)),
		byNamespace: map[string][]placedPod{}, byOwner: map[types.UID][]placedPod{}, antiTerms: map[string][]antiTerm{}, taintSets: [][]corev1.Taint{nil}}
	taintIDs := map[string]int{"": 0}
	for i, n := range snap.Nodes {
		ns := nodeState{node: n, index: i, allocatable: fromList(n.Status.Allocatable)}
		key := taintKey(n)
		id, ok := taintIDs[key]
		if !ok {
			id = len(b.taintSets)
			taintIDs[key] = id
			b.taintSets = append(b.taintSets, n.Spec.Taints)
		}
		ns.taints = id
		ns.preferNoSchedule = slices.ContainsFunc(n.Spec.Taints, func(t corev1.Taint) bool { return t.Effect == corev1.TaintEffectPreferNoSchedule })
		switch {
		case !NodeReady(n):
			ns.unusable = ReasonNotReady
		case n.Spec.Unschedulable:
			ns.unusable = ReasonUnschedulable
		}
		for _, p := range snap.PodsOn(n.Name) {
			if isFinished(p) {
				continue
			}
			ns.take(p, requestsOf(p))
			if !terminating(p) {
				b.byNamespace[p.Namespace] = append(b.byNamespace[p.Namespace], placedPod{pod: p, node: n, index: i})
				if o := metav1.GetControllerOfNoCopy(p); o != nil {
					b.byOwner[o.UID] = append(b.byOwner[o.UID], placedPod{pod: p, node: n, index: i})
				}
				b.all = append(b.all, placedPod{pod: p, node: n, index: i})
				if ap, ok := affinityOf(placedPod{pod: p, node: n, index: i}); ok {
					b.withAffinity = append(b.withAffinity, ap)
				}
				for _, t := range antiTermsOf(p, n) {
					for _, namespace := range t.namespaces {
						b.antiTerms[namespace] = append(b.antiTerms[namespace], t)
					}
				}
			}
		}
		b.nodes[i] = ns
		b.index[n.Name] = i
	}
	return b
}

// New builds a simulator over the snapshot. atRisk nodes take no pods;
// moving pods are taken off their nodes, as an eviction would.
func New(snap *snapshot.Snapshot, atRisk sets.Set[string], moving []*corev1.Pod) *Simulator {
	b := baseOf(snap)
	removed := sets.New[types.UID]()
	touched := sets.New[string]()
	for _, p := range moving {
		removed.Insert(p.UID)
		if p.Spec.NodeName != "" {
			touched.Insert(p.Spec.NodeName)
		}
	}
	s := &Simulator{snap: snap, base: b, nodes: make([]*nodeState, len(b.nodes)), removed: removed,
		added: map[string][]placedPod{}, addedAnti: map[string][]antiTerm{}, spreadCache: map[string]*spreadCounts{}, softCache: map[string]*softCounts{},
		softByOwner: map[types.UID]*softCounts{}, othersAnti: map[string]*othersAnti{}, antiDomains: map[string]*termDomains{}, softByNamespace: map[string][]*softCounts{}, topologies: map[string]*topology{},
		storage: snap.Memo("simulation.storage", func() any { return buildStorage(snap, b) }).(*storage), attachedAdded: make([]map[string]sets.Set[string], len(b.nodes))}
	s.attachedCount = slices.Clone(s.storage.attachedCount)
	s.losing = make([]bool, len(b.nodes))
	for name := range touched {
		if i, ok := b.index[name]; ok {
			s.losing[i] = true
		}
	}
	states := slices.Clone(b.nodes)
	for i := range states {
		ns := &states[i]
		// Placements append; never into the shared base array.
		ns.ports = slices.Clip(ns.ports)
		if atRisk.Has(ns.node.Name) {
			ns.unusable = ReasonAtRisk
		}
		s.nodes[i] = ns
	}
	// Nodes that lose moving pods are recounted without them.
	for name := range touched {
		i, ok := b.index[name]
		if !ok {
			continue
		}
		ns := s.nodes[i]
		ns.requested, ns.nonZeroCPU, ns.nonZeroMemory, ns.ports = resources{}, 0, 0, nil
		for _, p := range snap.PodsOn(name) {
			if !removed.Has(p.UID) && !isFinished(p) {
				ns.take(p, requestsOf(p))
			}
		}
	}
	return s
}

// NodeReady tells whether the node's Ready condition is True.
func NodeReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

func isFinished(p *corev1.Pod) bool {
	return p.Status.Phase == corev1.PodSucceeded || p.Status.Phase == corev1.PodFailed
}

// take counts p, which asks for r, as running on ns.
func (ns *nodeState) take(p *corev1.Pod, r podResources) {
	ns.requested.add(r.requests)
	ns.nonZeroCPU += r.nonZeroCPU
	ns.nonZeroMemory += r.nonZero
	ns.ports = append(ns.ports, podHostPorts(p)...)
}

// place records p, which asks for r and attaches volumes, as placed on ns.
func (s *Simulator) place(ns *nodeState, p *corev1.Pod, r podResources, volumes *podVolumes) {
	ns.take(p, r)
	if volumes != nil {
		s.attach(ns.index, volumes.attach)
		if len(volumes.delayed) > 0 {
			chosen, _ := s.bind(volumes.delayed, ns.node)
			if s.chosenPVs == nil {
				s.chosenPVs = map[string]*corev1.PersistentVolume{}
			}
			maps.Copy(s.chosenPVs, chosen)
		}
	}
	if terminating(p) {
		return
	}
	s.added[p.Namespace] = append(s.added[p.Namespace], placedPod{pod: p, node: ns.node, index: ns.index})
	s.addedAll = append(s.addedAll, placedPod{pod: p, node: ns.node, index: ns.index})
	if ap, ok := affinityOf(placedPod{pod: p, node: ns.node, index: ns.index}); ok {
		s.addedAffinity = append(s.addedAffinity, ap)
	}
	for _, t := range antiTermsOf(p, ns.node) {
		for _, namespace := range t.namespaces {
			s.addedAnti[namespace] = append(s.addedAnti[namespace], t)
		}
	}
	for _, c := range s.spreadList {
		c.add(p, ns.index)
	}
	for _, d := range s.antiDomainList {
		d.add(placedPod{pod: p, node: ns.node, index: ns.index})
	}
	if o := metav1.GetControllerOfNoCopy(p); o != nil {
		if c, ok := s.softByOwner[o.UID]; ok {
			c.add(p, ns.index)
		}
	}
	for _, c := range s.softByNamespace[p.Namespace] {
		c.add(p, ns.index)
	}
}

// Place finds a node for every pod, largest request first, each placement
// taking the space it fills from the pods after it. Results are in the
// order of pods.
func (s *Simulator) Place(pods []*corev1.Pod) []Result {
	order := make([]int, len(pods))
	requests := make([]podResources, len(pods))
	for i, p := range pods {
		order[i] = i
		requests[i] = requestsOf(p)
	}
	sort.SliceStable(order, func(a, b int) bool {
		ra, rb := requests[order[a]].requests, requests[order[b]].requests
		if ra.cpu != rb.cpu {
			return ra.cpu > rb.cpu
		}
		if ra.memory != rb.memory {
			return ra.memory > rb.memory
		}
		return cmp.Or(strings.Compare(pods[order[a]].Namespace, pods[order[b]].Namespace),
			strings.Compare(pods[order[a]].Name, pods[order[b]].Name)) < 0
	})
	results := make([]Result, len(pods))
	for _, i := range order {
		results[i] = s.placeOne(pods[i], requests[i])
	}
	return results
}

// Order returns pods in the order Place considers them: largest first.
func Order(pods []*corev1.Pod) []*corev1.Pod {
	out := slices.Clone(pods)
	slices.SortStableFunc(out, func(a, b *corev1.Pod) int {
		ra, rb := requestsOf(a).requests, requestsOf(b).requests
		return cmp.Or(cmp.Compare(rb.cpu, ra.cpu), cmp.Compare(rb.memory, ra.memory),
			strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}

func (s *Simulator) placeOne(p *corev1.Pod, r podResources) Result {
	f := newPodFilter(s, p, r)
	// What no node can change (a claim missing, an unbound Immediate
	// claim) fails the pod before any node is looked at, as the
	// scheduler's PreFilter does.
	if f.volumes != nil && f.volumes.unresolvable != "" {
		return Result{Pod: p, Reason: fmt.Sprintf("0/%d nodes are available: %s", len(s.nodes), f.volumes.unresolvable)}
	}
	// Like the scheduler, stop looking once enough nodes fit (all of them
	// in clusters under 100 nodes, 10% of 5,000), starting where the last
	// search stopped so that placements spread over the cluster.
	enough, n := numFeasibleNodesToFind(len(s.nodes)), len(s.nodes)
	feasible := s.scratch.feasible[:0]
	checked := 0
	for ; checked < n && len(feasible) < enough; checked++ {
		if ns := s.nodes[(s.nextStart+checked)%n]; f.fits(ns) {
			feasible = append(feasible, ns)
		}
	}
	s.scratch.feasible = feasible // kept, grown, for the next placement
	if n > 0 {
		s.nextStart = (s.nextStart + checked) % n
	}
	if len(feasible) == 0 {
		// Every node was checked; now say why each failed.
		reasons := map[string]int{}
		for _, ns := range s.nodes {
			reasons[f.check(ns)]++
		}
		return Result{Pod: p, Reason: explain(len(s.nodes), reasons)}
	}
	// Among the nodes that fit, take the one the scheduler's default
	// scoring prefers, so that later pods find the room the scheduler
	// would have left them.
	best := f.best(feasible, r)
	s.place(best, p, r, f.volumes)
	return Result{Pod: p, Node: best.node.Name}
}

// numFeasibleNodesToFind is the kube-scheduler's own bound
// (percentageOfNodesToScore left to its adaptive default).
func numFeasibleNodesToFind(all int) int {
	const minNodes, minPercentage = 100, 5
	if all < minNodes {
		return all
	}
	percentage := max(50-all/125, minPercentage)
	return max(all*percentage/100, minNodes)
}

// score is the default scheduler profile's NodeResourcesFit
// (LeastAllocated over cpu and memory, non-zero requests) plus
// NodeResourcesBalancedAllocation (actual requests, scored by the change in
// balance), in the scheduler's own integer arithmetic; best adds the
// others.
func score(ns *nodeState, r podResources) int64 {
	alloc := ns.allocatable
	least := (leastRequested(ns.nonZeroCPU+r.nonZeroCPU, alloc.cpu) + leastRequested(ns.nonZeroMemory+r.nonZero, alloc.memory)) / 2
	with := balance(ns.requested.cpu+r.requests.cpu, ns.requested.memory+r.requests.memory, alloc)
	without := balance(ns.requested.cpu, ns.requested.memory, alloc)
	balanced := maxNodeScore/2 + (maxNodeScore/2+with-without)/2
	return least + balanced
}

const maxNodeScore = 100

func leastRequested(requested, capacity int64) int64 {
	if capacity == 0 || requested > capacity {
		return 0
	}
	return (capacity - requested) * maxNodeScore / capacity
}

func balance(cpu, memory int64, alloc resources) int64 {
	if alloc.cpu == 0 || alloc.memory == 0 {
		return maxNodeScore // one resource: no imbalance
	}
	std := math.Abs((min(float64(cpu)/float64(alloc.cpu), 1) - min(float64(memory)/float64(alloc.memory), 1)) / 2)
	return int64((1 - std) * maxNodeScore)
}

// explain renders reasons the way the scheduler does, most common first.
func explain(total int, reasons map[string]int) string {
	type rc struct {
		reason string
		count  int
	}
	var list []rc
	for r, c := range reasons {
		list = append(list, rc{r, c})
	}
	slices.SortFunc(list, func(a, b rc) int { return cmp.Or(b.count-a.count, strings.Compare(a.reason, b.reason)) })
	parts := make([]string, len(list))
	for i, r := range list {
		parts[i] = fmt.Sprintf("%d %s", r.count, r.reason)
	}
	if total == 0 {
		return "0/0 nodes are available"
	}
	return fmt.Sprintf("0/%d nodes are available: %s", total, strings.Join(parts, ", "))
}

// podFilter checks one pod against nodes; what depends only on the pod is
// computed once.
type podFilter struct {
	s            *Simulator
	pod          *corev1.Pod
	requests     resources
	nodeAffinity nodeaffinity.RequiredNodeAffinity
	ports        []hostPort
	hardSpread   []corev1.TopologySpreadConstraint
	spreadCounts []*spreadCounts // per hardSpread entry, on first use
	spreadBase   []int           // per entry: self match minus the minimum
	interPod     *interPodRules  // on first use
	// volumes are the pod's volumes as the volume filters see them; nil
	// when it has none they check.
	volumes *podVolumes
	volTopo *volumeTopology // on first use
	// tolerates caches the taint check per distinct taint set:
	// 0 unknown, 1 tolerated, 2 not.
	tolerates []uint8
}

func newPodFilter(s *Simulator, p *corev1.Pod, r podResources) *podFilter {
	f := &podFilter{s: s, pod: p, requests: r.requests, nodeAffinity: nodeaffinity.GetRequiredNodeAffinity(p),
		ports: podHostPorts(p), tolerates: make([]uint8, len(s.base.taintSets))}
	for _, c := range p.Spec.TopologySpreadConstraints {
		if c.WhenUnsatisfiable == corev1.DoNotSchedule {
			f.hardSpread = append(f.hardSpread, c)
		}
	}
	if hasCheckedVolumes(p) {
		f.volumes = s.storage.podVolumes(p, s.removed)
	}
	return f
}

var noScheduleOrExecute = func(t *corev1.Taint) bool {
	return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
}

// fits tells whether ns can take the pod, as check does, but looks first
// at what rejects most nodes for the least work (a zonal volume rules out
// two nodes in three); which filter rejects a node matters only when none
// fits, and then placeOne asks check.
func (f *podFilter) fits(ns *nodeState) bool {
	if ns.unusable != "" {
		return false
	}
	if v := f.volumes; v != nil && (len(v.affinities) > 0 || len(v.zones) > 0) {
		vt := f.volumeTopology()
		if !vt.zoneOK(ns.index) || !vt.affinityOK(ns.index, ns.node) {
			return false
		}
	}
	return f.check(ns) == ""
}

// check returns why ns cannot take the pod, or "" when it can, in the
// scheduler's filter order.
func (f *podFilter) check(ns *nodeState) string {
	if ns.unusable != "" {
		return ns.unusable
	}
	if ns.taints != 0 {
		if f.tolerates[ns.taints] == 0 {
			f.tolerates[ns.taints] = 1
			if _, untolerated := schedcorev1.FindMatchingUntoleratedTaint(klog.Background(), f.s.base.taintSets[ns.taints], f.pod.Spec.Tolerations, noScheduleOrExecute, false); untolerated {
				f.tolerates[ns.taints] = 2
			}
		}
		if f.tolerates[ns.taints] == 2 {
			return ReasonTaint
		}
	}
	if ok, err := f.nodeAffinity.Match(ns.node); err != nil || !ok {
		return ReasonNodeAffinity
	}
	if r := insufficient(ns.requested, f.requests, ns.allocatable); r != "" {
		return r
	}
	if f.portConflict(ns) {
		return ReasonHostPort
	}
	if r := f.checkVolumes(ns); r != "" {
		return r
	}
	if r := f.checkInterPod(ns); r != "" {
		return r
	}
	return f.spread(ns)
}

func podHostPorts(p *corev1.Pod) []hostPort {
	var out []hostPort
	for _, c := range p.Spec.Containers {
		for _, port := range c.Ports {
			if port.HostPort <= 0 {
				continue
			}
			proto := port.Protocol
			if proto == "" {
				proto = corev1.ProtocolTCP
			}
			ip := port.HostIP
			if ip == "" {
				ip = "0.0.0.0"
			}
			out = append(out, hostPort{ip: ip, protocol: proto, port: port.HostPort})
		}
	}
	return out
}

func (f *podFilter) portConflict(ns *nodeState) bool {
	for _, want := range f.ports {
		for _, used := range ns.ports {
			if want.port == used.port && want.protocol == used.protocol &&
				(want.ip == used.ip || want.ip == "0.0.0.0" || used.ip == "0.0.0.0") {
				return true
			}
		}
	}
	return false
}
