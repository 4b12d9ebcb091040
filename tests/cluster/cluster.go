package cluster

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/go-logr/logr"

	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/log/zap"
)

// Binaries the cluster needs, all built by `make tools` into bin/.
var requiredBinaries = []string{"etcd", "kube-apiserver", "kube-controller-manager", "kube-scheduler", "kwok", "kwokctl"}

const workDirPrefix = "spot-rebalancer-e2e-"

// Cluster is a running local control plane.
type Cluster struct {
	Name       string
	WorkDir    string
	BinDir     string
	Kubeconfig string
	Config     *rest.Config
	Client     kubernetes.Interface
}

var current *Cluster

// Main starts a cluster, runs the package's tests and tears the cluster
// down. Call it from TestMain: func TestMain(m *testing.M) { cluster.Main(m) }.
func Main(m *testing.M) {
	os.Exit(run(m))
}

func run(m *testing.M) int {
	// Logs of the code under test go to stderr, which go test shows for a
	// failing package or with -v.
	ctrllog.SetLogger(zap.New(zap.WriteTo(os.Stderr), zap.UseDevMode(true)))
	binDir, err := BinDir()
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e:", err)
		return 1
	}
	sweepAbandoned()
	c, err := start(binDir, "e2e")
	if err != nil {
		fmt.Fprintln(os.Stderr, "e2e: starting the local cluster:", err)
		return 1
	}
	current = c

	signals := make(chan os.Signal, 1)
	signal.Notify(signals, os.Interrupt, syscall.SIGTERM)
	go func() {
		s := <-signals
		fmt.Fprintf(os.Stderr, "e2e: %s: tearing down cluster %s\n", s, c.Name)
		c.Stop()
		os.Exit(1)
	}()

	code := m.Run()
	signal.Stop(signals)
	if os.Getenv("E2E_KEEP_CLUSTER") != "" {
		fmt.Fprintf(os.Stderr, "e2e: keeping cluster %s: KUBECONFIG=%s\n", c.Name, c.Kubeconfig)
		return code
	}
	c.Stop()
	return code
}

// Start starts a local cluster outside of tests (the demo, benchmarks).
// Its name is prefix-<pid>; Stop tears it down. Clusters left behind by
// dead processes are removed first.
func Start(prefix string) (*Cluster, error) {
	binDir, err := BinDir()
	if err != nil {
		return nil, err
	}
	sweepAbandoned()
	return start(binDir, prefix)
}

// Logger is the logger the code under test should log through.
func Logger() logr.Logger { return ctrllog.Log }

// Get returns the cluster TestMain started.
func Get(t testing.TB) *Cluster {
	t.Helper()
	if current == nil {
		t.Fatal("no local cluster: the package's TestMain must call cluster.Main(m)")
	}
	return current
}

// BinDir finds the repository's bin/ and checks that every cluster binary is
// there.
func BinDir() (string, error) {
	root, err := RepoRoot()
	if err != nil {
		return "", err
	}
	dir := filepath.Join(root, "bin")
	var missing []string
	for _, b := range requiredBinaries {
		if _, err := os.Stat(filepath.Join(dir, b)); err != nil {
			missing = append(missing, b)
		}
	}
	if len(missing) > 0 {
		return "", fmt.Errorf("the local cluster's binaries are missing from %s (%s): run `make tools` first",
			dir, strings.Join(missing, ", "))
	}
	return dir, nil
}

// RepoRoot finds the repository root above the working directory.
func RepoRoot() (string, error) {
	dir, err := os.Getwd()
	if err != nil {
		return "", err
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "hack", "tools.sh")); err == nil {
			return dir, nil
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", errors.New("cannot find the repository root (hack/tools.sh) above the working directory")
		}
		dir = parent
	}
}

