package decide

import (
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/reserve"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func TestRetire(t *testing.T) {
	signalled := now.Add(-time.Minute)
	claim := &NodeClaim{Name: "spot-abc12", UID: "claim-uid"}
	drained := func(r signals.Reason) *cluster {
		return newCluster().rebalance(signalled).state(signals.StateDrained, r)
	}
	tests := map[string]struct {
		cluster    func() *cluster
		retirement *Retirement
		config     func(*config.Rebalancer)
		want       outcome
		wantRetire *NodeClaim
		// wantTerminate is the instance terminated in its group.
		wantTerminate string
	}{
		"a drained Karpenter node is given back through its NodeClaim": {
			cluster:    func() *cluster { return drained(signals.ReasonDrained) },
			retirement: &Retirement{NodeClaim: claim},
			want:       outcome{State: signals.StateRetired, Reason: signals.ReasonRetired, Taint: true, Cordon: true},
			wantRetire: claim,
		},
		"never with pods left: it waits for them": {
			cluster:    func() *cluster { return drained(signals.ReasonDrained) },
			retirement: &Retirement{NodeClaim: claim, PodsLeft: []string{"shop/web-h-0"}},
			want:       outcome{State: signals.StateDrained, Reason: signals.ReasonPodsLeft, Taint: true, Cordon: true, RequeueIn: 30 * time.Second},
		},
		"once they are gone it is retired": {
			cluster:    func() *cluster { return drained(signals.ReasonPodsLeft) },
			retirement: &Retirement{NodeClaim: claim},
			want:       outcome{State: signals.StateRetired, Reason: signals.ReasonRetired, Taint: true, Cordon: true},
			wantRetire: claim,
		},
		"a node no NodeClaim names stays cordoned, and says so": {
			cluster:    func() *cluster { return drained(signals.ReasonDrained) },
			retirement: &Retirement{},
			want:       outcome{State: signals.StateDrained, Reason: signals.ReasonNotRetired, Taint: true, Cordon: true},
		},
		"once said, it is not looked at again": {
			cluster:    func() *cluster { return drained(signals.ReasonNotRetired) },
			retirement: &Retirement{NodeClaim: claim},
		},
		"retire none gives nothing back": {
			cluster:    func() *cluster { return drained(signals.ReasonDrained) },
			retirement: &Retirement{NodeClaim: claim},
			config:     func(c *config.Rebalancer) { c.Retire = config.RetireNone },
		},
		// EC2 reclaims it anyway; given back first it leaves the cluster
		// once empty, and a group raised for it at the notice shrinks again
		// instead of replacing the reclaimed instance too.
		"an interrupted node, drained, is given back before EC2 reclaims it": {
			cluster: func() *cluster {
				return newCluster().interrupt(signalled, now.Add(time.Minute).Format(time.RFC3339)).state(signals.StateDrained, signals.ReasonDrained)
			},
			retirement: &Retirement{NodeClaim: claim},
			want:       outcome{State: signals.StateRetired, Reason: signals.ReasonRetired, Taint: true, Cordon: true},
			wantRetire: claim,
		},
		"an interrupted node drained at its deadline is given back once the deleted pods are gone": {
			cluster: func() *cluster {
				return newCluster().interrupt(signalled, now.Add(time.Minute).Format(time.RFC3339)).state(signals.StateDrained, signals.ReasonDeadline)
			},
			retirement: &Retirement{NodeClaim: claim, PodsLeft: []string{"shop/web-h-0"}},
			want:       outcome{State: signals.StateDrained, Reason: signals.ReasonPodsLeft, Taint: true, Cordon: true, RequeueIn: 30 * time.Second},
		},
		"an interrupted node in the group raised for it is terminated with a decrement": {
			cluster: func() *cluster {
				return newCluster().interrupt(signalled, now.Add(time.Minute).Format(time.RFC3339)).state(signals.StateDrained, signals.ReasonDeadline)
			},
			retirement:    &Retirement{Instance: "i-0abc", Group: "spot-a"},
			want:          outcome{State: signals.StateRetired, Reason: signals.ReasonRetired, Taint: true, Cordon: true},
			wantTerminate: "i-0abc",
		},
		"drained at a deadline: not retired": {
			cluster:    func() *cluster { return drained(signals.ReasonDeadline) },
			retirement: &Retirement{NodeClaim: claim},
		},
		"a signal gone after the drain: not retired": {
			cluster: func() *cluster {
				c := drained(signals.ReasonDrained)
				c.risky.Status.Conditions = c.risky.Status.Conditions[:1]
				return c
			},
			retirement: &Retirement{NodeClaim: claim},
		},
		"a retired node is done": {
			cluster: func() *cluster {
				return newCluster().rebalance(signalled).state(signals.StateRetired, signals.ReasonRetired)
			},
			retirement: &Retirement{NodeClaim: claim},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			c := tc.cluster()
			if tc.config != nil {
				tc.config(&c.config)
			}
			in := c.input(t, now)
			in.Retirement = tc.retirement
			d := Node(in)
			if diff := cmp.Diff(tc.want, summarize(d)); diff != "" {
				t.Errorf("decision (-want +got):\n%s", diff)
			}
			if diff := cmp.Diff(tc.wantRetire, d.Retire); diff != "" {
				t.Errorf("retire (-want +got):\n%s", diff)
			}
			if d.Terminate != tc.wantTerminate {
				t.Errorf("terminate %q, want %q", d.Terminate, tc.wantTerminate)
			}
		})
	}
}

func TestPodsLeft(t *testing.T) {
	pod := func(name string, mods ...func(*corev1.Pod)) *corev1.Pod {
		p := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: "shop", Annotations: map[string]string{}},
			Status: corev1.PodStatus{Phase: corev1.PodRunning}}
		for _, m := range mods {
			m(p)
		}
		return p
	}
	daemon := func(p *corev1.Pod) {
		p.OwnerReferences = []metav1.OwnerReference{{Kind: "DaemonSet", Name: "agent", Controller: ptr.To(true)}}
	}
	mirror := func(p *corev1.Pod) { p.Annotations[corev1.MirrorPodAnnotationKey] = "x" }
	done := func(p *corev1.Pod) { p.Status.Phase = corev1.PodSucceeded }
	terminating := func(p *corev1.Pod) { p.DeletionTimestamp = ptr.To(metav1.NewTime(now)) }
	reservation := reserve.For("other", []*corev1.Pod{pod("x")}, reserve.Options{Namespace: componentsNS})[0]
	forged := reservation.DeepCopy()
	forged.Namespace = "shop"
	got := PodsLeft([]*corev1.Pod{pod("agent", daemon), pod("static", mirror), pod("job", done), pod("web", terminating), pod("solo"), reservation, forged}, componentsNS)
	if diff := cmp.Diff([]string{"shop/web", "shop/solo", "shop/" + forged.Name}, got); diff != "" {
		t.Errorf("pods left (-want +got):\n%s", diff)
	}
}
