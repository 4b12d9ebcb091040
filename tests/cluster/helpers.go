package cluster

import (
	"context"
	"fmt"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/util/wait"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// Labels the helpers put on nodes, as EKS managed node groups do.
const (
	CapacityTypeLabel = "eks.amazonaws.com/capacityType"
	PoolLabel         = "eks.amazonaws.com/nodegroup"
	// OwnerLabel names the test that made a node, so tests can pin their
	// pods to their own nodes.
	OwnerLabel = "e2e.spot-rebalancer.io/owner"
)

// Node describes a kwok node to add.
type Node struct {
	Name       string // default: generated from the pool
	Spot       bool
	Pool       string
	Zone       string // default: us-east-1a
	InstanceID string // default: generated
	Taints     []corev1.Taint
	Labels     map[string]string
	CPU        string // allocatable; default 4
	Memory     string // default 16Gi
	Pods       string // default 110
}

// NodeObject is the Node AddNode creates: kwok manages it, and it carries
// EKS labels for its capacity type and pool and owner in OwnerLabel.
func NodeObject(n Node, owner string) *corev1.Node {
	if n.Zone == "" {
		n.Zone = "us-east-1a"
	}
	if n.InstanceID == "" {
		n.InstanceID = "i-" + rand.String(17)
	}
	if n.Name == "" {
		n.Name = fmt.Sprintf("%s-%s", nonEmpty(n.Pool, "node"), rand.String(5))
	}
	capacityType := "ON_DEMAND"
	if n.Spot {
		capacityType = "SPOT"
	}
	labels := map[string]string{
		"kubernetes.io/hostname":       n.Name,
		"kubernetes.io/os":             "linux",
		"type":                         "kwok",
		corev1.LabelTopologyZone:       n.Zone,
		corev1.LabelInstanceTypeStable: "m5.xlarge",
		CapacityTypeLabel:              capacityType,
		OwnerLabel:                     owner,
	}
	if n.Pool != "" {
		labels[PoolLabel] = n.Pool
	}
	for k, v := range n.Labels {
		labels[k] = v
	}
	resources := corev1.ResourceList{
		corev1.ResourceCPU:    resource.MustParse(nonEmpty(n.CPU, "4")),
		corev1.ResourceMemory: resource.MustParse(nonEmpty(n.Memory, "16Gi")),
		corev1.ResourcePods:   resource.MustParse(nonEmpty(n.Pods, "110")),
	}
	node := &corev1.Node{
		ObjectMeta: metav1.ObjectMeta{
			Name:        n.Name,
			Labels:      labels,
			Annotations: map[string]string{"kwok.x-k8s.io/node": "fake"},
		},
		Spec: corev1.NodeSpec{
			ProviderID: fmt.Sprintf("aws:///%s/%s", n.Zone, n.InstanceID),
			Taints:     n.Taints,
		},
		Status: corev1.NodeStatus{Capacity: resources, Allocatable: resources},
	}
	return node
}

// AddNode creates a Node that kwok manages and waits until it is Ready. The
// node is deleted when the test ends.
func (c *Cluster) AddNode(t testing.TB, n Node) *corev1.Node {
	t.Helper()
	node := NodeObject(n, Owner(t))
	n.Name = node.Name
	ctx := Context(t)
	created, err := c.Client.CoreV1().Nodes().Create(ctx, node, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("creating node %s: %v", n.Name, err)
	}
	t.Cleanup(func() {
		err := c.Client.CoreV1().Nodes().Delete(context.Background(), n.Name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting node %s: %v", n.Name, err)
		}
	})
	// Ready is not enough: the node lifecycle controller removes its
	// not-ready taint a few seconds later, and until then the scheduler
	// keeps pods off the node.
	c.WaitFor(t, 60*time.Second, "node "+n.Name+" to be Ready and untainted by the node lifecycle controller", func(ctx context.Context) (bool, error) {
		got, err := c.Client.CoreV1().Nodes().Get(ctx, n.Name, metav1.GetOptions{})
		if err != nil {
			return false, err
		}
		created = got
		for _, taint := range got.Spec.Taints {
			if taint.Key == corev1.TaintNodeNotReady || taint.Key == corev1.TaintNodeUnreachable {
				return false, nil
			}
		}
		return NodeIsReady(got), nil
	})
	return created
}

// NodeIsReady tells whether the node's Ready condition is True.
func NodeIsReady(n *corev1.Node) bool {
	for _, c := range n.Status.Conditions {
		if c.Type == corev1.NodeReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// PodIsReady tells whether the pod runs and its Ready condition is True.
func PodIsReady(p *corev1.Pod) bool {
	if p.Status.Phase != corev1.PodRunning || p.DeletionTimestamp != nil {
		return false
	}
	for _, c := range p.Status.Conditions {
		if c.Type == corev1.PodReady {
			return c.Status == corev1.ConditionTrue
		}
	}
	return false
}

// ReadyPods lists the Running and Ready pods of a namespace that match a
// label selector.
func (c *Cluster) ReadyPods(ctx context.Context, namespace, selector string) ([]corev1.Pod, error) {
	list, err := c.Client.CoreV1().Pods(namespace).List(ctx, metav1.ListOptions{LabelSelector: selector})
	if err != nil {
		return nil, err
	}
	var ready []corev1.Pod
	for _, p := range list.Items {
		if PodIsReady(&p) {
			ready = append(ready, p)
		}
	}
	return ready, nil
}

// Namespace creates a namespace for the test, deleted when it ends. Its
// name starts with the test's Owner.
func (c *Cluster) Namespace(t testing.TB, labels map[string]string) string {
	t.Helper()
	name := Owner(t) + "-" + rand.String(3)
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: name, Labels: labels}}
	if _, err := c.Client.CoreV1().Namespaces().Create(Context(t), ns, metav1.CreateOptions{}); err != nil {
		t.Fatalf("creating namespace %s: %v", name, err)
	}
	t.Cleanup(func() {
		err := c.Client.CoreV1().Namespaces().Delete(context.Background(), name, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("deleting namespace %s: %v", name, err)
		}
	})
	// Pods cannot be created before the service account controller has
	// made the namespace's default ServiceAccount.
	c.WaitFor(t, 30*time.Second, "the default ServiceAccount of "+name, func(ctx context.Context) (bool, error) {
		_, err := c.Client.CoreV1().ServiceAccounts(name).Get(ctx, "default", metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			return false, nil
		}
		return err == nil, err
	})
	return name
}

// WaitFor polls cond every 100 ms until it is true, fails the test when it
// returns an error or timeout passes. what completes "timed out waiting
// for ...".
func (c *Cluster) WaitFor(t testing.TB, timeout time.Duration, what string, cond func(ctx context.Context) (bool, error)) {
	t.Helper()
	if err := WaitFor(Context(t), timeout, cond); err != nil {
		t.Fatalf("waiting for %s: %v", what, err)
	}
}

var recordNamespaces sync.Map // testing.TB → string

// RecordsNamespace is the test's namespace for the rebalancer's surge
// records (the controller's own namespace in a real install): one per
// test, so that a rebalancer started again in the test finds the records
// of the one before, and the tests' rebalancers never see each other's.
func (c *Cluster) RecordsNamespace(t testing.TB) string {
	t.Helper()
	if ns, ok := recordNamespaces.Load(t); ok {
		return ns.(string)
	}
	ns := c.Namespace(t, nil)
	recordNamespaces.Store(t, ns)
	t.Cleanup(func() { recordNamespaces.Delete(t) })
	return ns
}

// WaitFor polls cond every 100 ms until it is true, returns its error, or
// timeout passes.
func WaitFor(ctx context.Context, timeout time.Duration, cond func(ctx context.Context) (bool, error)) error {
	return wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, timeout, true, cond)
}

