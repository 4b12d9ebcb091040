// Package queue consumes Spot signals that Amazon EventBridge delivers to
// an SQS queue and writes them on the Nodes of the instances they name. A
// message is deleted only after its signal is written; messages about
// instances of other clusters are left for them (unless deleteUnknown);
// malformed messages are counted and deleted, and never stop the consumer.
package queue

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/aws/aws-sdk-go-v2/service/sqs/types"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/utils/clock"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/sources"
)

// SQS is the part of the SQS client the consumer uses.
type SQS interface {
	ReceiveMessage(ctx context.Context, in *sqs.ReceiveMessageInput, opts ...func(*sqs.Options)) (*sqs.ReceiveMessageOutput, error)
	DeleteMessage(ctx context.Context, in *sqs.DeleteMessageInput, opts ...func(*sqs.Options)) (*sqs.DeleteMessageOutput, error)
}

var _ SQS = (*sqs.Client)(nil)

// SignalWriter writes signals on Nodes (signals.Writer).
type SignalWriter interface {
	Interruption(ctx context.Context, node string, at time.Time, reason, message string) (bool, error)
	Rebalance(ctx context.Context, node, reason, message string) (bool, error)
}

var _ SignalWriter = signals.Writer{}

// Nodes finds the node of an instance (from a cache: not modified).
type Nodes interface {
	Node(instanceID string) (*corev1.Node, bool)
}

var _ Nodes = sources.NodeIndex{}

// StoppingStates are the EC2 instance states of a state-change event the
// consumer treats as an interruption (deploy/aws/queue.yaml's rule
// forwards exactly these).
var StoppingStates = []string{"stopping", "stopped", "shutting-down", "terminated"}

// EventBridge detail types the consumer acts on.
const (
	DetailInterruption = "EC2 Spot Instance Interruption Warning"
	DetailRebalance    = "EC2 Instance Rebalance Recommendation"
	DetailStateChange  = "EC2 Instance State-change Notification"
)

// Results of one message: metric label values.
const (
	ResultWritten   = "written"
	ResultKnown     = "already-known"
	ResultUnknown   = "unknown-instance"
	ResultIgnored   = "ignored"
	ResultMalformed = "malformed"
	ResultFailed    = "write-failed"
	// ResultRejected: the message failed verification (see Rejection).
	ResultRejected = "rejected"
)

// Rejection is why a message that parses is not believed: metric label
// values.
type Rejection string

const (
	// RejectedSource: its source is not aws.ec2.
	RejectedSource Rejection = "source"
	// RejectedAccount: it comes from an account not configured.
	RejectedAccount Rejection = "account"
	// RejectedRegion: its region is not the region of the node that runs
	// the instance.
	RejectedRegion Rejection = "region"
	// RejectedNotSpot: a state change of an instance whose node is not
	// known to be Spot (an on-demand instance stopping is no Spot
	// interruption).
	RejectedNotSpot Rejection = "not-spot"
	// RejectedTime: its time lies in the future, or, for an interruption
	// or a state change, longer ago than the notice period (the instance
	// would be gone: a replay or a message held back).
	RejectedTime Rejection = "time"
)

// clockSkew is how far an event's time may lie in the future.
const clockSkew = 30 * time.Second

// rejected is a message that failed verification.
type rejected struct {
	why    Rejection
	detail string
}

func (r rejected) Error() string { return r.detail }

// Consumer long-polls the queue. Anyone allowed to send to the queue can
// write any message, so a message is believed only if it says it comes
// from EC2 (source aws.ec2), in one of Accounts, in the region of the node
// whose instance it names; a state change only for a Spot node; and its
// time is a hint the rebalancer bounds like any termination time. The
// queue policy is what keeps others from sending (see the README).
type Consumer struct {
	SQS           SQS
	QueueURL      string
	DeleteUnknown bool
	// Accounts are the AWS accounts whose events are believed.
	Accounts []string
	// KeepRejected leaves rejected messages in the queue.
	KeepRejected bool
	Nodes        Nodes
	Writer       SignalWriter
	Clock        clock.Clock
	Metrics      *Metrics
	// WaitTime is the long-poll time (default 20 s, the SQS maximum).
	WaitTime time.Duration
}

