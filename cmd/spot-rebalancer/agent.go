package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"time"

	"github.com/go-logr/logr"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/spot-rebalancer/spot-rebalancer/agent"
	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/internal/version"
)

func newAgentCommand(global *globalOptions) *cobra.Command {
	var (
		logs        logOptions
		nodeName    string
		endpoint    string
		metricsAddr string
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
			cfg, log, restConfig, err := global.start(cmd, &logs, func(c *config.Config) {
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
				if err := serveMetrics(ctx, metricsAddr); err != nil {
					return err
				}
			}
			return a.Run(ctx)
		},
	}
	cmd.Flags().StringVar(&nodeName, "node-name", "", "this node's name (default: $NODE_NAME)")
	cmd.Flags().StringVar(&endpoint, "imds-endpoint", "", "instance metadata endpoint (overrides agent.imdsEndpoint; default: the SDK's)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-bind-address", "0", "address of the Prometheus /metrics endpoint; 0 (the default, as the agent runs on the host network) disables it")
	logs.addFlags(cmd)
	return cmd
}

// serveMetrics serves the process's metrics on addr until ctx ends.
func serveMetrics(ctx context.Context, addr string) error {
	l, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("metrics endpoint: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("/metrics", promhttp.HandlerFor(ctrlmetrics.Registry, promhttp.HandlerOpts{}))
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(l) }()
	go func() {
		<-ctx.Done()
		shutdown, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(shutdown)
	}()
	return nil
}
