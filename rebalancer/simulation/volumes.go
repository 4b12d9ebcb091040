package simulation

import (
	"fmt"
	"maps"
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/selection"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/component-helpers/scheduling/corev1/nodeaffinity"
	"k8s.io/component-helpers/storage/ephemeral"
	"k8s.io/component-helpers/storage/volume"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// The scheduler's words for the volume filters (VolumeRestrictions,
// NodeVolumeLimits, VolumeBinding, VolumeZone), as kube-scheduler 1.37
// reports them.
const (
	ReasonReadWriteOncePod = "node(s) unavailable due to PersistentVolumeClaim with ReadWriteOncePod access mode already in-use by another pod"
	ReasonVolumeLimit      = "node(s) exceed max volume count"
	ReasonVolumeAffinity   = "node(s) didn't match PersistentVolume's node affinity"
	ReasonVolumeBind       = "node(s) didn't find available persistent volumes to bind"
	ReasonVolumeMissing    = "node(s) unavailable due to one or more pvc(s) bound to non-existent pv(s)"
	ReasonVolumeZone       = "node(s) had no available volume zone"
	// ReasonUnboundImmediate is the pod's, on every node.
	ReasonUnboundImmediate = "pod has unbound immediate PersistentVolumeClaims"
)

// zoneLabels are the labels VolumeZone compares, beta first as the
// scheduler lists them.
var zoneLabels = []string{corev1.LabelFailureDomainBetaZone, corev1.LabelFailureDomainBetaRegion, corev1.LabelTopologyZone, corev1.LabelTopologyRegion}

// storage is what the volume filters read from the snapshot, once.
type storage struct {
	snap *snapshot.Snapshot
	// pvsByClass are the PersistentVolumes of each StorageClass, for
	// static binding of WaitForFirstConsumer claims.
	pvsByClass map[string][]*corev1.PersistentVolume
	// drivers are the CSI drivers some node limits (CSINode allocatable
	// counts), interned: limits[i*len(drivers)+d] is node i's limit for
	// driver d (-1: none) and attachedCount the volumes attached there;
	// attached are each node's volumes in use, by driver name.
	drivers       map[string]int
	limits        []int32
	attachedCount []int32
	attached      []map[string]sets.Set[string]
	// rwopUsers are the pods using each ReadWriteOncePod claim.
	rwopUsers map[string][]types.UID
}

func buildStorage(snap *snapshot.Snapshot, b *base) *storage {
	st := &storage{snap: snap, pvsByClass: map[string][]*corev1.PersistentVolume{}, drivers: map[string]int{},
		attached: make([]map[string]sets.Set[string], len(b.nodes)), rwopUsers: map[string][]types.UID{}}
	for _, pv := range snap.PVs {
		class := volume.GetPersistentVolumeClass(pv)
		st.pvsByClass[class] = append(st.pvsByClass[class], pv)
	}
	for i := range b.nodes {
		if c := snap.CSINode(b.nodes[i].node.Name); c != nil {
			for _, d := range c.Spec.Drivers {
				if _, seen := st.drivers[d.Name]; !seen && d.Allocatable != nil && d.Allocatable.Count != nil {
					st.drivers[d.Name] = len(st.drivers)
				}
			}
		}
	}
	nd := len(st.drivers)
	st.limits, st.attachedCount = make([]int32, len(b.nodes)*nd), make([]int32, len(b.nodes)*nd)
	for i := range st.limits {
		st.limits[i] = -1
	}
	for i := range b.nodes {
		n := b.nodes[i].node
		if c := snap.CSINode(n.Name); c != nil {
			for _, d := range c.Spec.Drivers {
				if d.Allocatable != nil && d.Allocatable.Count != nil {
					st.limits[i*nd+st.drivers[d.Name]] = *d.Allocatable.Count
				}
			}
		}
		for _, p := range snap.PodsOn(n.Name) {
			if isFinished(p) {
				continue
			}
			for _, claim := range claimNames(p) {
				if pvc := snap.PVC(p.Namespace, claim); pvc != nil && slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteOncePod) {
					k := p.Namespace + "/" + claim
					st.rwopUsers[k] = append(st.rwopUsers[k], p.UID)
				}
			}
			for driver, ids := range st.volumesOf(p) {
				if st.attached[i] == nil {
					st.attached[i] = map[string]sets.Set[string]{}
				}
				if st.attached[i][driver] == nil {
					st.attached[i][driver] = sets.New[string]()
				}
				st.attached[i][driver].Insert(ids...)
			}
		}
		for driver, d := range st.drivers {
			st.attachedCount[i*nd+d] = int32(st.attached[i][driver].Len())
		}
	}
	return st
}

