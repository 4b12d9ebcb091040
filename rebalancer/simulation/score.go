package simulation

import (
	"math"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/types"
	schedcorev1 "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// Weights of the default scheduler profile's score plugins. ImageLocality
// is not scored here.
const (
	weightTaintToleration = 3
	weightNodeAffinity    = 2
	weightTopologySpread  = 2
	weightInterPod        = 2
	// hardPodAffinityWeight is what an existing pod's required affinity
	// term that the incoming pod matches adds (the scheduler's default).
	hardPodAffinityWeight = 1
)

// systemDefaultSpread is the scheduler's default soft spreading for pods
// of ReplicaSets, StatefulSets and ReplicationControllers that declare no
// constraints of their own.
var systemDefaultSpread = []corev1.TopologySpreadConstraint{
	{TopologyKey: corev1.LabelHostname, WhenUnsatisfiable: corev1.ScheduleAnyway, MaxSkew: 3},
	{TopologyKey: corev1.LabelTopologyZone, WhenUnsatisfiable: corev1.ScheduleAnyway, MaxSkew: 5},
}

// softConstraint is one ScheduleAnyway spread constraint, ready to count.
type softConstraint struct {
	key     string
	maxSkew int32
	matches func(*corev1.Pod) bool
}

// best picks, among nodes that fit, the one the default scheduler profile
// scores highest: NodeResourcesFit and BalancedAllocation, TaintToleration
// (PreferNoSchedule taints), NodeAffinity (preferred terms),
// PodTopologySpread (ScheduleAnyway constraints, or the system default
// spreading for controller-owned pods) and InterPodAffinity (preferred
// terms both ways, and existing pods' required affinity), each normalized
// as the scheduler does. Ties go to the earliest node; the scheduler picks among them at
// random.
func (f *podFilter) best(feasible []*nodeState, r podResources) *nodeState {
	if len(feasible) == 1 {
		return feasible[0]
	}
	total := f.s.scratch.total.get(len(feasible))
	for i, ns := range feasible {
		total[i] = score(ns, r)
	}
	f.addTaintScores(feasible, total)
	f.addNodeAffinityScores(feasible, total)
	f.addSpreadScores(feasible, total)
	f.addInterPodScores(feasible, total)
	best := 0
	for i := range feasible {
		if total[i] > total[best] || (total[i] == total[best] && feasible[i].index < feasible[best].index) {
			best = i
		}
	}
	return feasible[best]
}

// scratch holds the slices one placement uses and the next reuses.
type scratch struct {
	feasible []*nodeState
	total    buffer[int64]
	raw      buffer[int64]
	ignored  buffer[bool]
}

// buffer is a slice handed out zeroed, grown as needed and reused.
type buffer[T any] struct{ s []T }

// get returns n zero values; what an earlier get returned is overwritten.
func (b *buffer[T]) get(n int) []T {
	if cap(b.s) < n {
		b.s = make([]T, n)
	}
	b.s = b.s[:n]
	clear(b.s)
	return b.s
}

// normalize scales raw scores to 0..100 by their maximum, reversed when
// fewer is better (the scheduler's DefaultNormalizeScore), and adds them
// with weight. When every raw score is 0 all nodes score the same, which
// changes no choice.
func normalize(raw, total []int64, weight int64, reverse bool) {
	var maxRaw int64
	for _, v := range raw {
		maxRaw = max(maxRaw, v)
	}
	if maxRaw == 0 {
		return
	}
	for i, v := range raw {
		s := maxNodeScore * v / maxRaw
		if reverse {
			s = maxNodeScore - s
		}
		total[i] += weight * s
	}
}

func (f *podFilter) addTaintScores(feasible []*nodeState, total []int64) {
	var tolerations []corev1.Toleration
	for _, t := range f.pod.Spec.Tolerations {
		if t.Effect == "" || t.Effect == corev1.TaintEffectPreferNoSchedule {
			tolerations = append(tolerations, t)
		}
	}
	var raw []int64 // only when a node has such a taint, which few do
	for i, ns := range feasible {
		if !ns.preferNoSchedule {
			continue
		}
		if raw == nil {
			raw = f.s.scratch.raw.get(len(feasible))
		}
		for j := range ns.node.Spec.Taints {
			t := &ns.node.Spec.Taints[j]
			if t.Effect == corev1.TaintEffectPreferNoSchedule && !schedcorev1.TolerationsTolerateTaint(klog.Background(), tolerations, t, false) {
				raw[i]++
			}
		}
	}
	if raw != nil {
		normalize(raw, total, weightTaintToleration, true)
	}
}

func (f *podFilter) addNodeAffinityScores(feasible []*nodeState, total []int64) {
	a := f.pod.Spec.Affinity
	if a == nil || a.NodeAffinity == nil || len(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		return
	}
	terms, err := nodeaffinity.NewPreferredSchedulingTerms(a.NodeAffinity.PreferredDuringSchedulingIgnoredDuringExecution)
	if err != nil {
		return
	}
	raw := f.s.scratch.raw.get(len(feasible))
	for i, ns := range feasible {
		raw[i] = terms.Score(ns.node)
	}
	normalize(raw, total, weightNodeAffinity, false)
}

// softSpread returns the pod's soft spread constraints and whether nodes
// must carry every topology key to be scored.
func (f *podFilter) softSpread() ([]softConstraint, bool) {
	p := f.pod
	if len(p.Spec.TopologySpreadConstraints) > 0 {
		var out []softConstraint
		for _, c := range p.Spec.TopologySpreadConstraints {
			if c.WhenUnsatisfiable != corev1.ScheduleAnyway {
				continue
			}
			sel := constraintSelector(p, c)
			out = append(out, softConstraint{key: c.TopologyKey, maxSkew: c.MaxSkew, matches: func(o *corev1.Pod) bool {
				return o.Namespace == p.Namespace && sel.Matches(labels.Set(o.Labels))
			}})
		}
		return out, true
	}
	// The scheduler's default selector merges the selectors of the owning
	// controller (and of Services, which select a superset of its pods):
	// for pods of one controller, that is the controller's pods.
	owner := metav1.GetControllerOfNoCopy(p)
	if owner == nil || (owner.Kind != "ReplicaSet" && owner.Kind != "StatefulSet" && owner.Kind != "ReplicationController") {
		return nil, false
	}
	uid := owner.UID
	out := make([]softConstraint, len(systemDefaultSpread))
	for i, c := range systemDefaultSpread {
		out[i] = softConstraint{key: c.TopologyKey, maxSkew: c.MaxSkew, matches: func(o *corev1.Pod) bool {
			ref := metav1.GetControllerOfNoCopy(o)
			return ref != nil && ref.UID == uid && o.Namespace == p.Namespace
		}}
	}
	return out, false
}

// topology interns one label's values over the nodes: nodes with the same
// value share an id; a node without the label has the id of "".
type topology struct {
	ids    []int32  // by node index
	has    []bool   // by node index
	names  []string // by id
	values int      // distinct ids
}

// topology interns the values of a node label: the same for every plan on
// a snapshot, so built once per snapshot and kept per simulator too.
func (s *Simulator) topology(key string) *topology {
	if t, ok := s.topologies[key]; ok {
		return t
	}
	t := s.snap.Memo("simulation.topology|"+key, func() any { return buildTopology(s.base, key) }).(*topology)
	s.topologies[key] = t
	return t
}

func buildTopology(b *base, key string) *topology {
	t := &topology{ids: make([]int32, len(b.nodes)), has: make([]bool, len(b.nodes))}
	byValue := map[string]int32{}
	for i := range b.nodes {
		v, ok := b.nodes[i].node.Labels[key]
		id, seen := byValue[v]
		if !seen {
			id = int32(len(byValue))
			byValue[v] = id
			t.names = append(t.names, v)
		}
		t.ids[i], t.has[i] = id, ok
	}
	t.values = len(byValue)
	return t
}

// addSpreadScores is PodTopologySpread's scoring: a node scores the pods
// that match each constraint in its domain (its own pods for hostname),
// weighted by the log of the number of domains; fewer is better.
func (f *podFilter) addSpreadScores(feasible []*nodeState, total []int64) {
	constraints, requireAll := f.softSpread()
	if len(constraints) == 0 {
		return
	}
	topos := make([]*topology, len(constraints))
	for j, c := range constraints {
		topos[j] = f.s.topology(c.key)
	}
	hasKeys := func(index int) bool {
		for _, t := range topos {
			if !t.has[index] {
				return false
			}
		}
		return true
	}
	ignored := f.s.scratch.ignored.get(len(feasible))
	// The domains among the nodes scored; only their number matters. As in
	// the scheduler, nodes without the key (allowed for the system
	// default) form the domain "".
	domains := make([]int, len(constraints))
	seen := make([][]bool, len(constraints))
	for j, t := range topos {
		if constraints[j].key != corev1.LabelHostname { // hostname: one domain per node
			seen[j] = make([]bool, t.values)
		}
	}
	scored := 0
	for i, ns := range feasible {
		if requireAll && !hasKeys(ns.index) {
			ignored[i] = true
			continue
		}
		scored++
		for j, t := range topos {
			if seen[j] == nil {
				continue
			}
			if id := t.ids[ns.index]; !seen[j][id] {
				seen[j][id] = true
				domains[j]++
			}
		}
	}
	weights := make([]float64, len(constraints))
	for j, c := range constraints {
		size := domains[j]
		if c.key == corev1.LabelHostname {
			size = scored
		}
		weights[j] = math.Log(float64(size + 2))
	}
	counts := f.softCounts(constraints, topos, requireAll)
	raw := f.s.scratch.raw.get(len(feasible))
	minRaw, maxRaw := int64(math.MaxInt64), int64(0)
	for i, ns := range feasible {
		if ignored[i] {
			continue
		}
		var s float64
		for j, c := range constraints {
			if !topos[j].has[ns.index] {
				continue
			}
			cnt := counts.perDomain[j][topos[j].ids[ns.index]]
			if c.key == corev1.LabelHostname {
				cnt = int64(counts.perNode[ns.index])
			}
			s += float64(cnt)*weights[j] + float64(c.maxSkew-1)
		}
		raw[i] = int64(math.Round(s))
		minRaw, maxRaw = min(minRaw, raw[i]), max(maxRaw, raw[i])
	}
	for i := range feasible {
		switch {
		case ignored[i]:
		case maxRaw == 0:
			total[i] += weightTopologySpread * maxNodeScore
		default:
			total[i] += weightTopologySpread * (maxNodeScore * (maxRaw + minRaw - raw[i]) / maxRaw)
		}
	}
}

// softCounts are the matching pods of a pod's soft spread constraints, per
// node (hostname) and per topology value, over every node its required node
// affinity admits (cordoned and at-risk nodes included). They are counted
// once per controller, whose pods share constraints, and kept current as
// pods are placed.
type softCounts struct {
	s           *Simulator
	namespace   string
	constraints []softConstraint
	topos       []*topology
	requireAll  bool
	affinity    nodeaffinity.RequiredNodeAffinity
	perNode     []int32   // by node index (a node holds at most a few hundred pods)
	perDomain   [][]int64 // by constraint, topology id
}

func (f *podFilter) softCounts(constraints []softConstraint, topos []*topology, requireAll bool) *softCounts {
	var key string
	if o := metav1.GetControllerOfNoCopy(f.pod); o != nil {
		key = string(o.UID)
		if c, ok := f.s.softCache[key]; ok {
			return c
		}
	}
	c := &softCounts{s: f.s, namespace: f.pod.Namespace, constraints: constraints, topos: topos, requireAll: requireAll,
		affinity: f.nodeAffinity, perNode: make([]int32, len(f.s.nodes)), perDomain: make([][]int64, len(constraints))}
	for j, t := range topos {
		c.perDomain[j] = make([]int64, t.values)
	}
	if defaulted := len(f.pod.Spec.TopologySpreadConstraints) == 0; defaulted && key != "" {
		// The default constraints select the controller's own pods.
		for _, pp := range f.s.base.byOwner[types.UID(key)] {
			if !f.s.gone(pp) {
				c.add(pp.pod, pp.index)
			}
		}
		for _, pp := range f.s.added[f.pod.Namespace] {
			c.add(pp.pod, pp.index)
		}
	} else {
		for pp := range f.s.podsIn(f.pod.Namespace) {
			c.add(pp.pod, pp.index)
		}
	}
	if key == "" {
		return c // counted for this pod only: nothing to keep current
	}
	f.s.softCache[key] = c
	if len(f.pod.Spec.TopologySpreadConstraints) == 0 {
		f.s.softByOwner[types.UID(key)] = c
	} else {
		f.s.softByNamespace[c.namespace] = append(f.s.softByNamespace[c.namespace], c)
	}
	return c
}

// add counts p, on the node with index i, where it matches.
func (c *softCounts) add(p *corev1.Pod, i int) {
	if p.Namespace != c.namespace || terminating(p) {
		return
	}
	if c.requireAll {
		for _, t := range c.topos {
			if !t.has[i] {
				return
			}
		}
	}
	if ok, err := c.affinity.Match(c.s.nodes[i].node); err != nil || !ok {
		return
	}
	for j, sc := range c.constraints {
		if !sc.matches(p) {
			continue
		}
		if sc.key == corev1.LabelHostname {
			c.perNode[i]++
		} else {
			c.perDomain[j][c.topos[j].ids[i]]++
		}
	}
}

type weightedTerm struct {
	compiledTerm
	weight int64
}

// affinityPod is a staying or placed pod with the terms InterPodAffinity
// scoring reads from it, compiled once: its required affinity (at
// hardPodAffinityWeight), its preferred affinity and anti-affinity (the
// latter's weights negative).
type affinityPod struct {
	placedPod
	terms []weightedTerm
}

// preferredTerms are a pod's preferred affinity and anti-affinity terms,
// anti-affinity weighing negative.
func preferredTerms(p *corev1.Pod) []weightedTerm {
	a := p.Spec.Affinity
	if a == nil {
		return nil
	}
	var out []weightedTerm
	if a.PodAffinity != nil {
		for i := range a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			w := &a.PodAffinity.PreferredDuringSchedulingIgnoredDuringExecution[i]
			out = append(out, weightedTerm{compile(p, &w.PodAffinityTerm), int64(w.Weight)})
		}
	}
	if a.PodAntiAffinity != nil {
		for i := range a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution {
			w := &a.PodAntiAffinity.PreferredDuringSchedulingIgnoredDuringExecution[i]
			out = append(out, weightedTerm{compile(p, &w.PodAffinityTerm), -int64(w.Weight)})
		}
	}
	return out
}

