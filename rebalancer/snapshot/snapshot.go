// Package snapshot owns the rebalancer's view of the cluster at one moment:
// nodes, pods by node, PodDisruptionBudgets, the workloads behind pods and
// the time. Planning and deciding are pure functions of a Snapshot; Read
// gathers one, from the controller's cache or straight from the API server
// for `spot-rebalancer plan`.
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
	coordinationv1 "k8s.io/api/coordination/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	storagev1 "k8s.io/api/storage/v1"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

// Objects are what a snapshot is made of. The snapshot keeps the pointers:
// callers must not modify the objects afterwards.
type Objects struct {
	Nodes []*corev1.Node
	Pods  []*corev1.Pod
	PDBs  []*policyv1.PodDisruptionBudget
	// Deployments, ReplicaSets, StatefulSets and HPAs are the workloads:
	// what a surge scales, what an implicit budget counts, what a
	// suggested PDB selects.
	Deployments  []*appsv1.Deployment
	ReplicaSets  []*appsv1.ReplicaSet
	StatefulSets []*appsv1.StatefulSet
	HPAs         []*autoscalingv2.HorizontalPodAutoscaler
	// SurgeRecords are the surges in progress (signals.NewSurgeRecord).
	SurgeRecords []*coordinationv1.Lease
	// PVCs, PVs, StorageClasses and CSINodes are what the scheduler's
	// volume filters read: where a pod's data can follow it.
	PVCs           []*corev1.PersistentVolumeClaim
	PVs            []*corev1.PersistentVolume
	StorageClasses []*storagev1.StorageClass
	CSINodes       []*storagev1.CSINode
	// Namespace is the components' own: surge records and reservation
	// pods are trusted only there ("" trusts no reservation).
	Namespace string
}

// Snapshot is the cluster at Now. Build it with New; its slices are sorted
// by name so that everything computed from it is deterministic.
type Snapshot struct {
	Now time.Time
	Objects

	nodes          map[string]*corev1.Node
	deployments    map[string]*appsv1.Deployment
	replicaSets    map[string]*appsv1.ReplicaSet
	statefulSets   map[string]*appsv1.StatefulSet
	podsByNode     map[string][]*corev1.Pod
	podsByNS       map[string][]*corev1.Pod
	surgeRecords   map[string]*coordinationv1.Lease
	reservations   map[string][]*corev1.Pod
	pvcs           map[string]*corev1.PersistentVolumeClaim
	pvs            map[string]*corev1.PersistentVolume
	storageClasses map[string]*storagev1.StorageClass
	csiNodes       map[string]*storagev1.CSINode

	memoMu sync.Mutex
	memo   map[string]any
}

// New indexes the objects, each list sorted by namespace and name.
func New(now time.Time, o Objects) *Snapshot {
	s := &Snapshot{Now: now, Objects: Objects{
		Nodes: sorted(o.Nodes), Pods: sorted(o.Pods), PDBs: sorted(o.PDBs), Deployments: sorted(o.Deployments),
		ReplicaSets: sorted(o.ReplicaSets), StatefulSets: sorted(o.StatefulSets), HPAs: sorted(o.HPAs),
		SurgeRecords: sorted(o.SurgeRecords), PVCs: sorted(o.PVCs), PVs: sorted(o.PVs), StorageClasses: sorted(o.StorageClasses),
		CSINodes: sorted(o.CSINodes), Namespace: o.Namespace},
		pvcs: index(o.PVCs), pvs: index(o.PVs), storageClasses: index(o.StorageClasses), csiNodes: index(o.CSINodes),
		nodes: index(o.Nodes), deployments: index(o.Deployments), replicaSets: index(o.ReplicaSets), statefulSets: index(o.StatefulSets),
		podsByNode: make(map[string][]*corev1.Pod, len(o.Nodes)), podsByNS: map[string][]*corev1.Pod{}, memo: map[string]any{},
		surgeRecords: make(map[string]*coordinationv1.Lease, len(o.SurgeRecords)), reservations: map[string][]*corev1.Pod{}}
	for _, r := range o.SurgeRecords {
		s.surgeRecords[r.Name] = r
	}
	for _, p := range s.Pods {
		s.podsByNS[p.Namespace] = append(s.podsByNS[p.Namespace], p)
		if node := p.Annotations[reserve.AnnotationNode]; o.Namespace != "" && p.Namespace == o.Namespace && reserve.Holds(p, node) {
			s.reservations[node] = append(s.reservations[node], p)
		}
		if p.Spec.NodeName != "" {
			s.podsByNode[p.Spec.NodeName] = append(s.podsByNode[p.Spec.NodeName], p)
		}
	}
	return s
}

