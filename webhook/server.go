package webhook

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net/http"
	"sync/atomic"

	corev1 "k8s.io/api/core/v1"
	policyv1 "k8s.io/api/policy/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes"
	clientgoscheme "k8s.io/client-go/kubernetes/scheme"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/cache"
	"sigs.k8s.io/controller-runtime/pkg/client"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
	ctrlwebhook "sigs.k8s.io/controller-runtime/pkg/webhook"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/config"
)

// Path is where the webhook serves admission requests of every kind.
const Path = "/mutate"

// Options configure the webhook server.
type Options struct {
	Config     *config.Config
	RESTConfig *rest.Config
	// Host is the address to bind; empty binds every interface.
	Host string
	// Metrics is how /metrics (and pprof) are served (metricsserve.Options).
	Metrics metricsserver.Options
	// HealthAddr is the bind address of the probes; "0" disables.
	HealthAddr string
}

// Run serves the webhook until ctx is done.
func Run(ctx context.Context, opts Options) error {
	cfg := opts.Config
	client, err := kubernetes.NewForConfig(opts.RESTConfig)
	if err != nil {
		return err
	}
	dnsNames := certs.OptionsFromConfig(cfg).DNSNames
	var source certs.Source
	switch cfg.Certs.Mode {
	case config.CertModeExternal:
		if source, err = certs.NewFileSource(client, cfg.Certs.CertDir, cfg.Certs.WebhookConfigurations, dnsNames, clock.RealClock{}); err != nil {
			return err
		}
	default:
		source = certs.NewSecretSource(client, cfg.Webhook.Namespace, cfg.Certs.ServingSecretName, cfg.Certs.WebhookConfigurations, dnsNames, clock.RealClock{})
	}

	scheme := runtime.NewScheme()
	if err := clientgoscheme.AddToScheme(scheme); err != nil {
		return err
	}
	server := ctrlwebhook.NewServer(ctrlwebhook.Options{
		Host: opts.Host,
		Port: int(cfg.Webhook.Port),
		TLSOpts: []func(*tls.Config){func(c *tls.Config) {
			c.GetCertificate = source.GetCertificate
			c.MinVersion = tls.VersionTLS12
		}},
	})
	mgr, err := manager.New(opts.RESTConfig, manager.Options{
		Scheme:                 scheme,
		Metrics:                opts.Metrics,
		HealthProbeBindAddress: opts.HealthAddr,
		WebhookServer:          server,
	})
	if err != nil {
		return fmt.Errorf("creating manager: %w", err)
	}
	handler := &Handler{Config: &cfg.Webhook, Reader: mgr.GetCache(), Metrics: NewMetrics(ctrlmetrics.Registry), Clock: clock.RealClock{}}
	// GetWebhookServer adds the server to the manager's runnables.
	mgr.GetWebhookServer().Register(Path, handler)

	for _, m := range certs.Metrics(source) {
		if err := ctrlmetrics.Registry.Register(m); err != nil {
			return err
		}
	}
	if err := mgr.Add(manager.RunnableFunc(source.Start)); err != nil {
		return err
	}
	warm := &cacheWarmer{cache: mgr.GetCache()}
	if err := mgr.Add(warm); err != nil {
		return err
	}
	if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
		return err
	}
	for name, check := range map[string]healthz.Checker{
		"certificate": source.Ready,
		"caches":      warm.ready,
		"server":      server.StartedChecker(),
	} {
		if err := mgr.AddReadyzCheck(name, check); err != nil {
			return err
		}
	}
	return mgr.Start(ctx)
}

// cacheWarmer starts the namespace and PDB informers before the webhook
// reports ready, so that no request waits for a cache to fill.
type cacheWarmer struct {
	cache  cache.Cache
	synced atomic.Bool
}

func (w *cacheWarmer) Start(ctx context.Context) error {
	ns := &metav1.PartialObjectMetadata{}
	ns.SetGroupVersionKind(corev1.SchemeGroupVersion.WithKind("Namespace"))
	for _, obj := range []client.Object{ns, &policyv1.PodDisruptionBudget{}} {
		if _, err := w.cache.GetInformer(ctx, obj); err != nil {
			return fmt.Errorf("starting the %T informer: %w", obj, err)
		}
	}
	if !w.cache.WaitForCacheSync(ctx) {
		return errors.New("caches did not sync")
	}
	w.synced.Store(true)
	return nil
}

func (w *cacheWarmer) ready(*http.Request) error {
	if !w.synced.Load() {
		return errors.New("namespace and PodDisruptionBudget caches are not synced yet")
	}
	return nil
}
