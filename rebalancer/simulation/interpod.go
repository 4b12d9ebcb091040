package simulation

import (
	"fmt"
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

// termMatches tells whether an affinity term of owner selects pod.
func termMatches(owner *corev1.Pod, term *corev1.PodAffinityTerm, pod *corev1.Pod) bool {
	namespaces := term.Namespaces
	if len(namespaces) == 0 && term.NamespaceSelector == nil {
		namespaces = []string{owner.Namespace}
	}
	// A namespaceSelector needs namespace labels the snapshot does not
	// hold; only the empty selector (all namespaces) is understood.
	allNamespaces := term.NamespaceSelector != nil && len(term.NamespaceSelector.MatchLabels) == 0 && len(term.NamespaceSelector.MatchExpressions) == 0
	if !allNamespaces && !slices.Contains(namespaces, pod.Namespace) {
		return false
	}
	sel, err := metav1.LabelSelectorAsSelector(term.LabelSelector)
	if err != nil || term.LabelSelector == nil {
		return false
	}
	return sel.Matches(labels.Set(pod.Labels))
}

func terminating(p *corev1.Pod) bool { return p.DeletionTimestamp != nil }

// interPod checks required pod affinity and anti-affinity, the pod's own
// and that of the pods already there.
func (f *podFilter) interPod(ns *nodeState) string {
	var affinity, anti []corev1.PodAffinityTerm
	if a := f.pod.Spec.Affinity; a != nil {
		if a.PodAffinity != nil {
			affinity = a.PodAffinity.RequiredDuringSchedulingIgnoredDuringExecution
		}
		if a.PodAntiAffinity != nil {
			anti = a.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution
		}
	}
	// Existing pods whose anti-affinity rejects this pod in this domain.
	for _, e := range f.s.withAntiAffinity {
		for i := range e.pod.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution {
			term := &e.pod.Spec.Affinity.PodAntiAffinity.RequiredDuringSchedulingIgnoredDuringExecution[i]
			v, ok := ns.node.Labels[term.TopologyKey]
			if ok && e.node.node.Labels[term.TopologyKey] == v && !terminating(e.pod) && termMatches(e.pod, term, f.pod) {
				return ReasonExistingAnti
			}
		}
	}
	for i := range anti {
		term := &anti[i]
		v, ok := ns.node.Labels[term.TopologyKey]
		if !ok {
			continue
		}
		if f.domainHasMatch(term, v) {
			return ReasonAntiAffinity
		}
	}
	if len(affinity) == 0 {
		return ""
	}
	for i := range affinity {
		term := &affinity[i]
		v, ok := ns.node.Labels[term.TopologyKey]
		if ok && f.domainHasMatch(term, v) {
			continue
		}
		// The scheduler lets the first pod of a group that selects
		// itself go anywhere, or it could never start.
		if !f.anyMatchAnywhere(affinity) && f.matchesOwnTerms(affinity) {
			return ""
		}
		return ReasonPodAffinity
	}
	return ""
}

// domainHasMatch tells whether a pod selected by term runs on a node whose
// term.TopologyKey label is value.
func (f *podFilter) domainHasMatch(term *corev1.PodAffinityTerm, value string) bool {
	for _, ns := range f.s.nodes {
		if v, ok := ns.node.Labels[term.TopologyKey]; !ok || v != value {
			continue
		}
		for _, p := range ns.pods {
			if !terminating(p) && termMatches(f.pod, term, p) {
				return true
			}
		}
	}
	return false
}

func (f *podFilter) anyMatchAnywhere(terms []corev1.PodAffinityTerm) bool {
	for _, ns := range f.s.nodes {
		for _, p := range ns.pods {
			all := true
			for i := range terms {
				if !termMatches(f.pod, &terms[i], p) {
					all = false
					break
				}
			}
			if all && !terminating(p) {
				return true
			}
		}
	}
	return false
}

func (f *podFilter) matchesOwnTerms(terms []corev1.PodAffinityTerm) bool {
	for i := range terms {
		if !termMatches(f.pod, &terms[i], f.pod) {
			return false
		}
	}
	return true
}

// spreadCounts counts, per topology domain, the pods a spread constraint
// selects on the nodes that count for it.
type spreadCounts struct {
	namespace string
	selector  labels.Selector
	key       string
	// eligible decides which nodes form domains.
	eligible func(*corev1.Node) bool
	counts   map[string]int
}

func (c *spreadCounts) add(p *corev1.Pod, n *corev1.Node) {
	if p.Namespace != c.namespace || terminating(p) || !c.eligible(n) || !c.selector.Matches(labels.Set(p.Labels)) {
		return
	}
	c.counts[n.Labels[c.key]]++
}

// spread checks the DoNotSchedule topology spread constraints.
func (f *podFilter) spread(ns *nodeState) string {
	var constraints []corev1.TopologySpreadConstraint
	for _, c := range f.pod.Spec.TopologySpreadConstraints {
		if c.WhenUnsatisfiable == corev1.DoNotSchedule {
			constraints = append(constraints, c)
		}
	}
	if len(constraints) == 0 {
		return ""
	}
	for _, c := range constraints {
		if _, ok := ns.node.Labels[c.TopologyKey]; !ok {
			return ReasonSpread
		}
	}
	for _, c := range constraints {
		counts := f.spreadCountsFor(c, constraints)
		minCount := -1
		for _, n := range counts.counts {
			if minCount < 0 || n < minCount {
				minCount = n
			}
		}
		if minCount < 0 || (c.MinDomains != nil && len(counts.counts) < int(*c.MinDomains)) {
			minCount = 0
		}
		self := 0
		if counts.selector.Matches(labels.Set(f.pod.Labels)) {
			self = 1
		}
		if counts.counts[ns.node.Labels[c.TopologyKey]]+self-minCount > int(c.MaxSkew) {
			return ReasonSpread
		}
	}
	return ""
}

// spreadCountsFor returns the (cached, incrementally kept) domain counts of
// one constraint. Domains are the nodes that pass the pod's node affinity
// (nodeAffinityPolicy Honor, the default) and, with nodeTaintsPolicy Honor,
// its tolerations, and that carry every constraint's topology key. As in
// the scheduler, cordoned and at-risk nodes still form domains.
func (f *podFilter) spreadCountsFor(c corev1.TopologySpreadConstraint, all []corev1.TopologySpreadConstraint) *spreadCounts {
	sel, err := metav1.LabelSelectorAsSelector(c.LabelSelector)
	if err != nil || c.LabelSelector == nil {
		sel = labels.Nothing()
	}
	if len(c.MatchLabelKeys) > 0 {
		reqs := labels.Set{}
		for _, k := range c.MatchLabelKeys {
			if v, ok := f.pod.Labels[k]; ok {
				reqs[k] = v
			}
		}
		if extra, err := labels.ValidatedSelectorFromSet(reqs); err == nil {
			r, _ := extra.Requirements()
			sel = sel.Add(r...)
		}
	}
	honorAffinity := c.NodeAffinityPolicy == nil || *c.NodeAffinityPolicy == corev1.NodeInclusionPolicyHonor
	honorTaints := c.NodeTaintsPolicy != nil && *c.NodeTaintsPolicy == corev1.NodeInclusionPolicyHonor
	keys := sets.New[string]()
	for _, other := range all {
		keys.Insert(other.TopologyKey)
	}
	cacheKey := fmt.Sprintf("%s|%s|%s|%v|%v|%v|%v|%v", f.pod.Namespace, sel.String(), c.TopologyKey, sets.List(keys),
		honorAffinity, honorTaints, f.pod.Spec.NodeSelector, affinityKey(f.pod))
	if honorTaints {
		cacheKey += fmt.Sprintf("|%v", f.pod.Spec.Tolerations)
	}
	if cached, ok := f.s.spreadCache[cacheKey]; ok {
		return cached
	}
	required := nodeaffinity.GetRequiredNodeAffinity(f.pod)
	tolerations := f.pod.Spec.Tolerations
	counts := &spreadCounts{
		namespace: f.pod.Namespace, selector: sel, key: c.TopologyKey, counts: map[string]int{},
		eligible: func(n *corev1.Node) bool {
			for k := range keys {
				if _, ok := n.Labels[k]; !ok {
					return false
				}
			}
			if honorAffinity {
				if ok, err := required.Match(n); err != nil || !ok {
					return false
				}
			}
			if honorTaints {
				if _, bad := schedcorev1.FindMatchingUntoleratedTaint(klog.Background(), n.Spec.Taints, tolerations, noScheduleOrExecute, false); bad {
					return false
				}
			}
			return true
		},
	}
	for _, ns := range f.s.nodes {
		if !counts.eligible(ns.node) {
			continue
		}
		value := ns.node.Labels[c.TopologyKey]
		counts.counts[value] += 0 // the domain exists even when empty
		for _, p := range ns.pods {
			counts.add(p, ns.node)
		}
	}
	f.s.spreadCache[cacheKey] = counts
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
