// Command spot-rebalancer is the admission webhook, the rebalancer, the node
// agent and the dry-run planner in one binary. Named kubectl-spot_rebalancer
// it is a kubectl plugin offering the planner.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"

	// Mozilla's CA roots, used only where the system has none: the image has
	// no base to bring them, and the AWS SDK must verify TLS.
	_ "golang.org/x/crypto/x509roots/fallback"
	ctrlmetrics "sigs.k8s.io/controller-runtime/pkg/metrics"

	"github.com/spot-rebalancer/spot-rebalancer/internal/version"
)

func main() {
	// Every component serves its metrics from controller-runtime's registry.
	ctrlmetrics.Registry.MustRegister(version.BuildInfo())
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	root := newRootCommand()
	if strings.TrimSuffix(filepath.Base(os.Args[0]), ".exe") == PluginName {
		root = newPluginCommand()
	}
	err := root.ExecuteContext(ctx)
	stop()
	code := exitCode(err)
	if err != nil && code != exitOK {
		fmt.Fprintln(os.Stderr, "Error:", err)
	}
	os.Exit(code)
}
