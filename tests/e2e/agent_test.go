package e2e

import (
	"context"
	"fmt"
	"net/http"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"

	"github.com/spot-rebalancer/spot-rebalancer/agent"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// startAEMM runs ec2-metadata-mock (a real IMDS simulator) for one
// instance and returns its endpoint and when it started.
func startAEMM(t *testing.T, c *cluster.Cluster, args ...string) (string, time.Time) {
	t.Helper()
	port := freePort(t)
	started := time.Now()
	cmd := exec.Command(filepath.Join(c.BinDir, "ec2-metadata-mock"), append([]string{"spot", "-p", strconv.Itoa(port)}, args...)...)
	cmd.Dir = t.TempDir()
	cmd.Env = []string{"HOME=" + cmd.Dir}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = cmd.Process.Kill(); _ = cmd.Wait() })
	endpoint := fmt.Sprintf("http://127.0.0.1:%d", port)
	c.WaitFor(t, 10*time.Second, "ec2-metadata-mock to answer", func(ctx context.Context) (bool, error) {
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, endpoint+"/latest/meta-data/instance-id", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, nil
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, nil
	})
	return endpoint, started
}

func condition(n *corev1.Node, t corev1.NodeConditionType) *corev1.NodeCondition {
	for i := range n.Status.Conditions {
		if n.Status.Conditions[i].Type == t && n.Status.Conditions[i].Status == corev1.ConditionTrue {
			return &n.Status.Conditions[i]
		}
	}
	return nil
}

// The agent against ec2-metadata-mock: the rebalance recommendation and
// then the interruption notice appear on the Node within 5 s of the mock's
// trigger times, and neither is rewritten while the mock keeps answering
// with a new termination time on every request.
func TestAgentWritesSignalsFromInstanceMetadata(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	node := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-j"})
	const itnDelay = 4 * time.Second
	endpoint, started := startAEMM(t, c, "-d", strconv.Itoa(int(itnDelay.Seconds())), "--rebalance-delay-sec", "0")

	metrics := agent.NewMetrics(prometheus.NewRegistry())
	a := &agent.Agent{Node: node.Name, Kube: c.Client, IMDS: agent.NewMetadataClient(endpoint),
		Interval: 2 * time.Second, Clock: clock.RealClock{}, Metrics: metrics}
	runCtx, stop := context.WithCancel(logr.NewContext(ctx, cluster.Logger()))
	done := make(chan error, 1)
	go func() { done <- a.Run(runCtx) }()
	t.Cleanup(func() { stop(); <-done })

	get := func(ctx context.Context) (*corev1.Node, error) {
		return c.Client.CoreV1().Nodes().Get(ctx, node.Name, metav1.GetOptions{})
	}
	c.WaitFor(t, 5*time.Second+time.Until(started), "SpotRebalanceRecommended within 5 s of the mock's start", func(ctx context.Context) (bool, error) {
		n, err := get(ctx)
		return err == nil && condition(n, signals.ConditionRebalance) != nil, err
	})
	c.WaitFor(t, time.Until(started.Add(itnDelay+5*time.Second)), "SpotInterruptionNotice within 5 s of the mock's trigger", func(ctx context.Context) (bool, error) {
		n, err := get(ctx)
		return err == nil && condition(n, signals.ConditionInterruption) != nil && n.Annotations[signals.AnnotationTerminationTime] != "", err
	})
	first, err := get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	termination := first.Annotations[signals.AnnotationTerminationTime]
	if _, err := time.Parse(time.RFC3339, termination); err != nil {
		t.Errorf("termination time %q is not RFC 3339: %v", termination, err)
	}
	sig, ok := signals.FromNode(first, time.Now())
	if !ok || sig.Kind != signals.InterruptionNotice {
		t.Errorf("the rebalancer reads %+v from the node, want an interruption notice", sig)
	}

	// Three more polls: the mock answers a new time each time.
	polls := testutil.ToFloat64(metrics.Polls.WithLabelValues("ok"))
	c.WaitFor(t, 20*time.Second, "three more polls", func(context.Context) (bool, error) {
		return testutil.ToFloat64(metrics.Polls.WithLabelValues("ok")) >= polls+3, nil
	})
	again, err := get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Annotations[signals.AnnotationTerminationTime]; got != termination {
		t.Errorf("termination time rewritten from %s to %s", termination, got)
	}
	for _, ct := range []corev1.NodeConditionType{signals.ConditionRebalance, signals.ConditionInterruption} {
		before, after := condition(first, ct), condition(again, ct)
		if after == nil || !after.LastTransitionTime.Equal(&before.LastTransitionTime) || after.Message != before.Message {
			t.Errorf("condition %s rewritten: %+v -> %+v", ct, before, after)
		}
	}
	for _, ct := range []string{string(signals.ConditionRebalance), string(signals.ConditionInterruption)} {
		if n := testutil.ToFloat64(metrics.Written.WithLabelValues(ct)); n != 1 {
			t.Errorf("%s written %v times, want once", ct, n)
		}
	}
}
