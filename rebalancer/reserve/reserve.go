// Package reserve builds reservations: placeholder pods that ask whatever
// adds capacity to the cluster (Karpenter, Cluster Autoscaler, a person)
// for the room an at-risk node's pods need, before any of them moves. An
// autoscaler reacts to Pending pods, and a rebalancer that waits creates
// none: without reservations nothing launches a node on a rebalance
// recommendation.
//
// A reservation asks for what its pod asks for (requests of containers,
// init containers and overhead) with the pod's node constraints, runs the
// pause image at priority -1 with preemption off (the scheduler evicts it
// for any real pod; Cluster Autoscaler's expendable cutoff is -10, so it
// still scales up for it), cannot land on an at-risk node (it does not
// tolerate the draining taint), and carries karpenter.sh/do-not-disrupt
// so that Karpenter does not consolidate the node it brought up. It has no
// owner: an ownerReference to a Node, or a node affinity on
// kubernetes.io/hostname, makes Karpenter ignore a pod.
//
// Everything here is pure; the controller creates and deletes.
package reserve

import (
	"cmp"
	"crypto/sha256"
	"encoding/hex"
	"maps"
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/component-helpers/resource"
	"k8s.io/klog/v2"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// Names on reservations.
const (
	// LabelNode carries a hash of the at-risk node's name (a label value
	// cannot hold every node name); AnnotationNode the name itself.
	LabelNode      = "spot-rebalancer.io/reservation-for-node"
	AnnotationNode = "spot-rebalancer.io/reservation-node"
	// AnnotationPod names the pod (namespace/name) a reservation holds
	// room for.
	AnnotationPod = "spot-rebalancer.io/reservation-pod"
	// PriorityClass is created by the chart: value -1, preemptionPolicy
	// Never.
	PriorityClass = "spot-rebalancer-reservation"
	// DefaultImage is the pause image.
	DefaultImage = config.DefaultReservationImage
)

// NodeLabel is the value of LabelNode for node.
func NodeLabel(node string) string {
	sum := sha256.Sum256([]byte(node))
	return hex.EncodeToString(sum[:])[:40]
}

// Is tells whether pod is a reservation (of any node).
func Is(pod *corev1.Pod) bool {
	_, ok := pod.Labels[LabelNode]
	return ok && pod.Spec.PriorityClassName == PriorityClass
}

// Holds tells whether reservation r holds room for node's pods.
func Holds(r *corev1.Pod, node string) bool {
	return Is(r) && r.Labels[LabelNode] == NodeLabel(node) && r.Annotations[AnnotationNode] == node
}

// Running tells whether reservation r runs: bound to a node and started.
// Where it runs is r.Spec.NodeName.
func Running(r *corev1.Pod) bool {
	return r.Spec.NodeName != "" && r.DeletionTimestamp == nil && r.Status.Phase == corev1.PodRunning
}

// Name is the reservation's name for pod of node.
func Name(node string, p *corev1.Pod) string {
	sum := sha256.Sum256([]byte(node + "/" + p.Namespace + "/" + p.Name + "/" + string(p.UID)))
	return "reservation-" + hex.EncodeToString(sum[:])[:20]
}

// Options say where and with what reservations run.
type Options struct {
	// Namespace is the controller's.
	Namespace string
	Image     string
	// Volumes, if set, returns node selectors a pod's reservation must
	// also match (each of them, with the pod's own node affinity): where
	// its volumes are, so the new room is in the zone of its data.
	Volumes func(*corev1.Pod) []corev1.NodeSelector
	// Avoid, if set, is the offering being reclaimed: reservations keep
	// off it where the pod's own constraints leave another choice, so the
	// autoscaler launches a different one.
	Avoid *Offering
}

// For returns one reservation per pod in pods, for at-risk node.
func For(node string, pods []*corev1.Pod, opts Options) []*corev1.Pod {
	out := make([]*corev1.Pod, 0, len(pods))
	for _, p := range pods {
		out = append(out, of(node, p, opts))
	}
	return out
}

func of(node string, p *corev1.Pod, opts Options) *corev1.Pod {
	requests := resource.PodRequests(p, resource.PodResourcesOptions{})
	r := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{
			// One name per node and pod: a create from a cache that does not
			// show the last one yet fails with AlreadyExists, not a twin.
			Name:      Name(node, p),
			Namespace: opts.Namespace,
			Labels:    map[string]string{LabelNode: NodeLabel(node)},
			Annotations: map[string]string{
				AnnotationNode:                                   node,
				AnnotationPod:                                    p.Namespace + "/" + p.Name,
				signals.AnnotationKarpenterDoNotDisrupt:          "true",
				"cluster-autoscaler.kubernetes.io/safe-to-evict": "true",
			},
		},
		Spec: corev1.PodSpec{
			PriorityClassName:             PriorityClass,
			PreemptionPolicy:              ptr.To(corev1.PreemptNever),
			TerminationGracePeriodSeconds: ptr.To[int64](0),
			AutomountServiceAccountToken:  ptr.To(false),
			EnableServiceLinks:            ptr.To(false),
			NodeSelector:                  maps.Clone(p.Spec.NodeSelector),
			Affinity:                      withVolumes(nodeAffinity(p.Spec.Affinity), volumes(opts, p)),
			Tolerations:                   tolerations(p.Spec.Tolerations),
			TopologySpreadConstraints:     zoneSpread(p.Spec.TopologySpreadConstraints),
			SecurityContext: &corev1.PodSecurityContext{
				RunAsNonRoot:   ptr.To(true),
				RunAsUser:      ptr.To[int64](65535),
				SeccompProfile: &corev1.SeccompProfile{Type: corev1.SeccompProfileTypeRuntimeDefault},
			},
			Containers: []corev1.Container{{
				Name:      "reserve",
				Image:     cmp.Or(opts.Image, DefaultImage),
				Resources: corev1.ResourceRequirements{Requests: requests, Limits: requests},
				SecurityContext: &corev1.SecurityContext{
					AllowPrivilegeEscalation: ptr.To(false),
					ReadOnlyRootFilesystem:   ptr.To(true),
					Capabilities:             &corev1.Capabilities{Drop: []corev1.Capability{"ALL"}},
				},
			}},
		},
	}
	if opts.Avoid != nil {
		if away := awayFrom(r, *opts.Avoid); away != nil {
			r.Spec.Affinity = withVolumes(r.Spec.Affinity, []corev1.NodeSelector{*away})
			r.Annotations[AnnotationAvoids] = opts.Avoid.String()
		}
	}
	return r
}

