package planner

import (
	"fmt"
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

// surge turns the evictions of a Deployment's pods on a node into one
// surge, where the Deployment allows it (surgeBlocker): all of its pods
// there placed by the simulation, none blocked. The pods a surge moves take
// no part in eviction waves: no pod leaves before its replacement is Ready,
// so no budget is spent.
func (p *planning) surge(plan *Plan) {
	if p.cfg.Surge.Enabled == nil || !*p.cfg.Surge.Enabled {
		return
	}
	hpas := p.hpaTargets()
	for i := range plan.Nodes {
		np := &plan.Nodes[i]
		fallback := surgeFallback(p.snap.Node(np.Name).Annotations[signals.AnnotationSurgeFallback])
		type group struct {
			d    *appsv1.Deployment
			pods []*PodPlan
		}
		groups := map[string]*group{}
		var order []string
		blocked := sets.New[string]()
		for j, pod := range p.snap.PodsOn(np.Name) {
			d := p.snap.DeploymentOf(pod)
			if d == nil {
				continue
			}
			key := d.Namespace + "/" + d.Name
			switch np.Pods[j].Action {
			case ActionEvict:
				if groups[key] == nil {
					groups[key] = &group{d: d}
					order = append(order, key)
				}
				groups[key].pods = append(groups[key].pods, &np.Pods[j])
			case ActionBlocked:
				blocked.Insert(key)
			}
		}
		for _, key := range order {
			g := groups[key]
			why := p.surgeBlocker(g.d, np.Name, hpas)
			st, _ := p.surgeOf(g.d)
			ours := st != nil && st.Node == np.Name
			switch {
			case why == "" && !ours && np.Deadline != nil && np.Deadline.Sub(p.snap.Now) < SurgeMinTimeToDeadline:
				why = fmt.Sprintf("less than %s to the interruption deadline", SurgeMinTimeToDeadline)
			case blocked.Has(key):
				why = "some of its pods here fit nowhere"
			case fallback.Has(key):
				why = "a surge off this node was given up"
			}
			for _, pp := range g.pods {
				if why != "" {
					pp.Reasons = append(pp.Reasons, "no surge: "+why)
					continue
				}
				pp.Action, pp.Wave, pp.Workload = ActionSurge, 0, "Deployment/"+g.d.Name
				pp.Reasons = append(pp.Reasons, fmt.Sprintf("Deployment %s scales up by %d, then back", g.d.Name, len(g.pods)))
			}
		}
	}
}

// surgeBlocker says why the Deployment's pods on node must be evicted
// instead of surged, or "".
func (p *planning) surgeBlocker(d *appsv1.Deployment, node string, hpas sets.Set[string]) string {
	replicas := ptr.Deref(d.Spec.Replicas, 1)
	st, err := p.surgeOf(d)
	switch {
	case d.Annotations[signals.AnnotationSurge] == "false":
		return "opted out (" + signals.AnnotationSurge + "=false)"
	case d.Annotations[signals.AnnotationSurgeState] != "":
		return "it carries a surge record of a version before 0.2 (annotation " + signals.AnnotationSurgeState +
			"): run `spot-rebalancer migrate surge-records`"
	case err != nil:
		return "its surge record does not parse"
	case st != nil && st.Node != node:
		return "already surging off node " + st.Node
	case st != nil:
		return "" // ours, in progress
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
