package simulation

import (
	"fmt"
	"iter"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/sets"
	schedcorev1 "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// allNamespaces keys terms that select pods in every namespace.
const allNamespaces = "*"

// compiledTerm is a pod affinity term with its selector parsed once.
type compiledTerm struct {
	key        string
	namespaces []string // or [allNamespaces]
	selector   labels.Selector
}

func compile(owner *corev1.Pod, term *corev1.PodAffinityTerm) compiledTerm {
	c := compiledTerm{key: term.TopologyKey, namespaces: term.Namespaces, selector: labels.Nothing()}
	if term.LabelSelector != nil {
		if sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector); err == nil {
			c.selector = sel
		}
	}
	switch {
	case term.NamespaceSelector != nil && len(term.NamespaceSelector.MatchLabels) == 0 && len(term.NamespaceSelector.MatchExpressions) == 0:
		// The empty namespaceSelector selects every namespace. Others need
		// namespace labels the snapshot does not hold; they fall back to
		// the namespaces listed.
		c.namespaces = []string{allNamespaces}
	case len(c.namespaces) == 0:
		c.namespaces = []string{owner.Namespace}
	}
	return c
}

func (c *compiledTerm) matches(p *corev1.Pod) bool {
	return (c.namespaces[0] == allNamespaces || slices.Contains(c.namespaces, p.Namespace)) && c.selector.Matches(labels.Set(p.Labels))
}

// antiTerm is a required anti-affinity term of a pod that stays or was
// placed, with the topology value of that pod's node.
type antiTerm struct {
	compiledTerm
	pod      *corev1.Pod
	value    string
	hasValue bool
}

func terminating(p *corev1.Pod) bool { return p.DeletionTimestamp != nil }

func antiTermsOf(p *corev1.Pod, n *corev1.Node) []antiTerm {
	a := p.Spec.Affinity
	if a == nil || a.PodAntiAffinity == nil {
		return nil
	}
	var out []antiTerm
	for i := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
		t := antiTerm{compiledTerm: compile(p, &a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[i]), pod: p}
		t.value, t.hasValue = n.Labels[t.key]
		out = append(out, t)
	}
	return out
}

// podsIn are the pods in a namespace that stay or were placed.
func (s *Simulator) podsIn(namespace string) iter.Seq[placedPod] {
	return func(yield func(placedPod) bool) {
		for _, pp := range s.base.byNamespace[namespace] {
			if !s.gone(pp) && !yield(pp) {
				return
			}
		}
		for _, pp := range s.added[namespace] {
			if !yield(pp) {
				return
			}
		}
	}
}

// interPodRules is what the pod's required affinity and anti-affinity, and
// the anti-affinity of pods already placed, allow: computed once per pod,
// as tests of node labels.
type interPodRules struct {
	// forbidden: one test per topology key, true where the pod may not go.
	forbidden []*labelTest
	// required: one test per affinity term, true where it holds.
	required []*labelTest
	// anywhere is true when the pod's affinity cannot hold yet but the
	// pod may start the group (it matches its own terms).
	anywhere bool
}

func (f *podFilter) rules() *interPodRules {
	if f.interPod != nil {
		return f.interPod
	}
	r := &interPodRules{}
	s := f.s
	// What other pods' anti-affinity forbids, and the pod's own
	// anti-affinity terms' domains: forbidden where either says so.
	byOthers := s.forbiddenByOthers(f.pod)
	var own []*termDomains
	if a := f.pod.Spec.Affinity; a != nil && a.PodAntiAffinity != nil {
		for i := range a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			own = append(own, s.domainsOf(f.pod, &a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[i]))
		}
	}
	keys := sets.KeySet(byOthers)
	for _, d := range own {
		keys.Insert(d.term.key)
	}
	for _, key := range sets.List(keys) {
		r.forbidden = append(r.forbidden, newLabelTest(s.topology(key), func(value string) bool {
			return byOthers[key].Has(value) || slices.ContainsFunc(own, func(d *termDomains) bool { return d.term.key == key && d.values[value] > 0 })
		}, false))
	}
	var affinity []corev1.PodAffinityTerm
	if a := f.pod.Spec.Affinity; a != nil && a.PodAffinity != nil {
		affinity = a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution
	}
	if len(affinity) == 0 {
		f.interPod = r
		return r
	}
	terms := make([]compiledTerm, len(affinity))
	for i := range affinity {
		terms[i] = compile(f.pod, &affinity[i])
		values := sets.New[string]()
		for pp := range s.candidatesFor(terms[i]) {
			if v, ok := pp.node.Labels[terms[i].key]; ok && terms[i].matches(pp.pod) {
				values.Insert(v)
			}
		}
		r.required = append(r.required, newLabelTest(s.topology(terms[i].key), values.Has, false))
	}
	// The scheduler lets the first pod of a group that selects itself go
	// anywhere, or the group could never start.
	matchesAll := func(p *corev1.Pod) bool {
		for i := range terms {
			if !terms[i].matches(p) {
				return false
			}
		}
		return true
	}
	if matchesAll(f.pod) {
		r.anywhere = true
		for pp := range s.candidatesFor(terms[0]) {
			if matchesAll(pp.pod) {
				r.anywhere = false
				break
			}
		}
	}
	f.interPod = r
	return r
}

