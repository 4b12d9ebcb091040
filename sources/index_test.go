package sources

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
)

func TestInstanceID(t *testing.T) {
	for in, want := range map[string]string{
		"aws:///us-east-1a/i-0123456789abcdef0": "i-0123456789abcdef0",
		"aws://us-east-1a/i-abc":                "i-abc",
		"kind://docker/kind/kind-worker":        "",
		"":                                      "",
	} {
		if got := InstanceID(&corev1.Node{Spec: corev1.NodeSpec{ProviderID: in}}); got != want {
			t.Errorf("InstanceID(%q) = %q, want %q", in, got, want)
		}
	}
}
