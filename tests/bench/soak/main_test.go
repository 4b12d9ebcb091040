package main

import "testing"

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
