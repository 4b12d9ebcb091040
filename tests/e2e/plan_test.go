package e2e

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/utils/ptr"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// buildBinary builds spot-rebalancer once for the test.
func buildBinary(t *testing.T) string {
	t.Helper()
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := filepath.Join(t.TempDir(), "spot-rebalancer")
	cmd := exec.Command("go", "build", "-o", bin, "./cmd/spot-rebalancer")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// runBinary runs the binary and returns stdout, stderr and the exit code.
func runBinary(t *testing.T, bin string, args ...string) (string, string, int) {
	t.Helper()
	return runWithEnv(t, nil, bin, args...)
}

// runWithEnv runs a command with extra environment variables (for up to a
// minute) and returns stdout, stderr and the exit code.
func runWithEnv(t *testing.T, env []string, name string, args ...string) (string, string, int) {
	t.Helper()
	ctx, cancel := context.WithTimeout(cluster.Context(t), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Env = append(os.Environ(), env...)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	var exit *exec.ExitError
	switch {
	case err == nil:
		return stdout.String(), stderr.String(), 0
	case errors.As(err, &exit):
		return stdout.String(), stderr.String(), exit.ExitCode()
	default:
		t.Fatalf("running %s %s: %v", name, strings.Join(args, " "), err)
		return "", "", -1
	}
}

// `spot-rebalancer plan` against a real cluster: a Spot node with a
// Deployment behind a PDB and a pod without a controller. The plan names
// the blocker and exits 3; without the blocker it exits 0 and places every
// pod on the on-demand node, one wave per PDB allowance.
func TestPlanCommandAgainstACluster(t *testing.T) {
	c := cluster.Get(t)
	ctx := cluster.Context(t)
	ns := c.Namespace(t, nil)
	owner := cluster.Owner(t)
	spotTaint := corev1.Taint{Key: cluster.CapacityTypeLabel, Value: "SPOT", Effect: corev1.TaintEffectNoSchedule}
	spot := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-a", Taints: []corev1.Taint{spotTaint}})
	onDemand := c.AddNode(t, cluster.Node{Pool: "on-demand"})

	app := map[string]string{"app": "web"}
	podSpec := corev1.PodSpec{
		NodeSelector: map[string]string{cluster.OwnerLabel: owner},
		Tolerations:  []corev1.Toleration{{Key: spotTaint.Key, Operator: corev1.TolerationOpExists}},
		Containers: []corev1.Container{{Name: "web", Image: "registry.example/web:1",
			Resources: corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("100m")}}}},
	}
	// Everything starts on the Spot node: the on-demand node is cordoned
	// while the Deployment is scheduled.
	cordon(t, c, onDemand.Name)
	_, err := c.Client.AppsV1().Deployments(ns).Create(ctx, &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec: appsv1.DeploymentSpec{Replicas: ptr.To[int32](3), Selector: &metav1.LabelSelector{MatchLabels: app},
			Template: corev1.PodTemplateSpec{ObjectMeta: metav1.ObjectMeta{Labels: app}, Spec: podSpec}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = c.Client.PolicyV1().PodDisruptionBudgets(ns).Create(ctx, &policyv1.PodDisruptionBudget{
		ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: ns},
		Spec:       policyv1.PodDisruptionBudgetSpec{MaxUnavailable: ptr.To(intstr.FromInt32(1)), Selector: &metav1.LabelSelector{MatchLabels: app}},
	}, metav1.CreateOptions{})
	if err != nil {
		t.Fatal(err)
	}
	solo := &corev1.Pod{ObjectMeta: metav1.ObjectMeta{Name: "solo", Namespace: ns}, Spec: *podSpec.DeepCopy()}
	solo.Spec.NodeName = spot.Name
	if _, err := c.Client.CoreV1().Pods(ns).Create(ctx, solo, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 60*time.Second, "3 web pods Running and the PDB allowing 1", func(ctx context.Context) (bool, error) {
		pdb, err := c.Client.PolicyV1().PodDisruptionBudgets(ns).Get(ctx, "web", metav1.GetOptions{})
		return err == nil && pdb.Status.ObservedGeneration == pdb.Generation && pdb.Status.CurrentHealthy == 3 && pdb.Status.DisruptionsAllowed == 1, err
	})
	uncordon := []byte(`{"spec":{"unschedulable":false}}`)
	if _, err := c.Client.CoreV1().Nodes().Patch(ctx, onDemand.Name, "application/merge-patch+json", uncordon, metav1.PatchOptions{}); err != nil {
		t.Fatal(err)
	}

	bin := buildBinary(t)
	// Waves first: surges off.
	noSurge := filepath.Join(t.TempDir(), "config.yaml")
	if err := os.WriteFile(noSurge, []byte("apiVersion: spot-rebalancer.io/v1alpha1\nkind: Config\nrebalancer:\n  surge:\n    enabled: false\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	stdout, stderr, code := runBinary(t, bin, "plan", "--kubeconfig", c.Kubeconfig, "--config", noSurge, "--nodes", spot.Name, "-o", "json")
	if code != 3 {
		t.Fatalf("exit code %d, want 3 (blocked)\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	if path := os.Getenv("PLAN_SAMPLE_JSON"); path != "" {
		_ = os.WriteFile(path, []byte(stdout), 0o644)
	}
	var plan planner.Plan
	if err := json.Unmarshal([]byte(stdout), &plan); err != nil {
		t.Fatalf("plan -o json is not JSON: %v\n%s", err, stdout)
	}
	if plan.Complete || len(plan.Nodes) != 1 || plan.Nodes[0].Name != spot.Name {
		t.Fatalf("unexpected plan: %s", stdout)
	}
	node := plan.Nodes[0]
	if len(node.Blockers) != 1 || node.Blockers[0].Name != "solo" || !strings.Contains(node.Blockers[0].Reason, "no controller") {
		t.Errorf("blockers = %+v, want the pod without a controller", node.Blockers)
	}
	waves := map[int]int{}
	for _, p := range node.Pods {
		if p.Action != planner.ActionEvict {
			continue
		}
		waves[p.Wave]++
		if p.Destination != onDemand.Name {
			t.Errorf("pod %s: destination %q, want %s", p.Name, p.Destination, onDemand.Name)
		}
		if len(p.PDBs) != 1 || p.PDBs[0].Name != "web" || p.PDBs[0].DisruptionsAllowed != 1 {
			t.Errorf("pod %s: pdbs = %+v", p.Name, p.PDBs)
		}
	}
	if len(waves) != 3 || waves[1] != 1 || waves[2] != 1 || waves[3] != 1 {
		t.Errorf("waves = %v, want one pod in each of waves 1, 2 and 3 (PDB allows 1)", waves)
	}
	if node.Replacement.Ready {
		t.Errorf("mode node must wait for a replacement node: %+v", node.Replacement)
	}

	// The table for people, without the blocker: exit 0.
	if err := c.Client.CoreV1().Pods(ns).Delete(ctx, "solo", metav1.DeleteOptions{GracePeriodSeconds: ptr.To[int64](0)}); err != nil {
		t.Fatal(err)
	}
	c.WaitFor(t, 30*time.Second, "the blocker to be gone", func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().Pods(ns).Get(ctx, "solo", metav1.GetOptions{})
		return err != nil, nil
	})
	stdout, stderr, code = runBinary(t, bin, "plan", "--kubeconfig", c.Kubeconfig, "--config", noSurge, "--nodes", spot.Name, "--replacement-mode", "capacity")
	if code != 0 {
		t.Fatalf("exit code %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"NODE " + spot.Name, "mode capacity, ready", "web (1)", "Plan can complete: 1 node(s), 3 pod(s) to move in 3 wave(s)."} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}
	if path := os.Getenv("PLAN_SAMPLE_OUT"); path != "" {
		_ = os.WriteFile(path, []byte(stdout), 0o644)
	}

	// With the defaults, the Deployment's pods move by surge.
	stdout, stderr, code = runBinary(t, bin, "plan", "--kubeconfig", c.Kubeconfig, "--nodes", spot.Name, "--replacement-mode", "capacity")
	if code != 0 {
		t.Fatalf("exit code %d, want 0\nstdout: %s\nstderr: %s", code, stdout, stderr)
	}
	for _, want := range []string{"surge", "Deployment web scales up by 3, then back", "Plan can complete: 1 node(s), 3 pod(s) to move, all by surge."} {
		if !strings.Contains(stdout, want) {
			t.Errorf("table lacks %q:\n%s", want, stdout)
		}
	}

	// Bad usage exits 2 and names the problem.
	_, stderr, code = runBinary(t, bin, "plan", "--kubeconfig", c.Kubeconfig, "--nodes", "no-such-node")
	if code != 2 || !strings.Contains(stderr, "no-such-node") {
		t.Errorf("unknown node: exit %d, stderr %q; want 2 naming the node", code, stderr)
	}
}
