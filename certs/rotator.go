package certs

import (
	"context"
	"fmt"
	"time"

	admissionregistrationv1 "k8s.io/api/admissionregistration/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	admissionlisters "k8s.io/client-go/listers/admissionregistration/v1"
	corelisters "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/util/workqueue"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
	"sigs.k8s.io/controller-runtime/pkg/manager"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// EventRecorder is the part of client-go's record.EventRecorder we use.
type EventRecorder interface {
	Eventf(object runtime.Object, eventtype, reason, messageFmt string, args ...any)
}

// RotatorOptions configure a Rotator.
type RotatorOptions struct {
	Namespace             string
	CASecretName          string
	ServingSecretName     string
	WebhookConfigurations []string
	DNSNames              []string
	CAValidity            time.Duration
	ServingValidity       time.Duration
	// Settle defaults to 10s.
	Settle time.Duration
	Clock  clock.WithTicker
}

// Rotator keeps the CA, the serving certificate and the webhooks' CA
// bundle current. It runs on the elected leader only.
type Rotator struct {
	opts     RotatorOptions
	client   kubernetes.Interface
	recorder EventRecorder

	factories []informers.SharedInformerFactory
	secrets   map[string]corelisters.SecretNamespaceLister
	webhooks  admissionlisters.MutatingWebhookConfigurationLister
	queue     workqueue.TypedRateLimitingInterface[string]
}

var (
	_ manager.Runnable               = (*Rotator)(nil)
	_ manager.LeaderElectionRunnable = (*Rotator)(nil)
)

const queueKey = "certificates"

// NewRotator watches only the two named Secrets (so RBAC can grant by
// resourceNames) and the MutatingWebhookConfigurations.
func NewRotator(client kubernetes.Interface, recorder EventRecorder, opts RotatorOptions) *Rotator {
	if opts.Settle == 0 {
		opts.Settle = 10 * time.Second
	}
	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}
	r := &Rotator{
		opts: opts, client: client, recorder: recorder,
		secrets: map[string]corelisters.SecretNamespaceLister{},
		queue: workqueue.NewTypedRateLimitingQueueWithConfig(
			workqueue.NewTypedItemExponentialFailureRateLimiter[string](100*time.Millisecond, 30*time.Second),
			workqueue.TypedRateLimitingQueueConfig[string]{Name: "certificates", Clock: opts.Clock}),
	}
	enqueue := cache.ResourceEventHandlerFuncs{
		AddFunc:    func(any) { r.queue.Add(queueKey) },
		UpdateFunc: func(any, any) { r.queue.Add(queueKey) },
		DeleteFunc: func(any) { r.queue.Add(queueKey) },
	}
	for _, name := range []string{opts.CASecretName, opts.ServingSecretName} {
		f := informers.NewSharedInformerFactoryWithOptions(client, 0, informers.WithNamespace(opts.Namespace),
			informers.WithTweakListOptions(byName(name)))
		inf := f.Core().V1().Secrets()
		_, _ = inf.Informer().AddEventHandler(enqueue)
		r.secrets[name] = inf.Lister().Secrets(opts.Namespace)
		r.factories = append(r.factories, f)
	}
	f := informers.NewSharedInformerFactory(client, 0)
	inf := f.Admissionregistration().V1().MutatingWebhookConfigurations()
	_, _ = inf.Informer().AddEventHandler(enqueue)
	r.webhooks = inf.Lister()
	r.factories = append(r.factories, f)
	return r
}

func byName(name string) func(*metav1.ListOptions) {
	return func(o *metav1.ListOptions) {
		o.FieldSelector = fields.OneTermEqualSelector("metadata.name", name).String()
	}
}

// NeedLeaderElection makes a manager start the Rotator on the leader only.
func (r *Rotator) NeedLeaderElection() bool { return true }

