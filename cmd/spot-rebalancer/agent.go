package main

import (
	"context"
	"errors"
	"fmt"
	"os"

	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/utils/clock"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/spot-rebalancer/spot-rebalancer/agent"
	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/internal/metricsserve"
	"github.com/spot-rebalancer/spot-rebalancer/internal/version"
)

func newAgentCommand(global *globalOptions) *cobra.Command {
	var (
		nodeName    string
		endpoint    string
		metricsAddr string
		secure      bool
	)
	cmd := &cobra.Command{
		Use:   "agent",
		Short: "Poll this instance's metadata for Spot signals and write them on its Node",
		Long: `Run on every Spot node (a DaemonSet). Every agent.pollInterval (default 2s)
the agent asks the EC2 instance metadata service (IMDSv2) for
/latest/meta-data/spot/instance-action and
/latest/meta-data/events/recommendations/rebalance; 404 means no event. It sets
the Node conditions SpotInterruptionNotice (with the annotation
spot-rebalancer.io/termination-time) and SpotRebalanceRecommended once each,
even when the metadata service gives a new time on every request. An
unreachable metadata service is retried with backoff, never fatal.`,
		Example: `  # In a DaemonSet, with the node name from the downward API
  NODE_NAME=ip-10-0-1-5.ec2.internal spot-rebalancer agent

  # Against a local metadata mock
  spot-rebalancer agent --node-name kind-worker --imds-endpoint http://127.0.0.1:1338`,
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cfg, log, restConfig, err := global.start(cmd, func(c *config.Config) {
				if cmd.Flags().Changed("imds-endpoint") {
					c.Agent.IMDSEndpoint = endpoint
				}
			})
			if err != nil {
				return err
			}
			if nodeName == "" {
				nodeName = os.Getenv("NODE_NAME")
			}
			if nodeName == "" {
				return usageError{errors.New("no node name: set --node-name or $NODE_NAME (the downward API's spec.nodeName)")}
			}
			kube, err := kubernetes.NewForConfig(restConfig)
			if err != nil {
				return err
			}
			a := &agent.Agent{Node: nodeName, Kube: kube, IMDS: agent.NewMetadataClient(cfg.Agent.IMDSEndpoint),
				Interval: cfg.Agent.PollInterval.Duration, Clock: clock.RealClock{}, Metrics: agent.NewMetrics(ctrlmetrics.Registry)}
			log.Info("Starting agent", "version", version.Get().Version, "node", nodeName, "interval", a.Interval)
			ctx := logr.NewContext(cmd.Context(), log)
			if metricsAddr != "0" {
				if err := serveMetrics(ctx, metricsAddr, secure, restConfig); err != nil {
					return usageError{err}
				}
			}
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&nodeName, "node-name", "", "this node's name (default: $NODE_NAME)")
	cmd.Flags().StringVar(&endpoint, "imds-endpoint", "", "instance metadata endpoint (overrides agent.imdsEndpoint; default: the SDK's)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-bind-address", "0", "address of the Prometheus /metrics endpoint; 0 (the default, as the agent runs on the host network) disables it")
	cmd.Flags().BoolVar(&secure, "metrics-secure", true, metricsSecureHelp)
	return cmd
}

// serveMetrics serves /metrics as the controller and the webhook do,
// until ctx is done.
func serveMetrics(ctx context.Context, addr string, secure bool, restConfig *rest.Config) error {
	opts, err := metricsserve.Options(addr, secure, false)
	if err != nil {
		return err
	}
	httpClient, err := rest.HTTPClientFor(restConfig)
	if err != nil {
		return err
	}
	srv, err := metricsserver.NewServer(opts, restConfig, httpClient)
	if err != nil {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	go func() {
		if err := srv.Start(ctx); err != nil {
			logr.FromContextOrDiscard(ctx).Error(err, "Metrics endpoint stopped")
		}
	}()
	return nil
}
