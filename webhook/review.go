package webhook

import (
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"

	jsonv2 "github.com/go-json-experiment/json"
	"github.com/go-json-experiment/json/jsontext"
	admissionv1 "k8s.io/api/admission/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"
)

// The AdmissionReview versions served. Both have the same shape; the
// answer carries the version of the question.
const (
	reviewV1      = "admission.k8s.io/v1"
	reviewV1beta1 = "admission.k8s.io/v1beta1"
	reviewKind    = "AdmissionReview"
)

// maxReviewBytes bounds a request body, as controller-runtime's webhook
// does (the API server's own limit on an object is 3 MiB).
const maxReviewBytes = 7 << 20

// Request is the part of an AdmissionRequest the webhook reads. Its object
// is decoded while the review around it is: its bytes are scanned once
// more to be cut out, but decoded once, not once as a raw envelope and
// again as a pod.
type Request struct {
	UID       types.UID               `json:"uid"`
	Kind      metav1.GroupVersionKind `json:"kind"`
	Namespace string                  `json:"namespace"`
	Name      string                  `json:"name"`
	Operation admissionv1.Operation   `json:"operation"`
	Object    Object                  `json:"object"`
}

// Object is the admitted object's metadata and the parts of its spec the
// webhook reads, for a pod (tolerations, affinity, spread) and a workload
// (replicas, template labels) alike; everything else (containers, volumes,
// managed fields) is skipped, never decoded.
type Object struct {
	Metadata *MetadataFields `json:"metadata"`
	Spec     *objectSpec     `json:"spec"`
	// Err is why the object's JSON did not decode into these fields (the
	// review around it still did): such a request is admitted unchanged.
	Err error `json:"-"`
}

type objectSpec struct {
	PodSpecFields `json:",inline"`
	// A Deployment's or StatefulSet's; never present in a pod's JSON.
	Replicas *int32 `json:"replicas"`
	Template struct {
		Metadata struct {
			Labels map[string]string `json:"labels"`
		} `json:"metadata"`
	} `json:"template"`
}

// JSON is read as the API server reads it, names matching case
// sensitively, repeated names accepted (reviewOptions), with one
// exception: an object (the pod, the workload) that repeats a name is
// not read. The API server never sends one; and where a decoder merges the
// repeats (ours and the API server's do) the JSON patch library keeps only
// the last, so a patch built from such an object could fail to apply. It
// is admitted unchanged.
var reviewOptions = jsontext.AllowDuplicateNames(true)

// UnmarshalJSONFrom reads the object's JSON from the review's decoder: a
// syntax error fails the review, while a value of the wrong type (a spec
// that is a number) is kept in Err, so that the review still decodes and
// the request is admitted unchanged with its UID.
func (o *Object) UnmarshalJSONFrom(dec *jsontext.Decoder) error {
	raw, err := dec.ReadValue()
	if err != nil {
		return err
	}
	*o = DecodeObject(raw)
	return nil
}

// plainObject is Object without its JSON method.
type plainObject Object

// DecodeObject decodes an object's JSON into the fields the webhook reads.
func DecodeObject(raw []byte) Object {
	var o Object
	if err := jsonv2.Unmarshal(raw, (*plainObject)(&o)); err != nil {
		return Object{Err: fmt.Errorf("decoding the object: %w", err)}
	}
	return o
}

// Pod is the object seen as a pod: its document (what the patch is built
// against) and a typed pod holding the decoded fields.
func (o *Object) Pod() (*PodDocument, *corev1.Pod) {
	doc := &PodDocument{Metadata: o.Metadata}
	pod := &corev1.Pod{}
	if m := o.Metadata; m != nil {
		pod.ObjectMeta = metav1.ObjectMeta{Labels: m.Labels, Annotations: m.Annotations, OwnerReferences: m.OwnerReferences}
	}
	if o.Spec != nil {
		doc.Spec = &o.Spec.PodSpecFields
		pod.Spec = corev1.PodSpec{Tolerations: doc.Spec.Tolerations, Affinity: doc.Spec.Affinity,
			TopologySpreadConstraints: doc.Spec.TopologySpreadConstraints}
	}
	return doc, pod
}

