// Package version reports what build of extractedprism is running.
package version

import (
	"runtime"
	"runtime/debug"
)

// Set at build time with -ldflags "-X github.com/lexfrei/extractedprism/pkg/version.Version=...".
var (
	Version = ""
	Commit  = ""
)

// Info describes the build.
type Info struct {
	Version   string `json:"version"`
	Commit    string `json:"commit"`
	GoVersion string `json:"go_version"`
}

// Get returns the build information, falling back to what the Go toolchain
// recorded when the ldflags were not set.
func Get() Info {
	info := Info{Version: Version, Commit: Commit, GoVersion: runtime.Version()}

	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return fill(info)
	}

	if info.Version == "" && bi.Main.Version != "(devel)" {
		info.Version = bi.Main.Version
	}

	for _, s := range bi.Settings {
		if s.Key == "vcs.revision" && info.Commit == "" {
			info.Commit = s.Value
		}
	}

	return fill(info)
}

func fill(i Info) Info {
	if i.Version == "" {
		i.Version = "devel"
	}

	if i.Commit == "" {
		i.Commit = "unknown"
	}

	return i
}

func (i Info) String() string {
	return "extractedprism " + i.Version + " (commit " + i.Commit + ", " + i.GoVersion + ")"
}
