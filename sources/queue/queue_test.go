package queue

import (
	"errors"
	"fmt"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/credentials"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/sources"
	"github.com/spot-rebalancer/spot-rebalancer/sources/queue/sqstest"
)

// Real EventBridge events, as AWS documents them.
const (
	interruptionEvent = `{"version":"0","id":"1e5527d7-bb36-4607-3370-4164db56a40e","detail-type":"EC2 Spot Instance Interruption Warning","source":"aws.ec2","account":"123456789012","time":"2026-11-26T12:00:00Z","region":"us-east-1","resources":["arn:aws:ec2:us-east-1b:instance/%s"],"detail":{"instance-id":"%s","instance-action":"terminate"}}`
	rebalanceEvent    = `{"version":"0","id":"5d5f7d0f-2a4b-4b36-8fb2-1e4fd5d2b3f6","detail-type":"EC2 Instance Rebalance Recommendation","source":"aws.ec2","account":"123456789012","time":"2026-11-26T12:00:00Z","region":"us-east-1","resources":["arn:aws:ec2:us-east-1b:instance/%s"],"detail":{"instance-id":"%s"}}`
	stateChangeEvent  = `{"version":"0","id":"7bf73129-1428-4cd3-a780-95db273d1602","detail-type":"EC2 Instance State-change Notification","source":"aws.ec2","account":"123456789012","time":"2026-11-26T12:00:00Z","region":"us-east-1","resources":["arn:aws:ec2:us-east-1:123456789012:instance/%s"],"detail":{"instance-id":"%s","state":"%s"}}`
)

func nodeFor(name, instance string) *corev1.Node {
	return &corev1.Node{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: map[string]string{"karpenter.sh/capacity-type": "spot"}}, Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1b/" + instance}}
}

// onDemand is a node whose instance is on-demand.
func onDemand() *corev1.Node {
	n := nodeFor("od-1", "i-0aaaaaaaaaaaaaaaa")
	n.Labels["karpenter.sh/capacity-type"] = "on-demand"
	return n
}

// forged changes one field of an event body.
func forged(body, from, to string) string { return strings.Replace(body, from, to, 1) }