// affinityOf is the pod with its scoring terms, or false when it has none.
func affinityOf(pp placedPod) (affinityPod, bool) {
	terms := preferredTerms(pp.pod)
	if a := pp.pod.Spec.Affinity; a != nil && a.PodAffinity != nil {
		for i := range a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			terms = append(terms, weightedTerm{compile(pp.pod, &a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution[i]), hardPodAffinityWeight})
		}
	}
	return affinityPod{placedPod: pp, terms: terms}, len(terms) > 0
}

// addInterPodScores is the scheduler's InterPodAffinity score: per
// topology domain, the weights of the incoming pod's preferred terms that
// pods there match (anti-affinity subtracting), and of existing pods'
// terms the incoming pod matches (their required affinity counting
// hardPodAffinityWeight); a node scores its domains' sums, normalized
// between the lowest and the highest of the feasible nodes.
func (f *podFilter) addInterPodScores(feasible []*nodeState, total []int64) {
	s, p := f.s, f.pod
	terms := preferredTerms(p)
	if len(terms) == 0 && len(s.base.withAffinity) == 0 && len(s.addedAffinity) == 0 {
		return
	}
	domains := map[string]map[string]int64{}
	add := func(key string, n *corev1.Node, w int64) {
		v, ok := n.Labels[key]
		if !ok || w == 0 {
			return
		}
		if domains[key] == nil {
			domains[key] = map[string]int64{}
		}
		domains[key][v] += w
	}
	for _, t := range terms {
		for _, other := range f.podsFor(t.compiledTerm) {
			if t.matches(other.pod) {
				add(t.key, other.node, t.weight)
			}
		}
	}
	existingTerms := func(other affinityPod) {
		for _, t := range other.terms {
			if t.matches(p) {
				add(t.key, other.node, t.weight)
			}
		}
	}
	// The pods that stay (a moving pod counts where it was placed, not
	// where it was), then the placements.
	for _, other := range s.base.withAffinity {
		if !s.gone(other.placedPod) {
			existingTerms(other)
		}
	}
	for _, other := range s.addedAffinity {
		existingTerms(other)
	}
	if len(domains) == 0 {
		return
	}
	raw := f.s.scratch.raw.get(len(feasible))
	lo, hi := int64(math.MaxInt64), int64(math.MinInt64)
	for i, ns := range feasible {
		for key, values := range domains {
			if v, ok := ns.node.Labels[key]; ok {
				raw[i] += values[v]
			}
		}
		lo, hi = min(lo, raw[i]), max(hi, raw[i])
	}
	if hi-lo <= 0 {
		return
	}
	for i := range feasible {
		total[i] += weightInterPod * int64(float64(maxNodeScore)*float64(raw[i]-lo)/float64(hi-lo))
	}
}

// podsFor are the staying and placed pods a term may select: those of its
// namespaces, or all.
func (f *podFilter) podsFor(t compiledTerm) []placedPod {
	s := f.s
	if t.namespaces[0] != allNamespaces {
		var out []placedPod
		for _, ns := range t.namespaces {
			out = slices.AppendSeq(out, s.podsIn(ns))
		}
		return out
	}
	out := make([]placedPod, 0, len(s.base.all)+len(s.addedAll))
	for _, pp := range s.base.all {
		if !s.gone(pp) {
			out = append(out, pp)
		}
	}
	return append(out, s.addedAll...)
}