// claimName is the PersistentVolumeClaim a volume of the pod uses, a
// generic ephemeral volume's included.
func claimName(p *corev1.Pod, v *corev1.Volume) (string, bool) {
	switch {
	case v.PersistentVolumeClaim != nil:
		return v.PersistentVolumeClaim.ClaimName, true
	case v.Ephemeral != nil:
		return ephemeral.VolumeClaimName(p, v), true
	}
	return "", false
}

// claimNames are the names of the PersistentVolumeClaims a pod uses.
func claimNames(p *corev1.Pod) []string {
	var out []string
	for i := range p.Spec.Volumes {
		if name, ok := claimName(p, &p.Spec.Volumes[i]); ok {
			out = append(out, name)
		}
	}
	return out
}

// BoundVolume is the PersistentVolume a claim names, or nil when the claim
// is missing, names none, or names one that is gone.
func BoundVolume(snap *snapshot.Snapshot, namespace, claim string) *corev1.PersistentVolume {
	pvc := snap.PVC(namespace, claim)
	if pvc == nil || pvc.Spec.VolumeName == "" {
		return nil
	}
	return snap.PV(pvc.Spec.VolumeName)
}

// volumesOf are the CSI volumes a pod attaches, by driver, as
// NodeVolumeLimits counts them: a bound claim's PersistentVolume by its
// volume handle, an unbound one by its claim (its class's provisioner will
// attach a new one), an inline CSI volume by pod and name.
func (st *storage) volumesOf(p *corev1.Pod) map[string][]string {
	out := map[string][]string{}
	for i := range p.Spec.Volumes {
		v := &p.Spec.Volumes[i]
		if v.CSI != nil {
			out[v.CSI.Driver] = append(out[v.CSI.Driver], p.Namespace+"/"+p.Name+"/"+v.Name)
		}
	}
	for _, claim := range claimNames(p) {
		pvc := st.snap.PVC(p.Namespace, claim)
		if pvc == nil {
			continue
		}
		if pvc.Spec.VolumeName != "" {
			if pv := BoundVolume(st.snap, p.Namespace, claim); pv != nil && pv.Spec.CSI != nil {
				out[pv.Spec.CSI.Driver] = append(out[pv.Spec.CSI.Driver], pv.Spec.CSI.Driver+"/"+pv.Spec.CSI.VolumeHandle)
			}
			continue
		}
		if sc := st.snap.StorageClass(volume.GetPersistentVolumeClaimClass(pvc)); sc != nil {
			out[sc.Provisioner] = append(out[sc.Provisioner], "claim/"+p.Namespace+"/"+claim)
		}
	}
	return out
}

// podVolumes is what one pod needs of the volume filters, computed once.
type podVolumes struct {
	// unresolvable is why no node can take the pod ("" when some may):
	// a claim missing or being deleted, an unbound Immediate claim.
	unresolvable string
	// affinities are the bound volumes' required node affinities, parsed
	// once (the scheduler's CheckNodeAffinity parses them for every node).
	affinities []volumeAffinity
	pvMissing  bool
	// delayed are the unbound claims of WaitForFirstConsumer classes.
	delayed []*corev1.PersistentVolumeClaim
	zones   []zoneTerm
	rwop    bool
	// attach are the CSI volumes it attaches of the drivers some node
	// limits.
	attach []driverVolumes
}

type driverVolumes struct {
	driver int // in storage.drivers
	name   string
	ids    []string // distinct
}

type zoneTerm struct {
	key    string
	values sets.Set[string]
}

