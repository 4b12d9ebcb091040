package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/client"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/planner"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/report"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/snapshot"
)

// exitBlocked is plan's exit code when something blocks the plan.
const exitBlocked = 3

type blockedError struct{}

func (blockedError) Error() string { return "the plan is blocked (see BLOCKERS)" }
func (blockedError) ExitCode() int { return exitBlocked }

func newPlanCommand(global *globalOptions) *cobra.Command {
	var (
		nodes     []string
		allAtRisk bool
		mode      string
		output    string
	)
	cmd := &cobra.Command{
		Use:   "plan",
		Short: "Print the dry-run rebalance plan for at-risk nodes; changes nothing",
		Long: `Print what the rebalancer would do, computed by the same planner the
controller runs, from one read of the cluster. Nothing is written.

For each at-risk node (or each node named with --nodes, treated as if it had
just received a rebalance recommendation): its signal, state, pool and
replacement status, and for each pod the action (evict, skip or blocked), the
eviction wave, the node the scheduler is predicted to place it on or the
reason none fits, and the PodDisruptionBudgets that cover it with their live
disruptionsAllowed. Blockers come first; workloads without a PDB get a
suggested one.

Exit codes: 0 the plan can complete, 3 something blocks it, 1 runtime
failure, 2 bad usage.`,
		Example: `  # What would a rebalance of these two nodes do?
  spot-rebalancer plan --nodes ip-10-0-1-5.ec2.internal,ip-10-0-2-7.ec2.internal

  # Every node that has a Spot signal now, for a script
  spot-rebalancer plan --all-at-risk -o json

  # Gate a maintenance script on the plan
  spot-rebalancer plan --nodes "$NODE" -o json > plan.json || echo "blocked: exit $?"`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if allAtRisk && len(nodes) > 0 {
				return usageError{errors.New("--nodes and --all-at-risk exclude each other")}
			}
			if output != report.FormatTable && output != report.FormatJSON {
				return usageError{fmt.Errorf("--output %q is not supported: use table or json", output)}
			}
			cfg, err := global.loadConfig(cmd, func(c *config.Config) {
				if cmd.Flags().Changed("replacement-mode") {
					c.Rebalancer.Replacement.Mode = config.ReplacementMode(mode)
				}
			})
			if err != nil {
				return err
			}
			restConfig, err := global.restConfig()
			if err != nil {
				return err
			}
			reader, err := client.New(restConfig, client.Options{})
			if err != nil {
				return err
			}
			// The surges under way are in the controller's namespace: a
			// user who may not read them gets a plan that cannot tell.
			snap, err := snapshot.Read(cmd.Context(), reader, clock.RealClock{}.Now(), 500, cfg.Webhook.Namespace)
			if apierrors.IsForbidden(err) {
				fmt.Fprintf(cmd.ErrOrStderr(), "warning: %v; planning without the surges under way\n", err)
				snap, err = snapshot.Read(cmd.Context(), reader, clock.RealClock{}.Now(), 500, "")
			}
			if err != nil {
				return fmt.Errorf("reading the cluster: %w", err)
			}
			plan, err := planner.New(snap, planner.Options{Config: &cfg.Rebalancer, Nodes: nodes})
			if err != nil {
				return usageError{err}
			}
			if err := report.Write(cmd.OutOrStdout(), plan, output); err != nil {
				return err
			}
			if !plan.Complete {
				return blockedError{}
			}
			return nil
		},
	}
	cmd.Flags().StringSliceVar(&nodes, "nodes", nil, "plan these nodes as if they had just received a rebalance recommendation (comma-separated)")
	cmd.Flags().BoolVar(&allAtRisk, "all-at-risk", false, "plan every node with a Spot signal (the default without --nodes)")
	cmd.Flags().StringVar(&mode, "replacement-mode", "", "override rebalancer.replacement.mode: "+strings.Join([]string{
		string(config.ReplacementNode), string(config.ReplacementCapacity), string(config.ReplacementNone)}, ", "))
	cmd.Flags().StringVarP(&output, "output", "o", report.FormatTable, "output format: table (for people) or json (for machines)")
	return cmd
}