func sorted[T metav1.Object](items []T) []T {
	out := slices.Clone(items)
	slices.SortFunc(out, func(a, b T) int { return compareKeys(a.GetNamespace(), a.GetName(), b.GetNamespace(), b.GetName()) })
	return out
}

// index maps namespace/name (name alone for cluster-scoped objects) to
// the object.
func index[T metav1.Object](items []T) map[string]T {
	out := make(map[string]T, len(items))
	for _, o := range items {
		out[key(o.GetNamespace(), o.GetName())] = o
	}
	return out
}

func key(namespace, name string) string {
	if namespace == "" {
		return name
	}
	return namespace + "/" + name
}

func compareKeys(ns1, n1, ns2, n2 string) int {
	if c := strings.Compare(ns1, ns2); c != 0 {
		return c
	}
	return strings.Compare(n1, n2)
}

// DeploymentOf returns the Deployment that owns the pod through its
// ReplicaSet (both by controller reference and UID), or nil.
func (s *Snapshot) DeploymentOf(pod *corev1.Pod) *appsv1.Deployment {
	ref := metav1.GetControllerOfNoCopy(pod)
	if ref == nil || ref.Kind != "ReplicaSet" {
		return nil
	}
	rs := s.replicaSets[key(pod.Namespace, ref.Name)]
	if rs == nil || rs.UID != ref.UID {
		return nil
	}
	dref := metav1.GetControllerOfNoCopy(rs)
	if dref == nil || dref.Kind != "Deployment" {
		return nil
	}
	d := s.deployments[key(pod.Namespace, dref.Name)]
	if d == nil || d.UID != dref.UID {
		return nil
	}
	return d
}

// ReplicaSet returns the named ReplicaSet, or nil.
func (s *Snapshot) ReplicaSet(namespace, name string) *appsv1.ReplicaSet {
	return s.replicaSets[key(namespace, name)]
}

// StatefulSet returns the named StatefulSet, or nil.
func (s *Snapshot) StatefulSet(namespace, name string) *appsv1.StatefulSet {
	return s.statefulSets[key(namespace, name)]
}

// Deployment returns the named Deployment, or nil.
func (s *Snapshot) Deployment(namespace, name string) *appsv1.Deployment {
	return s.deployments[key(namespace, name)]
}

// SurgeRecord returns the record of the surge of d in progress, or nil.
func (s *Snapshot) SurgeRecord(d *appsv1.Deployment) *coordinationv1.Lease {
	return s.surgeRecords[signals.SurgeRecordName(d.UID)]
}

// Reservations are the reservation pods that hold room for node's pods
// (in the components' namespace).
func (s *Snapshot) Reservations(node string) []*corev1.Pod { return s.reservations[node] }

// PVC returns the named PersistentVolumeClaim, or nil.
func (s *Snapshot) PVC(namespace, name string) *corev1.PersistentVolumeClaim {
	return s.pvcs[key(namespace, name)]
}

// PV returns the named PersistentVolume, or nil.
func (s *Snapshot) PV(name string) *corev1.PersistentVolume { return s.pvs[name] }

// StorageClass returns the named StorageClass, or nil.
func (s *Snapshot) StorageClass(name string) *storagev1.StorageClass { return s.storageClasses[name] }

// CSINode returns the CSINode of the named node, or nil.
func (s *Snapshot) CSINode(name string) *storagev1.CSINode { return s.csiNodes[name] }

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

