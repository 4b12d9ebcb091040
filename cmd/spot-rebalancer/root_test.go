package main

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/spf13/cobra"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/util/flowcontrol"

	"github.com/spot-rebalancer/spot-rebalancer/config"
)

func run(t *testing.T, args ...string) (stdout string, code int, err error) {
	t.Helper()
	return runCommand(t, newRootCommand(), args...)
}

func runCommand(t *testing.T, cmd *cobra.Command, args ...string) (stdout string, code int, err error) {
	t.Helper()
	var out bytes.Buffer
	cmd.SetOut(&out)
	cmd.SetErr(&out)
	cmd.SetArgs(args)
	err = cmd.ExecuteContext(t.Context())
	return out.String(), exitCode(err), err
}

func TestCommandLine(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		path := filepath.Join(dir, name)
		if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
			t.Fatal(err)
		}
		return path
	}
	good := write("good.yaml", "apiVersion: spot-rebalancer.io/v1alpha1\nkind: Config\nrebalancer:\n  replacement:\n    mode: capacity\n")
	unknown := write("unknown.yaml", "apiVersion: spot-rebalancer.io/v1alpha1\nkind: Config\nwebhook:\n  prot: 1\n")
	kubeconfigFile := write("kubeconfig", "apiVersion: v1\nkind: Config\nclusters: [{name: c, cluster: {server: \"https://127.0.0.1:1\"}}]\n"+
		"users: [{name: u, user: {token: t}}]\ncontexts: [{name: c, context: {cluster: c, user: u}}]\ncurrent-context: c\n")
	badValue := write("bad.yaml", "apiVersion: spot-rebalancer.io/v1alpha1\nkind: Config\nrebalancer:\n  replacement:\n    onTimeout: never\n")

	tests := map[string]struct {
		args     []string
		wantCode int
		wantOut  []string
		wantErr  []string
	}{
		"--version on the root": {
			args: []string{"--version"}, wantOut: []string{"spot-rebalancer dev (commit"},
		},
		"--version on plan answers without a cluster": {
			args: []string{"plan", "--version"}, wantOut: []string{"spot-rebalancer dev (commit"},
		},
		"--version on controller starts nothing": {
			args: []string{"controller", "--version", "--kubeconfig", "/nonexistent"}, wantOut: []string{"spot-rebalancer dev (commit"},
		},
		"plan: names and a selector exclude each other": {
			args: []string{"plan", "spot-a-1", "-l", "pool=a"}, wantCode: 2, wantErr: []string{"not both"},
		},
		"plan: --all-at-risk with a name": {
			args: []string{"plan", "--all-at-risk", "spot-a-1"}, wantCode: 2, wantErr: []string{"--all-at-risk"},
		},
		"plan: an output format kubectl does not know": {
			args: []string{"plan", "-o", "xml"}, wantCode: 2, wantErr: []string{"table, wide, json, yaml"},
		},
		"plan: a selector that does not parse": {
			args: []string{"plan", "-l", "a in (b"}, wantCode: 2, wantErr: []string{"--selector"},
		},
		"--request-timeout is refused for a component that watches": {
			args: []string{"controller", "--request-timeout", "30s", "--kubeconfig", "unused"}, wantCode: 2, wantErr: []string{"--request-timeout 30s is for plan"},
		},
		"plan: a context the kubeconfig lacks": {
			args: []string{"plan", "spot-a-1", "--context", "nowhere", "--kubeconfig", kubeconfigFile}, wantCode: 1, wantErr: []string{"nowhere"},
		},
		"--print-config prints the defaults": {
			args:    []string{"--print-config"},
			wantOut: []string{"apiVersion: spot-rebalancer.io/v1alpha1", "mode: node", "onTimeout: drain-if-fits"},
		},
		"--print-config shows what the file set": {
			args:    []string{"--config", good, "--print-config"},
			wantOut: []string{"mode: capacity"},
		},
		"an unknown field exits 2 naming it": {
			args: []string{"--config", unknown, "--print-config"}, wantCode: 2,
			wantErr: []string{`unknown field "webhook.prot"`, unknown},
		},
		"a bad value exits 2 naming the field and the allowed values": {
			args: []string{"--config", badValue, "--print-config"}, wantCode: 2,
			wantErr: []string{"rebalancer.replacement.onTimeout", `"never"`, `"keep-cordoned"`},
		},
		"a missing file exits 2": {
			args: []string{"--config", filepath.Join(dir, "nope.yaml"), "--print-config"}, wantCode: 2,
			wantErr: []string{"nope.yaml"},
		},
		"an unknown flag exits 2": {
			args: []string{"--frobnicate"}, wantCode: 2, wantErr: []string{"--frobnicate"},
		},
		"an unknown command exits 2": {
			args: []string{"frobnicate"}, wantCode: 2, wantErr: []string{`"frobnicate"`},
		},
		"version prints the version": {
			args: []string{"version"}, wantOut: []string{"spot-rebalancer dev"},
		},
		"version -o json is machine readable": {
			args: []string{"version", "-o", "json"}, wantOut: []string{`"version": "dev"`, `"goVersion"`},
		},
		"version -o yaml is bad usage": {
			args: []string{"version", "-o", "yaml"}, wantCode: 2, wantErr: []string{"text or json"},
		},
		"webhook --port overrides webhook.port": {
			args: []string{"webhook", "--port", "7443", "--print-config"}, wantOut: []string{"port: 7443"},
		},
		"a bad --log-level exits 2 naming the allowed values": {
			args: []string{"webhook", "--log-level", "loud", "--kubeconfig", "unused"}, wantCode: 2, wantErr: []string{"debug, info or error"},
		},
		"a client rate limit of zero exits 2 naming the flag": {
			args: []string{"controller", "--kube-api-qps", "0", "--kubeconfig", "unused"}, wantCode: 2, wantErr: []string{"--kube-api-qps"},
		},
		"a missing --kubeconfig file is a runtime failure naming it": {
			args: []string{"controller", "--kubeconfig", filepath.Join(dir, "nope"), "--log-level", "error"}, wantCode: 1, wantErr: []string{"nope"},
		},
		"webhook --help explains opting in": {
			args: []string{"webhook", "--help"}, wantOut: []string{"spot-rebalancer.io/profile", "fails open"},
		},
		"--help teaches the exit codes": {
			args: []string{"--help"}, wantOut: []string{"Exit codes", "--print-config", "--kubeconfig"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			out, code, err := run(t, tc.args...)
			if code != tc.wantCode {
				t.Fatalf("exit code = %d, want %d (err: %v)", code, tc.wantCode, err)
			}
			for _, want := range tc.wantOut {
				if !strings.Contains(out, want) {
					t.Errorf("output does not contain %q:\n%s", want, out)
				}
			}
			for _, want := range tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Errorf("error %v does not contain %q", err, want)
				}
			}
		})
	}
}

