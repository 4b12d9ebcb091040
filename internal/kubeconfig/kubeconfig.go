// Package kubeconfig finds the API server every subcommand talks to, in the
// order the README documents: the --kubeconfig flag, the in-cluster service
// account, $KUBECONFIG, then ~/.kube/config.
package kubeconfig

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"
)

// Resolver resolves a rest.Config. Its fields are the outside world, so
// tests can replace them.
type Resolver struct {
	InCluster func() (*rest.Config, error)
	Getenv    func(string) string
	HomeDir   func() (string, error)
}

// Default resolves against the real environment.
var Default = Resolver{InCluster: rest.InClusterConfig, Getenv: os.Getenv, HomeDir: os.UserHomeDir}

// Resolve returns the REST config and a description of where it came from
// (for logs). explicit is the --kubeconfig flag.
func (r Resolver) Resolve(explicit string) (*rest.Config, string, error) {
	if explicit != "" {
		// clientcmd skips files that do not exist; the one named by the
		// flag must.
		if _, err := os.Stat(explicit); err != nil {
			return nil, "", fmt.Errorf("loading --kubeconfig: %w", err)
		}
		cfg, err := fromFiles([]string{explicit})
		if err != nil {
			return nil, "", fmt.Errorf("loading --kubeconfig %s: %w", explicit, err)
		}
		return cfg, explicit, nil
	}
	cfg, err := r.InCluster()
	if err == nil {
		return cfg, "in-cluster service account", nil
	}
	if !errors.Is(err, rest.ErrNotInCluster) {
		return nil, "", fmt.Errorf("loading in-cluster configuration: %w", err)
	}
	if env := r.Getenv(clientcmd.RecommendedConfigPathEnvVar); env != "" {
		cfg, err := fromFiles(filepath.SplitList(env))
		if err != nil {
			return nil, "", fmt.Errorf("loading $KUBECONFIG %s: %w", env, err)
		}
		return cfg, "$KUBECONFIG", nil
	}
	home, err := r.HomeDir()
	if err != nil {
		return nil, "", fmt.Errorf("no --kubeconfig, not in a cluster, no $KUBECONFIG, and no home directory: %w", err)
	}
	path := filepath.Join(home, clientcmd.RecommendedHomeDir, clientcmd.RecommendedFileName)
	if _, err := os.Stat(path); err != nil {
		return nil, "", fmt.Errorf("no --kubeconfig, not in a cluster, no $KUBECONFIG, and %s: %w", path, err)
	}
	cfg, err = fromFiles([]string{path})
	if err != nil {
		return nil, "", fmt.Errorf("loading %s: %w", path, err)
	}
	return cfg, path, nil
}

func fromFiles(paths []string) (*rest.Config, error) {
	rules := &clientcmd.ClientConfigLoadingRules{Precedence: paths}
	return clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{}).ClientConfig()
}
