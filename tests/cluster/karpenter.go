package cluster

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/tools/cache"
)

// The real Karpenter runs against the local cluster with its kwok cloud
// provider: its nodes are kwok nodes. StartKarpenter starts it once per
// cluster; each test makes its own NodePool (KarpenterPool), tainted so
// that Karpenter launches nodes only for that test's pods.

// Names of the Karpenter test bed.
const (
	// ReadyDelayLabel on a node delays its Ready condition by a duration
	// ("20s"), like an instance that takes time to boot and register.
	ReadyDelayLabel = "stage.spot-rebalancer.io/ready-delay"
	// StartingTaint is on Karpenter's nodes from their creation (a startup
	// taint of the NodePool) until they are Ready, as a kubelet registers
	// its node not-ready: without it pods would run on a node that is not
	// there yet. Karpenter ignores node.kubernetes.io/not-ready in startup
	// taints, hence a key of our own.
	StartingTaint = "stage.spot-rebalancer.io/starting"
	// PoolTaint keeps other tests' pods off a test's NodePool.
	PoolTaint = "e2e.spot-rebalancer.io/karpenter-pool"
	// KarpenterInstanceType is the one instance type the pools launch: 4
	// CPUs, 16Gi.
	KarpenterInstanceType = "c-4x-amd64-linux"
)

var (
	nodePoolGVR  = schema.GroupVersionResource{Group: "karpenter.sh", Version: "v1", Resource: "nodepools"}
	nodeClaimGVR = schema.GroupVersionResource{Group: "karpenter.sh", Version: "v1", Resource: "nodeclaims"}
	nodeClassGVR = schema.GroupVersionResource{Group: "karpenter.kwok.sh", Version: "v1alpha1", Resource: "kwoknodeclasses"}
)

// NodeClaimGVR is the resource of Karpenter's NodeClaims.
func NodeClaimGVR() schema.GroupVersionResource { return nodeClaimGVR }

type karpenter struct {
	once sync.Once
	err  error
}

var karpenters sync.Map // *Cluster -> *karpenter

// StartKarpenter installs Karpenter's CRDs and starts Karpenter (built by
// `make tools`) with a KWOKNodeClass "default", once per cluster; it runs
// until the cluster stops. It also starts what takes StartingTaint off a
// node once it is Ready.
func (c *Cluster) StartKarpenter() error {
	k, _ := karpenters.LoadOrStore(c, &karpenter{})
	kp := k.(*karpenter)
	kp.once.Do(func() { kp.err = c.startKarpenter() })
	return kp.err
}

func (c *Cluster) startKarpenter() error {
	bin := filepath.Join(c.BinDir, "karpenter")
	if _, err := os.Stat(bin); err != nil {
		return fmt.Errorf("karpenter is not built (run `make tools`): %w", err)
	}
	root, err := RepoRoot()
	if err != nil {
		return err
	}
	list := exec.Command("go", "list", "-m", "-f", "{{.Dir}}", "sigs.k8s.io/karpenter")
	list.Dir = filepath.Join(root, "tests", "tools", "karpenter")
	out, err := list.Output()
	if err != nil {
		return fmt.Errorf("finding the karpenter module: %w", err)
	}
	dir := strings.TrimSpace(string(out))
	for _, crds := range []string{"kwok/charts/crds", "kwok/apis/crds"} {
		if out, err := c.Kubectl("apply", "--server-side", "-f", filepath.Join(dir, crds)); err != nil {
			return fmt.Errorf("installing Karpenter's CRDs: %w\n%s", err, out)
		}
	}
	if out, err := c.Kubectl("wait", "--for", "condition=Established", "--timeout", "60s",
		"crd/nodepools.karpenter.sh", "crd/nodeclaims.karpenter.sh", "crd/kwoknodeclasses.karpenter.kwok.sh"); err != nil {
		return fmt.Errorf("waiting for Karpenter's CRDs: %w\n%s", err, out)
	}
	ctx := context.Background()
	if _, err := c.Client.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "karpenter"}}, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return err
	}
	class := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "karpenter.kwok.sh/v1alpha1", "kind": "KWOKNodeClass", "metadata": map[string]any{"name": "default"}}}
	if _, err := dyn.Resource(nodeClassGVR).Create(ctx, class, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return fmt.Errorf("creating the KWOKNodeClass: %w", err)
	}
	metricsPort, err := FreePort()
	if err != nil {
		return err
	}
	healthPort, err := FreePort()
	if err != nil {
		return err
	}
	logFile, err := os.Create(filepath.Join(c.WorkDir, "karpenter.log"))
	if err != nil {
		return err
	}
	cmd := exec.Command(bin)
	cmd.Env = append(os.Environ(), "KUBECONFIG="+c.Kubeconfig, "SYSTEM_NAMESPACE=karpenter", "DISABLE_LEADER_ELECTION=true",
		"METRICS_PORT="+strconv.Itoa(metricsPort), "HEALTH_PROBE_PORT="+strconv.Itoa(healthPort), "LOG_LEVEL=info")
	cmd.Stdout, cmd.Stderr = logFile, logFile
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("starting karpenter: %w", err)
	}
	// The cluster's teardown kills every process with a pid file here:
	// outside kwokctl's own directory, which its delete removes first.
	pids := filepath.Join(c.WorkDir, "pids")
	if err := os.MkdirAll(pids, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(pids, "karpenter.pid"), []byte(strconv.Itoa(cmd.Process.Pid)), 0o600); err != nil {
		return err
	}
	go func() { _ = cmd.Wait() }()
	if err := WaitFor(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
		return probe(ctx, fmt.Sprintf("http://127.0.0.1:%d/healthz", healthPort)), nil
	}); err != nil {
		return fmt.Errorf("karpenter did not become healthy (log in %s): %w", logFile.Name(), err)
	}
	go c.removeStartingTaints()
	return nil
}