func (st *storage) podVolumes(p *corev1.Pod, removed sets.Set[types.UID]) *podVolumes {
	pv := &podVolumes{}
	for driver, ids := range st.volumesOf(p) {
		if d, limited := st.drivers[driver]; limited {
			slices.Sort(ids)
			pv.attach = append(pv.attach, driverVolumes{driver: d, name: driver, ids: slices.Compact(ids)})
		}
	}
	for i := range p.Spec.Volumes {
		v := &p.Spec.Volumes[i]
		name, ok := claimName(p, v)
		if !ok {
			continue
		}
		pvc := st.snap.PVC(p.Namespace, name)
		if pvc == nil {
			pv.unresolvable = fmt.Sprintf("persistentvolumeclaim %q not found", name)
			return pv
		}
		if v.Ephemeral != nil {
			if err := ephemeral.VolumeIsForPod(p, pvc); err != nil {
				pv.unresolvable = err.Error()
				return pv
			}
		}
		if pvc.DeletionTimestamp != nil {
			pv.unresolvable = fmt.Sprintf("persistentvolumeclaim %q is being deleted", name)
			return pv
		}
		if slices.Contains(pvc.Spec.AccessModes, corev1.ReadWriteOncePod) {
			for _, uid := range st.rwopUsers[p.Namespace+"/"+name] {
				if uid != p.UID && !removed.Has(uid) {
					pv.rwop = true
				}
			}
		}
		// Bound: a volume name and the controller's bind-completed mark. A
		// claim naming a volume without it is pre-bound, and waits like an
		// Immediate one.
		if _, completed := pvc.Annotations[volume.AnnBindCompleted]; pvc.Spec.VolumeName != "" && completed {
			bound := st.snap.PV(pvc.Spec.VolumeName)
			if bound == nil {
				pv.pvMissing = true
				continue
			}
			if na := bound.Spec.NodeAffinity; na != nil && na.Required != nil {
				pv.affinities = append(pv.affinities, compileVolumeAffinity(na.Required))
			}
			pv.zones = append(pv.zones, zonesOf(bound)...)
			continue
		}
		sc := st.snap.StorageClass(volume.GetPersistentVolumeClaimClass(pvc))
		if pvc.Spec.VolumeName == "" && sc != nil && sc.VolumeBindingMode != nil && *sc.VolumeBindingMode == storagev1.VolumeBindingWaitForFirstConsumer {
			pv.delayed = append(pv.delayed, pvc)
			continue
		}
		pv.unresolvable = ReasonUnboundImmediate
		return pv
	}
	return pv
}

// zonesOf are a PersistentVolume's zone and region labels; a value may
// name several zones, joined by "__".
func zonesOf(pv *corev1.PersistentVolume) []zoneTerm {
	var out []zoneTerm
	for _, k := range zoneLabels {
		if v, ok := pv.Labels[k]; ok {
			out = append(out, zoneTerm{key: k, values: sets.New(strings.Split(v, "__")...)})
		}
	}
	return out
}

// checkVolumes returns why the node cannot take the pod's volumes, in the
// scheduler's filter order, or "".
func (f *podFilter) checkVolumes(ns *nodeState) string {
	v := f.volumes
	if v == nil {
		return ""
	}
	if v.rwop {
		return ReasonReadWriteOncePod
	}
	if f.s.exceedsLimits(ns, v.attach) {
		return ReasonVolumeLimit
	}
	n := ns.node
	if !f.volumeTopology().affinityOK(ns.index, n) {
		return ReasonVolumeAffinity
	}
	if v.pvMissing {
		return ReasonVolumeMissing
	}
	if len(v.delayed) > 0 && !f.s.canBind(v.delayed, n) {
		return ReasonVolumeBind
	}
	if !f.volumeTopology().zoneOK(ns.index) {
		return ReasonVolumeZone
	}
	return ""
}

