package webhook

import (
	"encoding/json"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// Any pod JSON is mutated or refused cleanly, never with a panic; what the
// webhook writes is JSON that needs nothing more on reinvocation.
func FuzzMutatePod(f *testing.F) {
	f.Add([]byte(`{"metadata":{"name":"a","labels":{"app":"a"}},"spec":{"containers":[{"name":"c"}]}}`))
	f.Add([]byte(`{"metadata":{"annotations":{"spot-rebalancer.io/injected":"not json"}},"spec":{"tolerations":[{"operator":"Exists"}]}}`))
	f.Add([]byte(`{"spec":{"affinity":{"nodeAffinity":null},"topologySpreadConstraints":[{"topologyKey":"topology.kubernetes.io/zone"}]}}`))
	f.Add([]byte(`{"spec":5}`))
	f.Add([]byte(`[]`))
	profile := config.DefaultProfiles()["spot-spread"]
	f.Fuzz(func(t *testing.T, raw []byte) {
		doc, pod, err := DecodePod(raw)
		if err != nil {
			return
		}
		m := Plan(pod, "spot-spread", profile)
		if m.Empty() {
			return
		}
		if _, err := m.Patch(doc); err != nil {
			return // not an object we can patch: admitted unchanged
		}
		// A patch we return must apply: the API server fails the request
		// otherwise, whatever the failure policy.
		out, err := patched(raw, m)
		if err != nil {
			t.Fatalf("our patch does not apply: %v\n%s", err, raw)
		}
		var again corev1.Pod
		if err := json.Unmarshal(out, &again); err != nil {
			t.Fatalf("the mutated pod is not a pod: %v\n%s", err, out)
		}
		if m2 := Plan(&again, "spot-spread", profile); !m2.Empty() {
			t.Fatalf("reinvocation would change the pod again: %+v\nfrom %s", m2, out)
		}
	})
}
