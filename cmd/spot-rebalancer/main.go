// Command spot-rebalancer is the admission webhook, the rebalancer, the node
// agent and the dry-run planner in one binary.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/spot-rebalancer/spot-rebalancer/internal/version"
)

func main() {
	// Every component serves its metrics from controller-runtime's registry.
	ctrlmetrics.Registry.MustRegister(version.BuildInfo())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := newRootCommand().ExecuteContext(ctx)
	stop()
	code := exitCode(err)
	if err != nil && code != exitOK {
		fmt.Fprintln(os.Stderr, "Error:", err)
	}
	os.Exit(code)
}
