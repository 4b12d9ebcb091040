package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// panicReader stands in for a cache that blows up.
type panicReader struct{ client.Reader }

func (panicReader) Get(context.Context, client.ObjectKey, client.Object, ...client.GetOption) error {
	panic("cache exploded")
}

func newHandler(t *testing.T, reader client.Reader) *Handler {
	t.Helper()
	cfg := config.Default()
	return &Handler{Config: &cfg.Webhook, Reader: reader, Metrics: NewMetrics(prometheus.NewRegistry()),
		Clock: clocktesting.NewFakePassiveClock(time.Now())}
}

func request(t *testing.T, kind, group, op string, obj any) admission.Request {
	t.Helper()
	raw, ok := obj.([]byte)
	if !ok {
		var err error
		if raw, err = json.Marshal(obj); err != nil {
			t.Fatal(err)
		}
	}
	return admission.Request{AdmissionRequest: admissionv1.AdmissionRequest{
		UID: "1", Kind: metav1.GroupVersionKind{Group: group, Version: "v1", Kind: kind}, Namespace: "shop", Name: "x",
		Operation: admissionv1.Operation(op), Object: runtime.RawExtension{Raw: raw},
	}}
}

func TestHandler(t *testing.T) {
	shop := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{ProfileKey: "spot"}}}
	goodPDB := &policyv1.PodDisruptionBudget{ObjectMeta: metav1.ObjectMeta{Name: "web", Namespace: "shop"},
		Spec: policyv1.PodDisruptionBudgetSpec{Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "web"}}, MaxUnavailable: new(intstr.FromInt(1))}}
	deployment := map[string]any{
		"apiVersion": "apps/v1", "kind": "Deployment",
		"metadata": map[string]any{"name": "web", "namespace": "shop"},
		"spec":     map[string]any{"replicas": 3, "template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web"}}}},
	}
	tests := map[string]struct {
		objects     []client.Object
		reader      client.Reader
		req         admission.Request
		wantPatch   bool
		wantWarning string
		wantResult  string
	}{
		"a pod in an opted-in namespace is patched": {
			objects: []client.Object{shop}, req: request(t, "Pod", "", "CREATE", podWith(nil)),
			wantPatch: true, wantResult: ResultMutated,
		},
		"a pod UPDATE is never mutated: tolerations are fixed at creation": {
			objects: []client.Object{shop}, req: request(t, "Pod", "", "UPDATE", podWith(nil)),
			wantResult: ResultSkipped,
		},
		"a pod that is not JSON is admitted unchanged": {
			objects: []client.Object{shop}, req: request(t, "Pod", "", "CREATE", []byte("{not json")),
			wantResult: ResultError,
		},
		"a namespace missing from the cache fails open": {
			req:        request(t, "Pod", "", "CREATE", podWith(nil)),
			wantResult: ResultError,
		},
		"a panic fails open": {
			reader: panicReader{}, req: request(t, "Pod", "", "CREATE", podWith(nil)),
			wantResult: ResultError,
		},
		"an unknown profile admits unchanged with a warning": {
			objects: []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{ProfileKey: "spto"}}}},
			req:     request(t, "Pod", "", "CREATE", podWith(nil)), wantWarning: `profile "spto" is not configured`, wantResult: ResultSkipped,
		},
		"a Deployment without a PDB gets the hint and a warning": {
			objects: []client.Object{shop}, req: request(t, "Deployment", "apps", "CREATE", deployment),
			wantPatch: true, wantWarning: "deployment web PDB missing; suggest maxUnavailable=1", wantResult: ResultMutated,
		},
		"a Deployment with a good PDB gets the hint and no warning": {
			objects: []client.Object{shop, goodPDB}, req: request(t, "Deployment", "apps", "UPDATE", deployment),
			wantPatch: true, wantResult: ResultMutated,
		},
		"a Deployment in a namespace that has not opted in is left alone": {
			objects: []client.Object{&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop"}}},
			req:     request(t, "Deployment", "apps", "CREATE", deployment), wantResult: ResultSkipped,
		},
		"a StatefulSet that is not JSON is admitted unchanged": {
			objects: []client.Object{shop}, req: request(t, "StatefulSet", "apps", "CREATE", []byte(`{"spec": 5}`)),
			wantResult: ResultError,
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			reader := tc.reader
			if reader == nil {
				reader = fake.NewClientBuilder().WithObjects(tc.objects...).Build()
			}
			h := newHandler(t, reader)
			resp := h.Handle(t.Context(), tc.req)
			if !resp.Allowed {
				t.Fatalf("the webhook must admit every request, got %+v", resp.Result)
			}
			if got := len(resp.Patches) > 0; got != tc.wantPatch {
				t.Errorf("patched = %v, want %v (%v)", got, tc.wantPatch, resp.Patches)
			}
			for _, p := range resp.Patches {
				if p.Operation != "add" && p.Operation != "replace" {
					t.Errorf("patch operation %s %s: the webhook must never remove anything", p.Operation, p.Path)
				}
			}
			warnings := strings.Join(resp.Warnings, "\n")
			if tc.wantWarning == "" && warnings != "" || !strings.Contains(warnings, tc.wantWarning) {
				t.Errorf("warnings = %q, want %q", warnings, tc.wantWarning)
			}
			kind := strings.ToLower(tc.req.Kind.Kind)
			count := 0.0
			for _, profile := range []string{"none", "spot", "unknown"} {
				count += testutil.ToFloat64(h.Metrics.Requests.WithLabelValues(kind, string(tc.req.Operation), tc.wantResult, profile))
			}
			if count != 1 {
				t.Errorf("no request counted with result %q", tc.wantResult)
			}
		})
	}
}

// A malformed AdmissionReview gets a clear error from the HTTP layer and
// never reaches the handler or panics.
func TestMalformedAdmissionReview(t *testing.T) {
	h := newHandler(t, fake.NewClientBuilder().Build())
	wh := &admission.Webhook{Handler: h, RecoverPanic: new(true)}
	for name, body := range map[string]string{
		"not JSON":          "{{{",
		"no request":        `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview"}`,
		"wrong kind inside": `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"kind":"Pod","version":"v1"},"operation":"CREATE","object":"a string"}}`,
	} {
		t.Run(name, func(t *testing.T) {
			rec := httptest.NewRecorder()
			req := httptest.NewRequest(http.MethodPost, Path, bytes.NewBufferString(body))
			req.Header.Set("Content-Type", "application/json")
			wh.ServeHTTP(rec, req)
			var review admissionv1.AdmissionReview
			if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
				t.Fatalf("answer is not an AdmissionReview: %v: %s", err, rec.Body.String())
			}
			if review.Response == nil {
				t.Fatalf("no response in %s", rec.Body.String())
			}
			if !review.Response.Allowed && (review.Response.Result == nil || review.Response.Result.Message == "") {
				t.Errorf("a refusal must say why: %s", rec.Body.String())
			}
		})
	}
}