// volumeTopology is a pod's bound volumes' node affinities and zone
// labels, decided once per distinct value of the node labels they read,
// so that checking a node reads two slices per label; built on first use.
func (f *podFilter) volumeTopology() *volumeTopology {
	if f.volTopo != nil {
		return f.volTopo
	}
	s, v := f.s, f.volumes
	vt := &volumeTopology{}
	for _, a := range v.affinities {
		c := compiledAffinity{fallback: a.fallback}
		for _, term := range a.terms {
			tests := make([]*labelTest, len(term))
			for i, r := range term {
				tests[i] = newLabelTest(s.topology(r.Key()), func(value string) bool { return r.Matches(labels.Set{r.Key(): value}) }, r.Matches(labels.Set{}))
			}
			c.terms = append(c.terms, tests)
		}
		vt.affinities = append(vt.affinities, c)
	}
	if len(v.zones) > 0 {
		for _, k := range zoneLabels {
			vt.zoneKeys = append(vt.zoneKeys, s.topology(k))
		}
	}
	for _, z := range v.zones {
		vt.zones = append(vt.zones, zoneTest{
			label: newLabelTest(s.topology(z.key), z.values.Has, false),
			ga:    newLabelTest(s.topology(gaLabel(z.key)), z.values.Has, false)})
	}
	f.volTopo = vt
	return vt
}

type volumeTopology struct {
	affinities []compiledAffinity
	// zones are VolumeZone's terms, checked on nodes with any of zoneKeys.
	zones    []zoneTest
	zoneKeys []*topology
}

// compiledAffinity is a volumeAffinity on topology ids: terms ORed,
// requirements ANDed; or its fallback matcher.
type compiledAffinity struct {
	terms    [][]*labelTest
	fallback *nodeaffinity.LazyErrorNodeSelector
}

// zoneTest is one zone label of a volume: the node's value of the label,
// or else of its GA name, must be one of the volume's.
type zoneTest struct{ label, ga *labelTest }

func (vt *volumeTopology) affinityOK(i int, n *corev1.Node) bool {
	for _, a := range vt.affinities {
		if a.fallback != nil {
			if ok, err := a.fallback.Match(n); err != nil || !ok {
				return false
			}
			continue
		}
		if !slices.ContainsFunc(a.terms, func(term []*labelTest) bool {
			for _, t := range term {
				if !t.matches(i) {
					return false
				}
			}
			return true
		}) {
			return false
		}
	}
	return true
}

func (vt *volumeTopology) zoneOK(i int) bool {
	if len(vt.zones) == 0 || !slices.ContainsFunc(vt.zoneKeys, func(t *topology) bool { return t.has[i] }) {
		return true // VolumeZone passes nodes with no zone label
	}
	for _, z := range vt.zones {
		switch {
		case z.label.topo.has[i]:
			if !z.label.matches(i) {
				return false
			}
		case z.ga.topo.has[i]:
			if !z.ga.matches(i) {
				return false
			}
		default:
			return false
		}
	}
	return true
}

// labelTest is a test of one node label's value, decided once per distinct
// value (topology id) on first use.
type labelTest struct {
	topo    *topology
	match   func(value string) bool
	missing bool   // the verdict for nodes without the label
	verdict []int8 // by topology id: 0 not decided yet, 1 matches, -1 not
}

func newLabelTest(t *topology, match func(string) bool, missing bool) *labelTest {
	return &labelTest{topo: t, match: match, missing: missing, verdict: make([]int8, t.values)}
}

func (t *labelTest) matches(i int) bool {
	if !t.topo.has[i] {
		return t.missing
	}
	id := t.topo.ids[i]
	if t.verdict[id] == 0 {
		t.verdict[id] = -1
		if t.match(t.topo.names[id]) {
			t.verdict[id] = 1
		}
	}
	return t.verdict[id] == 1
}

func gaLabel(k string) string {
	switch k {
	case corev1.LabelFailureDomainBetaZone:
		return corev1.LabelTopologyZone
	case corev1.LabelFailureDomainBetaRegion:
		return corev1.LabelTopologyRegion
	}
	return k
}

