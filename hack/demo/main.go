// Command demo is `make demo`: it starts a local cluster with a mixed fleet,
// runs spot-rebalancer's webhook, controller and agent against it, shows the
// dry-run plan for one Spot node, triggers a rebalance recommendation on that
// node through the instance metadata mock, adds a replacement node, and
// narrates the hand-off until the node is drained. With --karpenter
// (`make demo-karpenter`) the Spot nodes are the real Karpenter's: the
// controller's reservations make it launch the replacement, and the drained
// node is given back through its NodeClaim.
package main

import (
	"context"
	_ "embed"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"sort"
	"strings"
	"syscall"
	"time"
)

//go:embed config.yaml
var defaultConfig []byte

func main() {
	var opts options
	flag.DurationVar(&opts.replacementDelay, "replacement-delay", 8*time.Second, "how long after the recommendation the replacement node joins (without --karpenter)")
	flag.DurationVar(&opts.timeout, "timeout", 4*time.Minute, "give up when the node is not drained this long after the recommendation")
	flag.StringVar(&opts.summaryFile, "summary", "", "also write the summary as JSON to this file")
	flag.StringVar(&opts.configFile, "config", "", "spot-rebalancer config file (default: the demo's embedded one)")
	flag.StringVar(&opts.logs, "logs", "", "keep the components' logs in this directory (default: a temporary one, removed on success)")
	flag.StringVar(&opts.binary, "binary", "", "the spot-rebalancer binary to run (default: bin/spot-rebalancer, built when missing)")
	flag.BoolVar(&opts.karpenter, "karpenter", false, "run the Spot pods on a Karpenter NodePool (the real Karpenter, built by make tools): reservations make it launch the replacement, and the drained node is given back through its NodeClaim")
	flag.DurationVar(&opts.launchDelay, "launch-delay", 20*time.Second, "with --karpenter: how long a node Karpenter launches takes to become Ready")
	flag.StringVar(&opts.signal, "signal", signalRebalance, "the Spot signal the node gets: rebalance (a rebalance recommendation: wait for the replacement, then move) or interruption (a two-minute interruption notice: ask for room at once, move each pod as its room appears)")
	flag.Usage = func() {
		fmt.Fprintf(flag.CommandLine.Output(), `Usage: go run ./hack/demo [flags]   (or: make demo)

Starts a local cluster (bin/ from make tools), runs spot-rebalancer on it and
narrates one Spot node's hand-off. Ctrl-C tears everything down.

`)
		flag.PrintDefaults()
	}
	flag.Parse()
	if opts.signal != signalRebalance && opts.signal != signalInterruption {
		fmt.Fprintf(os.Stderr, "demo: --signal %q: want %s or %s\n", opts.signal, signalRebalance, signalInterruption)
		os.Exit(2)
	}

	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	summary, err := run(ctx, opts, os.Stdout)
	if err != nil {
		if errors.Is(ctx.Err(), context.Canceled) {
			fmt.Fprintln(os.Stderr, "demo: interrupted; everything is torn down")
			os.Exit(130)
		}
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
	if opts.summaryFile != "" {
		data, _ := json.MarshalIndent(summary, "", "  ")
		if err := os.WriteFile(opts.summaryFile, append(data, '\n'), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, "demo:", err)
			os.Exit(1)
		}
	}
	if !summary.OK() {
		os.Exit(1)
	}
}

type options struct {
	replacementDelay time.Duration
	timeout          time.Duration
	summaryFile      string
	configFile       string
	binary           string
	logs             string
	karpenter        bool
	launchDelay      time.Duration
	// signal is the Spot signal the node gets: rebalance or interruption.
	signal string
}

// The signals --signal takes.
const (
	signalRebalance    = "rebalance"
	signalInterruption = "interruption"
)

