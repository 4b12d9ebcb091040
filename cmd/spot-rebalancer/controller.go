package main

import (
	"context"
	"fmt"

	"github.com/aws/aws-sdk-go-v2/aws"
	awsconfig "github.com/aws/aws-sdk-go-v2/config"
	"github.com/aws/aws-sdk-go-v2/service/autoscaling"
	"github.com/aws/aws-sdk-go-v2/service/ec2"
	"github.com/aws/aws-sdk-go-v2/service/sqs"
	"github.com/go-logr/logr"
	"github.com/spf13/cobra"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/utils/clock"
	"sigs.k8s.io/controller-runtime/pkg/healthz"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/config"
	"github.com/spot-rebalancer/spot-rebalancer/internal/metricsserve"
	"github.com/spot-rebalancer/spot-rebalancer/internal/version"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/asg"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/controller"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/executor"
	"github.com/spot-rebalancer/spot-rebalancer/rebalancer/signals"
	ec2source "github.com/spot-rebalancer/spot-rebalancer/sources/ec2"
	"github.com/spot-rebalancer/spot-rebalancer/sources/queue"
)

// leaderElectionID names the Lease the controller replicas compete for.
const leaderElectionID = "spot-rebalancer-controller"

func newControllerCommand(global *globalOptions) *cobra.Command {
	var (
		leaderElect bool
		dryRun      bool
		leaseNS     string
		metricsAddr string
		healthAddr  string
		profiling   bool
		secure      bool
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

With aws.queue.url set it also consumes the EventBridge events "EC2 Spot
Instance Interruption Warning", "EC2 Instance Rebalance Recommendation" and
"EC2 Instance State-change Notification" from that SQS queue and writes them
on the Nodes of the instances they name (credentials from the default AWS
chain: IRSA, Pod Identity, environment). Messages about instances of other
clusters are left in the queue unless aws.queue.deleteUnknown is true.
With aws.ec2.describeInstances it records the Auto Scaling group and the
instance lifecycle of nodes whose labels name no pool (annotations
spot-rebalancer.io/pool and spot-rebalancer.io/lifecycle: an interruption
notice is acted on as one only on a node known to be Spot); with
aws.ec2.pollSpotRequests it treats Spot requests marked for termination or
stop as interruption notices (one call per aws.ec2.interval for all nodes).

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
			cfg, log, restConfig, err := global.start(cmd, func(c *config.Config) {
				if cmd.Flags().Changed("dry-run") {
					c.Rebalancer.DryRun = dryRun
				}
			})
			if err != nil {
				return err
			}
			if leaseNS == "" {
				leaseNS = cfg.Webhook.Namespace
			}
			metrics, err := metricsserve.Options(metricsAddr, secure, profiling)
			if err != nil {
				return usageError{err}
			}
			mgr, err := manager.New(restConfig, manager.Options{
				Metrics:                       metrics,
				HealthProbeBindAddress:        healthAddr,
				LeaderElection:                leaderElect,
				LeaderElectionID:              leaderElectionID,
				LeaderElectionNamespace:       leaseNS,
				LeaderElectionReleaseOnCancel: true,
				// Lease renewals must not queue behind evictions.
				LeaderElectionConfig: ownRateLimit(restConfig),
				// Surge records live in the components' namespace, where
				// `plan` and `migrate surge-records` look for them too.
				Cache: controller.CacheOptions(cfg.Webhook.Namespace),
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
			dyn, err := dynamic.NewForConfig(restConfig)
			if err != nil {
				return err
			}
			recorder := mgr.GetEventRecorderFor("spot-rebalancer")
			if cfg.Certs.Mode == config.CertModeSelfManaged {
				if err := mgr.Add(certs.NewRotator(kube, recorder, certs.OptionsFromConfig(cfg))); err != nil {
					return err
				}
			}
			var groups asg.API
			if cfg.Rebalancer.Replacement.Provision == config.ProvisionASG {
				awsCfg, err := awsConfig(cmd.Context(), cfg)
				if err != nil {
					return err
				}
				groups = autoscaling.NewFromConfig(awsCfg)
			}
			rebalancer := &controller.Reconciler{
				Client: mgr.GetClient(), Kube: kube, Config: &cfg.Rebalancer, Clock: clock.RealClock{},
				Recorder: recorder, Metrics: executor.NewMetrics(ctrlmetrics.Registry), Namespace: cfg.Webhook.Namespace, Dynamic: dyn, ASG: groups,
			}
			if err := rebalancer.SetupWithManager(mgr); err != nil {
				return err
			}
			if err := ctrlmetrics.Registry.Register(&controller.NodeCollector{Reader: mgr.GetClient(), Clock: clock.RealClock{}, Log: log.WithName("metrics")}); err != nil {
				return err
			}
			if err := addAWSSources(cmd.Context(), mgr, cfg, kube); err != nil {
				return err
			}
			log.Info("Starting controller", "queue", cfg.AWS.Queue.URL != "", "dryRun", cfg.Rebalancer.DryRun, "replacementMode", cfg.Rebalancer.Replacement.Mode, "version", version.Get().Version, "certsMode", cfg.Certs.Mode, "leaderElection", leaderElect)
			return mgr.Start(logr.NewContext(cmd.Context(), log))
		},
	}
	cmd.Flags().BoolVar(&dryRun, "dry-run", false, "compute and log plans and record Events; write nothing else (overrides rebalancer.dryRun)")
	cmd.Flags().BoolVar(&leaderElect, "leader-elect", true, "elect a leader among replicas; only the leader writes")
	cmd.Flags().StringVar(&leaseNS, "leader-election-namespace", "", "namespace of the leader election Lease (default: webhook.namespace, where the surge records live too)")
	cmd.Flags().StringVar(&metricsAddr, "metrics-bind-address", ":8080", "address of the Prometheus /metrics endpoint; 0 disables it")
	cmd.Flags().StringVar(&healthAddr, "health-probe-bind-address", ":8081", "address of /healthz and /readyz")
	cmd.Flags().BoolVar(&profiling, "profiling", false, "serve Go's pprof profiles under /debug/pprof/ on the metrics address, behind the same check")
	cmd.Flags().BoolVar(&secure, "metrics-secure", true, metricsSecureHelp)
	return cmd
}

// awsConfig is the AWS SDK's configuration: its default credential chain
// (IRSA, Pod Identity, instance role), aws.region, and aws.endpoint when
// set (tests).
func awsConfig(ctx context.Context, cfg *config.Config) (aws.Config, error) {
	awsCfg, err := awsconfig.LoadDefaultConfig(ctx, awsconfig.WithRegion(cfg.AWS.Region))
	if err != nil {
		return aws.Config{}, fmt.Errorf("loading AWS configuration: %w", err)
	}
	if cfg.AWS.Endpoint != "" {
		awsCfg.BaseEndpoint = &cfg.AWS.Endpoint
	}
	return awsCfg, nil
}

// addAWSSources adds the queue and EC2 sources the configuration enables.
// Credentials come from the default AWS chain (IRSA, Pod Identity,
// environment).
func addAWSSources(ctx context.Context, mgr manager.Manager, cfg *config.Config, kube kubernetes.Interface) error {
	useEC2 := cfg.AWS.EC2.DescribeInstances || cfg.AWS.EC2.PollSpotRequests
	if cfg.AWS.Queue.URL == "" && !useEC2 {
		return nil
	}
	awsCfg, err := awsConfig(ctx, cfg)
	if err != nil {
		return err
	}
	writer := signals.Writer{Kube: kube, Clock: clock.RealClock{}}
	if url := cfg.AWS.Queue.URL; url != "" {
		consumer := &queue.Consumer{SQS: sqs.NewFromConfig(awsCfg), QueueURL: url, DeleteUnknown: cfg.AWS.Queue.DeleteUnknown,
			Accounts: cfg.AWS.Queue.BelievedAccounts(), KeepRejected: cfg.AWS.Queue.KeepRejected,
			Writer: writer, Clock: clock.RealClock{}, Metrics: queue.NewMetrics(ctrlmetrics.Registry)}
		if err := mgr.Add(&queue.Source{Consumer: consumer, Kube: kube}); err != nil {
			return err
		}
	}
	if useEC2 {
		source := &ec2source.Source{API: ec2.NewFromConfig(awsCfg), Kube: kube, Writer: writer, Clock: clock.RealClock{},
			PoolLabels: cfg.Rebalancer.PoolLabels, DescribeInstances: cfg.AWS.EC2.DescribeInstances,
			PollSpotRequests: cfg.AWS.EC2.PollSpotRequests, Interval: cfg.AWS.EC2.Interval.Duration,
			Metrics: ec2source.NewMetrics(ctrlmetrics.Registry)}
		if err := mgr.Add(source); err != nil {
			return err
		}
	}
	return nil
}
