package e2e

import (
	"context"
	"fmt"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/sources/queue"
	"github.com/spot-rebalancer/spot-rebalancer/sources/queue/sqstest"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// The queue source, wired as the controller wires it (its own node index
// over the real API server), turns an EventBridge Spot interruption warning
// for a node's instance into the node's condition and deletes the message;
// a warning for an instance of another cluster stays in the queue.
func TestQueueSourceWritesSignalsForItsNodes(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	node := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-k", InstanceID: "i-0e2e0e2e0e2e0e2e0"})
	q := sqstest.New()
	srv := httptest.NewServer(q)
	t.Cleanup(srv.Close)
	event := `{"version":"0","id":"1e5527d7-bb36-4607-3370-4164db56a40e","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","account":"123456789012","time":"%s","region":"us-east-1","resources":["arn:aws:ec2:us-east-1a:instance/%s"],"detail":{"instance-id":"%s","instance-action":"terminate"}}`
	now := time.Now().UTC().Format(time.RFC3339)
	q.Add("ours", fmt.Sprintf(event, now, "i-0e2e0e2e0e2e0e2e0", "i-0e2e0e2e0e2e0e2e0"))
	q.Add("theirs", fmt.Sprintf(event, now, "i-0ffffffffffffffff", "i-0ffffffffffffffff"))

	client := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
		Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
	source := &queue.Source{Kube: c.Client, Consumer: &queue.Consumer{
		SQS: client, QueueURL: srv.URL + "/123456789012/spot-events", WaitTime: time.Second, Accounts: []string{"123456789012"},
		Writer: signals.Writer{Kube: c.Client, Clock: clock.RealClock{}}, Clock: clock.RealClock{},
		Metrics: queue.NewMetrics(prometheus.NewRegistry()),
	}}
	runCtx, stop := context.WithCancel(logr.NewContext(ctx, cluster.Logger()))
	done := make(chan error, 1)
	go func() { done <- source.Start(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	c.WaitFor(t, 15*time.Second, "the interruption notice on the node and its message deleted", func(ctx context.Context) (bool, error) {
		n, err := c.Client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		sig, ok := signals.FromNode(n, time.Now())
		left := q.Left()
		return ok && sig.Kind == signals.InterruptionNotice && !sig.TerminationTime.IsZero() && len(left) == 1 && left[0] == "theirs", nil
	})
}