// Start runs until ctx is done.
func (r *Rotator) Start(ctx context.Context) error {
	log := ctrllog.FromContext(ctx).WithName("certs")
	defer r.queue.ShutDown()
	for _, f := range r.factories {
		f.Start(ctx.Done())
		for typ, ok := range f.WaitForCacheSync(ctx.Done()) {
			if !ok {
				return fmt.Errorf("syncing the %v cache", typ)
			}
		}
	}
	defer func() {
		for _, f := range r.factories {
			f.Shutdown()
		}
	}()
	r.queue.Add(queueKey)
	go func() {
		<-ctx.Done()
		r.queue.ShutDown()
	}()
	for {
		key, shutdown := r.queue.Get()
		if shutdown {
			return nil
		}
		recheck, err := r.Reconcile(ctx)
		switch {
		case apierrors.IsConflict(err) || apierrors.IsAlreadyExists(err):
			// Decided on a cache that had not yet seen our last write;
			// the optimistic write refused it. Look again.
			log.V(1).Info("Certificate cache was stale; retrying", "error", err.Error())
			r.queue.AddRateLimited(key)
		case err != nil:
			log.Error(err, "Reconciling certificates failed; retrying")
			r.queue.AddRateLimited(key)
		default:
			r.queue.Forget(key)
			if !recheck.IsZero() {
				r.queue.AddAfter(key, recheck.Sub(r.opts.Clock.Now()))
			}
		}
		r.queue.Done(key)
	}
}

// Reconcile makes one pass: observe, decide, write. It returns when the
// decision may next change by the passing of time.
func (r *Rotator) Reconcile(ctx context.Context) (time.Time, error) {
	log := ctrllog.FromContext(ctx).WithName("certs")
	caSecret, err := r.getSecret(r.opts.CASecretName)
	if err != nil {
		return time.Time{}, err
	}
	servingSecret, err := r.getSecret(r.opts.ServingSecretName)
	if err != nil {
		return time.Time{}, err
	}
	configs, err := r.webhookConfigurations()
	if err != nil {
		return time.Time{}, err
	}
	in := Input{
		Now: r.opts.Clock.Now(), DNSNames: r.opts.DNSNames,
		CAValidity: r.opts.CAValidity, ServingValidity: r.opts.ServingValidity, Settle: r.opts.Settle,
	}
	if caSecret != nil {
		in.CAData = caSecret.Data
		if in.CAData == nil {
			in.CAData = map[string][]byte{}
		}
		if v := caSecret.Annotations[PublishedAtAnnotation]; v != "" {
			if t, err := time.Parse(time.RFC3339Nano, v); err == nil {
				in.PublishedAt = t
			}
		}
	}
	if servingSecret != nil {
		in.ServingData = servingSecret.Data
		if in.ServingData == nil {
			in.ServingData = map[string][]byte{}
		}
	}
	for _, c := range configs {
		for _, w := range c.Webhooks {
			in.Bundles = append(in.Bundles, w.ClientConfig.CABundle)
		}
	}
	plan, err := Decide(in)
	if err != nil {
		return time.Time{}, err
	}

	// The order is what keeps rotation safe: the CA first, then the bundle
	// that trusts it, then a serving certificate that needs that bundle.
	if plan.CAData != nil || !plan.PublishedAt.IsZero() || plan.ClearPublishedAt {
		annotations := map[string]string{}
		if caSecret != nil {
			for k, v := range caSecret.Annotations {
				annotations[k] = v
			}
		}
		if t := plan.PublishedAt; !t.IsZero() {
			annotations[PublishedAtAnnotation] = t.UTC().Format(time.RFC3339Nano)
		} else if plan.CAData != nil || plan.ClearPublishedAt {
			delete(annotations, PublishedAtAnnotation)
		}
		data := plan.CAData
		if data == nil {
			data = caSecret.Data
		}
		if caSecret, err = r.writeSecret(ctx, caSecret, r.opts.CASecretName, data, annotations); err != nil {
			return time.Time{}, err
		}
	}
	if plan.WriteBundle {
		for _, c := range configs {
			if err := r.writeBundle(ctx, c, plan.Bundle); err != nil {
				return time.Time{}, err
			}
			log.Info("Wrote CA bundle", "mutatingWebhookConfiguration", klog.KObj(c))
		}
	}
	if plan.ServingData != nil {
		if servingSecret, err = r.writeSecret(ctx, servingSecret, r.opts.ServingSecretName, plan.ServingData, nil); err != nil {
			return time.Time{}, err
		}
	}
	for _, e := range plan.Events {
		target := caSecret
		if e.Reason == "ServingCertificateIssued" {
			target = servingSecret
		}
		eventType := corev1.EventTypeNormal
		if e.Warning {
			eventType = corev1.EventTypeWarning
			log.Info("Repaired certificate state", "reason", e.Reason, "message", e.Message)
		} else {
			log.Info("Certificate state changed", "reason", e.Reason, "message", e.Message)
		}
		if r.recorder != nil && target != nil {
			r.recorder.Eventf(target, eventType, e.Reason, "%s", e.Message)
		}
	}
	return plan.RecheckAt, nil
}

