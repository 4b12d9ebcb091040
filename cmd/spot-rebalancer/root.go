package main

import (
	"errors"
	"fmt"
	"io"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"

	"k8s.io/cli-runtime/pkg/genericclioptions"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/internal/version"
)

// Exit codes, as the README documents them.
const (
	exitOK      = 0
	exitFailure = 1
	exitUsage   = 2
)

// usageError is bad usage: a flag, an argument or a configuration value.
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func exitCode(err error) int {
	var ue usageError
	var ec exitCoder
	switch {
	case err == nil:
		return exitOK
	case errors.As(err, &ec):
		return ec.ExitCode()
	case errors.As(err, &ue), config.IsError(err):
		return exitUsage
	default:
		return exitFailure
	}
}

// exitCoder lets a command choose its exit code (plan exits 3 when blocked).
type exitCoder interface{ ExitCode() int }

// globalOptions are the flags every command takes.
type globalOptions struct {
	// kube are kubectl's connection flags (--kubeconfig, --context,
	// --cluster, --user, --request-timeout, --as, --as-group), resolved as
	// kubectl resolves them: --kubeconfig, then $KUBECONFIG, then
	// ~/.kube/config, then the in-cluster service account.
	kube        *genericclioptions.ConfigFlags
	logs        logOptions
	configFile  string
	printConfig bool
	version     bool
	qps         float32
	burst       int
}

// newKubeFlags are the connection flags of kubectl this binary takes.
func newKubeFlags() *genericclioptions.ConfigFlags {
	return &genericclioptions.ConfigFlags{
		KubeConfig: new(""), Context: new(""), ClusterName: new(""), AuthInfoName: new(""),
		Timeout: new("0"), Impersonate: new(""), ImpersonateGroup: new([]string{}),
	}
}

func newRootCommand() *cobra.Command {
	opts := &globalOptions{kube: newKubeFlags()}
	cmd := &cobra.Command{
		Use:   "spot-rebalancer",
		Short: "Spot-aware admission webhook and scheduler-aware rebalancer for Kubernetes",
		Long: `spot-rebalancer makes workloads ready for reclaimable EC2 Spot capacity and
hands pods off safely when a Spot node is at risk: it waits for replacement
capacity, proves with a scheduling simulation that every pod fits, then drains
in waves that never break a PodDisruptionBudget.

Every command reads one configuration file (--config, apiVersion
spot-rebalancer.io/v1alpha1, kind Config); flags override it. Run with
--print-config to see the effective configuration, defaults included.

Exit codes: 0 success, 1 runtime failure, 2 bad usage or invalid configuration.`,
		Example: `  # Show the defaults a fresh install runs with
  spot-rebalancer --print-config

  # Check a configuration file without running anything
  spot-rebalancer --config config.yaml --print-config`,
		SilenceUsage:  true,
		SilenceErrors: true,
		Args:          noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if opts.printConfig {
				_, err := opts.loadConfig(cmd, nil)
				return err
			}
			return cmd.Help()
		},
	}
	cmd.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	// --version on every command, as kubectl plugins and operators expect.
	cmd.PersistentPreRunE = func(cmd *cobra.Command, _ []string) error {
		if opts.version {
			if _, err := fmt.Fprintln(cmd.OutOrStdout(), version.Get()); err != nil {
				return err
			}
			return errPrinted
		}
		return nil
	}
	pf := cmd.PersistentFlags()
	pf.BoolVar(&opts.version, "version", false, "print the version of this binary and exit (the version command has -o json)")
	opts.kube.AddFlags(pf)
	opts.logs.addFlags(pf)
	pf.StringVar(&opts.configFile, "config", "", "configuration file (YAML, kind Config); default: built-in defaults")
	pf.Float32Var(&opts.qps, "kube-api-qps", 50, "queries per second to the API server, sustained, for all of the process's clients together (client-side rate limit)")
	pf.IntVar(&opts.burst, "kube-api-burst", 100, "queries to the API server allowed in a burst above --kube-api-qps")
	pf.BoolVar(&opts.printConfig, "print-config", false, "print the effective configuration (file, flags and defaults) as YAML and exit")

	cmd.AddCommand(newVersionCommand(), newWebhookCommand(opts), newControllerCommand(opts), newPlanCommand(opts), newAgentCommand(opts), newMigrateCommand(opts))
	return cmd
}

// PluginName is the name the binary takes as a kubectl plugin: kubectl
// runs kubectl-spot_rebalancer for "kubectl spot-rebalancer".
const PluginName = "kubectl-spot_rebalancer"

