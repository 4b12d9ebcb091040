package metricsserve

import (
	"strings"
	"testing"
)

func TestOptions(t *testing.T) {
	tests := map[string]struct {
		addr              string
		secure, profiling bool
		wantFilter        bool
		wantPprof         bool
		wantErr           string
	}{
		"secure by default: authenticated and authorized":      {addr: ":8080", secure: true, wantFilter: true},
		"plain HTTP when asked for":                            {addr: ":8080"},
		"profiles behind the same check when secure":           {addr: ":8080", secure: true, profiling: true, wantFilter: true, wantPprof: true},
		"profiles on plain HTTP only on a loopback address":    {addr: "127.0.0.1:9090", profiling: true, wantPprof: true},
		"profiles on plain HTTP on [::1] too":                  {addr: "[::1]:9090", profiling: true, wantPprof: true},
		"profiles never on an open plain port":                 {addr: ":8080", profiling: true, wantErr: "loopback"},
		"profiles never on a plain port of a routable address": {addr: "10.0.0.5:8080", profiling: true, wantErr: "loopback"},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			o, err := Options(tc.addr, tc.secure, tc.profiling)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one mentioning %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if (o.FilterProvider != nil) != tc.wantFilter || o.SecureServing != tc.secure {
				t.Errorf("filter %v, secure %v; want %v, %v", o.FilterProvider != nil, o.SecureServing, tc.wantFilter, tc.secure)
			}
			if _, ok := o.ExtraHandlers["/debug/pprof/"]; ok != tc.wantPprof {
				t.Errorf("pprof served = %v, want %v", ok, tc.wantPprof)
			}
		})
	}
}
