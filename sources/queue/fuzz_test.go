package queue

import (
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	"k8s.io/client-go/kubernetes/fake"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/sources"
)

// Any message body gets a result from the fixed set, never a panic.
func FuzzHandleMessage(f *testing.F) {
	f.Add(`{"detail-type":"EC2 Spot Instance Interruption Warning","time":"2026-11-26T12:00:00Z","detail":{"instance-id":"i-0b662ef9931388ba0","instance-action":"terminate"}}`)
	f.Add(`{"detail-type":"EC2 Instance Rebalance Recommendation","detail":{"instance-id":"i-0ffffffffffffffff"}}`)
	f.Add(`{"detail-type":"EC2 Instance State-change Notification","detail":{"instance-id":"i-0b662ef9931388ba0","state":"terminated"}}`)
	f.Add(`{"detail-type":"EC2 Spot Instance Interruption Warning","detail":"oops"}`)
	f.Add(`{"time":"yesterday"}`)
	f.Add(`null`)
	f.Add(`{"detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","account":"123456789012","region":"us-east-1","time":"2026-11-26T12:00:00Z","detail":{"instance-id":"i-0b662ef9931388ba0","instance-action":"terminate"}}`)
	valid := map[string]bool{ResultWritten: true, ResultKnown: true, ResultUnknown: true, ResultIgnored: true, ResultMalformed: true, ResultFailed: true, ResultRejected: true}
	f.Fuzz(func(t *testing.T, body string) {
		kube := fake.NewClientset(nodeFor("spot-1", "i-0b662ef9931388ba0"))
		indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{sources.InstanceIDIndex: sources.IndexByInstanceID})
		_ = indexer.Add(nodeFor("spot-1", "i-0b662ef9931388ba0"))
		clk := clocktesting.NewFakeClock(time.Date(2026, 11, 26, 12, 0, 0, 0, time.UTC))
		c := &Consumer{Nodes: sources.NodeIndex{Indexer: indexer}, Writer: signals.Writer{Kube: kube, Clock: clk}, Clock: clk, Accounts: []string{"123456789012"},
			Metrics: NewMetrics(prometheus.NewRegistry())}
		result, _ := c.handle(t.Context(), types.Message{Body: aws.String(body)})
		if !valid[result] {
			t.Fatalf("result %q is not one of the fixed set", result)
		}
	})
}
