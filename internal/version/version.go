// Package version holds what the build stamped into the binary.
package version

import (
	"fmt"
	"runtime"

	"github.com/prometheus/client_golang/prometheus"
)

// Set at build time with -ldflags "-X .../internal/version.Version=...".
var (
	Version = "dev"
	Commit  = "unknown"
)

// Info is the version as printed by `spot-rebalancer version -o json`.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"goVersion"`
	Platform  string `json:"platform"`
}

// Get returns the build's version information.
func Get() Info {
	return Info{Version: Version, Commit: Commit, GoVersion: runtime.Version(), Platform: runtime.GOOS + "/" + runtime.GOARCH}
}

func (i Info) String() string {
	return fmt.Sprintf("spot-rebalancer %s (commit %s, %s, %s)", i.Version, i.Commit, i.GoVersion, i.Platform)
}

// BuildInfo is the gauge spot_rebalancer_build_info: always 1, labelled
// with the build, so that dashboards can tell versions apart.
func BuildInfo() prometheus.Collector {
	i := Get()
	g := prometheus.NewGaugeVec(prometheus.GaugeOpts{
		Name: "spot_rebalancer_build_info",
		Help: "Always 1, labelled with the build's version, commit and Go version.",
	}, []string{"version", "commit", "goversion"})
	g.WithLabelValues(i.Version, i.Commit, i.GoVersion).Set(1)
	return g
}
