package main

import (
	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/internal/metricsserve"
	"github.com/spot-rebalancer/spot-rebalancer/internal/version"
	"github.com/spot-rebalancer/spot-rebalancer/webhook"
)

func newWebhookCommand(global *globalOptions) *cobra.Command {
	var (
		port        int32
		metricsAddr string
		healthAddr  string
		profiling   bool
		secure      bool
	)
	cmd := &cobra.Command{
		Use:   "webhook",
		Short: "Serve the mutating admission webhook (Spot tolerations, profiles, PDB hints)",
		Long: `Serve the mutating admission webhook.

Pods created in a namespace labelled spot-rebalancer.io/profile=<profile>
(or annotated with it) get the profile's tolerations, preferred node affinity
towards Spot capacity and topology spread; what was added is recorded in the
annotation spot-rebalancer.io/injected. Deployments and StatefulSets in such
namespaces get the annotation spot-rebalancer.io/pdb-hint and, when no
PodDisruptionBudget protects them during a Spot hand-off, a warning that
kubectl prints.

The webhook fails open: any internal error admits the request unchanged. It
serves the certificate from the serving Secret (certs.mode self-managed,
rotated by the controller) or from certs.certDir (certs.mode external), and
is ready only when that certificate verifies against the CA bundle of the
MutatingWebhookConfiguration.`,
		Example: `  # Run with the defaults against the cluster of $KUBECONFIG
  spot-rebalancer webhook

  # Show the profiles it would apply
  spot-rebalancer webhook --print-config`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, restConfig, err := global.start(cmd, func(c *config.Config) {
				if cmd.Flags().Changed("port") {
					c.Webhook.Port = port
				}
			})
			if err != nil {
				return err
			}
			metrics, err := metricsserve.Options(metricsAddr, secure, profiling)
			if err != nil {
				return usageError{err}
			}
			log.Info("Starting webhook", "version", version.Get().Version, "port", cfg.Webhook.Port, "profiles", len(cfg.Webhook.Profiles), "metricsSecure", secure)
			return webhook.Run(logr.NewContext(cmd.Context(), log), webhook.Options{
				Config: cfg, RESTConfig: restConfig, Metrics: metrics, HealthAddr: healthAddr,
			})
		},
	}
	cmd.Flags().Int32Var(&port, "port", 9443, "HTTPS port for admission requests (overrides webhook.port)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint; 0 disables it")
	cmd.Flags().StringVar(&healthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	cmd.Flags().BoolVar(&profiling, "profiling", false, "serve Go's pprof profiles under /debug/pprof/ on the metrics address, behind the same check")
	cmd.Flags().BoolVar(&secure, "metrics-secure", true, metricsSecureHelp)
	return cmd
}