// newPluginCommand is the command tree of the kubectl plugin: the same
// binary, named PluginName, offers what a person at kubectl runs (plan and
// version), not the cluster's components.
func newPluginCommand() *cobra.Command {
	root := newRootCommand()
	root.Use = PluginName
	root.Annotations = map[string]string{cobra.CommandDisplayNameAnnotation: "kubectl spot-rebalancer"}
	root.Short = "Dry-run rebalance plans for Spot nodes, as a kubectl plugin"
	root.Long = `kubectl spot-rebalancer prints what spot-rebalancer would do for at-risk Spot
nodes (plan), computed by the planner its controller runs, from one read of the
cluster; it changes nothing. It connects as kubectl does.

Exit codes: 0 success, 1 runtime failure, 2 bad usage, 3 (plan) the plan is blocked.`
	root.Example = `  # What would a rebalance of a node do?
  kubectl spot-rebalancer plan ip-10-0-1-5.ec2.internal

  # The same in another context, for a script
  kubectl spot-rebalancer plan ip-10-0-1-5.ec2.internal --context prod -o yaml`
	for _, c := range root.Commands() {
		if c.Name() != "plan" && c.Name() != "version" {
			root.RemoveCommand(c)
		}
	}
	return root
}

// noArgs rejects positional arguments as bad usage.
func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usageError{fmt.Errorf("unknown command or argument %q for %q; see %s --help", args[0], cmd.CommandPath(), cmd.CommandPath())}
	}
	return nil
}

// loadConfig reads --config, lets override apply the command's flags, and
// validates the result. With --print-config it prints the configuration and
// returns errPrinted so the command stops there.
func (o *globalOptions) loadConfig(cmd *cobra.Command, override func(*config.Config)) (*config.Config, error) {
	c, err := config.ReadFile(o.configFile)
	if err != nil {
		return nil, err
	}
	if override != nil {
		override(c)
	}
	if err := c.Validate(); err != nil {
		return nil, &config.Error{Source: o.configSource(), Err: err}
	}
	if o.printConfig {
		return nil, printConfig(cmd.OutOrStdout(), c)
	}
	return c, nil
}

func (o *globalOptions) configSource() string {
	if o.configFile == "" {
		return "(defaults and flags)"
	}
	return o.configFile + " (with flags)"
}

// errPrinted stops a command after --print-config or --version; it is not
// a failure.
var errPrinted = printedError{}

type printedError struct{}

func (printedError) Error() string { return "configuration printed" }
func (printedError) ExitCode() int { return exitOK }

// start is what every long-running command does first: load the
// configuration with its flag overrides, install the logger, and find the
// API server.
func (o *globalOptions) start(cmd *cobra.Command, override func(*config.Config)) (*config.Config, logr.Logger, *rest.Config, error) {
	if t := *o.kube.Timeout; t != "" && t != "0" {
		// It bounds every request, watches included: the components'
		// informers would be cut off and relist every few seconds.
		return nil, logr.Logger{}, nil, usageError{fmt.Errorf("--request-timeout %s is for plan: %s keeps watches open", t, cmd.Name())}
	}
	cfg, err := o.loadConfig(cmd, override)
	if err != nil {
		return nil, logr.Logger{}, nil, err
	}
	log, err := o.logs.setup()
	if err != nil {
		return nil, logr.Logger{}, nil, err
	}
	restConfig, err := o.restConfig()
	if err != nil {
		return nil, logr.Logger{}, nil, err
	}
	return cfg, log, restConfig, nil
}

// restConfig resolves the API server for commands that talk to one.
func (o *globalOptions) restConfig() (*rest.Config, error) {
	if o.qps <= 0 || o.burst <= 0 {
		return nil, usageError{fmt.Errorf("--kube-api-qps and --kube-api-burst must be positive (got %g and %d)", o.qps, o.burst)}
	}
	cfg, err := o.kube.ToRESTConfig()
	if err != nil {
		return nil, fmt.Errorf("finding the API server: %w", err)
	}
	// One token bucket for every client the process builds from this
	// config (client-go otherwise gives each API group's client its own,
	// and the process as a whole could go several times over the limit).
	cfg.QPS, cfg.Burst = o.qps, o.burst
	cfg.RateLimiter = flowcontrol.NewTokenBucketRateLimiter(o.qps, o.burst)
	return cfg, nil
}

// ownRateLimit returns a copy of cfg whose clients get a token bucket of
// their own, with the same QPS and burst.
func ownRateLimit(cfg *rest.Config) *rest.Config {
	own := rest.CopyConfig(cfg)
	own.RateLimiter = nil
	return own
}

func printConfig(w io.Writer, c *config.Config) error {
	out, err := config.Marshal(c)
	if err != nil {
		return fmt.Errorf("printing configuration: %w", err)
	}
	if _, err := w.Write(out); err != nil {
		return err
	}
	return errPrinted
}

// metricsSecureHelp describes --metrics-secure, the same on every command.
const metricsSecureHelp = "serve /metrics (and --profiling) over HTTPS to callers whose token may get it (TokenReview and SubjectAccessReview, as the chart's metrics-reader ClusterRole grants); false serves plain HTTP"
