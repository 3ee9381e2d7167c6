package config

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// Validate checks c and returns every problem, each naming the source of the
// offending value as recorded in sources (keyed by TOML key).
func Validate(c Config, sources map[string]Source) []error {
	return validate(c, sources, nil)
}

// MaxDiscoveredLimit is the highest max_discovered: far above any real
// control plane (3 to 6 API servers), low enough that a merge of the set
// stays cheap.
const MaxDiscoveredLimit = 1024

// validate skips the keys in broken, whose value could not even be read:
// their error is already reported, and "is required" would mislead.
func validate(c Config, sources map[string]Source, broken map[string]bool) []error {
	v := validator{sources: sources, broken: broken}

	v.address("bind_address", c.BindAddress)
	v.address("health_address", c.HealthAddress)
	v.linkLocal(c)
	v.port("bind_port", c.BindPort)
	v.port("health_port", c.HealthPort)
	v.portClash(c)
	v.endpoints(c)
	v.positive("health_interval", c.HealthInterval)
	v.positive("health_timeout", c.HealthTimeout)
	v.positive("dial_timeout", c.DialTimeout)
	v.positive("dial_head_start", c.DialHeadStart)
	v.oneOf("health_check", c.HealthCheck, "https", "tcp")
	v.count("health_fall", c.HealthFall)
	v.count("health_rise", c.HealthRise)
	v.between("max_connections", c.MaxConnections, 1, 1_000_000)

	if !strings.HasPrefix(c.HealthPath, "/") {
		v.fail("health_path", -1, "%q must start with /", c.HealthPath)
	}
	v.nonNegative("keep_alive_period", c.KeepAlivePeriod)
	v.nonNegative("tcp_user_timeout", c.TCPUserTimeout)
	v.nonNegative("drain_timeout", c.DrainTimeout)
	v.positive("cache_ttl", c.CacheTTL)

	if c.MaxDiscovered < 1 || c.MaxDiscovered > MaxDiscoveredLimit {
		v.fail("max_discovered", -1, "%d out of range (1-%d)", c.MaxDiscovered, MaxDiscoveredLimit)
	}

	if c.TLSServerName == "" {
		v.fail("tls_server_name", -1, "must not be empty (the API server certificate's name, e.g. kubernetes.default.svc)")
	}

	if c.HealthTimeout > 0 && c.HealthTimeout >= c.HealthInterval {
		v.fail("health_timeout", -1, "%s must be less than health_interval (%s, from %s)",
			c.HealthTimeout, c.HealthInterval, sources["health_interval"])
	}

	v.oneOf("log_level", c.LogLevel, "debug", "info", "warn", "error")
	v.oneOf("log_format", c.LogFormat, "console", "json")

	return v.errs
}

type validator struct {
	sources map[string]Source
	broken  map[string]bool
	errs    []error
}

func (v *validator) fail(key string, index int, format string, args ...any) {
	if v.broken[key] {
		return
	}

	v.errs = append(v.errs, &FieldError{
		Source: v.sources[key].elem(index),
		Key:    key,
		Index:  index,
		Msg:    fmt.Sprintf(format, args...),
	})
}

func (v *validator) address(key, addr string) {
	if _, err := netip.ParseAddr(addr); err != nil {
		v.fail(key, -1, "%q is not an IP address", addr)
	}
}

// linkLocal accepts an IPv4 link-local address (169.254.0.0/16) that is
// neither cloud metadata's nor NodeLocal DNSCache's, or nothing.
func (v *validator) linkLocal(c Config) {
	if c.LinkLocalAddress == "" {
		return
	}

	if err := CheckLinkLocal(c.LinkLocalAddress); err != nil {
		v.fail("link_local_address", -1, "%s", err)
	}
}

// CheckLinkLocal says what is wrong with addr as the proxy's link-local
// address, if anything.
func CheckLinkLocal(addr string) error {
	a, err := netip.ParseAddr(addr)

	switch {
	case err != nil:
		return fmt.Errorf("%q is not an IP address", addr)
	case !a.Is4() || !a.IsLinkLocalUnicast():
		return fmt.Errorf("%s is not in 169.254.0.0/16", a)
	case reservedLinkLocal[a] != "":
		return fmt.Errorf("%s is taken: %s", a, reservedLinkLocal[a])
	}

	return nil
}

// reservedLinkLocal are link-local addresses nodes already use.
var reservedLinkLocal = map[netip.Addr]string{
	netip.MustParseAddr("169.254.169.254"): "cloud instance metadata",
	netip.MustParseAddr("169.254.20.10"):   "NodeLocal DNSCache",
	netip.MustParseAddr("169.254.25.10"):   "NodeLocal DNSCache (kubespray)",
	netip.MustParseAddr("169.254.1.1"):     "Calico's pod gateway",
	netip.MustParseAddr("169.254.169.253"): "cloud DNS (AWS)",
	netip.MustParseAddr("169.254.169.123"): "cloud NTP (AWS)",
	netip.MustParseAddr("169.254.170.2"):   "ECS task metadata",
}