// review is an AdmissionReview as the webhook reads it.
type review struct {
	APIVersion string   `json:"apiVersion"`
	Kind       string   `json:"kind"`
	Request    *Request `json:"request"`
}

// decodeReview reads an AdmissionReview body. A review without apiVersion
// and kind is taken as v1, as controller-runtime takes it.
func decodeReview(body []byte) (apiVersion string, req *Request, err error) {
	var r review
	if err := jsonv2.Unmarshal(body, &r, reviewOptions); err != nil {
		return "", nil, fmt.Errorf("decoding the AdmissionReview: %w", err)
	}
	if r.APIVersion == "" && r.Kind == "" {
		r.APIVersion, r.Kind = reviewV1, reviewKind
	}
	if r.Kind != reviewKind || (r.APIVersion != reviewV1 && r.APIVersion != reviewV1beta1) {
		return "", nil, fmt.Errorf("apiVersion %q, kind %q: want kind %s of %s or %s", r.APIVersion, r.Kind, reviewKind, reviewV1, reviewV1beta1)
	}
	if r.Request == nil {
		return "", nil, errors.New("the AdmissionReview has no request")
	}
	return r.APIVersion, r.Request, nil
}

var _ http.Handler = (*Handler)(nil)

// ServeHTTP answers an AdmissionReview. A body that is not a review (not
// JSON, no request, too large, not application/json) gets a review that
// refuses it with code 400 or 413 and says why, as controller-runtime's
// webhook answers; the API server never sends one.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	apiVersion, req, code, err := readReview(r)
	if err != nil {
		ctrllog.FromContext(r.Context()).Error(err, "Refusing a malformed admission request")
		writeReview(w, reviewV1, admission.Errored(code, err))
		return
	}
	resp := h.Review(r.Context(), req)
	resp.UID = req.UID
	writeReview(w, apiVersion, resp)
}

// readReview reads and decodes the request's body, or says why not with
// the HTTP code to answer.
func readReview(r *http.Request) (apiVersion string, req *Request, code int32, err error) {
	defer r.Body.Close()
	if ct := r.Header.Get("Content-Type"); ct != "application/json" {
		return "", nil, http.StatusBadRequest, fmt.Errorf("content type %q: want application/json", ct)
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxReviewBytes+1))
	if err != nil {
		return "", nil, http.StatusBadRequest, fmt.Errorf("reading the request body: %w", err)
	}
	if len(body) == 0 {
		return "", nil, http.StatusBadRequest, errors.New("the request body is empty")
	}
	if len(body) > maxReviewBytes {
		return "", nil, http.StatusRequestEntityTooLarge, fmt.Errorf("the request body is larger than %d bytes", maxReviewBytes)
	}
	apiVersion, req, err = decodeReview(body)
	if err != nil {
		return "", nil, http.StatusBadRequest, err
	}
	return apiVersion, req, 0, nil
}

// reviewResponse is the answer's envelope; the response itself is the
// API's own type.
type reviewResponse struct {
	APIVersion string                         `json:"apiVersion"`
	Kind       string                         `json:"kind"`
	Response   *admissionv1.AdmissionResponse `json:"response"`
}

// writeReview writes the answer. Patches become the response's JSONPatch.
func writeReview(w http.ResponseWriter, apiVersion string, resp admission.Response) {
	if len(resp.Patches) > 0 {
		patch, err := json.Marshal(resp.Patches)
		if err != nil {
			// Our own operations always marshal; should one not, the pod is
			// admitted unchanged rather than refused.
			ctrllog.Log.Error(err, "Admitting unchanged: the patch does not marshal")
			resp = admission.Allowed("")
		} else {
			resp.Patch = patch
			resp.PatchType = new(admissionv1.PatchTypeJSONPatch)
		}
	}
	body, err := json.Marshal(reviewResponse{APIVersion: apiVersion, Kind: reviewKind, Response: &resp.AdmissionResponse})
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	if _, err := w.Write(body); err != nil {
		ctrllog.Log.V(1).Info("Writing the admission response failed", "error", err.Error())
	}
}
