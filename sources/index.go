package sources

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"strings"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/cache"
)

// InstanceIDIndex is the informer index from EC2 instance id to Node.
const InstanceIDIndex = "instanceID"

// InstanceID returns the EC2 instance id in a node's providerID
// (aws:///us-east-1a/i-0123456789abcdef0), or "".
func InstanceID(n *corev1.Node) string {
	id := n.Spec.ProviderID
	if !strings.HasPrefix(id, "aws://") {
		return ""
	}
	parts := strings.Split(id, "/")
	last := parts[len(parts)-1]
	if !strings.HasPrefix(last, "i-") {
		return ""
	}
	return last
}

// IndexByInstanceID is a cache.IndexFunc over Nodes.
func IndexByInstanceID(obj any) ([]string, error) {
	n, ok := obj.(*corev1.Node)
	if !ok {
		return nil, fmt.Errorf("expected a Node, got %T", obj)
	}
	if id := InstanceID(n); id != "" {
		return []string{id}, nil
	}
	return nil, nil
}

// NodeIndex finds the Node of an instance without an API call.
type NodeIndex struct {
	Indexer cache.Indexer
}

// NodeFor returns the name of the node running the instance.
func (x NodeIndex) NodeFor(instanceID string) (string, bool) {
	n, ok := x.Node(instanceID)
	if !ok {
		return "", false
	}
	return n.Name, true
}

// Node returns the node running the instance, from the cache: callers must
// not modify it.
func (x NodeIndex) Node(instanceID string) (*corev1.Node, bool) {
	objs, err := x.Indexer.ByIndex(InstanceIDIndex, instanceID)
	if err != nil || len(objs) == 0 {
		return nil, false
	}
	return objs[0].(*corev1.Node), true
}

// Region returns the AWS region of a node: its topology.kubernetes.io/region
// label, else the region of the zone in its providerID
// (aws:///us-east-1a/i-... is in us-east-1; Local Zones such as
// us-west-2-lax-1a too), or "".
func Region(n *corev1.Node) string {
	if r := n.Labels[corev1.LabelTopologyRegion]; r != "" {
		return r
	}
	id := strings.TrimPrefix(n.Spec.ProviderID, "aws://")
	if id == n.Spec.ProviderID {
		return ""
	}
	parts := strings.Split(strings.Trim(id, "/"), "/")
	if len(parts) != 2 {
		return ""
	}
	return regionOfZone.FindString(parts[0])
}

var regionOfZone = regexp.MustCompile(`^[a-z]{2}(-[a-z]+)+-[0-9]+`)

// StartNodeIndex starts a Node informer indexed by instance id and waits
// for it to sync; it stops with ctx.
func StartNodeIndex(ctx context.Context, kube kubernetes.Interface) (NodeIndex, error) {
	factory := informers.NewSharedInformerFactory(kube, 0)
	inf := factory.Core().V1().Nodes().Informer()
	if err := inf.AddIndexers(cache.Indexers{InstanceIDIndex: IndexByInstanceID}); err != nil {
		return NodeIndex{}, err
	}
	factory.Start(ctx.Done())
	go func() { <-ctx.Done(); factory.Shutdown() }()
	if !cache.WaitForCacheSync(ctx.Done(), inf.HasSynced) {
		return NodeIndex{}, errors.New("the node cache did not sync")
	}
	return NodeIndex{Indexer: inf.GetIndexer()}, nil
}
