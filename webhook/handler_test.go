package webhook

import (
	"bytes"
	"cmp"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"
	admissionv1 "k8s.io/api/admission/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"

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

// request is an admission request for obj (or raw JSON), its object
// decoded as ServeHTTP decodes it.
func request(t *testing.T, kind, group, op string, obj any) *Request {
	t.Helper()
	return &Request{UID: "1", Kind: metav1.GroupVersionKind{Group: group, Version: "v1", Kind: kind}, Namespace: "shop", Name: "x",
		Operation: admissionv1.Operation(op), Object: DecodeObject(rawJSON(t, obj))}
}

func rawJSON(t *testing.T, obj any) []byte {
	t.Helper()
	if raw, ok := obj.([]byte); ok {
		return raw
	}
	raw, err := json.Marshal(obj)
	if err != nil {
		t.Fatal(err)
	}
	return raw
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
		req         *Request
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
		"a pod whose JSON does not decode is admitted unchanged": {
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
			resp := h.Review(t.Context(), tc.req)
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

// serve posts body to the handler as the API server does and decodes the
// answer, which must be an AdmissionReview with a response.
func serve(t *testing.T, h http.Handler, contentType string, body []byte) (apiVersion string, resp *admissionv1.AdmissionResponse, raw string) {
	t.Helper()
	rec := httptest.NewRecorder()
	req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
	req.Header.Set("Content-Type", contentType)
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Fatalf("HTTP status %d: %s", rec.Code, rec.Body.String())
	}
	var review admissionv1.AdmissionReview
	if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil {
		t.Fatalf("answer is not an AdmissionReview: %v: %s", err, rec.Body.String())
	}
	if review.Kind != "AdmissionReview" || review.Response == nil {
		t.Fatalf("no AdmissionReview response in %s", rec.Body.String())
	}
	return review.APIVersion, review.Response, rec.Body.String()
}

// A malformed AdmissionReview is refused with the code and the reason, and
// never reaches the handler or panics; an object of the wrong shape inside
// a good review is admitted unchanged.
func TestMalformedAdmissionReview(t *testing.T) {
	shop := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{ProfileKey: "spot-spread"}}}
	review := func(inner string) string {
		return `{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview",` + inner + `}`
	}
	pod := func(object string) string {
		return review(`"request":{"uid":"1","kind":{"kind":"Pod","version":"v1"},"namespace":"shop","operation":"CREATE","object":` + object + `}`)
	}
	for name, tc := range map[string]struct {
		contentType string
		body        string
		wantCode    int32 // 0: admitted unchanged, counted as an error
		wantMessage string
	}{
		"not JSON":            {body: "{{{", wantCode: 400, wantMessage: "decoding the AdmissionReview"},
		"empty body":          {body: "", wantCode: 400, wantMessage: "empty"},
		"no request":          {body: review(`"request":null`), wantCode: 400, wantMessage: "no request"},
		"another kind":        {body: `{"apiVersion":"v1","kind":"Pod"}`, wantCode: 400, wantMessage: `kind "Pod"`},
		"an unknown version":  {body: `{"apiVersion":"admission.k8s.io/v2","kind":"AdmissionReview","request":{}}`, wantCode: 400, wantMessage: `admission.k8s.io/v2`},
		"not JSON content":    {contentType: "application/yaml", body: review(`"request":{}`), wantCode: 400, wantMessage: "application/yaml"},
		"too large":           {body: review(`"request":{"name":"` + strings.Repeat("x", maxReviewBytes) + `"}`), wantCode: 413, wantMessage: "larger than"},
		"truncated object":    {body: review(`"request":{"uid":"1","kind":{"kind":"Pod","version":"v1"},"object":{"spec":`), wantCode: 400, wantMessage: "decoding the AdmissionReview"},
		"a string for a pod":  {body: pod(`"a string"`)},
		"a number for a spec": {body: pod(`{"metadata":{"labels":{"app":"a"}},"spec":5}`)},
		// Where the API server's decoder would merge the two and the patch
		// library keep the last, a patch could fail to apply.
		"a spec twice": {body: pod(`{"metadata":{"labels":{"app":"a"}},"spec":{"tolerations":[{}]},"spec":{}}`)},
		// Names match case sensitively, as in the API server: this pod has
		// no spec to patch.
		"Spec for spec": {body: pod(`{"metadata":{"labels":{"app":"a"}},"Spec":{"containers":[]}}`)},
	} {
		t.Run(name, func(t *testing.T) {
			h := newHandler(t, fake.NewClientBuilder().WithObjects(shop).Build())
			contentType := cmp.Or(tc.contentType, "application/json")
			_, resp, raw := serve(t, h, contentType, []byte(tc.body))
			if tc.wantCode == 0 {
				if !resp.Allowed || resp.UID != "1" || len(resp.Patch) > 0 {
					t.Errorf("want admitted unchanged with uid 1: %s", raw)
				}
				if n := testutil.ToFloat64(h.Metrics.Requests.WithLabelValues("pod", "CREATE", ResultError, "spot-spread")) +
					testutil.ToFloat64(h.Metrics.Requests.WithLabelValues("pod", "CREATE", ResultError, "none")); n != 1 {
					t.Errorf("requests counted as errors: %v, want 1", n)
				}
				return
			}
			if resp.Allowed || resp.Result == nil || resp.Result.Code != tc.wantCode || !strings.Contains(resp.Result.Message, tc.wantMessage) {
				t.Errorf("want refused with code %d and a message containing %q: %.300s", tc.wantCode, tc.wantMessage, raw)
			}
		})
	}
}