// Read lists everything a snapshot holds from r: the controller's cache
// (pageSize 0: the cache answers at once), or a client of the API server
// for `spot-rebalancer plan` (pages of pageSize). The surge records are
// read from recordsNamespace, the controller's own ("": none are read).
func Read(ctx context.Context, r client.Reader, now time.Time, pageSize int64, recordsNamespace string) (*Snapshot, error) {
	var o Objects
	var err error
	if o.Nodes, err = listAll[corev1.Node](ctx, r, &corev1.NodeList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing nodes: %w", err)
	}
	if o.Pods, err = listAll[corev1.Pod](ctx, r, &corev1.PodList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing pods: %w", err)
	}
	if o.PDBs, err = listAll[policyv1.PodDisruptionBudget](ctx, r, &policyv1.PodDisruptionBudgetList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing PodDisruptionBudgets: %w", err)
	}
	if o.Deployments, err = listAll[appsv1.Deployment](ctx, r, &appsv1.DeploymentList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing Deployments: %w", err)
	}
	if o.ReplicaSets, err = listAll[appsv1.ReplicaSet](ctx, r, &appsv1.ReplicaSetList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing ReplicaSets: %w", err)
	}
	if o.StatefulSets, err = listAll[appsv1.StatefulSet](ctx, r, &appsv1.StatefulSetList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing StatefulSets: %w", err)
	}
	if o.HPAs, err = listAll[autoscalingv2.HorizontalPodAutoscaler](ctx, r, &autoscalingv2.HorizontalPodAutoscalerList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing HorizontalPodAutoscalers: %w", err)
	}
	if o.PVCs, err = listAll[corev1.PersistentVolumeClaim](ctx, r, &corev1.PersistentVolumeClaimList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing PersistentVolumeClaims: %w", err)
	}
	if o.PVs, err = listAll[corev1.PersistentVolume](ctx, r, &corev1.PersistentVolumeList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing PersistentVolumes: %w", err)
	}
	if o.StorageClasses, err = listAll[storagev1.StorageClass](ctx, r, &storagev1.StorageClassList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing StorageClasses: %w", err)
	}
	if o.CSINodes, err = listAll[storagev1.CSINode](ctx, r, &storagev1.CSINodeList{}, pageSize); err != nil {
		return nil, fmt.Errorf("listing CSINodes: %w", err)
	}
	if recordsNamespace == "" {
		return New(now, o), nil
	}
	o.Namespace = recordsNamespace
	if o.SurgeRecords, err = listAll[coordinationv1.Lease](ctx, r, &coordinationv1.LeaseList{}, pageSize,
		client.InNamespace(recordsNamespace), client.MatchingLabels{signals.LabelRecord: signals.SurgeRecordLabel}); err != nil {
		return nil, fmt.Errorf("listing surge records in namespace %s: %w", recordsNamespace, err)
	}
	return New(now, o), nil
}

// listAll lists every T, page by page when pageSize is set. Each page is
// decoded into a fresh copy of the empty list, so the items of earlier
// pages are never overwritten.
func listAll[T any](ctx context.Context, r client.Reader, empty client.ObjectList, pageSize int64, filters ...client.ListOption) ([]*T, error) {
	var out []*T
	next := ""
	for {
		list := empty.DeepCopyObject().(client.ObjectList)
		opts := slices.Clone(filters)
		if pageSize > 0 {
			opts = append(opts, client.Limit(pageSize), client.Continue(next))
		}
		if err := r.List(ctx, list, opts...); err != nil {
			return nil, err
		}
		items, err := meta.ExtractList(list)
		if err != nil {
			return nil, err
		}
		for _, item := range items {
			t, ok := item.(any).(*T)
			if !ok {
				return nil, fmt.Errorf("listing: got a %T", item)
			}
			out = append(out, t)
		}
		if next = list.GetContinue(); pageSize == 0 || next == "" {
			return out, nil
		}
	}
}

// PodReady tells whether the pod's Ready condition is True.
func PodReady(p *corev1.Pod) bool {
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}