// Metrics are the consumer's Prometheus metrics.
type Metrics struct {
	Messages *prometheus.CounterVec
	Rejected *prometheus.CounterVec
}

// NewMetrics creates the metrics and registers them with reg.
func NewMetrics(reg prometheus.Registerer) *Metrics {
	m := &Metrics{
		Messages: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_queue_messages_total",
			Help: "Queue messages by result (written, already-known, unknown-instance, ignored, malformed, rejected, write-failed).",
		}, []string{"result"}),
		Rejected: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "spot_rebalancer_queue_rejected_total",
			Help: "Queue messages not believed, by reason (source, account, region, not-spot, time).",
		}, []string{"reason"}),
	}
	reg.MustRegister(m.Messages, m.Rejected)
	// Every result starts at 0, so that rate() and increase() see the
	// first one (alerts on write-failed, dashboards).
	for _, r := range []string{ResultWritten, ResultKnown, ResultUnknown, ResultIgnored, ResultMalformed, ResultFailed, ResultRejected} {
		m.Messages.WithLabelValues(r)
	}
	for _, r := range []Rejection{RejectedSource, RejectedAccount, RejectedRegion, RejectedNotSpot, RejectedTime} {
		m.Rejected.WithLabelValues(string(r))
	}
	return m
}

// event is the part of an EventBridge event the consumer reads.
type event struct {
	DetailType string          `json:"detail-type"`
	Source     string          `json:"source"`
	Account    string          `json:"account"`
	Region     string          `json:"region"`
	Time       time.Time       `json:"time"`
	Detail     json.RawMessage `json:"detail"`
}

type detail struct {
	InstanceID     string `json:"instance-id"`
	InstanceAction string `json:"instance-action"`
	State          string `json:"state"`
}

// Start consumes until ctx is done; receive errors back off up to 30 s.
func (c *Consumer) Start(ctx context.Context) error {
	log := ctrllog.FromContext(ctx).WithName("queue")
	backoff := time.Second
	for ctx.Err() == nil {
		if err := c.ReceiveOnce(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			log.Error(err, "Receiving from the queue failed; retrying", "in", backoff)
			select {
			case <-ctx.Done():
				return nil
			case <-c.Clock.After(backoff):
			}
			backoff = min(2*backoff, 30*time.Second)
			continue
		}
		backoff = time.Second
	}
	return nil
}

// ReceiveOnce receives one batch and handles every message in it.
func (c *Consumer) ReceiveOnce(ctx context.Context) error {
	wait := c.WaitTime
	if wait == 0 {
		wait = 20 * time.Second
	}
	out, err := c.SQS.ReceiveMessage(ctx, &sqs.ReceiveMessageInput{
		QueueUrl: aws.String(c.QueueURL), MaxNumberOfMessages: 10, WaitTimeSeconds: int32(wait.Seconds()),
	})
	if err != nil {
		return fmt.Errorf("receiving from %s: %w", c.QueueURL, err)
	}
	var errs []error
	for _, m := range out.Messages {
		result, err := c.handle(ctx, m)
		c.Metrics.Messages.WithLabelValues(result).Inc()
		var r rejected
		if errors.As(err, &r) {
			c.Metrics.Rejected.WithLabelValues(string(r.why)).Inc()
		}
		keep := result == ResultFailed || (result == ResultUnknown && !c.DeleteUnknown) || (result == ResultRejected && c.KeepRejected)
		if err != nil {
			ctrllog.FromContext(ctx).Info("Queue message not acted on", "messageId", aws.ToString(m.MessageId), "result", result, "problem", err.Error(), "kept", keep)
		}
		if keep {
			continue
		}
		if _, err := c.SQS.DeleteMessage(ctx, &sqs.DeleteMessageInput{QueueUrl: aws.String(c.QueueURL), ReceiptHandle: m.ReceiptHandle}); err != nil {
			errs = append(errs, fmt.Errorf("deleting message %s: %w", aws.ToString(m.MessageId), err))
		}
	}
	return errors.Join(errs...)
}

