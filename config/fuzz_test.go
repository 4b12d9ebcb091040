package config

import (
	"testing"

	"github.com/google/go-cmp/cmp"
)

// Any bytes decode to a configuration or to an error, never a panic; a
// valid configuration survives printing and decoding again.
func FuzzDecode(f *testing.F) {
	f.Add([]byte("apiVersion: spot-rebalancer.io/v1alpha1\nkind: Config\n"))
	f.Add([]byte("apiVersion: spot-rebalancer.io/v1alpha1\nkind: Config\nrebalancer:\n  replacement: {mode: capacity, timeout: 5m}\n"))
	f.Add([]byte("{\"webhook\": {\"profiles\": {\"x\": {\"tolerations\": [{\"key\": \"a\"}]}}}}"))
	f.Add([]byte("rebalancer: [\n"))
	f.Add([]byte("agent:\n  pollInterval: -1s\n  pollInterval: 2s\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Decode(data)
		if err != nil {
			return
		}
		if c.Validate() != nil {
			return
		}
		out, err := Marshal(c)
		if err != nil {
			t.Fatalf("a valid configuration does not print: %v", err)
		}
		back, err := Decode(out)
		if err != nil {
			t.Fatalf("printed configuration does not decode: %v\n%s", err, out)
		}
		if diff := cmp.Diff(c, back); diff != "" {
			t.Fatalf("round trip changed the configuration (-want +got):\n%s", diff)
		}
	})
}