// othersAnti is what other pods' required anti-affinity forbids pods of
// one namespace and one set of labels (a ReplicaSet's pods share them),
// kept up to date by reading only the terms placed since.
type othersAnti struct {
	labels    map[string]string
	forbidden map[string]sets.Set[string]
	// seen are how many of addedAnti's terms for the namespace and for
	// all namespaces are counted.
	seen [2]int
}

// forbiddenByOthers maps topology keys to the values where the required
// anti-affinity of staying and placed pods keeps p off.
func (s *Simulator) forbiddenByOthers(p *corev1.Pod) map[string]sets.Set[string] {
	key := p.Namespace + "\x00" + labels.Set(p.Labels).String()
	cached := s.othersAnti[key]
	if cached == nil {
		cached = &othersAnti{labels: p.Labels, forbidden: map[string]sets.Set[string]{}}
		for _, ns := range []string{p.Namespace, allNamespaces} {
			for _, t := range s.base.antiTerms[ns] {
				if !s.removed.Has(t.pod.UID) {
					cached.add(t)
				}
			}
		}
		s.othersAnti[key] = cached
	}
	for i, ns := range []string{p.Namespace, allNamespaces} {
		added := s.addedAnti[ns]
		for _, t := range added[cached.seen[i]:] {
			cached.add(t)
		}
		cached.seen[i] = len(added)
	}
	return cached.forbidden
}

func (c *othersAnti) add(t antiTerm) {
	if !t.hasValue || !t.selector.Matches(labels.Set(c.labels)) {
		return
	}
	if c.forbidden[t.key] == nil {
		c.forbidden[t.key] = sets.New[string]()
	}
	c.forbidden[t.key].Insert(t.value)
}

// termDomains are the topology values of the nodes running pods that one
// of a pod's required anti-affinity terms selects, counted; shared by the
// pods whose terms compile alike (a ReplicaSet's) and kept up to date as
// pods are placed.
type termDomains struct {
	term   compiledTerm
	values map[string]int
}

func (s *Simulator) domainsOf(p *corev1.Pod, term *corev1.PodAffinityTerm) *termDomains {
	t := compile(p, term)
	// What the domains depend on: the namespaces, the key, the selector.
	key := strings.Join(t.namespaces, ",") + "|" + t.key + "|" + t.selector.String()
	if d, ok := s.antiDomains[key]; ok {
		return d
	}
	d := &termDomains{term: t, values: map[string]int{}}
	for pp := range s.candidatesFor(d.term) {
		d.add(pp)
	}
	s.antiDomains[key] = d
	s.antiDomainList = append(s.antiDomainList, d)
	return d
}

func (d *termDomains) add(pp placedPod) {
	if v, ok := pp.node.Labels[d.term.key]; ok && d.term.matches(pp.pod) {
		d.values[v]++
	}
}

// candidatesFor are the pods a term could select, by namespace.
func (s *Simulator) candidatesFor(t compiledTerm) iter.Seq[placedPod] {
	namespaces := t.namespaces
	if namespaces[0] == allNamespaces {
		all := sets.New[string]()
		for ns := range s.base.byNamespace {
			all.Insert(ns)
		}
		for ns := range s.added {
			all.Insert(ns)
		}
		namespaces = sets.List(all)
	}
	return func(yield func(placedPod) bool) {
		for _, ns := range namespaces {
			for pp := range s.podsIn(ns) {
				if !yield(pp) {
					return
				}
			}
		}
	}
}

// checkInterPod returns why ns breaks a required inter-pod rule, or "".
func (f *podFilter) checkInterPod(ns *nodeState) string {
	r := f.rules()
	for _, t := range r.forbidden {
		if t.matches(ns.index) {
			return ReasonAntiAffinity
		}
	}
	if r.anywhere {
		return ""
	}
	for _, t := range r.required {
		if !t.matches(ns.index) {
			return ReasonPodAffinity
		}
	}
	return ""
}

// spreadCounts counts, per topology domain, the pods a spread constraint
// selects on the nodes that count for it.
type spreadCounts struct {
	namespace string
	selector  labels.Selector
	topo      *topology
	// eligible are the nodes that form domains, by node index; domains
	// the topology values they carry, by topology id.
	eligible []bool
	domain   []bool
	domains  int
	// counts are the selected pods by topology id.
	counts []int
}

func (c *spreadCounts) add(p *corev1.Pod, index int) {
	if p.Namespace != c.namespace || terminating(p) || !c.eligible[index] || !c.selector.Matches(labels.Set(p.Labels)) {
		return
	}
	c.counts[c.topo.ids[index]]++
}

