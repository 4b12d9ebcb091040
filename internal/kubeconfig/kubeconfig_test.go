package kubeconfig

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"k8s.io/client-go/rest"
)

func writeKubeconfig(t *testing.T, dir, server string) string {
	t.Helper()
	path := filepath.Join(dir, "config")
	data := `apiVersion: v1
kind: Config
clusters:
- name: c
  cluster: {server: "` + server + `"}
users:
- name: u
  user: {token: t}
contexts:
- name: x
  context: {cluster: c, user: u}
current-context: x
`
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(data), 0o600); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestResolveOrder(t *testing.T) {
	notInCluster := func() (*rest.Config, error) { return nil, rest.ErrNotInCluster }
	inCluster := func() (*rest.Config, error) { return &rest.Config{Host: "https://in-cluster"}, nil }

	tests := map[string]struct {
		explicit   bool
		inCluster  func() (*rest.Config, error)
		env        bool
		home       bool
		wantHost   string
		wantErrHas string
	}{
		"the flag wins over everything": {
			explicit: true, inCluster: inCluster, env: true, home: true, wantHost: "https://flag",
		},
		"in-cluster wins over $KUBECONFIG and home": {
			inCluster: inCluster, env: true, home: true, wantHost: "https://in-cluster",
		},
		"$KUBECONFIG is used outside a cluster": {
			inCluster: notInCluster, env: true, home: true, wantHost: "https://env",
		},
		"~/.kube/config is the last resort": {
			inCluster: notInCluster, home: true, wantHost: "https://home",
		},
		"nothing at all is an error that says what was tried": {
			inCluster: notInCluster, wantErrHas: "no --kubeconfig, not in a cluster, no $KUBECONFIG",
		},
		"a broken in-cluster setup is reported, not skipped": {
			inCluster:  func() (*rest.Config, error) { return nil, errors.New("token unreadable") },
			env:        true,
			wantErrHas: "token unreadable",
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			flagPath := writeKubeconfig(t, filepath.Join(dir, "flag"), "https://flag")
			envPath := writeKubeconfig(t, filepath.Join(dir, "env"), "https://env")
			home := filepath.Join(dir, "home")
			if tc.home {
				writeKubeconfig(t, filepath.Join(home, ".kube"), "https://home")
			}
			r := Resolver{
				InCluster: tc.inCluster,
				Getenv: func(k string) string {
					if k == "KUBECONFIG" && tc.env {
						return envPath
					}
					return ""
				},
				HomeDir: func() (string, error) { return home, nil },
			}
			explicit := ""
			if tc.explicit {
				explicit = flagPath
			}
			cfg, _, err := r.Resolve(explicit)
			if tc.wantErrHas != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErrHas) {
					t.Fatalf("err = %v, want it to contain %q", err, tc.wantErrHas)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if cfg.Host != tc.wantHost {
				t.Errorf("host = %q, want %q", cfg.Host, tc.wantHost)
			}
		})
	}
}

func TestResolveBrokenFlagFileNamesIt(t *testing.T) {
	path := filepath.Join(t.TempDir(), "broken")
	if err := os.WriteFile(path, []byte("{{{"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, _, err := Default.Resolve(path)
	if err == nil || !strings.Contains(err.Error(), path) {
		t.Fatalf("err = %v, want it to name %s", err, path)
	}
}
