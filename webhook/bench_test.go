package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	authenticationv1 "k8s.io/api/authentication/v1"
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

// BenchmarkServeReview is one pod admission with the spot-spread profile,
// an AdmissionReview in and out through ServeHTTP (no TLS, no network),
// beside the same review answered by a controller-runtime webhook that
// allows everything without reading the pod: make bench-webhook measures
// the whole servers over TLS.
func BenchmarkServeReview(b *testing.B) {
	pod, err := json.Marshal(benchPod())
	if err != nil {
		b.Fatal(err)
	}
	body, err := json.Marshal(admissionv1.AdmissionReview{
		TypeMeta: metav1.TypeMeta{APIVersion: "admission.k8s.io/v1", Kind: "AdmissionReview"},
		Request: &admissionv1.AdmissionRequest{UID: "x", Kind: metav1.GroupVersionKind{Version: "v1", Kind: "Pod"},
			Resource: metav1.GroupVersionResource{Version: "v1", Resource: "pods"}, Namespace: "shop", Operation: admissionv1.Create,
			UserInfo: authenticationv1.UserInfo{Username: "system:serviceaccount:kube-system:replicaset-controller"},
			Object:   runtime.RawExtension{Raw: pod}},
	})
	if err != nil {
		b.Fatal(err)
	}
	cfg := config.Default()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{ProfileKey: "spot-spread"}}}
	h := &Handler{Config: &cfg.Webhook, Reader: fake.NewClientBuilder().WithObjects(ns).Build(),
		Metrics: NewMetrics(prometheus.NewRegistry()), Clock: clocktesting.NewFakePassiveClock(time.Now())}
	floor := &admission.Webhook{Handler: admission.HandlerFunc(func(context.Context, admission.Request) admission.Response {
		return admission.Allowed("")
	})}
	for _, server := range []struct {
		name    string
		handler http.Handler
		patched bool
	}{{"spot-rebalancer", h, true}, {"controller-runtime-floor", floor, false}} {
		b.Run(server.name, func(b *testing.B) {
			b.SetBytes(int64(len(body)))
			b.ReportAllocs()
			for b.Loop() {
				rec := httptest.NewRecorder()
				req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
				req.Header.Set("Content-Type", "application/json")
				server.handler.ServeHTTP(rec, req)
				if patched := bytes.Contains(rec.Body.Bytes(), []byte(`"patch":`)); patched != server.patched {
					b.Fatalf("patched %v, want %v: %s", patched, server.patched, rec.Body.String())
				}
			}
		})
	}
}
