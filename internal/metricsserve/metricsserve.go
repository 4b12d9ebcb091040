// Package metricsserve configures how a component serves /metrics (and,
// when asked, pprof): by default over HTTPS, each request authenticated with
// a TokenReview and authorized with a SubjectAccessReview for `get` on the
// non-resource URL, as Kubebuilder projects do. Plain HTTP is for clusters
// that want it; pprof is never served on an open plain port.
package metricsserve

import (
	"fmt"
	"net"
	"net/http"
	"net/http/pprof"

	"sigs.k8s.io/controller-runtime/pkg/metrics/filters"
	metricsserver "sigs.k8s.io/controller-runtime/pkg/metrics/server"
)

// Options returns the metrics server options for addr ("0" disables it).
// With secure, every request must carry a token allowed to `get` the path;
// profiling adds net/http/pprof's handlers behind the same check, and
// without secure only on a loopback address.
func Options(addr string, secure, profiling bool) (metricsserver.Options, error) {
	o := metricsserver.Options{BindAddress: addr, SecureServing: secure}
	if secure {
		o.FilterProvider = filters.WithAuthenticationAndAuthorization
	}
	if profiling {
		if !secure && !loopback(addr) {
			return o, fmt.Errorf("--profiling with --metrics-secure=false needs a loopback --metrics-bind-address (127.0.0.1:PORT), not %q: profiles are never served on an open plain port", addr)
		}
		o.ExtraHandlers = profilingHandlers()
	}
	return o, nil
}

// profilingHandlers are net/http/pprof's handlers.
func profilingHandlers() map[string]http.Handler {
	return map[string]http.Handler{
		"/debug/pprof/":        http.HandlerFunc(pprof.Index),
		"/debug/pprof/cmdline": http.HandlerFunc(pprof.Cmdline),
		"/debug/pprof/profile": http.HandlerFunc(pprof.Profile),
		"/debug/pprof/symbol":  http.HandlerFunc(pprof.Symbol),
		"/debug/pprof/trace":   http.HandlerFunc(pprof.Trace),
	}
}

func loopback(addr string) bool {
	host, _, err := net.SplitHostPort(addr)
	if err != nil {
		return false
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
