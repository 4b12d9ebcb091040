package sources

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
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

func TestRegion(t *testing.T) {
	for name, tc := range map[string]struct {
		node corev1.Node
		want string
	}{
		"from the zone in the providerID": {node: corev1.Node{Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/i-0123456789abcdef0"}}, want: "us-east-1"},
		"from a Local Zone":               {node: corev1.Node{Spec: corev1.NodeSpec{ProviderID: "aws:///us-west-2-lax-1a/i-0123456789abcdef0"}}, want: "us-west-2"},
		"from a GovCloud zone":            {node: corev1.Node{Spec: corev1.NodeSpec{ProviderID: "aws:///us-gov-west-1a/i-0123456789abcdef0"}}, want: "us-gov-west-1"},
		"the region label wins": {node: corev1.Node{ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{corev1.LabelTopologyRegion: "eu-west-1"}},
			Spec: corev1.NodeSpec{ProviderID: "aws:///us-east-1a/i-0123456789abcdef0"}}, want: "eu-west-1"},
		"not an AWS node": {node: corev1.Node{Spec: corev1.NodeSpec{ProviderID: "kind://docker/kind/kind-worker"}}},
		"no zone":         {node: corev1.Node{Spec: corev1.NodeSpec{ProviderID: "aws:///i-0123456789abcdef0"}}},
	} {
		if got := Region(&tc.node); got != tc.want {
			t.Errorf("%s: Region = %q, want %q", name, got, tc.want)
		}
	}
}
