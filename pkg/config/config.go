// Package config defines extractedprism's settings and loads them from the
// TOML file, EP_* environment variables and command-line flags, in that order
// of increasing precedence, remembering where every value came from.
package config

import "time"

// DefaultPath is where the packaged daemon reads its configuration from.
const DefaultPath = "/etc/extractedprism/config.toml"

// Config is the effective configuration of the daemon. Every field is a
// setting: it has a TOML key, an EP_* variable and a flag (see Flags).
type Config struct {
	BindAddress      string
	BindPort         int
	HealthAddress    string
	HealthPort       int
	LinkLocalAddress string
	ReusePort        bool
	Endpoints        []string
	HealthInterval   time.Duration
	HealthTimeout    time.Duration
	HealthCheck      string
	HealthPath       string
	HealthCAFile     string
	HealthInsecure   bool
	HealthFall       int
	HealthRise       int
	DialTimeout      time.Duration
	DialHeadStart    time.Duration
	ResetOnFailure   bool
	KeepAlivePeriod  time.Duration
	TCPUserTimeout   time.Duration
	DrainTimeout     time.Duration
	MaxConnections   int
	EnableDiscovery  bool
	Kubeconfig       string
	TLSServerName    string
	StateDirectory   string
	CacheTTL         time.Duration
	MaxDiscovered    int
	LogLevel         string
	LogFormat        string
}

// Default returns the built-in defaults. Endpoints has no default: a node
// must be told where its control plane is.
func Default() Config {
	return Config{
		BindAddress:     "127.0.0.1",
		BindPort:        7445,
		HealthAddress:   "127.0.0.1",
		HealthPort:      7446,
		ReusePort:       true,
		HealthInterval:  5 * time.Minute,
		HealthTimeout:   3 * time.Second,
		HealthCheck:     "https",
		HealthPath:      "/readyz",
		HealthFall:      1,
		HealthRise:      2,
		DialTimeout:     2 * time.Second,
		DialHeadStart:   150 * time.Millisecond,
		ResetOnFailure:  true,
		KeepAlivePeriod: 30 * time.Second,
		TCPUserTimeout:  30 * time.Second,
		DrainTimeout:    5 * time.Second,
		MaxConnections:  10000,
		EnableDiscovery: true,
		TLSServerName:   "kubernetes.default.svc",
		StateDirectory:  "/var/lib/extractedprism",
		CacheTTL:        7 * 24 * time.Hour,
		MaxDiscovered:   64,
		LogLevel:        "info",
		LogFormat:       "console",
	}
}
