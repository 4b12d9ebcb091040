// Package agent is the per-node agent: it polls the EC2 instance metadata
// service of its own instance for Spot signals and writes them on its own
// Node as the conditions the rebalancer acts on. The same notice is written
// once; metadata outages are retried with backoff and never fatal.
package agent

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/feature/ec2/imds"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// Metadata paths of the two Spot signals. 404 means no event.
const (
	PathInstanceAction = "spot/instance-action"
	PathRebalance      = "events/recommendations/rebalance"
)

// MetadataClient is the one call of the IMDS client the agent makes.
type MetadataClient interface {
	GetMetadata(ctx context.Context, in *imds.GetMetadataInput, opts ...func(*imds.Options)) (*imds.GetMetadataOutput, error)
}

var _ MetadataClient = (*imds.Client)(nil)

// NewMetadataClient is an IMDSv2 client; endpoint overrides the default
// (tests, IPv6). Retries are the agent's own.
func NewMetadataClient(endpoint string) *imds.Client {
	return imds.New(imds.Options{
		Endpoint:          endpoint,
		ClientEnableState: imds.ClientEnabled,
		Retryer:           aws.NopRetryer{},
	})
}

// InstanceAction is the body of spot/instance-action.
type InstanceAction struct {
	Action string `json:"action"`
	Time   string `json:"time"`
}

// Rebalance is the body of events/recommendations/rebalance.
type Rebalance struct {
	NoticeTime string `json:"noticeTime"`
}

// Observation is what one poll saw.
type Observation struct {
	// Interruption is set when an instance action is announced.
	Interruption *Interruption
	// RebalanceSince is set when a rebalance recommendation is out.
	RebalanceSince *time.Time
}

// Interruption is an announced instance action.
type Interruption struct {
	Action string
	Time   time.Time
	// Guessed is true when the metadata service gave no usable time and
	// the two minutes AWS promises were assumed.
	Guessed bool
}

// errNoEvent is a 404: the metadata service has no such event.
var errNoEvent = errors.New("no event")

func fetch(ctx context.Context, c MetadataClient, path string, into any) error {
	out, err := c.GetMetadata(ctx, &imds.GetMetadataInput{Path: path})
	if err != nil {
		var re *smithyhttp.ResponseError
		if errors.As(err, &re) && re.HTTPStatusCode() == http.StatusNotFound {
			return errNoEvent
		}
		return fmt.Errorf("reading %s from the instance metadata service: %w", path, err)
	}
	defer out.Content.Close()
	body, err := io.ReadAll(io.LimitReader(out.Content, 64<<10))
	if err != nil {
		return fmt.Errorf("reading %s: %w", path, err)
	}
	if err := json.Unmarshal(body, into); err != nil {
		return &malformedError{path: path, err: err}
	}
	return nil
}

// malformedError is a 200 answer that is not the documented JSON: the
// event exists, its details are unknown.
type malformedError struct {
	path string
	err  error
}

func (e *malformedError) Error() string {
	return fmt.Sprintf("malformed answer on %s: %v", e.path, e.err)
}

// Poll reads both signals once. now stands in for times the metadata
// service does not give. A malformed answer still counts as the event; an
// unreachable service is an error.
func Poll(ctx context.Context, c MetadataClient, now time.Time) (Observation, []error, error) {
	var obs Observation
	var warnings []error
	var action InstanceAction
	switch err := fetch(ctx, c, PathInstanceAction, &action); {
	case err == nil, isMalformed(err):
		if err != nil {
			warnings = append(warnings, err)
		}
		in := &Interruption{Action: action.Action}
		if t, ok := parseTime(action.Time); ok {
			in.Time = t
		} else {
			in.Time, in.Guessed = now.Add(2*time.Minute), true
		}
		obs.Interruption = in
	case errors.Is(err, errNoEvent):
	default:
		return Observation{}, warnings, err
	}
	var rebalance Rebalance
	switch err := fetch(ctx, c, PathRebalance, &rebalance); {
	case err == nil, isMalformed(err):
		if err != nil {
			warnings = append(warnings, err)
		}
		t, ok := parseTime(rebalance.NoticeTime)
		if !ok {
			t = now
		}
		obs.RebalanceSince = &t
	case errors.Is(err, errNoEvent):
	default:
		return Observation{}, warnings, err
	}
	return obs, warnings, nil
}

// parseTime reads an RFC 3339 time from the metadata service; a time
// before 2000 (the zero time, say) is no usable time.
func parseTime(s string) (time.Time, bool) {
	t, err := time.Parse(time.RFC3339, s)
	if err != nil || t.Year() < 2000 {
		return time.Time{}, false
	}
	return t, true
}

func isMalformed(err error) bool {
	var m *malformedError
	return errors.As(err, &m)
}
