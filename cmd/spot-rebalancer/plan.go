package main

import (
	"errors"
	"fmt"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
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
		selector  string
		allAtRisk bool
		mode      string
		output    string
	)
	cmd := &cobra.Command{
		Use:   "plan [NODE...]",
		Short: "Print the dry-run rebalance plan for at-risk nodes; changes nothing",
		Long: `Print what the rebalancer would do, computed by the same planner the
controller runs, from one read of the cluster. Nothing is written.

For each at-risk node (or each node named or selected, treated as if it had
just received a rebalance recommendation): its signal, state, pool and
replacement status, and for each pod the action (evict, skip or blocked), the
eviction wave, the node the scheduler is predicted to place it on or the
reason none fits, and the PodDisruptionBudgets that cover it with their live
disruptionsAllowed. Blockers come first; workloads without a PDB get a
suggested one.

It connects as kubectl does (--kubeconfig, --context, --cluster, --user,
--request-timeout, --as), and is also a kubectl plugin: installed as
kubectl-spot_rebalancer on the PATH, it runs as "kubectl spot-rebalancer plan".

Exit codes: 0 the plan can complete, 3 something blocks it, 1 runtime
failure, 2 bad usage.`,
		Example: `  # What would a rebalance of these two nodes do?
  spot-rebalancer plan ip-10-0-1-5.ec2.internal ip-10-0-2-7.ec2.internal

  # Every node of a pool, in another cluster, with each pod's workload
  spot-rebalancer plan -l karpenter.sh/nodepool=spot --context prod -o wide

  # Every node that has a Spot signal now, for a script
  spot-rebalancer plan --all-at-risk -o json

  # Gate a maintenance script on the plan
  spot-rebalancer plan "$NODE" -o json > plan.json || echo "blocked: exit $?"`,
		RunE: func(cmd *cobra.Command, args []string) error {
			named := append(slices.Clone(nodes), args...)
			switch {
			case allAtRisk && (len(named) > 0 || selector != ""):
				return usageError{errors.New("--all-at-risk plans the nodes with a signal: name no nodes and give no --selector with it")}
			case len(named) > 0 && selector != "":
				return usageError{errors.New("name nodes or select them with --selector, not both")}
			}
			if !slices.Contains(report.Formats, output) {
				return usageError{fmt.Errorf("--output %q is not supported: use %s", output, strings.Join(report.Formats, ", "))}
			}
			var sel labels.Selector
			if selector != "" {
				var err error
				if sel, err = labels.Parse(selector); err != nil {
					return usageError{fmt.Errorf("--selector: %w", err)}
				}
			}
			cfg, err := global.loadConfig(cmd, func(c *config.Config) {
				if cmd.Flags().Changed("replacement-mode") {
					c.Rebalancer.Replacement.Mode = config.ReplacementMode(mode)
				}
			})
			if err != nil {
				return err
			}
			if _, err := global.logs.setup(); err != nil {
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
			if sel != nil {
				if named = selected(snap, sel); len(named) == 0 {
					// As kubectl get -l: nothing found is an answer, not an error.
					_, err := fmt.Fprintf(cmd.OutOrStdout(), "No node matches --selector %s.\n", sel)
					return err
				}
			}
			plan, err := planner.New(snap, planner.Options{Config: &cfg.Rebalancer, Nodes: named})
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
	cmd.Flags().StringSliceVar(&nodes, "nodes", nil, "plan these nodes as if they had just received a rebalance recommendation (comma-separated; the same as naming them as arguments)")
	cmd.Flags().StringVarP(&selector, "selector", "l", "", "plan the nodes matching this label selector (e.g. -l karpenter.sh/nodepool=spot), as if they had just received a rebalance recommendation")
	cmd.Flags().BoolVar(&allAtRisk, "all-at-risk", false, "plan every node with a Spot signal (the default when no node is named or selected)")
	cmd.Flags().StringVar(&mode, "replacement-mode", "", "override rebalancer.replacement.mode: "+strings.Join([]string{
		string(config.ReplacementNode), string(config.ReplacementCapacity), string(config.ReplacementNone)}, ", "))
	cmd.Flags().StringVarP(&output, "output", "o", report.FormatTable, "output format: table or wide (for people), json or yaml (for machines; the same fields)")
	return cmd
}

// selected names the snapshot's nodes the selector matches, sorted.
func selected(snap *snapshot.Snapshot, sel labels.Selector) []string {
	var out []string
	for _, n := range snap.Nodes {
		if sel.Matches(labels.Set(n.Labels)) {
			out = append(out, n.Name)
		}
	}
	slices.Sort(out)
	return out
}
