package simulation

import (
	"slices"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/component-helpers/resource"
)

// resources are amounts in the units the scheduler compares: milli-CPU,
// bytes of memory, a pod count, and milli-units of anything else.
type resources struct {
	cpu, memory, pods int64
	other             map[corev1.ResourceName]int64
}

func fromList(l corev1.ResourceList) resources {
	var r resources
	for name, q := range l {
		switch name {
		case corev1.ResourceCPU:
			r.cpu = q.MilliValue()
		case corev1.ResourceMemory:
			r.memory = q.Value()
		case corev1.ResourcePods:
			r.pods = q.Value()
		default:
			if r.other == nil {
				r.other = map[corev1.ResourceName]int64{}
			}
			r.other[name] = q.MilliValue()
		}
	}
	return r
}

func (r *resources) add(o resources) {
	r.cpu += o.cpu
	r.memory += o.memory
	r.pods += o.pods
	for name, v := range o.other {
		if r.other == nil {
			r.other = map[corev1.ResourceName]int64{}
		}
		r.other[name] += v
	}
}

// podResources is what one pod asks for: its requests as the scheduler
// filters on them (init containers and overhead included) and the non-zero
// CPU and memory its scoring assumes.
type podResources struct {
	requests            resources
	nonZeroCPU, nonZero int64 // nonZero is memory
}

// Defaults the scheduler's scoring assumes for containers without a
// request (k8s.io/kubernetes/pkg/scheduler/util.DefaultMilliCPURequest and
// DefaultMemoryRequest).
const (
	defaultMilliCPU = 100
	defaultMemory   = 200 * 1024 * 1024
)

func requestsOf(p *corev1.Pod) podResources {
	var out podResources
	if len(p.Spec.InitContainers) == 0 && p.Spec.Overhead == nil && p.Spec.Resources == nil {
		// The common case, without building ResourceLists.
		for i := range p.Spec.Containers {
			out.requests.add(fromList(p.Spec.Containers[i].Resources.Requests))
		}
	} else {
		out.requests = fromList(resource.PodRequests(p, resource.PodResourcesOptions{}))
	}
	out.requests.pods = 1
	for i := range p.Spec.Containers {
		reqs := p.Spec.Containers[i].Resources.Requests
		if q, ok := reqs[corev1.ResourceCPU]; ok {
			out.nonZeroCPU += q.MilliValue()
		} else {
			out.nonZeroCPU += defaultMilliCPU
		}
		if q, ok := reqs[corev1.ResourceMemory]; ok {
			out.nonZero += q.Value()
		} else {
			out.nonZero += defaultMemory
		}
	}
	return out
}

// insufficient returns the first resource that requested plus want
// exceeds on a node of the given allocatable, as the scheduler names it.
func insufficient(requested, want, allocatable resources) string {
	if requested.pods+want.pods > allocatable.pods {
		return ReasonTooManyPods
	}
	if want.cpu > 0 && requested.cpu+want.cpu > allocatable.cpu {
		return "Insufficient cpu"
	}
	if want.memory > 0 && requested.memory+want.memory > allocatable.memory {
		return "Insufficient memory"
	}
	if len(want.other) == 0 {
		return ""
	}
	names := make([]string, 0, len(want.other))
	for name := range want.other {
		names = append(names, string(name))
	}
	slices.Sort(names)
	for _, n := range names {
		name := corev1.ResourceName(n)
		if v := want.other[name]; v > 0 && requested.other[name]+v > allocatable.other[name] {
			return "Insufficient " + n
		}
	}
	return ""
}

// taintKey identifies a node's NoSchedule and NoExecute taints, so that
// whether a pod tolerates them is decided once per distinct set.
func taintKey(n *corev1.Node) string {
	var b strings.Builder
	for _, t := range n.Spec.Taints {
		if t.Effect == corev1.TaintEffectNoSchedule || t.Effect == corev1.TaintEffectNoExecute {
			b.WriteString(t.Key + "=" + t.Value + ":" + string(t.Effect) + ";")
		}
	}
	return b.String()
}
