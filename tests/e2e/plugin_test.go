package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/tools/clientcmd"
	clientcmdapi "k8s.io/client-go/tools/clientcmd/api"
	"sigs.k8s.io/yaml"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// kubectl runs bin/kubectl with dir first on its PATH (where it finds
// plugins) and returns stdout, stderr and the exit code.
func kubectl(t *testing.T, c *cluster.Cluster, dir string, args ...string) (string, string, int) {
	t.Helper()
	return runWithEnv(t, []string{"PATH=" + dir + string(os.PathListSeparator) + os.Getenv("PATH")}, filepath.Join(c.BinDir, "kubectl"), args...)
}

// The binary installed as kubectl-spot_rebalancer is a kubectl plugin:
// `kubectl spot-rebalancer plan NODE --context X -o yaml` plans the node in
// the cluster of context X (the current context points nowhere), and the
// plugin answers --version.
func TestKubectlPlugin(t *testing.T) {
	c := cluster.Get(t)
	node := c.AddNode(t, cluster.Node{Spot: true, Pool: "spot-plugin"})
	dir := t.TempDir()
	data, err := os.ReadFile(buildBinary(t))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "kubectl-spot_rebalancer"), data, 0o755); err != nil {
		t.Fatal(err)
	}

	// A kubeconfig whose current context is another cluster, unreachable;
	// the test's cluster is context "e2e".
	kc, err := clientcmd.LoadFromFile(c.Kubeconfig)
	if err != nil {
		t.Fatal(err)
	}
	current := kc.Contexts[kc.CurrentContext]
	kc.Contexts = map[string]*clientcmdapi.Context{"e2e": current,
		"elsewhere": {Cluster: "elsewhere", AuthInfo: current.AuthInfo}}
	kc.Clusters["elsewhere"] = &clientcmdapi.Cluster{Server: "https://127.0.0.1:1"}
	kc.CurrentContext = "elsewhere"
	kubeconfig := filepath.Join(dir, "kubeconfig")
	if err := clientcmd.WriteToFile(*kc, kubeconfig); err != nil {
		t.Fatal(err)
	}

	out, stderr, code := kubectl(t, c, dir, "spot-rebalancer", "plan", node.Name, "--kubeconfig", kubeconfig, "--context", "e2e", "-o", "yaml")
	if code != 0 && code != 3 { // 3: the plan is blocked
		t.Fatalf("kubectl spot-rebalancer plan: exit %d\n%s%s", code, out, stderr)
	}
	var plan planner.Plan
	if err := yaml.UnmarshalStrict([]byte(out), &plan); err != nil {
		t.Fatalf("the YAML plan does not decode: %v\n%s", err, out)
	}
	if len(plan.Nodes) != 1 || plan.Nodes[0].Name != node.Name || plan.Nodes[0].Pool != "spot-plugin" {
		t.Errorf("plan of %s in context e2e: %+v", node.Name, plan.Nodes)
	}

	// Without --context it asks the current context's cluster, which is
	// not there: a runtime failure, not a plan of the wrong cluster.
	if _, stderr, code := kubectl(t, c, dir, "spot-rebalancer", "plan", node.Name, "--kubeconfig", kubeconfig, "--request-timeout", "5s"); code != 1 || !strings.Contains(stderr, "127.0.0.1:1") {
		t.Errorf("plan in the current (unreachable) context: exit %d, want 1 naming it\n%s", code, stderr)
	}
	if out, _, code := kubectl(t, c, dir, "spot-rebalancer", "plan", "--version"); code != 0 || !strings.HasPrefix(out, "spot-rebalancer ") {
		t.Errorf("kubectl spot-rebalancer plan --version: exit %d, %q", code, out)
	}
	if out, _, _ := kubectl(t, c, dir, "spot-rebalancer", "--help"); !strings.Contains(out, "kubectl spot-rebalancer plan") {
		t.Errorf("the plugin's help does not name it as kubectl shows it:\n%s", out)
	}
}
