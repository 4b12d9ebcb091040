// Package asg asks a self-managed EC2 Auto Scaling group for the
// replacement of an at-risk node (rebalancer.replacement.provision: asg)
// and gives the drained node back to it: raise the group's desired
// capacity by one, once per node, within its MaxSize; after the drain,
// terminate the instance and decrement the desired capacity. The reads
// (Of) and the writes (Raise, Terminate) are separate so that the
// controller decides between them purely; the SDK's standard retryer
// retries throttling.
package asg

import (
	"context"
	"encoding/json"
	"fmt"
	"strings"

	"github.com/aws/aws-sdk-go-v2/aws"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
)

// API is the part of the Auto Scaling client used.
type API interface {
	DescribeAutoScalingInstances(context.Context, *autoscaling.DescribeAutoScalingInstancesInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingInstancesOutput, error)
	DescribeAutoScalingGroups(context.Context, *autoscaling.DescribeAutoScalingGroupsInput, ...func(*autoscaling.Options)) (*autoscaling.DescribeAutoScalingGroupsOutput, error)
	SetDesiredCapacity(context.Context, *autoscaling.SetDesiredCapacityInput, ...func(*autoscaling.Options)) (*autoscaling.SetDesiredCapacityOutput, error)
	TerminateInstanceInAutoScalingGroup(context.Context, *autoscaling.TerminateInstanceInAutoScalingGroupInput, ...func(*autoscaling.Options)) (*autoscaling.TerminateInstanceInAutoScalingGroupOutput, error)
}

// Group is an instance's Auto Scaling group as read.
type Group struct {
	Name    string
	Desired int32
	Max     int32
	// Lifecycle is the instance's lifecycle state in the group
	// (InService, Terminating, ...), when read through an instance.
	Lifecycle string
}

// Terminating tells whether the instance is on its way out already.
func (g Group) Terminating() bool { return strings.HasPrefix(g.Lifecycle, "Terminating") }

// Of reads the group of an instance; nil when the instance is in none.
func Of(ctx context.Context, api API, instanceID string) (*Group, error) {
	in, err := api.DescribeAutoScalingInstances(ctx, &autoscaling.DescribeAutoScalingInstancesInput{InstanceIds: []string{instanceID}})
	if err != nil {
		return nil, fmt.Errorf("describing Auto Scaling instance %s: %w", instanceID, err)
	}
	var name, lifecycle string
	for _, i := range in.AutoScalingInstances {
		if aws.ToString(i.InstanceId) == instanceID {
			name, lifecycle = aws.ToString(i.AutoScalingGroupName), aws.ToString(i.LifecycleState)
		}
	}
	if name == "" {
		return nil, nil
	}
	g, err := Read(ctx, api, name)
	if err != nil {
		return nil, err
	}
	g.Lifecycle = lifecycle
	return g, nil
}

// Read reads a group by name.
func Read(ctx context.Context, api API, name string) (*Group, error) {
	groups, err := api.DescribeAutoScalingGroups(ctx, &autoscaling.DescribeAutoScalingGroupsInput{AutoScalingGroupNames: []string{name}})
	if err != nil {
		return nil, fmt.Errorf("describing Auto Scaling group %s: %w", name, err)
	}
	for _, g := range groups.AutoScalingGroups {
		if aws.ToString(g.AutoScalingGroupName) == name {
			if g.DesiredCapacity == nil || g.MaxSize == nil {
				return nil, fmt.Errorf("auto Scaling group %s: no DesiredCapacity or MaxSize in the answer", name)
			}
			return &Group{Name: name, Desired: *g.DesiredCapacity, Max: *g.MaxSize}, nil
		}
	}
	return nil, fmt.Errorf("auto Scaling group %s not found", name)
}

// Raise sets the group's desired capacity to to (cooldowns do not hold
// it up: the replacement is wanted now).
func Raise(ctx context.Context, api API, group string, to int32) error {
	_, err := api.SetDesiredCapacity(ctx, &autoscaling.SetDesiredCapacityInput{AutoScalingGroupName: aws.String(group),
		DesiredCapacity: aws.Int32(to), HonorCooldown: aws.Bool(false)})
	if err != nil {
		return fmt.Errorf("raising the desired capacity of Auto Scaling group %s to %d: %w", group, to, err)
	}
	return nil
}

// Terminate terminates the instance and decrements its group's desired
// capacity, so that the group does not launch another in its place.
func Terminate(ctx context.Context, api API, instanceID string) error {
	_, err := api.TerminateInstanceInAutoScalingGroup(ctx, &autoscaling.TerminateInstanceInAutoScalingGroupInput{
		InstanceId: aws.String(instanceID), ShouldDecrementDesiredCapacity: aws.Bool(true)})
	if err != nil {
		return fmt.Errorf("terminating instance %s in its Auto Scaling group: %w", instanceID, err)
	}
	return nil
}

// AnnotationRaised records on the Node that its group was raised for it
// (Record as JSON), written before the raise: a restart never raises it
// twice.
const AnnotationRaised = "spot-rebalancer.io/asg-raised"

// Record is what AnnotationRaised holds. Group is "" for an instance in
// no group; To equals From when the group was at its MaxSize or the raise
// failed. Pending is written before the call and cleared after it
// succeeded: a record left pending (a crash in between) never counts as a
// raise, so the instance is never terminated with a decrement for it.
type Record struct {
	Group   string `json:"group"`
	From    int32  `json:"from"`
	To      int32  `json:"to"`
	Pending bool   `json:"pending,omitempty"`
}

// Raised tells whether the record raised a group.
func (r Record) Raised() bool { return r.Group != "" && r.To > r.From && !r.Pending }

// RecordOf reads AnnotationRaised; ok is false when there is none, err
// when it does not parse.
func RecordOf(annotations map[string]string) (r Record, ok bool, err error) {
	v, ok := annotations[AnnotationRaised]
	if !ok {
		return Record{}, false, nil
	}
	if err := json.Unmarshal([]byte(v), &r); err != nil || r.To < r.From || r.To-r.From > 1 {
		return Record{}, true, fmt.Errorf("annotation %s: %q is not a record of a raise", AnnotationRaised, v)
	}
	return r, true, nil
}

// Value is the annotation value of r.
func (r Record) Value() string {
	b, _ := json.Marshal(r)
	return string(b)
}