func (r *Rotator) getSecret(name string) (*corev1.Secret, error) {
	s, err := r.secrets[name].Get(name)
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading secret %s/%s: %w", r.opts.Namespace, name, err)
	}
	return s, nil
}

func (r *Rotator) webhookConfigurations() ([]*admissionregistrationv1.MutatingWebhookConfiguration, error) {
	var out []*admissionregistrationv1.MutatingWebhookConfiguration
	for _, name := range r.opts.WebhookConfigurations {
		c, err := r.webhooks.Get(name)
		if apierrors.IsNotFound(err) {
			continue // not installed (yet): nothing calls us through it
		}
		if err != nil {
			return nil, fmt.Errorf("reading mutatingwebhookconfiguration %s: %w", name, err)
		}
		out = append(out, c)
	}
	return out, nil
}

// writeSecret creates or updates a Secret. Updates carry the observed
// resourceVersion, so a decision made on a stale cache fails with a
// conflict instead of overwriting newer certificates.
func (r *Rotator) writeSecret(ctx context.Context, current *corev1.Secret, name string, data map[string][]byte, annotations map[string]string) (*corev1.Secret, error) {
	secrets := r.client.CoreV1().Secrets(r.opts.Namespace)
	if current == nil {
		s := &corev1.Secret{
			ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: r.opts.Namespace, Annotations: annotations,
				Labels: map[string]string{"app.kubernetes.io/managed-by": "spot-rebalancer"}},
			Type: corev1.SecretTypeOpaque,
			Data: data,
		}
		created, err := secrets.Create(ctx, s, metav1.CreateOptions{})
		if err != nil {
			return nil, fmt.Errorf("creating secret %s/%s: %w", r.opts.Namespace, name, err)
		}
		return created, nil
	}
	s := current.DeepCopy()
	s.Data = data
	if annotations != nil {
		s.Annotations = annotations
	}
	updated, err := secrets.Update(ctx, s, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("updating secret %s/%s: %w", r.opts.Namespace, name, err)
	}
	return updated, nil
}

func (r *Rotator) writeBundle(ctx context.Context, c *admissionregistrationv1.MutatingWebhookConfiguration, bundle []byte) error {
	c = c.DeepCopy()
	for i := range c.Webhooks {
		c.Webhooks[i].ClientConfig.CABundle = bundle
	}
	_, err := r.client.AdmissionregistrationV1().MutatingWebhookConfigurations().Update(ctx, c, metav1.UpdateOptions{})
	if err != nil {
		return fmt.Errorf("writing the CA bundle into mutatingwebhookconfiguration %s: %w", c.Name, err)
	}
	return nil
}

// OptionsFromConfig are the rotator options the configuration asks for.
func OptionsFromConfig(cfg *config.Config) RotatorOptions {
	return RotatorOptions{
		Namespace:             cfg.Webhook.Namespace,
		CASecretName:          cfg.Certs.CASecretName,
		ServingSecretName:     cfg.Certs.ServingSecretName,
		WebhookConfigurations: cfg.Certs.WebhookConfigurations,
		DNSNames:              DNSNames(cfg.Certs.ServiceName, cfg.Webhook.Namespace, cfg.Certs.ExtraDNSNames),
		CAValidity:            cfg.Certs.CAValidity.Duration,
		ServingValidity:       cfg.Certs.ServingValidity.Duration,
	}
}