// nodeAffinity keeps the pod's node affinity without its terms on
// kubernetes.io/hostname (Karpenter ignores pods with one, and the room
// is wanted on a new node anyway). Pod affinities are the workload's own
// business: a reservation carries none.
func nodeAffinity(a *corev1.Affinity) *corev1.Affinity {
	if a == nil || a.NodeAffinity == nil {
		return nil
	}
	na := a.NodeAffinity.DeepCopy()
	if req := na.RequiredDuringSchedulingIgnoredDuringExecution; req != nil {
		var terms []corev1.NodeSelectorTerm
		for _, t := range req.NodeSelectorTerms {
			t.MatchExpressions = slices.DeleteFunc(t.MatchExpressions, func(e corev1.NodeSelectorRequirement) bool {
				return e.Key == corev1.LabelHostname
			})
			if len(t.MatchExpressions) > 0 || len(t.MatchFields) > 0 {
				terms = append(terms, t)
			}
		}
		na.RequiredDuringSchedulingIgnoredDuringExecution = nil
		if len(terms) > 0 {
			na.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: terms}
		}
	}
	na.PreferredDuringSchedulingIgnoredDuringExecution = slices.DeleteFunc(na.PreferredDuringSchedulingIgnoredDuringExecution,
		func(t corev1.PreferredSchedulingTerm) bool {
			return slices.ContainsFunc(t.Preference.MatchExpressions, func(e corev1.NodeSelectorRequirement) bool { return e.Key == corev1.LabelHostname })
		})
	if na.RequiredDuringSchedulingIgnoredDuringExecution == nil && len(na.PreferredDuringSchedulingIgnoredDuringExecution) == 0 {
		return nil
	}
	return &corev1.Affinity{NodeAffinity: na}
}