// handle acts on one message and returns its result.
func (c *Consumer) handle(ctx context.Context, m types.Message) (string, error) {
	var ev event
	if err := json.Unmarshal([]byte(aws.ToString(m.Body)), &ev); err != nil {
		return ResultMalformed, fmt.Errorf("not an EventBridge event: %w", err)
	}
	var d detail
	if len(ev.Detail) > 0 {
		if err := json.Unmarshal(ev.Detail, &d); err != nil {
			return ResultMalformed, fmt.Errorf("detail of %q: %w", ev.DetailType, err)
		}
	}
	interruption := false
	switch ev.DetailType {
	case DetailInterruption:
		interruption = true
	case DetailRebalance:
	case DetailStateChange:
		if !slices.Contains(StoppingStates, d.State) {
			return ResultIgnored, nil
		}
		interruption = true
	default:
		return ResultIgnored, fmt.Errorf("detail type %q is not a Spot signal", ev.DetailType)
	}
	if d.InstanceID == "" {
		return ResultMalformed, fmt.Errorf("%q event without an instance-id", ev.DetailType)
	}
	if ev.Source != "aws.ec2" {
		return ResultRejected, rejected{RejectedSource, fmt.Sprintf("source %q, not aws.ec2", ev.Source)}
	}
	if !slices.Contains(c.Accounts, ev.Account) {
		return ResultRejected, rejected{RejectedAccount, fmt.Sprintf("account %q is not one of %v", ev.Account, c.Accounts)}
	}
	if age := c.Clock.Since(ev.Time); !ev.Time.IsZero() && (age < -clockSkew || (interruption && age > signals.NoticePeriod+clockSkew)) {
		return ResultRejected, rejected{RejectedTime, fmt.Sprintf("event time %s is %s from now", ev.Time.UTC().Format(time.RFC3339), age.Round(time.Second))}
	}
	n, ok := c.Nodes.Node(d.InstanceID)
	if !ok {
		return ResultUnknown, fmt.Errorf("instance %s is not a node of this cluster", d.InstanceID)
	}
	node := n.Name
	if region := sources.Region(n); ev.Region == "" || ev.Region != region {
		return ResultRejected, rejected{RejectedRegion, fmt.Sprintf("region %q, but node %s of instance %s is in %q", ev.Region, node, d.InstanceID, region)}
	}
	if ev.DetailType == DetailStateChange && !signals.IsSpot(n) {
		return ResultRejected, rejected{RejectedNotSpot, fmt.Sprintf("a state change of instance %s, whose node %s is not known to be Spot", d.InstanceID, node)}
	}
	at := ev.Time
	if at.IsZero() {
		at = c.Clock.Now()
	}
	var wrote bool
	var err error
	if interruption {
		// A Spot warning comes two minutes ahead; a state change is now.
		deadline := at
		if ev.DetailType == DetailInterruption {
			deadline = at.Add(2 * time.Minute)
		}
		wrote, err = c.Writer.Interruption(ctx, node, deadline, "SpotInterruptionNotice",
			fmt.Sprintf("%s for %s (EventBridge via SQS)", ev.DetailType, d.InstanceID))
	} else {
		wrote, err = c.Writer.Rebalance(ctx, node, "SpotRebalanceRecommendation",
			fmt.Sprintf("%s for %s (EventBridge via SQS)", ev.DetailType, d.InstanceID))
	}
	switch {
	case err != nil:
		return ResultFailed, err
	case wrote:
		return ResultWritten, nil
	default:
		return ResultKnown, nil
	}
}
