package asg_test

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg/asgtest"
)

func TestOfRaiseTerminate(t *testing.T) {
	fake := asgtest.New(map[string]*asgtest.Group{"spot-a": {Desired: 3, Max: 4, Instances: []string{"i-a", "i-b", "i-c"}}})
	// Throttling is retried by the SDK's standard retryer.
	fake.Throttle = 2
	api := fake.Client(t)
	ctx := t.Context()

	g, err := asg.Of(ctx, api, "i-b")
	if err != nil {
		t.Fatal(err)
	}
	if diff := cmp.Diff(&asg.Group{Name: "spot-a", Desired: 3, Max: 4, Lifecycle: "InService"}, g); diff != "" {
		t.Errorf("group (-want +got):\n%s", diff)
	}
	if g, err := asg.Of(ctx, api, "i-elsewhere"); err != nil || g != nil {
		t.Errorf("an instance in no group: %v, %v; want nil, nil", g, err)
	}
	if err := asg.Raise(ctx, api, "spot-a", 4); err != nil {
		t.Fatal(err)
	}
	if err := asg.Raise(ctx, api, "spot-a", 5); err == nil {
		t.Error("raising past MaxSize: want the service's error")
	}
	if err := asg.Terminate(ctx, api, "i-b"); err != nil {
		t.Fatal(err)
	}
	if got := fake.Group("spot-a"); got.Desired != 3 || len(got.Instances) != 2 {
		t.Errorf("after terminate: desired %d, instances %v; want 3 and two", got.Desired, got.Instances)
	}
	want := []string{
		"DescribeAutoScalingInstances (throttled)", "DescribeAutoScalingInstances (throttled)",
		"DescribeAutoScalingInstances i-b", "DescribeAutoScalingGroups spot-a",
		"DescribeAutoScalingInstances i-elsewhere",
		"SetDesiredCapacity spot-a 4", "SetDesiredCapacity spot-a 5",
		"TerminateInstanceInAutoScalingGroup i-b decrement=true",
	}
	if diff := cmp.Diff(want, fake.Calls()); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}

func TestRecordRoundTrips(t *testing.T) {
	r := asg.Record{Group: "spot-a", From: 3, To: 4}
	got, ok, err := asg.RecordOf(map[string]string{asg.AnnotationRaised: r.Value()})
	if !ok || err != nil || got != r || !got.Raised() {
		t.Errorf("got %+v, %v, %v", got, ok, err)
	}
	if (asg.Record{Group: "spot-a", From: 3, To: 4, Pending: true}).Raised() {
		t.Error("a pending record must not count as a raise")
	}
	if _, ok, _ := asg.RecordOf(nil); ok {
		t.Error("no annotation: want ok false")
	}
}
