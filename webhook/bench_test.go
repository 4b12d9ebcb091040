package webhook

import (
	"context"
	"encoding/json"
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// benchPod is a pod of a typical production Deployment, about 4 KB of JSON.
func benchPod() *corev1.Pod {
	labels := map[string]string{"app.kubernetes.io/name": "web", "app.kubernetes.io/instance": "shop", "app.kubernetes.io/version": "2.14.3",
		"app.kubernetes.io/component": "frontend", "pod-template-hash": "5b4fbf6d5c", "team": "storefront"}
	env := []corev1.EnvVar{}
	for i := range 12 {
		env = append(env, corev1.EnvVar{Name: fmt.Sprintf("SETTING_%d", i), Value: fmt.Sprintf("value-%d-with-some-length", i)})
	}
	container := func(name string) corev1.Container {
		return corev1.Container{Name: name, Image: "registry.example/shop/" + name + ":2.14.3", Args: []string{"--listen=:8080", "--log-format=json"},
			Env: env, Ports: []corev1.ContainerPort{{Name: "http", ContainerPort: 8080}},
			Resources:      corev1.ResourceRequirements{Requests: corev1.ResourceList{corev1.ResourceCPU: resource.MustParse("250m"), corev1.ResourceMemory: resource.MustParse("256Mi")}},
			ReadinessProbe: &corev1.Probe{ProbeHandler: corev1.ProbeHandler{HTTPGet: &corev1.HTTPGetAction{Path: "/readyz"}}, PeriodSeconds: 5},
			VolumeMounts:   []corev1.VolumeMount{{Name: "config", MountPath: "/etc/web"}, {Name: "tmp", MountPath: "/tmp"}}}
	}
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "web-5b4fbf6d5c-", Namespace: "shop", Labels: labels,
			Annotations:     map[string]string{"prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
			OwnerReferences: []metav1.OwnerReference{{APIVersion: "apps/v1", Kind: "ReplicaSet", Name: "web-5b4fbf6d5c", UID: "0b6f", Controller: new(true)}}},
		Spec: corev1.PodSpec{Containers: []corev1.Container{container("web"), container("envoy")},
			Volumes: []corev1.Volume{{Name: "config", VolumeSource: corev1.VolumeSource{ConfigMap: &corev1.ConfigMapVolumeSource{LocalObjectReference: corev1.LocalObjectReference{Name: "web"}}}},
				{Name: "tmp", VolumeSource: corev1.VolumeSource{EmptyDir: &corev1.EmptyDirVolumeSource{}}}}},
	}
}

// BenchmarkHandlePod is one pod admission with the spot-spread profile,
// the handler alone (no TLS, no HTTP): make bench-webhook measures the
// server.
func BenchmarkHandlePod(b *testing.B) {
	raw, err := json.Marshal(benchPod())
	if err != nil {
		b.Fatal(err)
	}
	cfg := config.Default()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{ProfileKey: "spot-spread"}}}
	h := &Handler{Config: &cfg.Webhook, Reader: fake.NewClientBuilder().WithObjects(ns).Build(),
		Metrics: NewMetrics(prometheus.NewRegistry()), Clock: clocktesting.NewFakePassiveClock(time.Now())}
	req := admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{UID: "x", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
		Namespace: "shop", Operation: admissionv1.Create, Object: runtime.RawExtension{Raw: raw}}}
	b.SetBytes(int64(len(raw)))
	b.ReportAllocs()
	for b.Loop() {
		if resp := h.Handle(context.Background(), req); len(resp.Patches) == 0 {
			b.Fatalf("not mutated: %+v", resp)
		}
	}
}
