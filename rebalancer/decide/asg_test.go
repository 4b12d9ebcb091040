package decide

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func TestRaiseTheGroupOnce(t *testing.T) {
	signalled := now.Add(-time.Minute)
	withASG := func(c *cluster) *cluster {
		c.config.Replacement.Provision = config.ProvisionASG
		return c
	}
	group := &asg.Group{Name: "spot-a", Desired: 3, Max: 5}
	tests := map[string]struct {
		cluster func() *cluster
		group   *asg.Group
		want    *asg.Record
		wantsIt bool
	}{
		"a new signal raises the node's group by one": {
			cluster: func() *cluster { return withASG(newCluster().rebalance(signalled).deploy("web", 2, 1)) },
			group:   group, wantsIt: true,
			want: &asg.Record{Group: "spot-a", From: 3, To: 4},
		},
		"at MaxSize it records that nothing was raised": {
			cluster: func() *cluster { return withASG(newCluster().rebalance(signalled).deploy("web", 2, 1)) },
			group:   &asg.Group{Name: "spot-a", Desired: 5, Max: 5}, wantsIt: true,
			want: &asg.Record{Group: "spot-a", From: 5, To: 5},
		},
		"an instance in no group is recorded as such": {
			cluster: func() *cluster { return withASG(newCluster().rebalance(signalled).deploy("web", 2, 1)) },
			wantsIt: true,
			want:    &asg.Record{},
		},
		"recorded once: never raised again (a restart reads the record)": {
			cluster: func() *cluster {
				c := withASG(newCluster().rebalance(signalled).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).deploy("web", 2, 1))
				c.risky.Annotations[asg.AnnotationRaised] = asg.Record{Group: "spot-a", From: 3, To: 4}.Value()
				return c
			},
			group: group,
		},
		"an interruption never waits, so it raises nothing": {
			cluster: func() *cluster {
				return withASG(newCluster().interrupt(signalled, now.Add(time.Minute).Format(time.RFC3339)).state(signals.StateAtRisk, signals.ReasonSignalled))
			},
			group: group,
		},
		"provision reservations does not read the group": {
			cluster: func() *cluster { return newCluster().rebalance(signalled).deploy("web", 2, 1) },
			group:   group,
		},
		"a node that starts draining at once asks for nothing": {
			cluster: func() *cluster {
				return withASG(newCluster().rebalance(signalled).state(signals.StateAwaitingReplacement, signals.ReasonAwaitingReplacement).
					deploy("web", 2, 1).replacement("new", now))
			},
			group: group, wantsIt: true,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			in := tc.cluster().input(t, now)
			if got := WantsGroup(in); got != tc.wantsIt {
				t.Errorf("WantsGroup = %v, want %v", got, tc.wantsIt)
			}
			in.Group = tc.group
			if diff := cmp.Diff(tc.want, Node(in).Raise); diff != "" {
				t.Errorf("raise (-want +got):\n%s", diff)
			}
		})
	}
}

func TestRetireThroughTheGroup(t *testing.T) {
	c := newCluster().rebalance(now.Add(-time.Minute)).state(signals.StateDrained, signals.ReasonDrained)
	in := c.input(t, now)
	in.Retirement = &Retirement{Instance: "i-0abc", Group: "spot-a"}
	d := Node(in)
	if d.Terminate != "i-0abc" || d.Retire != nil {
		t.Errorf("terminate %q, retire %v; want the instance terminated in its group", d.Terminate, d.Retire)
	}
	if diff := cmp.Diff(outcome{State: signals.StateRetired, Reason: signals.ReasonRetired, Taint: true, Cordon: true}, summarize(d)); diff != "" {
		t.Errorf("decision (-want +got):\n%s", diff)
	}
	in.Retirement.Terminating = true
	if d := Node(in); d.Terminate != "" || d.Transition == nil || d.Transition.State != signals.StateRetired {
		t.Errorf("an instance the group terminates already: terminate %q, transition %+v; want retired without a second call", d.Terminate, d.Transition)
	}
	in.Retirement.Terminating = false
	in.Retirement.PodsLeft = []string{"shop/web-h-0"}
	if d := Node(in); d.Terminate != "" {
		t.Errorf("terminated %s with pods left", d.Terminate)
	}
}

func TestRecordOf(t *testing.T) {
	for value, wantErr := range map[string]bool{
		`{"group":"g","from":3,"to":4}`: false,
		`{"group":"g","from":5,"to":5}`: false,
		`{}`:                            false,
		`{"group":"g","from":3,"to":9}`: true, // never more than one
		`{"group":"g","from":3,"to":2}`: true,
		`raised`:                        true,
	} {
		_, ok, err := asg.RecordOf(map[string]string{asg.AnnotationRaised: value})
		if !ok || (err != nil) != wantErr {
			t.Errorf("%s: ok %v, err %v; want an error: %v", value, ok, err, wantErr)
		}
	}
}
