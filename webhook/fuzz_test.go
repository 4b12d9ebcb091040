package webhook

import (
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	jsonpatchapply "github.com/evanphx/json-patch/v5"
	"github.com/prometheus/client_golang/prometheus"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	clocktesting "k8s.io/utils/clock/testing"
	"sigs.k8s.io/controller-runtime/pkg/client/fake"
	kjson "sigs.k8s.io/json"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// Any pod JSON is mutated or refused cleanly, never with a panic; what the
// webhook writes is JSON that needs nothing more on reinvocation.
func FuzzMutatePod(f *testing.F) {
	f.Add([]byte(`{"metadata":{"name":"a","labels":{"app":"a"}},"spec":{"containers":[{"name":"c"}]}}`))
	f.Add([]byte(`{"metadata":{"annotations":{"spot-rebalancer.io/injected":"not json"}},"spec":{"tolerations":[{"operator":"Exists"}]}}`))
	f.Add([]byte(`{"spec":{"affinity":{"nodeAffinity":null},"topologySpreadConstraints":[{"topologyKey":"topology.kubernetes.io/zone"}]}}`))
	f.Add([]byte(`{"spec":5}`))
	f.Add([]byte(`{"metadata":{"labels":{"app":"a"}},"spec":{"tolerations":[{}]},"spec":{}}`))
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
		// Decoded as the webhook decodes it on reinvocation: case
		// sensitively ("metAdAtA" is not metadata).
		_, again, err := DecodePod(out)
		if err != nil {
			t.Fatalf("the mutated pod is not a pod: %v\n%s", err, out)
		}
		if m2 := Plan(again, "spot-spread", profile); !m2.Empty() {
			t.Fatalf("reinvocation would change the pod again: %+v\nfrom %s", m2, out)
		}
	})
}

// FuzzHandleAdmissionReview serves arbitrary bodies: a body that is not an
// AdmissionReview is refused with 400 and a reason; every review is
// admitted (the webhook fails open), and any patch it returns applies to
// the object it was given.
func FuzzHandleAdmissionReview(f *testing.F) {
	f.Add([]byte(`{"apiVersion":"admission.k8s.io/v1","kind":"AdmissionReview","request":{"uid":"1","kind":{"version":"v1","kind":"Pod"},"namespace":"shop","operation":"CREATE","object":{"metadata":{"name":"p","labels":{"app":"a"}},"spec":{"containers":[{"name":"c"}]}}}}`))
	f.Add([]byte(`{"request":{"uid":"2","kind":{"group":"apps","version":"v1","kind":"Deployment"},"namespace":"shop","operation":"UPDATE","object":{"metadata":{"name":"d"},"spec":{"replicas":3,"template":{"metadata":{"labels":{"app":"a"}}}}}}}`))
	f.Add([]byte(`{"request":{"uid":"3","kind":{"version":"v1","kind":"Pod"},"namespace":"shop","operation":"CREATE","object":"not an object"}}`))
	f.Add([]byte(`{"request":{"kind":{"version":"v1","kind":"Pod"},"namespace":"shop","operation":"CREATE","object":{"spec":null,"metadata":[]}}}`))
	f.Add([]byte(`{"request":{"kind":{"version":"v1","kind":"Pod"},"namespace":"shop","operation":"CREATE","object":{"spec":{},"spec":{"tolerations":[]}}}}`))
	f.Add([]byte(`{"request":null}`))
	f.Add([]byte(`[`))
	cfg := config.Default()
	ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: "shop", Labels: map[string]string{ProfileKey: "spot-spread"}}}
	h := &Handler{Config: &cfg.Webhook, Reader: fake.NewClientBuilder().WithObjects(ns).Build(),
		Metrics: NewMetrics(prometheus.NewRegistry()), Clock: clocktesting.NewFakePassiveClock(time.Now())}
	f.Fuzz(func(t *testing.T, body []byte) {
		rec := httptest.NewRecorder()
		req := httptest.NewRequest(http.MethodPost, Path, bytes.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		h.ServeHTTP(rec, req)
		var review admissionv1.AdmissionReview
		if err := json.Unmarshal(rec.Body.Bytes(), &review); err != nil || review.Response == nil {
			t.Fatalf("the answer is not an AdmissionReview (%v): %s", err, rec.Body.String())
		}
		resp := review.Response
		if !resp.Allowed {
			// Only a body that is not a review is refused, with the reason.
			code := resp.Result.Code
			if resp.UID != "" || resp.Result == nil || code != http.StatusBadRequest || resp.Result.Message == "" {
				t.Fatalf("refused with uid %q, or without code 400 and a reason: %s\nbody %s", resp.UID, rec.Body.String(), body)
			}
			return
		}
		if len(resp.Patch) == 0 {
			return
		}
		// The object as the API server reads it, with its own decoder (case
		// sensitive, a repeated name's last value wins): the patch must
		// apply to that.
		var object struct {
			Request struct {
				Object json.RawMessage `json:"object"`
			} `json:"request"`
		}
		if err := kjson.UnmarshalCaseSensitivePreserveInts(body, &object); err != nil {
			t.Fatalf("admitted with a patch a body the API server's decoder refuses (%v): %s", err, body)
		}
		patch, err := jsonpatchapply.DecodePatch(resp.Patch)
		if err != nil {
			t.Fatalf("the patch does not decode: %v\n%s", err, resp.Patch)
		}
		if _, err := patch.Apply(object.Request.Object); err != nil {
			t.Fatalf("the patch does not apply: %v\npatch %s\nobject %s", err, resp.Patch, object.Request.Object)
		}
	})
}