// spread checks the DoNotSchedule topology spread constraints.
func (f *podFilter) spread(ns *nodeState) string {
	if len(f.hardSpread) == 0 {
		return ""
	}
	if f.spreadCounts == nil {
		// Counts change only when a pod is placed, never while one pod
		// is being filtered: take what does not depend on the node once.
		f.spreadCounts = make([]*spreadCounts, len(f.hardSpread))
		f.spreadBase = make([]int, len(f.hardSpread))
		for i, c := range f.hardSpread {
			counts := f.spreadCountsFor(c)
			minCount := -1
			for id, n := range counts.counts {
				if counts.domain[id] && (minCount < 0 || n < minCount) {
					minCount = n
				}
			}
			if minCount < 0 || (c.MinDomains != nil && counts.domains < int(*c.MinDomains)) {
				minCount = 0
			}
			self := 0
			if counts.selector.Matches(labels.Set(f.pod.Labels)) {
				self = 1
			}
			f.spreadCounts[i], f.spreadBase[i] = counts, self-minCount
		}
	}
	for i, c := range f.hardSpread {
		counts := f.spreadCounts[i]
		if !counts.topo.has[ns.index] || counts.counts[counts.topo.ids[ns.index]]+f.spreadBase[i] > int(c.MaxSkew) {
			return ReasonSpread
		}
	}
	return ""
}

// constraintSelector is the constraint's label selector with its
// matchLabelKeys added from the pod's labels.
func constraintSelector(pod *corev1.Pod, c corev1.TopologySpreadConstraint) labels.Selector {
	sel, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
	if err != nil || c.LabelSelector == nil {
		sel = labels.Nothing()
	}
	if len(c.MatchLabelKeys) > 0 {
		reqs := labels.Set{}
		for _, k := range c.MatchLabelKeys {
			if v, ok := pod.Labels[k]; ok {
				reqs[k] = v
			}
		}
		if extra, err := labels.ValidatedSelectorFromSet(reqs); err == nil {
			r, _ := extra.Requirements()
			sel = sel.Add(r...)
		}
	}
	return sel
}

// spreadCountsFor returns the (cached, incrementally kept) domain counts of
// one constraint. Domains are the nodes that pass the pod's node affinity
// (nodeAffinityPolicy Honor, the default) and, with nodeTaintsPolicy Honor,
// its tolerations, and that carry every constraint's topology key. As in
// the scheduler, cordoned and at-risk nodes still form domains.
func (f *podFilter) spreadCountsFor(c corev1.TopologySpreadConstraint) *spreadCounts {
	sel := constraintSelector(f.pod, c)
	honorAffinity := c.NodeAffinityPolicy == nil || *c.NodeAffinityPolicy == corev1.NodeInclusionPolicyHonor
	honorTaints := c.NodeTaintsPolicy != nil && *c.NodeTaintsPolicy == corev1.NodeInclusionPolicyHonor
	keys := sets.New[string]()
	for _, other := range f.hardSpread {
		keys.Insert(other.TopologyKey)
	}
	cacheKey := fmt.Sprintf("%s|%s|%s|%v|%v|%v|%v|%s", f.pod.Namespace, sel.String(), c.TopologyKey, sets.List(keys),
		honorAffinity, honorTaints, f.pod.Spec.NodeSelector, affinityKey(f.pod))
	if honorTaints {
		cacheKey += fmt.Sprintf("|%v", f.pod.Spec.Tolerations)
	}
	if cached, ok := f.s.spreadCache[cacheKey]; ok {
		return cached
	}
	required := nodeaffinity.GetRequiredNodeAffinity(f.pod)
	topo := f.s.topology(c.TopologyKey)
	others := make([]*topology, 0, len(keys))
	for k := range keys {
		others = append(others, f.s.topology(k))
	}
	counts := &spreadCounts{namespace: f.pod.Namespace, selector: sel, topo: topo,
		eligible: make([]bool, len(f.s.nodes)), domain: make([]bool, topo.values), counts: make([]int, topo.values)}
	for i, ns := range f.s.nodes {
		n := ns.node
		ok := true
		for _, t := range others {
			if !t.has[i] {
				ok = false
				break
			}
		}
		if ok && honorAffinity {
			if match, err := required.Match(n); err != nil || !match {
				ok = false
			}
		}
		if ok && honorTaints {
			if _, bad := schedcorev1.FindMatchingUntoleratedTaint(klog.Background(), n.Spec.Taints, f.pod.Spec.Tolerations, noScheduleOrExecute, false); bad {
				ok = false
			}
		}
		if ok {
			counts.eligible[i] = true
			if id := topo.ids[i]; !counts.domain[id] { // the domain exists even when empty
				counts.domain[id] = true
				counts.domains++
			}
		}
	}
	for pp := range f.s.podsIn(f.pod.Namespace) {
		counts.add(pp.pod, pp.index)
	}
	f.s.spreadCache[cacheKey] = counts
	f.s.spreadList = append(f.s.spreadList, counts)
	return counts
}

func affinityKey(p *corev1.Pod) string {
	if p.Spec.Affinity == nil || p.Spec.Affinity.NodeAffinity == nil || p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution == nil {
		return ""
	}
	var b strings.Builder
	for _, t := range p.Spec.Affinity.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution.NodeSelectorTerms {
		fmt.Fprintf(&b, "%v;", t)
	}
	return b.String()
}
