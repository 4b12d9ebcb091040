package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestDefaultsAreValid(t *testing.T) {
	if err := Default().Validate(); err != nil {
		t.Fatalf("the defaults must be valid: %v", err)
	}
}

func TestDefaultsSurviveARoundTrip(t *testing.T) {
	out, err := Marshal(Default())
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(out)
	if err != nil {
		t.Fatalf("printed config does not decode: %v\n%s", err, out)
	}
	if diff := cmp.Diff(Default(), back); diff != "" {
		t.Errorf("print-config output does not decode to the defaults (-want +got):\n%s", diff)
	}
}

func TestDecodeAndValidate(t *testing.T) {
	const header = "apiVersion: spot-rebalancer.io/v1alpha1\nkind: Config\n"
	tests := map[string]struct {
		file string
		// wantErr lists substrings the error must contain; empty means valid.
		wantErr []string
		check   func(t *testing.T, c *Config)
	}{
		"an empty section keeps every default": {
			file: header + "rebalancer: {}\n",
			check: func(t *testing.T, c *Config) {
				if diff := cmp.Diff(Default(), c); diff != "" {
					t.Errorf("(-want +got):\n%s", diff)
				}
			},
		},
		"a set field wins and its neighbours keep their defaults": {
			file: header + "rebalancer:\n  replacement:\n    mode: capacity\n",
			check: func(t *testing.T, c *Config) {
				if c.Rebalancer.Replacement.Mode != ReplacementCapacity {
					t.Errorf("mode = %q, want capacity", c.Rebalancer.Replacement.Mode)
				}
				if c.Rebalancer.Replacement.Timeout.Duration != 10*time.Minute {
					t.Errorf("timeout = %s, want the 10m default", c.Rebalancer.Replacement.Timeout.Duration)
				}
			},
		},
		"the queue's events are believed from the account in its URL": {
			file: header + "aws:\n  queue:\n    url: https://sqs.us-east-1.amazonaws.com/123456789012/spot-events\n",
			check: func(t *testing.T, c *Config) {
				if got := c.AWS.Queue.BelievedAccounts(); len(got) != 1 || got[0] != "123456789012" {
					t.Errorf("believed accounts %v, want the queue's 123456789012", got)
				}
			},
		},
		"a wrong type is named by its path in the file, in the file's words": {
			file:    header + "rebalancer:\n  maxConcurrentNodes: two\n",
			wantErr: []string{"rebalancer.maxConcurrentNodes", "want a whole number, got a string"},
		},
		"a duration that does not parse is named by its path": {
			file:    header + "rebalancer:\n  surge:\n    timeout: 5 minutes\n",
			wantErr: []string{"rebalancer.surge.timeout", `"5 minutes"`, "such as 30s"},
		},
		"a list where an object goes": {
			file:    header + "rebalancer:\n  replacement: [1]\n",
			wantErr: []string{"rebalancer.replacement", "want an object (key: value), got a list"},
		},
		"a path through a map keeps the map's key": {
			file:    header + "webhook:\n  profiles:\n    spot:\n      tolerations: {a: 1}\n",
			wantErr: []string{"webhook.profiles[spot].tolerations", "want a list, got an object"},
		},
		"an element of a list inside a map is named by its index": {
			file:    header + "webhook:\n  profiles:\n    spot:\n      tolerations: [{key: a, tolerationSeconds: soon}]\n",
			wantErr: []string{"webhook.profiles[spot].tolerations[0].tolerationSeconds", "want a whole number, got a string"},
		},
		"a number out of its field's range": {
			file:    header + "rebalancer:\n  maxConcurrentNodes: 9999999999\n",
			wantErr: []string{"rebalancer.maxConcurrentNodes", "out of range"},
		},
		"a number too large for any integer is out of range, not a fraction": {
			file:    header + "rebalancer:\n  maxParallelEvictions: 1e30\n",
			wantErr: []string{"rebalancer.maxParallelEvictions", "out of range"},
		},
		"a budget takes a number or a percentage, not a list": {
			file:    header + "rebalancer:\n  implicitBudget:\n    maxUnavailable: [1]\n",
			wantErr: []string{"rebalancer.implicitBudget.maxUnavailable", "a whole number or a percentage"},
		},
		"a queue URL that names no account needs the accounts listed": {
			file:    header + "aws:\n  queue:\n    url: https://vpce-0123.sqs.us-east-1.vpce.amazonaws.com/spot-events\n",
			wantErr: []string{"aws.queue.accounts", "names no account"},
		},
		"an account that is not 12 digits is refused": {
			file:    header + "aws:\n  queue:\n    url: https://sqs.us-east-1.amazonaws.com/123456789012/q\n    accounts: [\"12345\"]\n",
			wantErr: []string{"aws.queue.accounts[0]", "12-digit"},
		},
		"forceAtDeadline false is kept, not defaulted back to true": {
			file: header + "rebalancer:\n  forceAtDeadline: false\n",
			check: func(t *testing.T, c *Config) {
				if *c.Rebalancer.ForceAtDeadline {
					t.Error("forceAtDeadline = true, want false")
				}
			},
		},
		"profiles given replace the default profiles": {
			file: header + "webhook:\n  profiles:\n    mine:\n      tolerations:\n      - {key: spot, operator: Exists}\n",
			check: func(t *testing.T, c *Config) {
				if _, ok := c.Webhook.Profiles["spot"]; ok || len(c.Webhook.Profiles) != 1 {
					t.Errorf("profiles = %v, want only mine", c.Webhook.Profiles)
				}
			},
		},
		"an unknown field is named with its path": {
			file:    header + "rebalancer:\n  replacment:\n    mode: node\n",
			wantErr: []string{`unknown field "rebalancer.replacment"`},
		},
		"a duplicate field is an error": {
			file:    header + "agent:\n  pollInterval: 1s\n  pollInterval: 2s\n",
			wantErr: []string{"pollInterval"},
		},
		"a bad replacement mode names the field and the allowed values": {
			file:    header + "rebalancer:\n  replacement:\n    mode: eager\n",
			wantErr: []string{"rebalancer.replacement.mode", `"eager"`, `"node", "capacity", "none"`},
		},
		"a bad onTimeout names the allowed values": {
			file:    header + "rebalancer:\n  replacement:\n    onTimeout: panic\n",
			wantErr: []string{"rebalancer.replacement.onTimeout", `"drain-if-fits", "keep-cordoned", "uncordon"`},
		},
		"a missing apiVersion is rejected": {
			file:    "kind: Config\n",
			wantErr: []string{"apiVersion", "spot-rebalancer.io/v1alpha1"},
		},
		"a wrong kind is rejected": {
			file:    "apiVersion: spot-rebalancer.io/v1alpha1\nkind: Deployment\n",
			wantErr: []string{"kind", `"Config"`},
		},
		"a duration that is not a duration is a decode error naming the value": {
			file:    header + "rebalancer:\n  replacement:\n    timeout: soon\n",
			wantErr: []string{"soon"},
		},
		"a negative duration is rejected": {
			file:    header + "agent:\n  pollInterval: -1s\n",
			wantErr: []string{"agent.pollInterval", "positive duration"},
		},
		"a deadline safety that eats the whole notice is rejected": {
			file:    header + "rebalancer:\n  deadlineSafety: 2m\n",
			wantErr: []string{"rebalancer.deadlineSafety"},
		},
		"an implicit budget of 0% is rejected": {
			file:    header + "rebalancer:\n  implicitBudget:\n    maxUnavailable: 0%\n",
			wantErr: []string{"rebalancer.implicitBudget.maxUnavailable"},
		},
		"an implicit budget of 2 pods is fine": {
			file: header + "rebalancer:\n  implicitBudget:\n    maxUnavailable: 2\n",
		},
		"a profile cannot be called none": {
			file:    header + "webhook:\n  profiles:\n    none: {}\n",
			wantErr: []string{"webhook.profiles[none]", "reserved"},
		},
		"a toleration with a bad effect names the index": {
			file:    header + "webhook:\n  profiles:\n    p:\n      tolerations:\n      - {key: a, operator: Equal, value: b, effect: NoWay}\n",
			wantErr: []string{"webhook.profiles[p].tolerations[0].effect", "NoSchedule"},
		},
		"a preferred affinity weight above 100 is rejected": {
			file: header + "webhook:\n  profiles:\n    p:\n      preferredAffinity:\n      - weight: 200\n        preference:\n" +
				"          matchExpressions: [{key: a, operator: In, values: [b]}]\n",
			wantErr: []string{"webhook.profiles[p].preferredAffinity[0].weight"},
		},
		"a serving certificate outliving its CA is rejected": {
			file:    header + "certs:\n  caValidity: 24h\n  servingValidity: 48h\n",
			wantErr: []string{"certs.servingValidity", "caValidity"},
		},
		"the CA and serving secrets must differ": {
			file:    header + "certs:\n  caSecretName: same\n  servingSecretName: same\n",
			wantErr: []string{"certs.servingSecretName"},
		},
		"a relative queue URL is rejected": {
			file:    header + "aws:\n  queue:\n    url: my-queue\n",
			wantErr: []string{"aws.queue.url", "absolute URL"},
		},
		"every bad field is reported, not just the first": {
			file:    header + "webhook:\n  port: 70000\nrebalancer:\n  maxConcurrentNodes: -1\n",
			wantErr: []string{"webhook.port", "rebalancer.maxConcurrentNodes"},
		},
		"YAML that does not parse is a clear error": {
			file:    header + "rebalancer: [\n",
			wantErr: []string{"parsing YAML"},
		},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			path := filepath.Join(t.TempDir(), "config.yaml")
			if err := os.WriteFile(path, []byte(tc.file), 0o600); err != nil {
				t.Fatal(err)
			}
			c, err := LoadFile(path)
			if len(tc.wantErr) == 0 {
				if err != nil {
					t.Fatalf("unexpected error: %v", err)
				}
				if tc.check != nil {
					tc.check(t, c)
				}
				return
			}
			if err == nil {
				t.Fatalf("expected an error containing %q", tc.wantErr)
			}
			if !IsError(err) {
				t.Errorf("error %v is not a configuration error", err)
			}
			for _, want := range tc.wantErr {
				if !strings.Contains(err.Error(), want) {
					t.Errorf("error %q does not contain %q", err, want)
				}
			}
		})
	}
}

func TestLoadFileThatDoesNotExist(t *testing.T) {
	_, err := LoadFile(filepath.Join(t.TempDir(), "missing.yaml"))
	if err == nil || !IsError(err) || !strings.Contains(err.Error(), "missing.yaml") {
		t.Fatalf("want a configuration error naming the file, got %v", err)
	}
}

func TestWriteFileLoadsBack(t *testing.T) {
	want := Default()
	want.Rebalancer.MaxConcurrentNodes = 7
	want.Certs.Mode = CertModeExternal
	path := filepath.Join(t.TempDir(), "config.yaml")
	if err := WriteFile(path, want); err != nil {
		t.Fatal(err)
	}
	got, err := LoadFile(path)
	if err != nil {
		t.Fatalf("a written file must load as --config: %v", err)
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("written and loaded back (-want +got):\n%s", diff)
	}
	if info, err := os.Stat(path); err != nil || info.Mode().Perm() != 0o600 {
		t.Errorf("mode = %v, %v; want 0600", info.Mode().Perm(), err)
	}
}