// Summary is what the demo measured, printed at the end and written with
// --summary.
type Summary struct {
	Node      string `json:"node"`
	Signal    string `json:"signal"`
	Karpenter bool   `json:"karpenter"`
	Drained   bool   `json:"drained"`
	// SignalToGone is when Karpenter removed the retired node (--karpenter).
	SignalToGone      float64        `json:"signalToGoneSeconds,omitempty"`
	FinalState        string         `json:"finalState"`
	SignalToDrained   float64        `json:"signalToDrainedSeconds"`
	ReplacementJoined float64        `json:"replacementJoinedSeconds"`
	PodsMoved         int            `json:"podsMoved"`
	PodsLeft          int            `json:"podsLeftOnNode"`
	Evictions         int            `json:"evictions"`
	PDBBreached       bool           `json:"pdbBreached"`
	PendingPodSeconds float64        `json:"pendingPodSeconds"`
	Workloads         []WorkloadStat `json:"workloads"`
	// PlacementBefore and PlacementAfter count the sample pods per node.
	PlacementBefore map[string]int `json:"placementBefore"`
	PlacementAfter  map[string]int `json:"placementAfter"`
}

// WorkloadStat is one Deployment's lowest point during the hand-off.
type WorkloadStat struct {
	Name         string `json:"name"`
	Desired      int32  `json:"desired"`
	MinReady     int32  `json:"minReady"`
	PDBMinHealth int32  `json:"pdbDesiredHealthy,omitempty"`
	HasPDB       bool   `json:"hasPDB"`
}

// OK tells whether the hand-off went as promised.
func (s Summary) OK() bool {
	return s.Drained && !s.PDBBreached && s.PodsLeft == 0 && s.PodsMoved > 0 && (!s.Karpenter || s.SignalToGone > 0)
}

func (s Summary) print(w io.Writer) {
	fmt.Fprintf(w, "\n=== Summary ===\n")
	verdict := "drained"
	if !s.Drained {
		verdict = "NOT drained (state " + s.FinalState + ")"
	}
	after := "after the recommendation"
	if s.Signal == signalInterruption {
		after = "after the interruption notice"
	}
	fmt.Fprintf(w, "node %-28s %s, %.1fs %s\n", s.Node, verdict, s.SignalToDrained, after)
	fmt.Fprintf(w, "replacement node Ready       %.1fs %s\n", s.ReplacementJoined, after)
	if s.Karpenter {
		gone := "NOT removed"
		if s.SignalToGone > 0 {
			gone = fmt.Sprintf("%.1fs %s", s.SignalToGone, after)
		}
		fmt.Fprintf(w, "retired node removed         %s\n", gone)
	}
	fmt.Fprintf(w, "pods moved                   %d (evictions: %d, left on the node: %d)\n", s.PodsMoved, s.Evictions, s.PodsLeft)
	breach := "no"
	if s.PDBBreached {
		breach = "YES"
	}
	fmt.Fprintf(w, "PodDisruptionBudget breached %s\n", breach)
	fmt.Fprintf(w, "pod-seconds Pending, no node %.1f\n", s.PendingPodSeconds)
	fmt.Fprintf(w, "pods per node before         %s\n", placement(s.PlacementBefore))
	fmt.Fprintf(w, "pods per node after          %s\n", placement(s.PlacementAfter))
	for _, wl := range s.Workloads {
		pdb := "no PDB (implicit budget 25%)"
		if wl.HasPDB {
			pdb = fmt.Sprintf("PDB needs %d healthy", wl.PDBMinHealth)
		}
		fmt.Fprintf(w, "  %-8s lowest Ready %d of %d  (%s)\n", wl.Name, wl.MinReady, wl.Desired, pdb)
	}
	result := "OK"
	if !s.OK() {
		result = "FAILED"
	}
	fmt.Fprintf(w, "RESULT %s drained=%v pdbBreached=%v podsMoved=%d\n", result, s.Drained, s.PDBBreached, s.PodsMoved)
}

func placement(perNode map[string]int) string {
	names := make([]string, 0, len(perNode))
	for name := range perNode {
		names = append(names, name)
	}
	sort.Strings(names)
	parts := make([]string, 0, len(names))
	for _, name := range names {
		parts = append(parts, fmt.Sprintf("%s=%d", name, perNode[name]))
	}
	return strings.Join(parts, " ")
}

// logDir holds the components' logs while the demo runs.
func logDir() (string, error) {
	return os.MkdirTemp("", "spot-rebalancer-demo-logs-")
}

func repoFile(root string, parts ...string) string {
	return filepath.Join(append([]string{root}, parts...)...)
}