// exceedsLimits tells whether the pod's CSI volumes, those not attached
// there already, take a driver of the node over its attach limit.
func (s *Simulator) exceedsLimits(ns *nodeState, attach []driverVolumes) bool {
	nd := len(s.storage.drivers)
	for _, a := range attach {
		k := ns.index*nd + a.driver
		limit := int(s.storage.limits[k])
		if limit < 0 {
			continue
		}
		have := int(s.attachedCount[k])
		if have+len(a.ids) <= limit {
			continue // fits even if none is attached yet
		}
		set := s.attachedOn(ns.index, a.name)
		fresh := 0
		for _, id := range a.ids {
			if !set.Has(id) {
				fresh++
			}
		}
		if fresh > 0 && have+fresh > limit {
			return true
		}
	}
	return false
}

// volumeAffinity is a volume's required node affinity, parsed: terms
// ORed, each a list of label requirements ANDed; a term on node fields (or
// one that does not parse) falls back to component-helpers' matcher.
type volumeAffinity struct {
	terms    [][]labels.Requirement
	fallback *nodeaffinity.LazyErrorNodeSelector
}

func compileVolumeAffinity(ns *corev1.NodeSelector) volumeAffinity {
	var a volumeAffinity
	for _, t := range ns.NodeSelectorTerms {
		if len(t.MatchFields) > 0 {
			return volumeAffinity{fallback: nodeaffinity.NewLazyErrorNodeSelector(ns)}
		}
		if len(t.MatchExpressions) == 0 {
			continue // an empty term matches nothing
		}
		var reqs []labels.Requirement
		for _, e := range t.MatchExpressions {
			op, ok := selectionOps[e.Operator]
			if !ok {
				return volumeAffinity{fallback: nodeaffinity.NewLazyErrorNodeSelector(ns)}
			}
			r, err := labels.NewRequirement(e.Key, op, e.Values)
			if err != nil {
				return volumeAffinity{fallback: nodeaffinity.NewLazyErrorNodeSelector(ns)}
			}
			reqs = append(reqs, *r)
		}
		a.terms = append(a.terms, reqs)
	}
	return a
}

var selectionOps = map[corev1.NodeSelectorOperator]selection.Operator{
	corev1.NodeSelectorOpIn: selection.In, corev1.NodeSelectorOpNotIn: selection.NotIn,
	corev1.NodeSelectorOpExists: selection.Exists, corev1.NodeSelectorOpDoesNotExist: selection.DoesNotExist,
	corev1.NodeSelectorOpGt: selection.GreaterThan, corev1.NodeSelectorOpLt: selection.LessThan,
}

// attachedOn are the volumes of a driver attached on a node, placements
// included.
func (s *Simulator) attachedOn(i int, driver string) sets.Set[string] {
	if added := s.attachedAdded[i]; added != nil {
		if set := added[driver]; set != nil {
			return set
		}
	}
	return s.storage.attached[i][driver] // nil (empty) when none
}

// attach records the pod's CSI volumes as attached on the node it was
// placed on (copying the base's set before the first change).
func (s *Simulator) attach(i int, attach []driverVolumes) {
	nd := len(s.storage.drivers)
	for _, a := range attach {
		if s.attachedAdded[i] == nil {
			s.attachedAdded[i] = map[string]sets.Set[string]{}
		}
		set := s.attachedAdded[i][a.name]
		if set == nil {
			set = sets.New[string]().Union(s.attachedOn(i, a.name))
			s.attachedAdded[i][a.name] = set
		}
		set.Insert(a.ids...)
		s.attachedCount[i*nd+a.driver] = int32(set.Len())
	}
}

// canBind tells whether every WaitForFirstConsumer claim finds an
// available PersistentVolume the node may use, or else can be provisioned
// there: its class has a provisioner and its allowed topologies admit the
// node.
func (s *Simulator) canBind(claims []*corev1.PersistentVolumeClaim, n *corev1.Node) bool {
	_, ok := s.bind(claims, n)
	return ok
}