// removeStartingTaints takes StartingTaint off each node once it is Ready,
// as a kubelet's node stops being not-ready; it runs until the process
// ends.
func (c *Cluster) removeStartingTaints() {
	factory := informers.NewSharedInformerFactory(c.Client, 0)
	nodes := factory.Core().V1().Nodes().Informer()
	check := func(obj any) {
		n, ok := obj.(*corev1.Node)
		if !ok || !NodeIsReady(n) {
			return
		}
		for i, t := range n.Spec.Taints {
			if t.Key != StartingTaint {
				continue
			}
			// A JSON patch that tests the taint is still where it was read.
			patch := fmt.Sprintf(`[{"op":"test","path":"/spec/taints/%d/key","value":%q},{"op":"remove","path":"/spec/taints/%d"}]`, i, StartingTaint, i)
			_, err := c.Client.CoreV1().Nodes().Patch(context.Background(), n.Name, types.JSONPatchType, []byte(patch), metav1.PatchOptions{})
			if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsInvalid(err) {
				fmt.Fprintf(os.Stderr, "e2e: removing the starting taint of node %s: %v\n", n.Name, err)
			}
			return
		}
	}
	_, _ = nodes.AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc:    check,
		UpdateFunc: func(_, obj any) { check(obj) },
	})
	factory.Start(make(chan struct{}))
}

// KarpenterPool is a NodePool of the test: its nodes carry label
// PoolTaint=name (and the pool's own karpenter.sh/nodepool), its taint
// PoolTaint=name:NoSchedule keeps all but the test's pods off, and they
// become Ready readyDelay after launch. Spot only, one instance type,
// no consolidation (the test decides when a node goes). It is deleted
// when the test ends.
func (c *Cluster) KarpenterPool(t testing.TB, name string, readyDelay time.Duration) {
	t.Helper()
	remove, err := c.CreateKarpenterPool(Context(t), name, Owner(t), readyDelay)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := remove(); err != nil {
			t.Error(err)
		}
	})
}

// CreateKarpenterPool starts Karpenter if it is not running and creates
// the NodePool KarpenterPool describes, its nodes labelled OwnerLabel=owner.
// remove deletes it and waits for Karpenter to delete its NodeClaims.
func (c *Cluster) CreateKarpenterPool(ctx context.Context, name, owner string, readyDelay time.Duration) (remove func() error, err error) {
	if err := c.StartKarpenter(); err != nil {
		return nil, err
	}
	dyn, err := dynamic.NewForConfig(c.Config)
	if err != nil {
		return nil, err
	}
	pool := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "karpenter.sh/v1", "kind": "NodePool", "metadata": map[string]any{"name": name},
		"spec": map[string]any{
			"template": map[string]any{
				"metadata": map[string]any{"labels": map[string]any{
					PoolTaint: name, ReadyDelayLabel: readyDelay.String(), OwnerLabel: owner}},
				"spec": map[string]any{
					"nodeClassRef": map[string]any{"group": "karpenter.kwok.sh", "kind": "KWOKNodeClass", "name": "default"},
					"requirements": []any{
						map[string]any{"key": "node.kubernetes.io/instance-type", "operator": "In", "values": []any{KarpenterInstanceType}},
						map[string]any{"key": "karpenter.sh/capacity-type", "operator": "In", "values": []any{"spot"}},
					},
					"taints":        []any{map[string]any{"key": PoolTaint, "value": name, "effect": "NoSchedule"}},
					"startupTaints": []any{map[string]any{"key": StartingTaint, "effect": "NoSchedule"}},
					"expireAfter":   "Never",
				},
			},
			"disruption": map[string]any{"consolidationPolicy": "WhenEmpty", "consolidateAfter": "Never"},
		},
	}}
	if _, err := dyn.Resource(nodePoolGVR).Create(ctx, pool, metav1.CreateOptions{}); err != nil {
		return nil, fmt.Errorf("creating NodePool %s: %w", name, err)
	}
	return func() error {
		ctx := context.Background()
		// Deleting the pool makes Karpenter delete its NodeClaims and nodes.
		if err := dyn.Resource(nodePoolGVR).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting NodePool %s: %w", name, err)
		}
		err := WaitFor(ctx, 60*time.Second, func(ctx context.Context) (bool, error) {
			claims, err := dyn.Resource(nodeClaimGVR).List(ctx, metav1.ListOptions{LabelSelector: "karpenter.sh/nodepool=" + name})
			return err == nil && len(claims.Items) == 0, err
		})
		if err != nil {
			return fmt.Errorf("waiting for the NodeClaims of pool %s to go: %w", name, err)
		}
		return nil
	}, nil
}

// PoolScheduling is what a pod needs to run on the test's NodePool name:
// its node selector and the toleration of the pool's taint.
func PoolScheduling(name string) (map[string]string, []corev1.Toleration) {
	return map[string]string{PoolTaint: name}, []corev1.Toleration{{Key: PoolTaint, Operator: corev1.TolerationOpEqual, Value: name, Effect: corev1.TaintEffectNoSchedule}}
}

// Kubectl runs bin/kubectl against the cluster.
func (c *Cluster) Kubectl(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kubectl"), append([]string{"--kubeconfig", c.Kubeconfig}, args...)...)
	return cmd.CombinedOutput()
}