func TestPrintedConfigLoadsBack(t *testing.T) {
	out, code, err := run(t, "--print-config")
	if code != 0 {
		t.Fatalf("exit %d: %v", code, err)
	}
	path := filepath.Join(t.TempDir(), "printed.yaml")
	if err := os.WriteFile(path, []byte(out), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := config.LoadFile(path); err != nil {
		t.Fatalf("the printed configuration must be a valid --config file: %v", err)
	}
}

// --kube-api-qps and --kube-api-burst bound the whole process: every client
// built from the config, of any API group, takes from one token bucket;
// leader election gets its own.
func TestOneRateLimitForTheProcess(t *testing.T) {
	kubeconfig := filepath.Join(t.TempDir(), "kubeconfig")
	if err := os.WriteFile(kubeconfig, []byte(`apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:1"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: c, context: {cluster: c, user: u}}]
current-context: c
`), 0o600); err != nil {
		t.Fatal(err)
	}
	o := &globalOptions{kube: newKubeFlags(), qps: 7, burst: 9}
	*o.kube.KubeConfig = kubeconfig
	cfg, err := o.restConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.RateLimiter == nil || cfg.RateLimiter.QPS() != 7 {
		t.Fatalf("RateLimiter = %v, want a token bucket of 7 QPS", cfg.RateLimiter)
	}
	kube, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for name, got := range map[string]flowcontrol.RateLimiter{
		"core/v1":   kube.CoreV1().RESTClient().GetRateLimiter(),
		"apps/v1":   kube.AppsV1().RESTClient().GetRateLimiter(),
		"policy/v1": kube.PolicyV1().RESTClient().GetRateLimiter(),
	} {
		if got != cfg.RateLimiter {
			t.Errorf("the %s client has a rate limiter of its own", name)
		}
	}
	own := ownRateLimit(cfg)
	lease, err := kubernetes.NewForConfig(own)
	if err != nil {
		t.Fatal(err)
	}
	if got := lease.CoordinationV1().RESTClient().GetRateLimiter(); got == cfg.RateLimiter || got == nil || got.QPS() != 7 {
		t.Errorf("leader election's rate limiter = %v, want its own of 7 QPS", got)
	}
}

// As a kubectl plugin the binary offers plan and version, names itself as
// kubectl shows it, and takes kubectl's connection flags.
func TestPluginCommand(t *testing.T) {
	out, code, err := runCommand(t, newPluginCommand(), "--help")
	if code != 0 {
		t.Fatalf("--help: exit %d: %v", code, err)
	}
	for _, want := range []string{"kubectl spot-rebalancer [command]", "plan", "version", "--context", "--cluster", "--user", "--request-timeout", "--kubeconfig", "--log-level"} {
		if !strings.Contains(out, want) {
			t.Errorf("the plugin's help lacks %q:\n%s", want, out)
		}
	}
	for _, gone := range []string{"controller", "webhook", "agent", "migrate"} {
		if strings.Contains(out, "  "+gone+" ") {
			t.Errorf("the plugin offers %s:\n%s", gone, out)
		}
	}
	if out, _, _ := runCommand(t, newPluginCommand(), "plan", "--version"); !strings.Contains(out, "spot-rebalancer dev") {
		t.Errorf("plan --version: %q", out)
	}
}
