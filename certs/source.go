package certs

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/client-go/informers"
	"k8s.io/client-go/kubernetes"
	admissionlisters "k8s.io/client-go/listers/admissionregistration/v1"
	"k8s.io/client-go/tools/cache"
	"k8s.io/klog/v2"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/certwatcher"
	ctrllog "sigs.k8s.io/controller-runtime/pkg/log"
)

// ErrNoCertificate is returned while a source holds no certificate yet.
var ErrNoCertificate = errors.New("no serving certificate loaded yet")

// Source is where the webhook server gets its serving certificate.
type Source interface {
	// GetCertificate is a tls.Config.GetCertificate.
	GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error)
	// Ready fails until the source holds a certificate that verifies
	// against the CA bundle published in the webhook configurations.
	Ready(*http.Request) error
	// Start loads and watches the certificate until ctx is done.
	Start(ctx context.Context) error
}

var (
	_ Source = (*SecretSource)(nil)
	_ Source = (*FileSource)(nil)
)

// bundleCheck verifies a certificate against the caBundle of every webhook
// of the configured MutatingWebhookConfigurations.
type bundleCheck struct {
	names    []string
	dnsNames []string
	clock    clock.PassiveClock
	lister   admissionlisters.MutatingWebhookConfigurationLister
	factory  informers.SharedInformerFactory
}

func newBundleCheck(client kubernetes.Interface, names, dnsNames []string, clk clock.PassiveClock) *bundleCheck {
	f := informers.NewSharedInformerFactory(client, 0)
	return &bundleCheck{names: names, dnsNames: dnsNames, clock: clk, factory: f,
		lister: f.Admissionregistration().V1().MutatingWebhookConfigurations().Lister()}
}

func (b *bundleCheck) start(ctx context.Context) error {
	b.factory.Start(ctx.Done())
	for typ, ok := range b.factory.WaitForCacheSync(ctx.Done()) {
		if !ok {
			return fmt.Errorf("syncing the %v cache", typ)
		}
	}
	return nil
}

func (b *bundleCheck) verify(cert *tls.Certificate) error {
	if cert == nil || cert.Leaf == nil {
		return ErrNoCertificate
	}
	checked := 0
	for _, name := range b.names {
		c, err := b.lister.Get(name)
		if apierrors.IsNotFound(err) {
			continue
		}
		if err != nil {
			return err
		}
		for _, w := range c.Webhooks {
			roots, err := ParseCertificates(w.ClientConfig.CABundle)
			if err != nil {
				return fmt.Errorf("webhook %s of %s has no usable caBundle: %w", w.Name, name, err)
			}
			if err := Verify(cert.Leaf, roots, b.dnsNames, b.clock.Now()); err != nil {
				return fmt.Errorf("the serving certificate does not verify against the caBundle of webhook %s of %s: %w", w.Name, name, err)
			}
			checked++
		}
	}
	if checked == 0 {
		return fmt.Errorf("no webhook of the MutatingWebhookConfigurations %v publishes a CA bundle yet", b.names)
	}
	return nil
}

// SecretSource serves the certificate in the serving Secret, swapping it in
// memory when the Secret changes: no restart, no kubelet volume sync.
type SecretSource struct {
	namespace, name string
	client          kubernetes.Interface
	bundle          *bundleCheck
	cert            atomic.Pointer[tls.Certificate]
}

// NewSecretSource watches only the named Secret.
func NewSecretSource(client kubernetes.Interface, namespace, name string, webhookConfigurations, dnsNames []string, clk clock.PassiveClock) *SecretSource {
	return &SecretSource{namespace: namespace, name: name, client: client,
		bundle: newBundleCheck(client, webhookConfigurations, dnsNames, clk)}
}

// Start watches the Secret until ctx is done.
func (s *SecretSource) Start(ctx context.Context) error {
	log := ctrllog.FromContext(ctx).WithName("certs")
	f := informers.NewSharedInformerFactoryWithOptions(s.client, 0, informers.WithNamespace(s.namespace),
		informers.WithTweakListOptions(byName(s.name)))
	load := func(obj any) {
		sec, ok := obj.(*corev1.Secret)
		if !ok || sec.Name != s.name {
			return
		}
		kp, err := tls.X509KeyPair(sec.Data[TLSCertKey], sec.Data[TLSKeyKey])
		if err != nil {
			// Keep serving the last good certificate; the rotator replaces
			// what is broken.
			log.Error(err, "Ignoring an unusable serving certificate", "secret", klog.KObj(sec))
			return
		}
		if old := s.cert.Load(); old == nil || !old.Leaf.Equal(kp.Leaf) {
			s.cert.Store(&kp)
			log.Info("Loaded serving certificate", "secret", klog.KObj(sec), "notAfter", kp.Leaf.NotAfter, "serial", kp.Leaf.SerialNumber.String())
		}
	}
	_, err := f.Core().V1().Secrets().Informer().AddEventHandler(cache.ResourceEventHandlerFuncs{
		AddFunc: load, UpdateFunc: func(_, obj any) { load(obj) },
	})
	if err != nil {
		return err
	}
	f.Start(ctx.Done())
	defer f.Shutdown()
	if err := s.bundle.start(ctx); err != nil {
		return err
	}
	defer s.bundle.factory.Shutdown()
	<-ctx.Done()
	return nil
}

// GetCertificate returns the current certificate.
func (s *SecretSource) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	if c := s.cert.Load(); c != nil {
		return c, nil
	}
	return nil, ErrNoCertificate
}

// Ready fails until the certificate verifies against the published bundle.
func (s *SecretSource) Ready(*http.Request) error {
	return s.bundle.verify(s.cert.Load())
}

// FileSource serves a mounted certificate (certs.mode external, e.g. from
// cert-manager) and reloads it when the files change.
type FileSource struct {
	watcher *certwatcher.CertWatcher
	bundle  *bundleCheck
}

// NewFileSource reads tls.crt and tls.key from dir.
func NewFileSource(client kubernetes.Interface, dir string, webhookConfigurations, dnsNames []string, clk clock.PassiveClock) (*FileSource, error) {
	w, err := certwatcher.New(dir+"/"+TLSCertKey, dir+"/"+TLSKeyKey)
	if err != nil {
		return nil, fmt.Errorf("loading the certificate in %s: %w", dir, err)
	}
	// File events can be missed when a writer replaces the files one after
	// the other; a short poll catches up.
	w = w.WithWatchInterval(2 * time.Second)
	return &FileSource{watcher: w, bundle: newBundleCheck(client, webhookConfigurations, dnsNames, clk)}, nil
}

// Start watches the files until ctx is done.
func (s *FileSource) Start(ctx context.Context) error {
	if err := s.bundle.start(ctx); err != nil {
		return err
	}
	defer s.bundle.factory.Shutdown()
	return s.watcher.Start(ctx)
}

// GetCertificate returns the current certificate.
func (s *FileSource) GetCertificate(h *tls.ClientHelloInfo) (*tls.Certificate, error) {
	return s.watcher.GetCertificate(h)
}

// Ready fails until the certificate verifies against the published bundle.
func (s *FileSource) Ready(*http.Request) error {
	c, err := s.watcher.GetCertificate(nil)
	if err != nil {
		return err
	}
	if c != nil && c.Leaf == nil && len(c.Certificate) > 0 {
		leaf, err := x509.ParseCertificate(c.Certificate[0])
		if err != nil {
			return err
		}
		c = &tls.Certificate{Certificate: c.Certificate, PrivateKey: c.PrivateKey, Leaf: leaf}
	}
	return s.bundle.verify(c)
}
