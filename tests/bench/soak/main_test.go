package main

import (
	"strings"
	"testing"
	"time"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
)

func TestResourceOf(t *testing.T) {
	for path, want := range map[string]string{
		"/api/v1/nodes":                                       "nodes",
		"/api/v1/nodes/soak-a-01":                             "nodes",
		"/api/v1/namespaces/soak/pods":                        "pods",
		"/api/v1/namespaces/soak/pods/web-1/eviction":         "pods/eviction",
		"/api/v1/namespaces/soak":                             "namespaces",
		"/apis/apps/v1/namespaces/soak/deployments/web/scale": "deployments/scale",
		"/apis/policy/v1/poddisruptionbudgets":                "poddisruptionbudgets",
		"/apis/events.k8s.io/v1/namespaces/soak/events":       "events",
		"/api": "/api",
	} {
		if got := resourceOf(path); got != want {
			t.Errorf("resourceOf(%q) = %q, want %q", path, got, want)
		}
	}
}

func TestOptionsAreValidated(t *testing.T) {
	ok := options{signal: signalRebalance, drainer: drainerOurs, notice: time.Minute}
	if err := ok.validate(); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for name, tc := range map[string]struct {
		mutate func(*options)
		want   string
	}{
		"unknown signal":                   {func(o *options) { o.signal = "terminate" }, `--signal "terminate"`},
		"unknown drainer":                  {func(o *options) { o.drainer = "nth" }, `--drainer "nth"`},
		"kubectl drain without the storm":  {func(o *options) { o.drainer = drainerKubectl }, "needs --signal interruption"},
		"a notice of no time":              {func(o *options) { o.signal, o.notice = signalInterruption, 0 }, "--notice 0s"},
		"kubectl drain in the storm is ok": {func(o *options) { o.signal, o.drainer = signalInterruption, drainerKubectl }, ""},
	} {
		t.Run(name, func(t *testing.T) {
			o := ok
			tc.mutate(&o)
			err := o.validate()
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestPhasesSplitWaitingFromMoving(t *testing.T) {
	p := newPhases()
	// a: draining at 10 s, drained at 40 s; b: drained between two
	// samples at 20 s; c: still waiting.
	p.see("a", signals.StateAwaitingReplacement, 5*time.Second)
	p.see("a", signals.StateDraining, 10*time.Second)
	p.see("a", signals.StateDraining, 12*time.Second)
	p.see("a", signals.StateDrained, 40*time.Second)
	p.see("b", signals.StateDrained, 20*time.Second)
	p.see("c", signals.StateAwaitingReplacement, 20*time.Second)
	var out strings.Builder
	p.report(&out, []string{"a", "b", "c"})
	for _, want := range []string{
		"waiting to drain        2 nodes: median 10s, p90 20s, max 20s; 30 node-seconds in all",
		"moving pods (draining)  2 nodes: median 0s, p90 30s, max 30s; 30 node-seconds in all",
	} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, out.String())
		}
	}
}

func TestSummarize(t *testing.T) {
	var ds []time.Duration
	for i := 10; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Second)
	}
	med, p90, most, sum := summarize(ds)
	if med != 5*time.Second || p90 != 9*time.Second || most != 10*time.Second || sum != 55*time.Second {
		t.Errorf("summarize = %s %s %s %s, want 5s 9s 10s 55s", med, p90, most, sum)
	}
	if med, p90, most, sum := summarize(nil); med+p90+most+sum != 0 {
		t.Errorf("summarize(nil) = %s %s %s %s, want zeros", med, p90, most, sum)
	}
}

func TestTallyCountsDeploymentsBelowBudget(t *testing.T) {
	minReady := map[string]int{"web": 24, "api": 20}
	b := newTally()
	b.add(map[string]int{"web": 25, "api": 20}, minReady) // headroom 1 and 0
	b.add(map[string]int{"web": 23, "api": 18}, minReady) // both below
	if b.breaches != 2 || b.lowest != -2 {
		t.Errorf("breaches %d, lowest %d; want 2 and -2", b.breaches, b.lowest)
	}
}
