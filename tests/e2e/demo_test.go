package e2e

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// demoSummary is the part of hack/demo's --summary the test checks.
type demoSummary struct {
	Node              string  `json:"node"`
	Karpenter         bool    `json:"karpenter"`
	SignalToGone      float64 `json:"signalToGoneSeconds"`
	Drained           bool    `json:"drained"`
	PodsMoved         int     `json:"podsMoved"`
	PodsLeft          int     `json:"podsLeftOnNode"`
	PDBBreached       bool    `json:"pdbBreached"`
	PendingPodSeconds float64 `json:"pendingPodSeconds"`
	Workloads         []struct {
		Name         string `json:"name"`
		Desired      int32  `json:"desired"`
		MinReady     int32  `json:"minReady"`
		PDBMinHealth int32  `json:"pdbDesiredHealthy"`
		HasPDB       bool   `json:"hasPDB"`
	} `json:"workloads"`
}

// make demo, non-interactively: twice (a second run works), once with
// --karpenter (make demo-karpenter), then once interrupted halfway (Ctrl-C
// tears everything down).
func TestDemo(t *testing.T) {
	root, err := cluster.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	bin := buildBinary(t)
	demo := filepath.Join(t.TempDir(), "demo")
	build := exec.Command("go", "build", "-o", demo, "./hack/demo")
	build.Dir = root
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build ./hack/demo: %v\n%s", err, out)
	}

	static := []string{
		"Warning: spot-rebalancer: deployment worker PDB missing",
		"(kubectl spot-rebalancer plan spot-", "PODS (", "Plan can complete",
		"SpotRebalanceRecommended=True",
		"is awaiting-replacement",
		"replacement node spot-a-3 is Ready",
		"is drained",
		"RESULT OK",
	}
	runs := []struct {
		args []string
		want []string
	}{
		{want: static},
		{want: static}, // a second run works
		{args: []string{"--karpenter"}, want: []string{
			"Warning: spot-rebalancer: deployment worker PDB missing",
			"RESERVATIONS (13", "SpotRebalanceRecommended=True",
			"event Reserving", "is awaiting-replacement", "Karpenter's new node",
			// drained may last less than a sample: retired comes after it.
			"is retired", "Karpenter removed node", "RESULT OK",
		}},
	}
	for i, r := range runs {
		run := i + 1
		summaryFile := filepath.Join(t.TempDir(), "summary.json")
		ctx, cancel := context.WithTimeout(cluster.Context(t), 4*time.Minute)
		logs := filepath.Join(t.TempDir(), "logs")
		cmd := exec.CommandContext(ctx, demo, append([]string{"--binary", bin, "--summary", summaryFile, "--logs", logs}, r.args...)...)
		cmd.Dir = root
		var out bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &out
		start := time.Now()
		err := cmd.Run()
		cancel()
		if err != nil {
			t.Fatalf("run %d: demo: %v\n%s", run, err, out.String())
		}
		t.Logf("run %d took %s", run, time.Since(start).Round(time.Second))
		text := out.String()
		for _, want := range r.want {
			if !strings.Contains(text, want) {
				t.Errorf("run %d: the narration lacks %q\n%s", run, want, text)
			}
		}
		data, err := os.ReadFile(summaryFile)
		if err != nil {
			t.Fatal(err)
		}
		var s demoSummary
		if err := json.Unmarshal(data, &s); err != nil {
			t.Fatalf("summary: %v\n%s", err, data)
		}
		if !s.Drained || s.PDBBreached || s.PodsMoved == 0 || s.PodsLeft != 0 || (s.Karpenter && s.SignalToGone <= 0) {
			t.Errorf("run %d: summary %s", run, data)
		}
		for _, w := range s.Workloads {
			if w.HasPDB && w.MinReady < w.PDBMinHealth {
				t.Errorf("run %d: %s fell to %d Ready, below its PDB's %d", run, w.Name, w.MinReady, w.PDBMinHealth)
			}
		}
		// Certificates were issued, published and served during the run:
		// no log line may carry key material.
		logFiles, _ := filepath.Glob(filepath.Join(logs, "*.log"))
		if len(logFiles) < 3 {
			t.Errorf("run %d: %d component logs, want the controller's, the webhook's and the agent's", run, len(logFiles))
		}
		for _, f := range logFiles {
			data, err := os.ReadFile(f)
			if err != nil {
				t.Fatal(err)
			}
			for _, secret := range []string{"-----BEGIN", "PRIVATE KEY", "LS0tLS1CRUdJTi"} { // the last: PEM in base64
				if bytes.Contains(data, []byte(secret)) {
					t.Errorf("run %d: %s contains %q", run, filepath.Base(f), secret)
				}
			}
		}
	}

	t.Run("Ctrl-C tears everything down", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(cluster.Context(t), 2*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, demo, "--binary", bin)
		cmd.Dir = root
		stdout, err := cmd.StdoutPipe()
		if err != nil {
			t.Fatal(err)
		}
		var rest bytes.Buffer
		cmd.Stderr = &rest
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		lines := bufio.NewScanner(stdout)
		interrupted := false
		for lines.Scan() {
			if strings.Contains(lines.Text(), "fleet ready") {
				if err := cmd.Process.Signal(syscall.SIGINT); err != nil {
					t.Fatal(err)
				}
				interrupted = true
				break
			}
		}
		_, _ = io.Copy(&rest, stdout)
		err = cmd.Wait()
		if !interrupted {
			t.Fatalf("the demo never reported its fleet ready: %v\n%s", err, rest.String())
		}
		if code := cmd.ProcessState.ExitCode(); code != 130 {
			t.Errorf("exit code after Ctrl-C = %d, want 130\n%s", code, rest.String())
		}
		// Its cluster's work directory (owned by the demo's pid) is gone.
		dirs, _ := filepath.Glob(filepath.Join(os.TempDir(), "spot-rebalancer-e2e-*", "owner.pid"))
		for _, f := range dirs {
			if data, err := os.ReadFile(f); err == nil && strings.TrimSpace(string(data)) == strconv.Itoa(cmd.Process.Pid) {
				t.Errorf("the demo's cluster was left behind in %s", filepath.Dir(f))
			}
		}
	})
}
