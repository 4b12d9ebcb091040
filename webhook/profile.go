package webhook

import (
	"slices"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// ProfileKey is the namespace label that opts a namespace in, and the pod
// annotation that overrides it (with a profile name or "none").
const ProfileKey = "spot-rebalancer.io/profile"

// Why a pod was left alone. The values are metric labels: a fixed set.
const (
	SkipExcludedNamespace = "excluded-namespace"
	SkipMirrorPod         = "mirror-pod"
	SkipDaemonSetPod      = "daemonset-pod"
	SkipNotOptedIn        = "not-opted-in"
	SkipOptedOut          = "opted-out"
	SkipUnknownProfile    = "unknown-profile"
)

// SelectProfile returns the profile that applies to a pod created in
// namespace (whose labels are nsLabels), or why none does.
func SelectProfile(pod *corev1.Pod, namespace string, nsLabels map[string]string, cfg *config.Webhook) (name string, skip string) {
	if namespace == cfg.Namespace || slices.Contains(cfg.ExcludedNamespaces, namespace) {
		return "", SkipExcludedNamespace
	}
	if _, ok := pod.Annotations[corev1.MirrorPodAnnotationKey]; ok {
		return "", SkipMirrorPod
	}
	if owner := metav1.GetControllerOfNoCopy(pod); owner != nil && owner.Kind == "DaemonSet" {
		return "", SkipDaemonSetPod
	}
	name, fromPod := pod.Annotations[ProfileKey]
	if !fromPod {
		name = nsLabels[ProfileKey]
	}
	switch {
	case name == config.ProfileNone:
		return "", SkipOptedOut
	case name == "":
		return "", SkipNotOptedIn
	}
	if _, ok := cfg.Profiles[name]; !ok {
		return name, SkipUnknownProfile
	}
	return name, ""
}
