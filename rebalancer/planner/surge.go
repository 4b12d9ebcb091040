package planner

import (
	"fmt"
	"slices"
	"strings"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	"k8s.io/apimachinery/pkg/util/sets"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// SurgeMinTimeToDeadline is the least time before an interruption's
// deadline in which a surge starts: it must be able to finish (new pods
// Ready, old ones gone) well before the deadline; otherwise the pods are
// evicted with the rest, in parallel.
const SurgeMinTimeToDeadline = time.Minute

// surge turns the evictions of a Deployment's pods on the planned nodes
// into one surge, where the Deployment allows it (surgeBlocker) and, on
// each node, all of its pods there are placed by the simulation (at an
// interruption notice, also those that fit nowhere yet: the surge's
// Pending pods ask for the room). One surge
// moves the Deployment's pods off every node draining together: one
// record, one scale-up, one wait. The pods a surge moves take no part in
// eviction waves: no pod leaves before its replacement is Ready, so no
// budget is spent. The pods of a surge under way follow its record; the
// Deployment's other pods are evicted (one Deployment has one surge at a
// time), and the surge counts them as leaving (see decide.Surge).
func (p *planning) surge(plan *Plan) {
	if p.cfg.Surge.Enabled == nil || !*p.cfg.Surge.Enabled {
		return
	}
	hpas := p.hpaTargets()
	type member struct {
		node int
		pod  *PodPlan
	}
	type group struct {
		d       *appsv1.Deployment
		members []member
	}
	groups := map[string]*group{}
	var order []string
	// blocked holds node index and Deployment for the pods that fit nowhere.
	type nodeDeployment struct {
		node int
		key  string
	}
	blocked := sets.New[nodeDeployment]()
	fallbacks := make([]sets.Set[string], len(plan.Nodes))
	for i := range plan.Nodes {
		np := &plan.Nodes[i]
		fallbacks[i] = surgeFallback(p.snap.Node(np.Name).Annotations[signals.AnnotationSurgeFallback])
		for j, pod := range p.snap.PodsOn(np.Name) {
			d := p.snap.DeploymentOf(pod)
			if d == nil {
				continue
			}
			key := d.Namespace + "/" + d.Name
			pp := &np.Pods[j]
			// At an interruption notice a pod that fits nowhere surges too:
			// its Deployment's new pods, Pending, are what an autoscaler
			// launches for, and it stays until they are Ready.
			intoComing := pp.Action == ActionBlocked && pp.WaitsForRoom && np.Signal == signals.InterruptionNotice
			switch {
			case pp.Action == ActionEvict || intoComing:
				if groups[key] == nil {
					groups[key] = &group{d: d}
					order = append(order, key)
				}
				groups[key].members = append(groups[key].members, member{node: i, pod: pp})
			case pp.Action == ActionBlocked:
				blocked.Insert(nodeDeployment{i, key})
			}
		}
	}
	for _, key := range order {
		g := groups[key]
		st, err := p.surgeOf(g.d)
		blocker := p.surgeBlocker(g.d, st, err, hpas)
		var recorded sets.Set[string]
		var underWay string // the reason of a pod the record moves
		if st != nil {
			recorded = sets.New(st.Pods...)
			off := "node " + st.Node
			if n := len(st.OffNodes()) - 1; n > 0 {
				off += fmt.Sprintf(" and %d other node(s)", n)
			}
			underWay = fmt.Sprintf("moving in the surge of Deployment %s off %s (scaled from %d to %d)", g.d.Name, off, st.From, st.To)
		}
		var moving []*PodPlan
		surge := SurgePlan{Namespace: g.d.Namespace, Deployment: g.d.Name}
		for _, m := range g.members {
			np := &plan.Nodes[m.node]
			if st != nil && recorded.Has(m.pod.Name) {
				// Under way: it follows its record.
				m.pod.Action, m.pod.Wave, m.pod.Workload = ActionSurge, 0, "Deployment/"+g.d.Name
				m.pod.Reasons = append(m.pod.Reasons, underWay)
				continue
			}
			why := blocker
			switch {
			case st != nil:
				why = "already surging off node " + st.Node
			case why != "":
			case blocked.Has(nodeDeployment{m.node, key}):
				why = "some of its pods here fit nowhere"
			case fallbacks[m.node].Has(key):
				why = "a surge off this node was given up"
			case np.Deadline != nil && np.Deadline.Sub(p.snap.Now) < SurgeMinTimeToDeadline:
				why = fmt.Sprintf("less than %s to the interruption deadline", SurgeMinTimeToDeadline)
			}
			if why != "" {
				m.pod.Reasons = append(m.pod.Reasons, "no surge: "+why)
				continue
			}
			moving = append(moving, m.pod)
			surge.Pods = append(surge.Pods, m.pod.Name)
			if !slices.Contains(surge.Nodes, np.Name) {
				surge.Nodes = append(surge.Nodes, np.Name)
			}
		}
		if len(moving) == 0 {
			continue
		}
		why := fmt.Sprintf("Deployment %s scales up by %d, then back", g.d.Name, len(moving))
		if len(surge.Nodes) > 1 {
			why = fmt.Sprintf("Deployment %s scales up by %d for its pods on %d nodes draining together, then back", g.d.Name, len(moving), len(surge.Nodes))
		}
		for _, pp := range moving {
			pp.Action, pp.Wave, pp.Workload = ActionSurge, 0, "Deployment/"+g.d.Name
			pp.Reasons = append(pp.Reasons, why)
			if pp.WaitsForRoom {
				pp.Reasons = append(pp.Reasons, "its new pod waits for the capacity an autoscaler launches for it")
			}
		}
		plan.Surges = append(plan.Surges, surge)
	}
}

// surgeBlocker says why the Deployment's pods must be evicted instead of
// surged, or "" (also for a surge under way); st and err are its record
// as read.
func (p *planning) surgeBlocker(d *appsv1.Deployment, st *signals.SurgeState, err error, hpas sets.Set[string]) string {
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	switch {
	case d.Annotations[signals.AnnotationSurge] == "false":
		return "opted out (" + signals.AnnotationSurge + "=false)"
	case d.Annotations[signals.AnnotationSurgeState] != "":
		return "it carries a surge record of a version before 0.2 (annotation " + signals.AnnotationSurgeState +
			"): run `spot-rebalancer migrate surge-records`"
	case err != nil:
		return "its surge record does not parse"
	case st != nil:
		return "" // in progress
	case d.Spec.Paused:
		return "paused"
	case d.Status.ObservedGeneration < d.Generation || d.Status.UpdatedReplicas != replicas || d.Status.Replicas != replicas:
		return "a rollout is in progress"
	case hpas.Has(d.Namespace+"/"+d.Name) && !p.cfg.Surge.WithHPA:
		return "a HorizontalPodAutoscaler scales it (rebalancer.surge.withHPA is false)"
	}
	return ""
}

// surgeOf returns the surge of d in progress, if any.
func (p *planning) surgeOf(d *appsv1.Deployment) (*signals.SurgeState, error) {
	record := p.snap.SurgeRecord(d)
	if record == nil {
		return nil, nil
	}
	return signals.SurgeOf(record)
}

// hpaTargets are the Deployments (namespace/name) that an HPA scales.
func (p *planning) hpaTargets() sets.Set[string] {
	out := sets.New[string]()
	for _, h := range p.snap.HPAs {
		ref := h.Spec.ScaleTargetRef
		if ref.Kind == "Deployment" && (ref.APIVersion == "" || strings.HasPrefix(ref.APIVersion, "apps/")) {
			out.Insert(h.Namespace + "/" + ref.Name)
		}
	}
	return out
}

// surgeFallback parses the node's list of Deployments not to surge.
func surgeFallback(v string) sets.Set[string] {
	out := sets.New[string]()
	for _, key := range strings.Split(v, ",") {
		if key = strings.TrimSpace(key); key != "" {
			out.Insert(key)
		}
	}
	return out
}
