package config

import "time"

// Flags is the command-line face of Config, parsed by kong. Pointer fields
// stay nil when a flag is absent, which is how a flag is told apart from the
// layers below it. The flag name is the source of the other two names: the
// TOML key is the name in snake_case and the variable is EP_ + upper case.
//
// A field here without a Config field of the same name (or the reverse) is a
// bug that TestFlagsMatchConfig catches.
type Flags struct {
	ConfigFile *string `name:"config" placeholder:"PATH" help:"Configuration file (default ${config_default}; $$EP_CONFIG). A missing default file means built-in defaults; a missing file named here is an error." setting:"-"`

	BindAddress      *string        `name:"bind-address" placeholder:"ADDR" group:"Listener" help:"Address the TCP load balancer listens on."`
	BindPort         *int           `name:"bind-port" placeholder:"PORT" group:"Listener" help:"Port the TCP load balancer listens on."`
	HealthAddress    *string        `name:"health-address" placeholder:"ADDR" group:"Listener" help:"Address of the health, status and metrics HTTP server."`
	HealthPort       *int           `name:"health-port" placeholder:"PORT" group:"Listener" help:"Port of the health, status and metrics HTTP server."`
	LinkLocalAddress *string        `name:"link-local-address" placeholder:"ADDR" group:"Listener" help:"Also serve the proxy on this address, for pods without host networking (e.g. 169.254.7.45; see link-local in the README). Empty: off. The address itself is put on the node by extractedprism link-local."`
	ReusePort        *bool          `name:"reuse-port" negatable:"" group:"Listener" help:"Bind the listeners with SO_REUSEPORT, so that a new copy (a DaemonSet update) serves next to the old one and takes over new connections once ready. Off under socket activation: systemd holds the sockets across restarts."`
	Endpoints        *[]string      `name:"endpoints" placeholder:"HOST:PORT,..." sep:"," group:"Upstreams" help:"Static API server endpoints, always part of the upstream set."`
	HealthInterval   *time.Duration `name:"health-interval" placeholder:"DURATION" group:"Upstreams" help:"How often a healthy upstream is checked (±20 %). One that fails, or that the proxied traffic saw fail, is checked at once and then from 1 s, backing off to 30 s."`
	HealthTimeout    *time.Duration `name:"health-timeout" placeholder:"DURATION" group:"Upstreams" help:"Timeout of one upstream health check; less than the interval."`
	HealthCheck      *string        `name:"health-check" placeholder:"https|tcp" group:"Upstreams" help:"Health check: https (GET health_path over TLS; 200 is healthy, 401/403 count as up, anything else or a timeout as down) or tcp (a connect). Without a CA for https, tcp is used and logged."`
	HealthPath       *string        `name:"health-path" placeholder:"PATH" group:"Upstreams" help:"Path of the https health check."`
	HealthCAFile     *string        `name:"health-ca-file" placeholder:"PATH" group:"Upstreams" help:"CA bundle for the https health check. Empty: the discovery kubeconfig's CA, else the in-cluster CA, else /etc/kubernetes/pki/ca.crt."`
	HealthInsecure   *bool          `name:"health-insecure-skip-verify" negatable:"" group:"Upstreams" help:"Do not verify the API server certificate in https health checks. Only by explicit choice."`
	HealthFall       *int           `name:"health-fall" placeholder:"N" group:"Upstreams" help:"Failed checks in a row that take an upstream out."`
	HealthRise       *int           `name:"health-rise" placeholder:"N" group:"Upstreams" help:"Passing checks in a row that bring an upstream back."`
	DialTimeout      *time.Duration `name:"dial-timeout" placeholder:"DURATION" group:"Upstreams" help:"Timeout of one dial to an upstream before the next upstream is tried."`
	DialHeadStart    *time.Duration `name:"dial-head-start" placeholder:"DURATION" group:"Upstreams" help:"If a dial has not connected within this time, the next upstream is dialed in parallel and the first to connect wins."`
	ResetOnFailure   *bool          `name:"reset-on-failure" negatable:"" group:"Upstreams" help:"Close the client connections of an upstream that failed two checks in a row while another is healthy, so clients reconnect to it at once."`
	KeepAlivePeriod  *time.Duration `name:"keep-alive-period" placeholder:"DURATION" group:"Upstreams" help:"TCP keepalive period on both sides of a proxied connection."`
	TCPUserTimeout   *time.Duration `name:"tcp-user-timeout" placeholder:"DURATION" group:"Upstreams" help:"TCP_USER_TIMEOUT on both sides: how long unacknowledged data may wait before the connection is dropped."`
	DrainTimeout     *time.Duration `name:"drain-timeout" placeholder:"DURATION" group:"Upstreams" help:"How long in-flight connections may finish, on shutdown or after their upstream left the set, before they are closed."`
	MaxConnections   *int           `name:"max-connections" placeholder:"N" group:"Upstreams" help:"Client connections proxied at once. A connection over the limit is closed at once (a reset), counted and logged at most once a second."`
	EnableDiscovery  *bool          `name:"enable-discovery" negatable:"" group:"Discovery" help:"Watch the kubernetes EndpointSlice for API servers beyond the static endpoints."`
	Kubeconfig       *string        `name:"kubeconfig" placeholder:"PATH" group:"Discovery" help:"kubeconfig with the credentials for discovery (host mode). Empty: $$CREDENTIALS_DIRECTORY/kubeconfig (systemd LoadCredential=), else the in-cluster service account, else discovery stays off. Its server is not used: discovery connects through the proxy itself."`
	TLSServerName    *string        `name:"tls-server-name" placeholder:"NAME" group:"Discovery" help:"Name the API server certificate is checked against when discovery connects through the proxy."`
	StateDirectory   *string        `name:"state-directory" placeholder:"DIR" group:"Discovery" help:"Where the last discovered upstream set is kept across restarts; empty disables the cache."`
	CacheTTL         *time.Duration `name:"cache-ttl" placeholder:"DURATION" group:"Discovery" help:"Cached upstreams not confirmed by discovery for this long are dropped."`
	MaxDiscovered    *int           `name:"max-discovered" placeholder:"N" group:"Discovery" help:"Most upstreams taken from the EndpointSlice and the cache (1-1024). A slice with more usable addresses is ignored and the last known set kept."`
	LogLevel         *string        `name:"log-level" placeholder:"LEVEL" group:"Logging" help:"Log level: debug, info, warn or error."`
	LogFormat        *string        `name:"log-format" placeholder:"FORMAT" group:"Logging" help:"Log format: console or json."`
}

// KongVars are the variables Flags' tags refer to.
func KongVars() map[string]string {
	return map[string]string{
		"config_default": DefaultPath,
	}
}