func (v *validator) port(key string, port int) {
	if port < 1 || port > 65535 {
		v.fail(key, -1, "%d out of range (1-65535)", port)
	}
}

// portClash rejects a health server that would fight the proxy for its
// socket. Different addresses may share a port.
func (v *validator) portClash(c Config) {
	if c.BindPort != c.HealthPort {
		return
	}

	bind, err1 := netip.ParseAddr(c.BindAddress)
	health, err2 := netip.ParseAddr(c.HealthAddress)

	if err1 != nil || err2 != nil {
		return
	}

	if bind == health || bind.IsUnspecified() || health.IsUnspecified() {
		v.fail("health_port", -1, "%d clashes with bind_port (%s, from %s)",
			c.HealthPort, net.JoinHostPort(c.BindAddress, strconv.Itoa(c.BindPort)), v.sources["bind_port"])
	}
}

func (v *validator) endpoints(c Config) {
	eps := c.Endpoints
	if len(eps) == 0 {
		v.fail("endpoints", -1, "at least one API server endpoint (host:port) is required")

		return
	}

	listen, listenErr := listenAddr(c)
	seen := make([]string, 0, len(eps))

	for i, ep := range eps {
		canon, err := CanonicalEndpoint(ep)
		if err != nil {
			v.fail("endpoints", i, "%s", err)
			seen = append(seen, "")

			continue
		}

		if j := slices.Index(seen, canon); j >= 0 {
			v.fail("endpoints", i, "%q duplicates endpoints[%d]", ep, j)
		} else if listenErr == nil && PointsAt(listen, canon) {
			v.fail("endpoints", i, "%q is this proxy's own listener (bind_address %s from %s, bind_port %d from %s): it would connect to itself",
				ep, c.BindAddress, v.sources["bind_address"], c.BindPort, v.sources["bind_port"])
		}

		seen = append(seen, canon)
	}
}

// listenAddr is the proxy's configured listener, if it is valid.
func listenAddr(c Config) (netip.AddrPort, error) {
	ip, err := netip.ParseAddr(c.BindAddress)
	if err != nil {
		return netip.AddrPort{}, fmt.Errorf("bind_address: %w", err)
	}

	if c.BindPort < 1 || c.BindPort > 65535 {
		return netip.AddrPort{}, fmt.Errorf("bind_port %d out of range", c.BindPort)
	}

	return netip.AddrPortFrom(ip, uint16(c.BindPort)), nil
}

// CanonicalEndpoint checks a host:port endpoint and returns it in canonical
// form (IP addresses normalised, IPv6 bracketed, IPv4-mapped IPv6 as the
// IPv4 address it is), so "[::1]:6443" and "[0::1]:6443" compare equal, and
// so do "[::ffff:10.0.0.1]:6443" and "10.0.0.1:6443".
func CanonicalEndpoint(ep string) (string, error) {
	host, port, err := net.SplitHostPort(ep)
	if err != nil {
		if _, _, err2 := net.SplitHostPort(ep + ":1"); err2 == nil {
			return "", fmt.Errorf("%q has no port", ep)
		}

		return "", fmt.Errorf("%q is not host:port (IPv6 needs brackets: [::1]:6443)", ep)
	}

	if host == "" {
		return "", fmt.Errorf("%q has no host", ep)
	}

	n, err := strconv.Atoi(port)
	if err != nil || n < 1 || n > 65535 {
		return "", fmt.Errorf("%q: port %q out of range (1-65535)", ep, port)
	}

	if ip, err := netip.ParseAddr(host); err == nil {
		host = ip.Unmap().String()
	}

	return net.JoinHostPort(host, strconv.Itoa(n)), nil
}

func (v *validator) positive(key string, d time.Duration) {
	if d <= 0 {
		v.fail(key, -1, "%s must be positive", d)
	}
}

func (v *validator) nonNegative(key string, d time.Duration) {
	if d < 0 {
		v.fail(key, -1, "%s must not be negative", d)
	}
}

func (v *validator) count(key string, n int) { v.between(key, n, 1, 100) }

func (v *validator) between(key string, n, lo, hi int) {
	if n < lo || n > hi {
		v.fail(key, -1, "%d out of range (%d-%d)", n, lo, hi)
	}
}

func (v *validator) oneOf(key, val string, allowed ...string) {
	if !slices.Contains(allowed, val) {
		v.fail(key, -1, "%q is not one of %v", val, allowed)
	}
}
