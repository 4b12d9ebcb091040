package main

import (
	"fmt"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/internal/version"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/controller"
)

// leaderElectionID names the Lease the controller replicas compete for.
const leaderElectionID = "spot-rebalancer-controller"

func newControllerCommand(global *globalOptions) *cobra.Command {
	var (
		logs        logOptions
		leaderElect bool
		dryRun      bool
		leaseNS     string
		metricsAddr string
		healthAddr  string
	)
	cmd := &cobra.Command{
		Use:   "controller",
		Short: "Run the leader-elected rebalancer and webhook certificate rotation",
		Long: `Run the leader-elected controller. Run two replicas: only the leader writes.

The rebalancer watches Nodes for Spot signals (the conditions
SpotRebalanceRecommended and SpotInterruptionNotice, AWS Node Termination
Handler's taints, the annotation spot-rebalancer.io/at-risk=true) and moves
each at-risk node through at-risk -> awaiting-replacement -> draining ->
drained (or blocked), recorded in the node's spot-rebalancer.io/state
annotation and spot-rebalancer.io/draining taint. It waits for replacement
capacity (rebalancer.replacement.mode), then evicts in waves that never exceed
a PodDisruptionBudget; an interruption notice never waits and ends at its
deadline. With --dry-run it only logs plans and records Events.

With certs.mode self-managed (the default) it keeps the webhook's CA and
serving certificate in the Secrets certs.caSecretName and
certs.servingSecretName, renews each when a third of its lifetime is left,
and keeps the CA bundle of every MutatingWebhookConfiguration named in
certs.webhookConfigurations current, rewriting it within seconds if someone
re-applies the configuration without it. A new CA is published next to the
old one before any certificate it signs is served.`,
		Example: `  # Run against the cluster of $KUBECONFIG
  spot-rebalancer controller --log-format text`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := global.loadConfig(cmd, func(c *config.Config) {
				if cmd.Flags().Changed("dry-run") {
					c.Rebalancer.DryRun = dryRun
				}
			})
			if err != nil {
				return err
			}
			log, err := logs.setup()
			if err != nil {
				return err
			}
			restConfig, err := global.restConfig()
			if err != nil {
				return err
			}
			if leaseNS == "" {
				leaseNS = cfg.Webhook.Namespace
			}
			mgr, err := manager.New(restConfig, manager.Options{
				Metrics:                       metricsserver.Options{BindAddress: metricsAddr},
				HealthProbeBindAddress:        healthAddr,
				LeaderElection:                leaderElect,
				LeaderElectionID:              leaderElectionID,
				LeaderElectionNamespace:       leaseNS,
				LeaderElectionReleaseOnCancel: true,
			})
			if err != nil {
				return fmt.Errorf("creating manager: %w", err)
			}
			if err := mgr.AddHealthzCheck("ping", healthz.Ping); err != nil {
				return err
			}
			if err := mgr.AddReadyzCheck("ping", healthz.Ping); err != nil {
				return err
			}
			kube, err := kubernetes.NewForConfig(restConfig)
			if err != nil {
				return err
			}
			recorder := mgr.GetEventRecorderFor("spot-rebalancer")
			if cfg.Certs.Mode == config.CertModeSelfManaged {
				if err := mgr.Add(certs.NewRotator(kube, recorder, certs.OptionsFromConfig(cfg))); err != nil {
					return err
				}
			}
			rebalancer := &controller.Reconciler{
				Client: mgr.GetClient(), Kube: kube, Config: &cfg.Rebalancer, Clock: clock.RealClock{},
				Recorder: recorder, Metrics: controller.NewMetrics(ctrlmetrics.Registry),
			}
			if err := rebalancer.SetupWithManager(mgr); err != nil {
				return err
			}
			log.Info("Starting controller", "dryRun", cfg.Rebalancer.DryRun, "replacementMode", cfg.Rebalancer.Replacement.Mode, "version", version.Get().Version, "certsMode", cfg.Certs.Mode, "leaderElection", leaderElect)
			return mgr.Start(logr.NewContext(cmd.Context(), log))
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "compute and log plans and record Events; write nothing else (overrides rebalancer.dryRun)")
	cmd.Flags().BoolVar(&leaderElect, "leader-elect", true, "elect a leader among replicas; only the leader writes")
	cmd.Flags().StringVar(&leaseNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: webhook.namespace)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint; 0 disables it")
	cmd.Flags().StringVar(&healthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	logs.addFlags(cmd)
	return cmd
}
