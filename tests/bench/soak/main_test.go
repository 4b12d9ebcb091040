package main

import (
	"strings"
	"testing"
	"time"
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
