package webhook

import (
	"context"
	"fmt"
	"slices"
	"strings"

	"github.com/go-logr/logr"
	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/webhook/admission"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// Handler answers pod and workload admission requests, as an http.Handler
// of AdmissionReviews (ServeHTTP). Reader must be
// backed by informer caches: nothing on the request path calls the API
// server.
type Handler struct {
	Config  *config.Webhook
	Reader  client.Reader
	Metrics *Metrics
	Clock   clock.PassiveClock
}

// outcome is what a request led to, for the response and the metrics.
type outcome struct {
	resp    admission.Response
	result  string
	profile string
}

// Review admits every request: it mutates pods on CREATE and annotates
// Deployments and StatefulSets; on any internal error, a panic included, it
// admits the request unchanged.
func (h *Handler) Review(ctx context.Context, req *Request) admission.Response {
	start := h.Clock.Now()
	kind := strings.ToLower(req.Kind.Kind)
	out := h.handle(ctx, req)
	if out.profile == "" {
		out.profile = "none"
	}
	if kind != "pod" && kind != "deployment" && kind != "statefulset" {
		kind = "other"
	}
	h.Metrics.Requests.WithLabelValues(kind, string(req.Operation), out.result, out.profile).Inc()
	h.Metrics.Latency.WithLabelValues(kind).Observe(h.Clock.Since(start).Seconds())
	return out.resp
}

func (h *Handler) handle(ctx context.Context, req *Request) (out outcome) {
	// Built only to log: a logger with values costs on every request.
	log := func() logr.Logger {
		return ctrllog.FromContext(ctx).WithValues("uid", req.UID, "kind", req.Kind.Kind, "namespace", req.Namespace, "name", req.Name, "operation", req.Operation)
	}
	defer func() {
		if r := recover(); r != nil {
			log().Error(fmt.Errorf("panic: %v", r), "Admitting unchanged after a panic")
			out = outcome{resp: admission.Allowed(""), result: ResultError, profile: out.profile}
		}
	}()
	var err error
	switch {
	case req.Kind.Group == "" && req.Kind.Kind == "Pod":
		out, err = h.pod(ctx, req)
	case req.Kind.Group == "apps" && (req.Kind.Kind == "Deployment" || req.Kind.Kind == "StatefulSet"):
		out, err = h.workload(ctx, req)
	default:
		out = outcome{resp: admission.Allowed(""), result: ResultSkipped}
	}
	if err != nil {
		log().Error(err, "Admitting unchanged after an internal error")
		return outcome{resp: admission.Allowed(""), result: ResultError, profile: out.profile}
	}
	return out
}

func (h *Handler) pod(ctx context.Context, req *Request) (outcome, error) {
	if req.Operation != "CREATE" {
		return outcome{resp: admission.Allowed(""), result: ResultSkipped}, nil
	}
	if req.Object.Err != nil {
		return outcome{}, req.Object.Err
	}
	doc, pod := req.Object.Pod()
	nsLabels, err := h.namespaceLabels(ctx, req.Namespace)
	if err != nil {
		return outcome{}, err
	}
	name, skip := SelectProfile(pod, req.Namespace, nsLabels, h.Config)
	switch skip {
	case "":
	case SkipUnknownProfile:
		return outcome{result: ResultSkipped, profile: "unknown", resp: admission.Allowed("").WithWarnings(
			truncate(fmt.Sprintf("spot-rebalancer: profile %q is not configured; pod left unchanged", name)))}, nil
	default:
		return outcome{resp: admission.Allowed(""), result: ResultSkipped}, nil
	}
	m := Plan(pod, name, h.Config.Profiles[name])
	if m.Empty() {
		return outcome{resp: admission.Allowed(""), result: ResultUnchanged, profile: name}, nil
	}
	ops, err := m.Patch(doc)
	if err != nil {
		return outcome{profile: name}, err
	}
	return outcome{resp: admission.Patched("", ops...), result: ResultMutated, profile: name}, nil
}

func (h *Handler) workload(ctx context.Context, req *Request) (outcome, error) {
	if req.Operation != "CREATE" && req.Operation != "UPDATE" {
		return outcome{resp: admission.Allowed(""), result: ResultSkipped}, nil
	}
	if req.Namespace == h.Config.Namespace || slices.Contains(h.Config.ExcludedNamespaces, req.Namespace) {
		return outcome{resp: admission.Allowed(""), result: ResultSkipped}, nil
	}
	nsLabels, err := h.namespaceLabels(ctx, req.Namespace)
	if err != nil {
		return outcome{}, err
	}
	if p := nsLabels[ProfileKey]; p == "" || p == config.ProfileNone {
		return outcome{resp: admission.Allowed(""), result: ResultSkipped}, nil
	}
	obj := req.Object
	if obj.Err != nil {
		return outcome{}, fmt.Errorf("%s: %w", req.Kind.Kind, obj.Err)
	}
	var meta MetadataFields
	if obj.Metadata != nil {
		meta = *obj.Metadata
	}
	var spec objectSpec
	if obj.Spec != nil {
		spec = *obj.Spec
	}
	var pdbs policyv1.PodDisruptionBudgetList
	if err := h.Reader.List(ctx, &pdbs, client.InNamespace(req.Namespace)); err != nil {
		return outcome{}, fmt.Errorf("listing PodDisruptionBudgets from the cache: %w", err)
	}
	replicas := int32(1)
	if spec.Replicas != nil {
		replicas = *spec.Replicas
	}
	items := make([]*policyv1.PodDisruptionBudget, len(pdbs.Items))
	for i := range pdbs.Items {
		items[i] = &pdbs.Items[i]
	}
	hint := Hint(replicas, spec.Template.Metadata.Labels, items)
	var warnings []string
	if warning := hint.Warning(req.Kind.Kind, meta.Name); warning != "" {
		warnings = append(warnings, warning)
	}
	if meta.Annotations[PDBHintAnnotation] == hint.Text {
		return outcome{resp: admission.Allowed("").WithWarnings(warnings...), result: ResultUnchanged}, nil
	}
	op := annotationOp(obj.Metadata != nil, meta.Annotations, PDBHintAnnotation, hint.Text)
	return outcome{resp: admission.Patched("", op).WithWarnings(warnings...), result: ResultMutated}, nil
}

// namespaceLabels reads a namespace's labels from the metadata cache.
func (h *Handler) namespaceLabels(ctx context.Context, name string) (map[string]string, error) {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	if err := h.Reader.Get(ctx, client.ObjectKey{Name: name}, ns); err != nil {
		return nil, fmt.Errorf("reading namespace %s from the cache: %w", name, err)
	}
	return ns.Labels, nil
}

func truncate(s string) string {
	if len(s) > maxWarning {
		return s[:maxWarning-3] + "..."
	}
	return s
}
