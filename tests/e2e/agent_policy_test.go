package e2e

import (
	"context"
	"fmt"
	"strings"
	"testing"
	"time"

	authenticationv1 "k8s.io/api/authentication/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// checkAgentOwnNode proves, with a real token bound to an agent pod on node
// a, that the chart's policy lets the agent signal a and nothing else: not
// node b, and on a nothing but its Spot conditions and termination time.
// The chart must be installed in ns as release spot-rebalancer.
func checkAgentOwnNode(t *testing.T, c *cluster.Cluster, ns string) {
	ctx := cluster.Context(t)
	a := c.AddNode(t, cluster.Node{Spot: true, Pool: "agent-own"})
	b := c.AddNode(t, cluster.Node{Spot: true, Pool: "agent-own"})
	const sa = "spot-rebalancer-agent"
	pod, err := c.Client.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: "agent-on-" + a.Name, Namespace: ns},
		Spec: corev1.PodSpec{ServiceAccountName: sa, NodeName: a.Name, Tolerations: []corev1.Toleration{{Operator: corev1.TolerationOpExists}},
			Containers: []corev1.Container{{Name: "agent", Image: "registry.example/agent:1"}}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	token, err := c.Client.CoreV1().ServiceAccounts(ns).CreateToken(ctx, sa, &authenticationv1.TokenRequest{Spec: authenticationv1.TokenRequestSpec{
		ExpirationSeconds: ptr.To[int64](600),
		BoundObjectRef:    &authenticationv1.BoundObjectReference{Kind: "Pod", APIVersion: "v1", Name: pod.Name, UID: pod.UID},
	}}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	cfg := rest.AnonymousClientConfig(c.Config)
	cfg.BearerToken = token.Status.Token
	agent, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	w := signals.Writer{Kube: agent, Clock: clock.RealClock{}}

	// The policy is loaded a moment after it is created: until then a
	// write to b may go through, so each try writes something new.
	tries := 0
	c.WaitFor(t, 30*time.Second, "the policy to refuse the agent node "+b.Name, func(ctx context.Context) (bool, error) {
		tries++
		patch := fmt.Sprintf(`{"status":{"conditions":[{"type":"SpotRebalanceRecommended","status":"True","reason":"e2e","message":"try %d"}]}}`, tries)
		_, err := agent.CoreV1().Nodes().PatchStatus(ctx, b.Name, []byte(patch))
		return refused(err, "the agent may only change the node it runs on"), nil
	})
	if _, err := w.Interruption(ctx, b.Name, time.Now().Add(2*time.Minute), "SpotInterruptionNotice", "e2e"); !refused(err, "the agent may only change the node it runs on") {
		t.Errorf("the agent could interrupt node %s it does not run on: %v", b.Name, err)
	}
	if _, err := w.Rebalance(ctx, a.Name, "SpotRebalanceRecommendation", "e2e"); err != nil {
		t.Errorf("the agent may not signal its own node: %v", err)
	}
	if _, err := w.Interruption(ctx, a.Name, time.Now().Add(2*time.Minute), "SpotInterruptionNotice", "e2e"); err != nil {
		t.Errorf("the agent may not write an interruption on its own node: %v", err)
	}
	n, err := c.Client.CoreV1().Nodes().Get(ctx, a.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if sig, ok := signals.FromNode(n, time.Now()); !ok || sig.Kind != signals.InterruptionNotice {
		t.Errorf("node %s after the agent's writes: %+v, %v; want an interruption notice", a.Name, sig, ok)
	}

	for _, tc := range []struct {
		name, subresource, patch, refusal string
	}{
		{"label its own node", "", `{"metadata":{"labels":{"node-role.kubernetes.io/control-plane":""}}}`, "may not change a node's labels"},
		{"taint its own node", "", `{"spec":{"taints":[{"key":"evict","effect":"NoExecute"}]}}`, "may not change a node's spec"},
		{"cordon its own node", "", `{"spec":{"unschedulable":true}}`, "may not change a node's spec"},
		{"write the rebalancer's state on its own node", "", `{"metadata":{"annotations":{"spot-rebalancer.io/state":"drained"}}}`, "may change no annotation but"},
		{"mark its own node NotReady", "status", `{"status":{"conditions":[{"type":"Ready","status":"False","reason":"x","message":"x"}]}}`, "may change no condition but"},
		{"change its own node's capacity", "status", `{"status":{"capacity":{"pods":"500"}}}`, "may change nothing in a node's status"},
		{"annotate another node", "", `{"metadata":{"annotations":{"spot-rebalancer.io/termination-time":"2026-01-01T00:00:00Z"}}}`, "may only change the node it runs on"},
	} {
		node := a.Name
		if strings.Contains(tc.name, "another") {
			node = b.Name
		}
		var sub []string
		if tc.subresource != "" {
			sub = []string{tc.subresource}
		}
		_, err := agent.CoreV1().Nodes().Patch(ctx, node, types.StrategicMergePatchType, []byte(tc.patch), metav1.PatchOptions{}, sub...)
		if !refused(err, tc.refusal) {
			t.Errorf("the agent could %s: err %v, want a refusal saying %q", tc.name, err, tc.refusal)
		}
	}
}

// refused tells whether err is the policy's refusal with that message.
func refused(err error, message string) bool {
	return err != nil && (apierrors.IsForbidden(err) || apierrors.IsInvalid(err)) && strings.Contains(err.Error(), message)
}
