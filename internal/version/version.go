// Package version holds what the build stamped into the binary.
package version

import (
	"fmt"
	"runtime"
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
