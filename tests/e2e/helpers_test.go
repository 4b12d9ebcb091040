package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/go-logr/logr"
	"sigs.k8s.io/controller-runtime/pkg/manager"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"

	"github.com/spot-rebalancer/spot-rebalancer/certs"
	"github.com/spot-rebalancer/spot-rebalancer/tests/cluster"
)

// startLeaderManager runs runnables in a leader-elected manager, as
// `spot-rebalancer controller` runs them, until the test ends.
func startLeaderManager(t *testing.T, c *cluster.Cluster, namespace string, runnables ...manager.Runnable) {
	t.Helper()
	mgr, err := manager.New(c.Config, manager.Options{
		Metrics:                 metricsserver.Options{BindAddress: "0"},
		HealthProbeBindAddress:  "0",
		LeaderElection:          true,
		LeaderElectionID:        "spot-rebalancer-e2e",
		LeaderElectionNamespace: namespace,
		// Hand the lease back on shutdown, as the controller does.
		LeaderElectionReleaseOnCancel: true,
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range runnables {
		if err := mgr.Add(r); err != nil {
			t.Fatal(err)
		}
	}
	ctx, stop := context.WithCancel(logr.NewContext(cluster.Context(t), cluster.Logger()))
	done := make(chan error, 1)
	go func() { done <- mgr.Start(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Errorf("manager: %v", err)
		}
	})
}

// rotatorFor is the certificate rotator for a webhook reached at the
// given DNS names, with its Secrets in namespace.
func rotatorFor(c *cluster.Cluster, namespace, configName string, dnsNames []string, caValidity, servingValidity time.Duration) *certs.Rotator {
	return certs.NewRotator(c.Client, nil, certs.RotatorOptions{
		Namespace: namespace, CASecretName: "webhook-ca", ServingSecretName: "webhook-tls",
		WebhookConfigurations: []string{configName}, DNSNames: dnsNames,
		CAValidity: caValidity, ServingValidity: servingValidity, Settle: 2 * time.Second,
	})
}

// freePort returns a TCP port on 127.0.0.1 that was free a moment ago.
func freePort(t *testing.T) int {
	t.Helper()
	port, err := cluster.FreePort()
	if err != nil {
		t.Fatal(err)
	}
	return port
}