func volumes(opts Options, p *corev1.Pod) []corev1.NodeSelector {
	if opts.Volumes == nil {
		return nil
	}
	return opts.Volumes(p)
}

// withVolumes ands the volumes' selectors into the affinity's required
// node selector: the terms are ORed, so each term of the result is one
// term of each selector, merged.
func withVolumes(a *corev1.Affinity, selectors []corev1.NodeSelector) *corev1.Affinity {
	if len(selectors) == 0 {
		return a
	}
	if a == nil {
		a = &corev1.Affinity{}
	}
	if a.NodeAffinity == nil {
		a.NodeAffinity = &corev1.NodeAffinity{}
	}
	terms := []corev1.NodeSelectorTerm{{}}
	if req := a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution; req != nil {
		terms = req.NodeSelectorTerms
	}
	for _, sel := range selectors {
		var next []corev1.NodeSelectorTerm
		for _, t := range terms {
			for _, u := range sel.NodeSelectorTerms {
				next = append(next, corev1.NodeSelectorTerm{
					MatchExpressions: append(slices.Clone(t.MatchExpressions), u.MatchExpressions...),
					MatchFields:      append(slices.Clone(t.MatchFields), u.MatchFields...)})
			}
		}
		terms = next
	}
	a.NodeAffinity.RequiredDuringSchedulingIgnoredDuringExecution = &corev1.NodeSelector{NodeSelectorTerms: terms}
	return a
}

// tolerations keeps the pod's tolerations but any that tolerates the
// draining taint: a reservation must not land on an at-risk node.
func tolerations(in []corev1.Toleration) []corev1.Toleration {
	draining := corev1.Taint{Key: signals.TaintDraining, Effect: corev1.TaintEffectNoSchedule}
	var out []corev1.Toleration
	for _, t := range in {
		if t.ToleratesTaint(klog.Background(), &draining, false) {
			continue
		}
		out = append(out, t)
	}
	return out
}

// zoneSpread keeps the spread constraints that bind (DoNotSchedule) over
// zones: the room must be in the zone the pod may go to. The
// reservation does not match their selectors, so it counts the
// workload's pods, not itself.
func zoneSpread(in []corev1.TopologySpreadConstraint) []corev1.TopologySpreadConstraint {
	var out []corev1.TopologySpreadConstraint
	for _, c := range in {
		if c.WhenUnsatisfiable == corev1.DoNotSchedule && c.TopologyKey == corev1.LabelTopologyZone {
			out = append(out, *c.DeepCopy())
		}
	}
	return out
}

// Diff compares the reservations a node wants with those it has, matched
// by the pod each holds room for: create are wanted and missing, remove
// exist and are not wanted (their pod is gone or needs none now).
func Diff(want, have []*corev1.Pod) (create, remove []*corev1.Pod) {
	has := map[string]bool{}
	for _, r := range have {
		has[r.Annotations[AnnotationPod]] = true
	}
	wanted := map[string]bool{}
	for _, r := range want {
		key := r.Annotations[AnnotationPod]
		wanted[key] = true
		if !has[key] {
			create = append(create, r)
		}
	}
	seen := map[string]bool{}
	for _, r := range have {
		key := r.Annotations[AnnotationPod]
		if !wanted[key] || seen[key] {
			remove = append(remove, r) // not wanted, or a duplicate
		}
		seen[key] = true
	}
	return create, remove
}