// bind finds the static volumes the claims would bind on node n (as the
// scheduler's binder does, smallest claim first); volumes chosen for one
// claim, or for a pod placed before, are not offered again. Claims that
// find none must be provisioned there.
func (s *Simulator) bind(claims []*corev1.PersistentVolumeClaim, n *corev1.Node) (map[string]*corev1.PersistentVolume, bool) {
	// The placements' choices, copied only when this pod adds its own (a
	// node check of a one-claim pod copies nothing).
	chosen, copied := s.chosenPVs, false
	mine := map[string]*corev1.PersistentVolume{}
	sorted := slices.Clone(claims)
	slices.SortStableFunc(sorted, func(a, b *corev1.PersistentVolumeClaim) int {
		return a.Spec.Resources.Requests.Storage().Cmp(*b.Spec.Resources.Requests.Storage())
	})
	for _, pvc := range sorted {
		class := volume.GetPersistentVolumeClaimClass(pvc)
		if selected, ok := pvc.Annotations[volume.AnnSelectedNode]; ok {
			if selected != n.Name {
				return nil, false
			}
		} else if pv, err := volume.FindMatchingVolume(pvc, s.storage.pvsByClass[class], n, chosen, true, true); err == nil && pv != nil {
			if !copied {
				chosen, copied = maps.Clone(chosen), true
				if chosen == nil {
					chosen = map[string]*corev1.PersistentVolume{}
				}
			}
			chosen[pv.Name], mine[pv.Name] = pv, pv
			continue
		}
		sc := s.storage.snap.StorageClass(class)
		if sc == nil || sc.Provisioner == "" || sc.Provisioner == volume.NotSupportedProvisioner {
			return nil, false
		}
		if !matchTopology(sc.AllowedTopologies, n.Labels) {
			return nil, false
		}
	}
	return mine, true
}

// matchTopology is the scheduler's MatchTopologySelectorTerms: no terms
// match everything; else some term's every expression holds.
func matchTopology(terms []corev1.TopologySelectorTerm, nodeLabels map[string]string) bool {
	if len(terms) == 0 {
		return true
	}
	for _, t := range terms {
		ok := true
		for _, e := range t.MatchLabelExpressions {
			if v, has := nodeLabels[e.Key]; !has || !slices.Contains(e.Values, v) {
				ok = false
				break
			}
		}
		if ok {
			return true
		}
	}
	return false
}

// hasCheckedVolumes tells whether the pod has a volume the volume filters
// look at: a claim, a generic ephemeral volume or an inline CSI volume.
func hasCheckedVolumes(p *corev1.Pod) bool {
	for i := range p.Spec.Volumes {
		v := &p.Spec.Volumes[i]
		if v.PersistentVolumeClaim != nil || v.Ephemeral != nil || v.CSI != nil {
			return true
		}
	}
	return false
}

// VolumeNodeSelectors are where a pod's bound volumes let it run: per
// bound PersistentVolume, its required node affinity and its zone and
// region labels as a selector; a node must match every one. Terms on
// kubernetes.io/hostname are left out: they pin a local volume to its node,
// which no new node can satisfy. A reservation carries them, so that an
// autoscaler launches the room in the zone the data is in.
func VolumeNodeSelectors(snap *snapshot.Snapshot, p *corev1.Pod) []corev1.NodeSelector {
	var out []corev1.NodeSelector
	for _, name := range claimNames(p) {
		pv := BoundVolume(snap, p.Namespace, name)
		if pv == nil {
			continue
		}
		if na := pv.Spec.NodeAffinity; na != nil && na.Required != nil {
			var terms []corev1.NodeSelectorTerm
			for _, t := range na.Required.NodeSelectorTerms {
				t = *t.DeepCopy()
				t.MatchExpressions = slices.DeleteFunc(t.MatchExpressions, func(e corev1.NodeSelectorRequirement) bool { return e.Key == corev1.LabelHostname })
				if len(t.MatchExpressions) > 0 || len(t.MatchFields) > 0 {
					terms = append(terms, t)
				}
			}
			if len(terms) == len(na.Required.NodeSelectorTerms) {
				out = append(out, corev1.NodeSelector{NodeSelectorTerms: terms})
			}
		}
		for _, z := range zonesOf(pv) {
			out = append(out, corev1.NodeSelector{NodeSelectorTerms: []corev1.NodeSelectorTerm{{MatchExpressions: []corev1.NodeSelectorRequirement{
				{Key: gaLabel(z.key), Operator: corev1.NodeSelectorOpIn, Values: sets.List(z.values)}}}}})
		}
	}
	return out
}
