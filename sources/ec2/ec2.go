// Package ec2 is the controller's EC2 API source: it finds the pool (the
// Auto Scaling group) of nodes whose labels name none, and, for clusters
// with neither agent nor queue, polls Spot instance requests marked for
// termination or stop as interruption notices. It makes at most one call
// (with its pages) per interval for all nodes, caches what does not change,
// and backs off when throttled.
package ec2

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/ec2/types"
)

// API is the part of the EC2 client the source uses.
type API interface {
	DescribeInstances(ctx context.Context, in *ec2.DescribeInstancesInput, opts ...func(*ec2.Options)) (*ec2.DescribeInstancesOutput, error)
	DescribeSpotInstanceRequests(ctx context.Context, in *ec2.DescribeSpotInstanceRequestsInput, opts ...func(*ec2.Options)) (*ec2.DescribeSpotInstanceRequestsOutput, error)
}

var _ API = (*ec2.Client)(nil)

// ASGTag names an instance's Auto Scaling group.
const ASGTag = "aws:autoscaling:groupName"

// Instance is what the source needs to know about one instance.
type Instance struct {
	ID        string
	ASG       string
	Lifecycle string // "spot", "scheduled", or "" for on-demand
}

// maxFilterValues is how many instance ids one DescribeInstances filter
// takes.
const maxFilterValues = 200

// Instances describes the given instances, in batches, following pages.
// Instances that no longer exist are simply absent.
func Instances(ctx context.Context, api API, ids []string) (map[string]Instance, error) {
	out := map[string]Instance{}
	ids = slices.Compact(slices.Sorted(slices.Values(ids)))
	for start := 0; start < len(ids); start += maxFilterValues {
		batch := ids[start:min(start+maxFilterValues, len(ids))]
		pages := ec2.NewDescribeInstancesPaginator(api, &ec2.DescribeInstancesInput{
			Filters: []types.Filter{{Name: aws.String("instance-id"), Values: batch}},
		})
		for pages.HasMorePages() {
			page, err := pages.NextPage(ctx)
			if err != nil {
				return nil, fmt.Errorf("describing %d instances: %w", len(batch), err)
			}
			for _, r := range page.Reservations {
				for _, i := range r.Instances {
					inst := Instance{ID: aws.ToString(i.InstanceId), Lifecycle: string(i.InstanceLifecycle)}
					for _, tag := range i.Tags {
						if aws.ToString(tag.Key) == ASGTag {
							inst.ASG = aws.ToString(tag.Value)
						}
					}
					out[inst.ID] = inst
				}
			}
		}
	}
	return out, nil
}

// Spot request status codes that mean the instance is about to go.
var markedCodes = []string{"marked-for-termination", "marked-for-stop"}

// Marked is an instance whose Spot request is marked for termination or
// stop, with when the mark was made.
type Marked struct {
	InstanceID string
	Code       string
	Since      time.Time
}

// MarkedInstances lists every Spot request marked for termination or stop,
// in one paginated call.
func MarkedInstances(ctx context.Context, api API) ([]Marked, error) {
	pages := ec2.NewDescribeSpotInstanceRequestsPaginator(api, &ec2.DescribeSpotInstanceRequestsInput{
		Filters: []types.Filter{{Name: aws.String("status-code"), Values: markedCodes}},
	})
	var out []Marked
	for pages.HasMorePages() {
		page, err := pages.NextPage(ctx)
		if err != nil {
			return nil, fmt.Errorf("describing Spot instance requests: %w", err)
		}
		for _, r := range page.SpotInstanceRequests {
			if r.InstanceId == nil || r.Status == nil || !slices.Contains(markedCodes, aws.ToString(r.Status.Code)) {
				continue
			}
			out = append(out, Marked{InstanceID: aws.ToString(r.InstanceId), Code: aws.ToString(r.Status.Code), Since: aws.ToTime(r.Status.UpdateTime)})
		}
	}
	return out, nil
}
