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
	"math"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/component-helpers/resource"
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
type Simulator struct {
	nodes  []*nodeState
	byName map[string]*nodeState
	// withAntiAffinity are staying or placed pods with required
	// anti-affinity terms, which every placement must respect.
	withAntiAffinity []placedPod
	spreadCache      map[string]*spreadCounts
}

type placedPod struct {
	pod  *corev1.Pod
	node *nodeState
}

type nodeState struct {
	node        *corev1.Node
	allocatable map[corev1.ResourceName]int64 // milli-units
	requested   map[corev1.ResourceName]int64
	pods        []*corev1.Pod
	ports       []hostPort
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

// New builds a simulator over the snapshot. atRisk nodes take no pods;
// moving pods are taken off their nodes, as an eviction would.
func New(snap *snapshot.Snapshot, atRisk sets.Set[string], moving sets.Set[types.UID]) *Simulator {
	s := &Simulator{byName: make(map[string]*nodeState, len(snap.Nodes)), spreadCache: map[string]*spreadCounts{}}
	for _, n := range snap.Nodes {
		ns := &nodeState{node: n, allocatable: map[corev1.ResourceName]int64{}, requested: map[corev1.ResourceName]int64{}}
		for name, q := range n.Status.Allocatable {
			ns.allocatable[name] = q.MilliValue()
		}
		switch {
		case atRisk.Has(n.Name):
			ns.unusable = ReasonAtRisk
		case !isReady(n):
			ns.unusable = ReasonNotReady
		case n.Spec.Unschedulable:
			ns.unusable = ReasonUnschedulable
		}
		for _, p := range snap.PodsOn(n.Name) {
			if moving.Has(p.UID) || isFinished(p) {
				continue
			}
			s.add(ns, p)
		}
		s.nodes = append(s.nodes, ns)
		s.byName[n.Name] = ns
	}
	return s
}

func isReady(n *corev1.Node) bool {
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

// add records p as running on ns.
func (s *Simulator) add(ns *nodeState, p *corev1.Pod) {
	for name, q := range resource.PodRequests(p, resource.PodResourcesOptions{}) {
		ns.requested[name] += q.MilliValue()
	}
	ns.requested[corev1.ResourcePods] += 1000
	cpu, mem := nonZeroRequests(p)
	ns.nonZeroCPU += cpu
	ns.nonZeroMemory += mem
	ns.ports = append(ns.ports, podHostPorts(p)...)
	ns.pods = append(ns.pods, p)
	if a := p.Spec.Affinity; a != nil && a.PodAntiAffinity != nil && len(a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution) > 0 {
		s.withAntiAffinity = append(s.withAntiAffinity, placedPod{pod: p, node: ns})
	}
	for _, c := range s.spreadCache {
		c.add(p, ns.node)
	}
}

// Place finds a node for every pod, largest request first, each placement
// taking the space it fills from the pods after it. Results are in the
// order of pods.
func (s *Simulator) Place(pods []*corev1.Pod) []Result {
	order := make([]int, len(pods))
	requests := make([]corev1.ResourceList, len(pods))
	for i, p := range pods {
		order[i] = i
		requests[i] = resource.PodRequests(p, resource.PodResourcesOptions{})
	}
	sort.SliceStable(order, func(a, b int) bool {
		ra, rb := requests[order[a]], requests[order[b]]
		if c := ra.Cpu().Cmp(*rb.Cpu()); c != 0 {
			return c > 0
		}
		if c := ra.Memory().Cmp(*rb.Memory()); c != 0 {
			return c > 0
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
		ra := resource.PodRequests(a, resource.PodResourcesOptions{})
		rb := resource.PodRequests(b, resource.PodResourcesOptions{})
		return cmp.Or(rb.Cpu().Cmp(*ra.Cpu()), rb.Memory().Cmp(*ra.Memory()),
			strings.Compare(a.Namespace, b.Namespace), strings.Compare(a.Name, b.Name))
	})
	return out
}

func (s *Simulator) placeOne(p *corev1.Pod, requests corev1.ResourceList) Result {
	f := newPodFilter(s, p, requests)
	reasons := map[string]int{}
	var best *nodeState
	bestScore := int64(-1)
	for _, ns := range s.nodes {
		if reason := f.check(ns); reason != "" {
			reasons[reason]++
			continue
		}
		// Among the nodes that fit, take the one the scheduler's default
		// scoring prefers (least allocated, balanced), so that later pods
		// find the room the scheduler would have left them.
		if score := score(ns, p, requests); score > bestScore {
			best, bestScore = ns, score
		}
	}
	if best == nil {
		return Result{Pod: p, Reason: explain(len(s.nodes), reasons)}
	}
	s.add(best, p)
	return Result{Pod: p, Node: best.node.Name}
}

// Defaults the scheduler's scoring assumes for containers without a
// request (k8s.io/kubernetes/pkg/scheduler/util.DefaultMilliCPURequest and
// DefaultMemoryRequest).
const (
	defaultMilliCPU = 100
	defaultMemory   = 200 * 1024 * 1024
)

func nonZeroRequests(p *corev1.Pod) (milliCPU, memory int64) {
	for _, c := range p.Spec.Containers {
		if q, ok := c.Resources.Requests[corev1.ResourceCPU]; ok {
			milliCPU += q.MilliValue()
		} else {
			milliCPU += defaultMilliCPU
		}
		if q, ok := c.Resources.Requests[corev1.ResourceMemory]; ok {
			memory += q.Value()
		} else {
			memory += defaultMemory
		}
	}
	return milliCPU, memory
}

// score is the default scheduler profile's NodeResourcesFit
// (LeastAllocated over cpu and memory, non-zero requests) plus
// NodeResourcesBalancedAllocation (actual requests, scored by the change in
// balance), in the scheduler's own integer arithmetic. The other default
// scores are equal across nodes for pods without preferences. Ties are
// broken by node name here, at random by the scheduler.
func score(ns *nodeState, p *corev1.Pod, requests corev1.ResourceList) int64 {
	allocCPU := ns.allocatable[corev1.ResourceCPU]
	allocMem := ns.allocatable[corev1.ResourceMemory] / 1000
	nzCPU, nzMem := nonZeroRequests(p)
	least := (leastRequested(ns.nonZeroCPU+nzCPU, allocCPU) + leastRequested(ns.nonZeroMemory+nzMem, allocMem)) / 2

	cpuBefore, memBefore := ns.requested[corev1.ResourceCPU], ns.requested[corev1.ResourceMemory]/1000
	cpuAfter, memAfter := cpuBefore+requests.Cpu().MilliValue(), memBefore+requests.Memory().Value()
	with := balance([]int64{cpuAfter, memAfter}, []int64{allocCPU, allocMem})
	without := balance([]int64{cpuBefore, memBefore}, []int64{allocCPU, allocMem})
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

func balance(requested, allocatable []int64) int64 {
	var fractions []float64
	for i := range requested {
		if allocatable[i] == 0 {
			continue
		}
		fractions = append(fractions, min(float64(requested[i])/float64(allocatable[i]), 1))
	}
	std := 0.0
	if len(fractions) == 2 {
		std = math.Abs((fractions[0] - fractions[1]) / 2)
	}
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
	requests     corev1.ResourceList
	nodeAffinity nodeaffinity.RequiredNodeAffinity
	ports        []hostPort
}

func newPodFilter(s *Simulator, p *corev1.Pod, requests corev1.ResourceList) *podFilter {
	return &podFilter{s: s, pod: p, requests: requests, nodeAffinity: nodeaffinity.GetRequiredNodeAffinity(p), ports: podHostPorts(p)}
}

var noScheduleOrExecute = func(t *corev1.Taint) bool {
	return t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute
}

// check returns why ns cannot take the pod, or "" when it can.
func (f *podFilter) check(ns *nodeState) string {
	if ns.unusable != "" {
		return ns.unusable
	}
	if _, untolerated := schedcorev1.FindMatchingUntoleratedTaint(klog.Background(), ns.node.Spec.Taints, f.pod.Spec.Tolerations, noScheduleOrExecute, false); untolerated {
		return ReasonTaint
	}
	if ok, err := f.nodeAffinity.Match(ns.node); err != nil || !ok {
		return ReasonNodeAffinity
	}
	if r := f.fits(ns); r != "" {
		return r
	}
	if f.portConflict(ns) {
		return ReasonHostPort
	}
	if r := f.interPod(ns); r != "" {
		return r
	}
	return f.spread(ns)
}

func (f *podFilter) fits(ns *nodeState) string {
	if ns.requested[corev1.ResourcePods]+1000 > ns.allocatable[corev1.ResourcePods] {
		return ReasonTooManyPods
	}
	names := make([]corev1.ResourceName, 0, len(f.requests))
	for name := range f.requests {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		q := f.requests[name]
		want := q.MilliValue()
		if want == 0 {
			continue
		}
		if ns.requested[name]+want > ns.allocatable[name] {
			return "Insufficient " + string(name)
		}
	}
	return ""
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