// Through HTTP as the API server calls it: the answer carries the
// question's version and UID, and its JSONPatch applies to the object to
// give a pod the webhook leaves alone on reinvocation.
func TestServeAdmissionReview(t *testing.T) {
	shop := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{ProfileKey: "spot-spread"}}}
	h := newHandler(t, fake.NewClientBuilder().WithObjects(shop).Build())
	pod := rawJSON(t, benchPod())
	for _, version := range []string{"admission.k8s.io/v1", "admission.k8s.io/v1beta1", ""} {
		t.Run(cmp.Or(version, "no apiVersion"), func(t *testing.T) {
			envelope := map[string]any{"request": map[string]any{
				"uid": "7c4a", "kind": map[string]any{"version": "v1", "kind": "Pod"}, "resource": map[string]any{"version": "v1", "resource": "pods"},
				"namespace": "shop", "operation": "CREATE", "userInfo": map[string]any{"username": "system:serviceaccount:kube-system:replicaset-controller"},
				"object": json.RawMessage(pod), "oldObject": nil, "dryRun": false,
			}}
			if version != "" {
				envelope["apiVersion"], envelope["kind"] = version, "AdmissionReview"
			}
			gotVersion, resp, raw := serve(t, h, "application/json", rawJSON(t, envelope))
			if want := cmp.Or(version, "admission.k8s.io/v1"); gotVersion != want {
				t.Errorf("answered as %q, want %q", gotVersion, want)
			}
			if !resp.Allowed || resp.UID != "7c4a" || resp.PatchType == nil || *resp.PatchType != admissionv1.PatchTypeJSONPatch {
				t.Fatalf("want allowed, uid 7c4a, a JSONPatch: %.500s", raw)
			}
			patch, err := jsonpatchapply.DecodePatch(resp.Patch)
			if err != nil {
				t.Fatalf("the patch does not decode: %v", err)
			}
			out, err := patch.Apply(pod)
			if err != nil {
				t.Fatalf("the patch does not apply: %v", err)
			}
			var mutated corev1.Pod
			if err := json.Unmarshal(out, &mutated); err != nil {
				t.Fatal(err)
			}
			if len(mutated.Spec.Containers) != 2 || mutated.Annotations[InjectedAnnotation] == "" || len(mutated.Spec.Tolerations) == 0 {
				t.Errorf("containers %d, injected %q, tolerations %v: want the pod kept and mutated", len(mutated.Spec.Containers),
					mutated.Annotations[InjectedAnnotation], mutated.Spec.Tolerations)
			}
			_, again, err := DecodePod(out)
			if err != nil {
				t.Fatal(err)
			}
			if m := Plan(again, "spot-spread", config.DefaultProfiles()["spot-spread"]); !m.Empty() {
				t.Errorf("reinvocation would mutate again: %+v", m)
			}
		})
	}
	t.Run("a Deployment", func(t *testing.T) {
		deployment := rawJSON(t, map[string]any{"apiVersion": "apps/v1", "kind": "Deployment",
			"metadata": map[string]any{"name": "web", "namespace": "shop", "annotations": map[string]any{"team": "storefront"}},
			"spec":     map[string]any{"replicas": 3, "template": map[string]any{"metadata": map[string]any{"labels": map[string]any{"app": "web"}}}}})
		body := rawJSON(t, map[string]any{"apiVersion": "admission.k8s.io/v1", "kind": "AdmissionReview", "request": map[string]any{
			"uid": "9d1e", "kind": map[string]any{"group": "apps", "version": "v1", "kind": "Deployment"},
			"namespace": "shop", "operation": "CREATE", "object": json.RawMessage(deployment)}})
		_, resp, raw := serve(t, h, "application/json", body)
		if !resp.Allowed || resp.UID != "9d1e" || len(resp.Patch) == 0 {
			t.Fatalf("want allowed, uid 9d1e, a patch: %.500s", raw)
		}
		if w := strings.Join(resp.Warnings, "\n"); !strings.Contains(w, "deployment web PDB missing") {
			t.Errorf("warnings %q, want the missing PDB named", w)
		}
		patch, err := jsonpatchapply.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatal(err)
		}
		out, err := patch.Apply(deployment)
		if err != nil {
			t.Fatalf("the patch does not apply: %v", err)
		}
		var d appsv1.Deployment
		if err := json.Unmarshal(out, &d); err != nil {
			t.Fatal(err)
		}
		if d.Annotations[PDBHintAnnotation] == "" || d.Annotations["team"] != "storefront" {
			t.Errorf("annotations %v: want the hint added beside the team's", d.Annotations)
		}
	})
}
