package simulation

import (
	"math"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	schedcorev1 "k8s.io/component-helpers/scheduling/corev1"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/klog/v2"
)

// Weights of the default scheduler profile's score plugins. ImageLocality
// and InterPodAffinity's preferred terms are not scored here.
const (
	weightTaintToleration = 3
	weightNodeAffinity    = 2
	weightTopologySpread  = 2
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
// (PreferNoSchedule taints), NodeAffinity (preferred terms) and
// PodTopologySpread (ScheduleAnyway constraints, or the system default
// spreading for controller-owned pods), each normalized as the scheduler
// does. Ties go to the earliest node; the scheduler picks among them at
// random.
func (f *podFilter) best(feasible []*nodeState, r podResources) *nodeState {
	if len(feasible) == 1 {
		return feasible[0]
	}
	total := make([]int64, len(feasible))
	for i, ns := range feasible {
		total[i] = score(ns, r)
	}
	f.addTaintScores(feasible, total)
	f.addNodeAffinityScores(feasible, total)
	f.addSpreadScores(feasible, total)
	best := 0
	for i := range feasible {
		if total[i] > total[best] || (total[i] == total[best] && feasible[i].index < feasible[best].index) {
			best = i
		}
	}
	return feasible[best]
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
	raw := make([]int64, len(feasible))
	any := false
	for i, ns := range feasible {
		for j := range ns.node.Spec.Taints {
			t := &ns.node.Spec.Taints[j]
			if t.Effect == corev1.TaintEffectPreferNoSchedule && !schedcorev1.TolerationsTolerateTaint(klog.Background(), tolerations, t, false) {
				raw[i]++
				any = true
			}
		}
	}
	if any {
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
	raw := make([]int64, len(feasible))
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

// addSpreadScores is PodTopologySpread's scoring: a node scores the pods
// that match each constraint in its domain (its own pods for hostname),
// weighted by the log of the number of domains; fewer is better.
func (f *podFilter) addSpreadScores(feasible []*nodeState, total []int64) {
	constraints, requireAll := f.softSpread()
	if len(constraints) == 0 {
		return
	}
	hasKeys := func(n *corev1.Node) bool {
		for _, c := range constraints {
			if _, ok := n.Labels[c.key]; !ok {
				return false
			}
		}
		return true
	}
	ignored := make([]bool, len(feasible))
	domains := make([]map[string]int64, len(constraints))
	for i := range domains {
		domains[i] = map[string]int64{}
	}
	scored := 0
	for i, ns := range feasible {
		if requireAll && !hasKeys(ns.node) {
			ignored[i] = true
			continue
		}
		scored++
		for j, c := range constraints {
			if c.key != corev1.LabelHostname {
				// As in the scheduler, a node without the key (allowed for
				// the system default) forms the domain "".
				domains[j][ns.node.Labels[c.key]] += 0
			}
		}
	}
	weights := make([]float64, len(constraints))
	for j, c := range constraints {
		size := len(domains[j])
		if c.key == corev1.LabelHostname {
			size = scored
		}
		weights[j] = math.Log(float64(size + 2))
	}
	// Count matching pods per domain, over every node the pod's required
	// node affinity admits (cordoned and at-risk nodes included), and per
	// node for hostname.
	perNode := map[string]int64{}
	for _, pp := range f.s.podsIn(f.pod.Namespace) {
		if terminating(pp.pod) {
			continue
		}
		if requireAll && !hasKeys(pp.node) {
			continue
		}
		if ok, err := f.nodeAffinity.Match(pp.node); err != nil || !ok {
			continue
		}
		for j, c := range constraints {
			if !c.matches(pp.pod) {
				continue
			}
			if c.key == corev1.LabelHostname {
				perNode[pp.node.Name]++
				continue
			}
			if _, counted := domains[j][pp.node.Labels[c.key]]; counted {
				domains[j][pp.node.Labels[c.key]]++
			}
		}
	}
	raw := make([]int64, len(feasible))
	minRaw, maxRaw := int64(math.MaxInt64), int64(0)
	for i, ns := range feasible {
		if ignored[i] {
			continue
		}
		var s float64
		for j, c := range constraints {
			v, ok := ns.node.Labels[c.key]
			if !ok {
				continue
			}
			cnt := domains[j][v]
			if c.key == corev1.LabelHostname {
				cnt = perNode[ns.node.Name]
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
