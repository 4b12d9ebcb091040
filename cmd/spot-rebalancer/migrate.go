package main

import (
	"fmt"
	"time"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"

	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/migrate"
)

func newMigrateCommand(global *globalOptions) *cobra.Command {
	cmd := &cobra.Command{
		Use:   "migrate",
		Short: "Move state an older version left behind into today's form",
		Args:  noArgs,
		RunE:  func(cmd *cobra.Command, _ []string) error { return cmd.Help() },
	}
	cmd.AddCommand(newMigrateSurgeRecordsCommand(global))
	return cmd
}

func newMigrateSurgeRecordsCommand(global *globalOptions) *cobra.Command {
	var (
		namespace string
		rollout   string
		timeout   time.Duration
		dryRun    bool
	)
	cmd := &cobra.Command{
		Use:   "surge-records",
		Short: "Move surge records from Deployments (versions before 0.2) to Leases in the controller's namespace",
		Long: `Versions before 0.2 recorded a surge in progress in the annotation
spot-rebalancer.io/surge-state on the Deployment itself. The controller now
keeps that record in a Lease of its own namespace (surge-<Deployment UID>)
and may no longer change Deployments, so a record left on a Deployment is
neither finished nor removed: the Deployment stays at its surged count and
its pods are evicted instead of surged ("plan" says so).

This command moves each such record: it creates the Lease with the record as
written, then removes the annotation (on the Deployment's resourceVersion).
The controller finishes each surge from there, or gives it up without
restoring anything if the record does not parse, as after any restart. Run
it once after upgrading; running it again moves nothing. The Helm chart runs
it as a post-install and post-upgrade hook with its own short-lived rights
(list and patch Deployments, create Leases in the release namespace).

Run it after the new controller has replaced the old one (--wait-for-rollout
waits for that): a controller of an older version would still write records
on Deployments.`,
		Example: `  # What would move
  spot-rebalancer migrate surge-records --namespace spot-rebalancer --dry-run

  # Move, once the controller runs only its new version
  spot-rebalancer migrate surge-records --namespace spot-rebalancer --wait-for-rollout spot-rebalancer-controller`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, err := global.loadConfig(cmd, nil)
			if err != nil {
				return err
			}
			if namespace == "" {
				namespace = cfg.Webhook.Namespace
			}
			if timeout <= 0 {
				return usageError{fmt.Errorf("--timeout must be positive (got %s)", timeout)}
			}
			restConfig, err := global.restConfig()
			if err != nil {
				return err
			}
			kube, err := kubernetes.NewForConfig(restConfig)
			if err != nil {
				return err
			}
			moved, err := migrate.Run(cmd.Context(), kube, migrate.Options{
				Namespace: namespace, WaitForRollout: rollout, Timeout: timeout, DryRun: dryRun, Out: cmd.OutOrStdout()})
			if err != nil {
				return err
			}
			if !dryRun {
				fmt.Fprintf(cmd.OutOrStdout(), "%d surge record(s) moved to namespace %s\n", moved, namespace)
			}
			return nil
		},
	}
	cmd.Flags().StringVarP(&namespace, "namespace", "n", "", "the controller's namespace, where its surge records live (default: webhook.namespace)")
	cmd.Flags().StringVar(&rollout, "wait-for-rollout", "", "first wait until this Deployment of --namespace (the controller's) runs only its current version")
	cmd.Flags().DurationVar(&timeout, "timeout", 5*time.Minute, "how long --wait-for-rollout waits")
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "print what would move; change nothing")
	return cmd
}