func TestConsumer(t *testing.T) {
	now := time.Date(2026, 11, 26, 12, 0, 30, 0, time.UTC)
	tests := map[string]struct {
		body          string
		deleteUnknown bool
		keepRejected  bool
		failWrites    bool
		wantLeft      bool
		wantResult    string
		wantRejected  Rejection
		wantCondition corev1.NodeConditionType
	}{
		"an interruption from another source is not believed": {
			body: forged(fmt.Sprintf(interruptionEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), `"aws.ec2"`, `"my.app"`), wantResult: ResultRejected, wantRejected: RejectedSource,
		},
		"an interruption from another account is not believed": {
			body: forged(fmt.Sprintf(interruptionEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), "123456789012", "999999999999"), wantResult: ResultRejected, wantRejected: RejectedAccount,
		},
		"an interruption from another region than the node's is not believed": {
			body: forged(fmt.Sprintf(interruptionEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), `"region":"us-east-1"`, `"region":"eu-west-1"`), wantResult: ResultRejected, wantRejected: RejectedRegion,
		},
		"an on-demand instance stopping is no Spot interruption": {
			body: fmt.Sprintf(stateChangeEvent, "i-0aaaaaaaaaaaaaaaa", "i-0aaaaaaaaaaaaaaaa", "stopping"), wantResult: ResultRejected, wantRejected: RejectedNotSpot,
		},
		"an interruption ten minutes old is not believed": {
			body: forged(fmt.Sprintf(interruptionEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), "2026-11-26T12:00:00Z", "2026-11-26T11:50:00Z"), wantResult: ResultRejected, wantRejected: RejectedTime,
		},
		"an interruption from tomorrow is not believed": {
			body: forged(fmt.Sprintf(interruptionEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), "2026-11-26T12:00:00Z", "2026-11-27T12:00:00Z"), wantResult: ResultRejected, wantRejected: RejectedTime,
		},
		"a rejected message stays in the queue with keepRejected": {
			body: forged(fmt.Sprintf(interruptionEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), `"aws.ec2"`, `"my.app"`), keepRejected: true, wantResult: ResultRejected, wantRejected: RejectedSource, wantLeft: true,
		},
		"an interruption warning for a node of ours is written and deleted": {
			body: fmt.Sprintf(interruptionEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), wantResult: ResultWritten, wantCondition: signals.ConditionInterruption,
		},
		"a rebalance recommendation is written and deleted": {
			body: fmt.Sprintf(rebalanceEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), wantResult: ResultWritten, wantCondition: signals.ConditionRebalance,
		},
		"an instance stopping is an interruption": {
			body: fmt.Sprintf(stateChangeEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0", "stopping"), wantResult: ResultWritten, wantCondition: signals.ConditionInterruption,
		},
		"an instance starting is ignored and deleted": {
			body: fmt.Sprintf(stateChangeEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0", "pending"), wantResult: ResultIgnored,
		},
		"an instance of another cluster stays for that cluster": {
			body: fmt.Sprintf(interruptionEvent, "i-0ffffffffffffffff", "i-0ffffffffffffffff"), wantResult: ResultUnknown, wantLeft: true,
		},
		"an instance of another cluster is deleted when deleteUnknown is set": {
			body: fmt.Sprintf(interruptionEvent, "i-0ffffffffffffffff", "i-0ffffffffffffffff"), deleteUnknown: true, wantResult: ResultUnknown,
		},
		"a malformed message is counted and deleted": {
			body: `{"detail-type": 42`, wantResult: ResultMalformed,
		},
		"an event without an instance id is malformed": {
			body: `{"detail-type":"EC2 Spot Instance Interruption Warning","detail":{}}`, wantResult: ResultMalformed,
		},
		"a failed Node write leaves the message for redelivery": {
			body: fmt.Sprintf(rebalanceEvent, "i-0b662ef9931388ba0", "i-0b662ef9931388ba0"), failWrites: true, wantResult: ResultFailed, wantLeft: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			queue := sqstest.New()
			srv := httptest.NewServer(queue)
			defer srv.Close()
			queue.Add("h1", tc.body)

			client := sqs.New(sqs.Options{Region: "us-east-1", BaseEndpoint: aws.String(srv.URL),
				Credentials: credentials.NewStaticCredentialsProvider("AKID", "SECRET", "")})
			kube := fake.NewClientset(nodeFor("spot-1", "i-0b662ef9931388ba0"), onDemand())
			if tc.failWrites {
				kube.PrependReactor("patch", "nodes", func(k8stesting.Action) (bool, runtime.Object, error) {
					return true, nil, errors.New("api server unavailable")
				})
			}
			indexer := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{sources.InstanceIDIndex: sources.IndexByInstanceID})
			_ = indexer.Add(nodeFor("spot-1", "i-0b662ef9931388ba0"))
			_ = indexer.Add(onDemand())
			clk := clocktesting.NewFakeClock(now)
			c := &Consumer{SQS: client, QueueURL: srv.URL + "/123456789012/spot-events", DeleteUnknown: tc.deleteUnknown,
				Accounts: []string{"123456789012"}, KeepRejected: tc.keepRejected,
				Nodes: sources.NodeIndex{Indexer: indexer}, Writer: signals.Writer{Kube: kube, Clock: clk}, Clock: clk,
				Metrics: NewMetrics(prometheus.NewRegistry()), WaitTime: time.Second}

			if err := c.ReceiveOnce(t.Context()); err != nil {
				t.Fatal(err)
			}
			if got := testutil.ToFloat64(c.Metrics.Messages.WithLabelValues(tc.wantResult)); got != 1 {
				t.Errorf("result %s counted %v times, want 1", tc.wantResult, got)
			}
			if tc.wantRejected != "" {
				if got := testutil.ToFloat64(c.Metrics.Rejected.WithLabelValues(string(tc.wantRejected))); got != 1 {
					t.Errorf("rejection %s counted %v times, want 1", tc.wantRejected, got)
				}
			}
			if left := len(queue.Left()) == 1; left != tc.wantLeft {
				t.Errorf("message left in the queue = %v, want %v", left, tc.wantLeft)
			}
			node, err := kube.CoreV1().Nodes().Get(t.Context(), "spot-1", metav1.GetOptions{})
			if err != nil {
				t.Fatal(err)
			}
			if tc.wantCondition != "" {
				sig, ok := signals.FromNode(node, now)
				if !ok {
					t.Fatalf("no signal on the node: %+v", node.Status.Conditions)
				}
				if tc.wantCondition == signals.ConditionInterruption && sig.Kind != signals.InterruptionNotice {
					t.Errorf("signal %+v, want an interruption notice", sig)
				}
				if strings.Contains(tc.body, "Interruption Warning") && !sig.TerminationTime.Equal(now.Add(-30*time.Second+2*time.Minute)) {
					t.Errorf("termination time %s, want the event time plus two minutes", sig.TerminationTime)
				}
			} else if len(node.Status.Conditions) > 0 {
				t.Errorf("unexpected conditions %+v", node.Status.Conditions)
			}
			if od, err := kube.CoreV1().Nodes().Get(t.Context(), "od-1", metav1.GetOptions{}); err != nil || len(od.Status.Conditions) > 0 {
				t.Errorf("the on-demand node was signalled: %+v (%v)", od.Status.Conditions, err)
			}

			// Redelivery of a written message changes nothing.
			if tc.wantResult == ResultWritten {
				queue.Add("h2", tc.body)
				if err := c.ReceiveOnce(t.Context()); err != nil {
					t.Fatal(err)
				}
				if got := testutil.ToFloat64(c.Metrics.Messages.WithLabelValues(ResultKnown)); got != 1 {
					t.Errorf("a redelivered signal counted as already-known %v times, want 1", got)
				}
			}
		})
	}
}
