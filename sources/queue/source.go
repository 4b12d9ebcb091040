package queue

import (
	"context"

	"k8s.io/client-go/kubernetes"

	"github.com/spot-rebalancer/spot-rebalancer/sources"
)

// Source runs a Consumer with its own Node index by instance id. It runs
// on the elected leader only.
type Source struct {
	Consumer *Consumer
	Kube     kubernetes.Interface
}

// NeedLeaderElection: only the leader consumes.
func (s *Source) NeedLeaderElection() bool { return true }

// Start indexes Nodes by instance id, then consumes until ctx is done.
func (s *Source) Start(ctx context.Context) error {
	index, err := sources.StartNodeIndex(ctx, s.Kube)
	if err != nil {
		return err
	}
	s.Consumer.Nodes = index
	return s.Consumer.Start(ctx)
}
