// Package snapshot owns the rebalancer's view of the cluster at one moment:
// nodes, pods by node, PodDisruptionBudgets, the Deployments behind pods
// and the time. Planning is a pure
// function of a Snapshot.
package snapshot

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv2 "k8s.io/api/autoscaling/v2"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/pager"
	"k8s.io/utils/clock"
)

// Snapshot is the cluster at Now. Build it with New; its slices are sorted
// by name so that everything computed from it is deterministic.
type Snapshot struct {
	Now   time.Time
	Nodes []*corev1.Node
	Pods  []*corev1.Pod
	PDBs  []*policyv1.PodDisruptionBudget
	// Deployments, ReplicaSets and HPAs are what the surge hand-off reads;
	// empty unless added with WithWorkloads.
	Deployments []*appsv1.Deployment
	ReplicaSets []*appsv1.ReplicaSet
	HPAs        []*autoscalingv2.HorizontalPodAutoscaler

	nodes       map[string]*corev1.Node
	deployments map[string]*appsv1.Deployment
	replicaSets map[string]*appsv1.ReplicaSet
	podsByNode  map[string][]*corev1.Pod
	podsByNS    map[string][]*corev1.Pod

	memoMu sync.Mutex
	memo   map[string]any
}

// New indexes the objects. It does not copy them: callers must not modify
// them afterwards.
func New(now time.Time, nodes []*corev1.Node, pods []*corev1.Pod, pdbs []*policyv1.PodDisruptionBudget) *Snapshot {
	s := &Snapshot{Now: now, Nodes: slices.Clone(nodes), Pods: slices.Clone(pods), PDBs: slices.Clone(pdbs),
		nodes: make(map[string]*corev1.Node, len(nodes)), podsByNode: make(map[string][]*corev1.Pod, len(nodes)),
		podsByNS: map[string][]*corev1.Pod{}, memo: map[string]any{}}
	slices.SortFunc(s.Nodes, func(a, b *corev1.Node) int { return strings.Compare(a.Name, b.Name) })
	slices.SortFunc(s.Pods, func(a, b *corev1.Pod) int { return compareKeys(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(s.PDBs, func(a, b *policyv1.PodDisruptionBudget) int {
		return compareKeys(a.Namespace, a.Name, b.Namespace, b.Name)
	})
	for _, n := range s.Nodes {
		s.nodes[n.Name] = n
	}
	for _, p := range s.Pods {
		s.podsByNS[p.Namespace] = append(s.podsByNS[p.Namespace], p)
		if p.Spec.NodeName != "" {
			s.podsByNode[p.Spec.NodeName] = append(s.podsByNode[p.Spec.NodeName], p)
		}
	}
	return s
}

func compareKeys(ns1, n1, ns2, n2 string) int {
	if c := strings.Compare(ns1, ns2); c != 0 {
		return c
	}
	return strings.Compare(n1, n2)
}

// WithWorkloads adds Deployments, ReplicaSets and HorizontalPodAutoscalers
// to a snapshot that has not been used yet, and returns it.
func (s *Snapshot) WithWorkloads(deployments []*appsv1.Deployment, replicaSets []*appsv1.ReplicaSet, hpas []*autoscalingv2.HorizontalPodAutoscaler) *Snapshot {
	s.Deployments, s.ReplicaSets, s.HPAs = slices.Clone(deployments), slices.Clone(replicaSets), slices.Clone(hpas)
	slices.SortFunc(s.Deployments, func(a, b *appsv1.Deployment) int { return compareKeys(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(s.ReplicaSets, func(a, b *appsv1.ReplicaSet) int { return compareKeys(a.Namespace, a.Name, b.Namespace, b.Name) })
	slices.SortFunc(s.HPAs, func(a, b *autoscalingv2.HorizontalPodAutoscaler) int {
		return compareKeys(a.Namespace, a.Name, b.Namespace, b.Name)
	})
	s.deployments = make(map[string]*appsv1.Deployment, len(deployments))
	for _, d := range s.Deployments {
		s.deployments[d.Namespace+"/"+d.Name] = d
	}
	s.replicaSets = make(map[string]*appsv1.ReplicaSet, len(replicaSets))
	for _, rs := range s.ReplicaSets {
		s.replicaSets[rs.Namespace+"/"+rs.Name] = rs
	}
	return s
}

// DeploymentOf returns the Deployment that owns the pod through its
// ReplicaSet (both by controller reference and UID), or nil.
func (s *Snapshot) DeploymentOf(pod *corev1.Pod) *appsv1.Deployment {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || ref.Kind != "ReplicaSet" {
		return nil
	}
	rs := s.replicaSets[pod.Namespace+"/"+ref.Name]
	if rs == nil || rs.UID != ref.UID {
		return nil
	}
	dref := metav1.GetControllerOfNoCopy(rs)
	if dref == nil || dref.Kind != "Deployment" {
		return nil
	}
	d := s.deployments[pod.Namespace+"/"+dref.Name]
	if d == nil || d.UID != dref.UID {
		return nil
	}
	return d
}

// Node returns the named node, or nil.
func (s *Snapshot) Node(name string) *corev1.Node { return s.nodes[name] }

// PodsOn returns the pods bound to the named node.
func (s *Snapshot) PodsOn(node string) []*corev1.Pod { return s.podsByNode[node] }

// PodsIn returns the pods of a namespace.
func (s *Snapshot) PodsIn(namespace string) []*corev1.Pod { return s.podsByNS[namespace] }

// Memo returns what build returns, building it once per snapshot: the
// place for indexes derived from the snapshot that several plans share.
func (s *Snapshot) Memo(key string, build func() any) any {
	s.memoMu.Lock()
	defer s.memoMu.Unlock()
	if v, ok := s.memo[key]; ok {
		return v
	}
	v := build()
	s.memo[key] = v
	return v
}

// FromClient lists everything once, in pages, as `spot-rebalancer plan`
// does against any cluster.
func FromClient(ctx context.Context, client kubernetes.Interface, clk clock.PassiveClock) (*Snapshot, error) {
	var nodes []*corev1.Node
	if err := list(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return client.CoreV1().Nodes().List(ctx, o)
	}, func(obj runtime.Object) { nodes = append(nodes, obj.(*corev1.Node)) }); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	var pods []*corev1.Pod
	if err := list(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return client.CoreV1().Pods("").List(ctx, o)
	}, func(obj runtime.Object) { pods = append(pods, obj.(*corev1.Pod)) }); err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	var pdbs []*policyv1.PodDisruptionBudget
	if err := list(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return client.PolicyV1().PodDisruptionBudgets("").List(ctx, o)
	}, func(obj runtime.Object) { pdbs = append(pdbs, obj.(*policyv1.PodDisruptionBudget)) }); err != nil {
		return nil, fmt.Errorf("listing PodDisruptionBudgets: %w", err)
	}
	var deployments []*appsv1.Deployment
	if err := list(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return client.AppsV1().Deployments("").List(ctx, o)
	}, func(obj runtime.Object) { deployments = append(deployments, obj.(*appsv1.Deployment)) }); err != nil {
		return nil, fmt.Errorf("listing Deployments: %w", err)
	}
	var replicaSets []*appsv1.ReplicaSet
	if err := list(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return client.AppsV1().ReplicaSets("").List(ctx, o)
	}, func(obj runtime.Object) { replicaSets = append(replicaSets, obj.(*appsv1.ReplicaSet)) }); err != nil {
		return nil, fmt.Errorf("listing ReplicaSets: %w", err)
	}
	var hpas []*autoscalingv2.HorizontalPodAutoscaler
	if err := list(ctx, func(ctx context.Context, o metav1.ListOptions) (runtime.Object, error) {
		return client.AutoscalingV2().HorizontalPodAutoscalers("").List(ctx, o)
	}, func(obj runtime.Object) { hpas = append(hpas, obj.(*autoscalingv2.HorizontalPodAutoscaler)) }); err != nil {
		return nil, fmt.Errorf("listing HorizontalPodAutoscalers: %w", err)
	}
	return New(clk.Now(), nodes, pods, pdbs).WithWorkloads(deployments, replicaSets, hpas), nil
}

func list(ctx context.Context, fn pager.ListPageFunc, each func(runtime.Object)) error {
	p := pager.New(fn)
	p.PageSize = 500
	return p.EachListItem(ctx, metav1.ListOptions{}, func(obj runtime.Object) error {
		each(obj)
		return nil
	})
}