// Context is the test's context: cancelled when the test ends.
func Context(t testing.TB) context.Context {
	return t.Context()
}

var owners sync.Map // testing.TB -> string

// Owner is a DNS-label form of the test's name, unique per run and stable
// within the test, used for its namespace and its nodes' owner label.
func Owner(t testing.TB) string {
	if o, ok := owners.Load(t); ok {
		return o.(string)
	}
	o := owner(t)
	owners.Store(t, o)
	t.Cleanup(func() { owners.Delete(t) })
	return o
}

func owner(t testing.TB) string {
	name := strings.ToLower(t.Name())
	var b strings.Builder
	for _, r := range name {
		if (r >= 'a' && r <= 'z') || (r >= '0' && r <= '9') {
			b.WriteRune(r)
		} else {
			b.WriteRune('-')
		}
	}
	s := strings.Trim(b.String(), "-")
	if len(s) > 40 {
		s = strings.Trim(s[:40], "-")
	}
	return s + "-" + rand.String(4)
}

func nonEmpty(s, def string) string {
	if s == "" {
		return def
	}
	return s
}

// FreePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func FreePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}

// Ready reports whether http://127.0.0.1:port/readyz answers 200 OK: the
// readiness probe of our own components, as a condition for WaitFor.
func Ready(ctx context.Context, port int) bool {
	return probe(ctx, fmt.Sprintf("http://127.0.0.1:%d/readyz", port))
}

// probe tells whether url answers 200 OK.
func probe(ctx context.Context, url string) bool {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return false
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK
}

// Warnings collects the warnings the API server passes back (admission
// warnings included); set it as a rest.Config's WarningHandler.
type Warnings struct {
	mu   sync.Mutex
	msgs []string
}

// HandleWarningHeader implements rest.WarningHandler.
func (w *Warnings) HandleWarningHeader(_ int, _ string, msg string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.msgs = append(w.msgs, msg)
}

// Take returns the warnings collected since the last Take.
func (w *Warnings) Take() []string {
	w.mu.Lock()
	defer w.mu.Unlock()
	m := w.msgs
	w.msgs = nil
	return m
}

// Snapshot reads the cluster as `spot-rebalancer plan` does: straight from
// the API server, in pages.
func (c *Cluster) Snapshot(t testing.TB) *snapshot.Snapshot {
	t.Helper()
	reader, err := client.New(c.Config, client.Options{})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := snapshot.Read(Context(t), reader, time.Now(), 500, c.RecordsNamespace(t))
	if err != nil {
		t.Fatalf("reading the cluster: %v", err)
	}
	return snap
}