func start(binDir, prefix string) (*Cluster, error) {
	workDir, err := os.MkdirTemp("", workDirPrefix)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(workDir, "owner.pid"), []byte(strconv.Itoa(os.Getpid())), 0o600); err != nil {
		return nil, err
	}
	c := &Cluster{
		Name:    fmt.Sprintf("%s-%d", prefix, os.Getpid()),
		WorkDir: workDir,
		BinDir:  binDir,
	}
	c.Kubeconfig = filepath.Join(workDir, "clusters", c.Name, "kubeconfig.yaml")
	bin := func(name string) string { return filepath.Join(binDir, name) }
	root, err := RepoRoot()
	if err != nil {
		return nil, err
	}
	stages := filepath.Join(workDir, "stages.yaml")
	if err := writeStages(root, stages); err != nil {
		return nil, err
	}
	args := []string{"create", "cluster", "--name", c.Name, "--runtime", "binary", "--config", stages,
		"--etcd-binary", bin("etcd"),
		"--kube-apiserver-binary", bin("kube-apiserver"),
		"--kube-controller-manager-binary", bin("kube-controller-manager"),
		"--kube-scheduler-binary", bin("kube-scheduler"),
		"--kwok-controller-binary", bin("kwok"),
		"--wait", "120s",
	}
	if out, err := c.kwokctl(args...); err != nil {
		c.Stop()
		return nil, fmt.Errorf("kwokctl create cluster: %w\n%s", err, out)
	}
	cfg, err := clientcmd.BuildConfigFromFlags("", c.Kubeconfig)
	if err != nil {
		c.Stop()
		return nil, fmt.Errorf("loading %s: %w", c.Kubeconfig, err)
	}
	// Tests create and watch many objects quickly; the client's default rate
	// limit would turn waits into sleeps.
	cfg.QPS, cfg.Burst = 200, 400
	c.Config = cfg
	if c.Client, err = kubernetes.NewForConfig(cfg); err != nil {
		c.Stop()
		return nil, err
	}
	return c, nil
}

func (c *Cluster) kwokctl(args ...string) ([]byte, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(c.BinDir, "kwokctl"), args...)
	cmd.Env = append(os.Environ(), "KWOK_WORKDIR="+c.WorkDir)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	err := cmd.Run()
	return out.Bytes(), err
}

// Stop deletes the cluster, kills anything kwokctl left running and removes
// the work directory.
func (c *Cluster) Stop() {
	if out, err := c.kwokctl("delete", "cluster", "--name", c.Name); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: kwokctl delete cluster %s: %v\n%s", c.Name, err, out)
	}
	killComponents(c.WorkDir)
	if err := os.RemoveAll(c.WorkDir); err != nil {
		fmt.Fprintf(os.Stderr, "e2e: removing %s: %v\n", c.WorkDir, err)
	}
}

// killComponents SIGKILLs every component whose pid file is under workDir:
// kwokctl's, and those the tests start beside them (Karpenter), whose pid
// files are in workDir/pids. A kube-apiserver whose etcd is gone can hang
// on SIGTERM, so no politeness.
func killComponents(workDir string) {
	pidFiles, _ := filepath.Glob(filepath.Join(workDir, "clusters", "*", "pids", "*.pid"))
	ours, _ := filepath.Glob(filepath.Join(workDir, "pids", "*.pid"))
	for _, f := range append(pidFiles, ours...) {
		data, err := os.ReadFile(f)
		if err != nil {
			continue
		}
		if pid, err := strconv.Atoi(strings.TrimSpace(string(data))); err == nil && pid > 0 {
			_ = syscall.Kill(pid, syscall.SIGKILL)
		}
	}
}

// sweepAbandoned tears down clusters whose test binary died without cleaning
// up (for example on a `go test -timeout` panic).
func sweepAbandoned() {
	dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), workDirPrefix+"*"))
	for _, dir := range dirs {
		data, err := os.ReadFile(filepath.Join(dir, "owner.pid"))
		if err != nil {
			continue
		}
		pid, err := strconv.Atoi(string(data))
		if err != nil || syscall.Kill(pid, 0) == nil {
			continue // still owned by a live test binary
		}
		fmt.Fprintf(os.Stderr, "e2e: removing abandoned cluster in %s\n", dir)
		killComponents(dir)
		_ = os.RemoveAll(dir)
	}
}

// Binary resolves a built binary: path as given when absolute, else from
// the repository root (bin/spot-rebalancer, say); it must exist.
func Binary(path string) (string, error) {
	if !filepath.IsAbs(path) {
		root, err := RepoRoot()
		if err != nil {
			return "", err
		}
		path = filepath.Join(root, path)
	}
	if _, err := os.Stat(path); err != nil {
		return "", fmt.Errorf("%s: %w (run make build)", path, err)
	}
	return path, nil
}
