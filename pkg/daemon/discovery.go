package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"time"

	"go.uber.org/zap"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/discovery"
	"github.com/lexfrei/extractedprism/pkg/upstream"
	"github.com/lexfrei/extractedprism/pkg/version"
)

// cacheRefresh is how often a steady discovered set is re-confirmed in the
// cache file, so that cache_ttl measures time without discovery, not time
// without change.
const cacheRefresh = time.Hour

// upstreamSet is what the upstream set is made of. Static endpoints are
// always in it; the cache stands in for discovery until discovery answers.
type upstreamSet struct {
	static     []string
	discovered []string // nil until discovery reports
	cached     []string
}

// endpoints merges the sources by address, with a map: the set may hold
// up to max_discovered discovered addresses besides the static ones.
func (u upstreamSet) endpoints() []upstream.Endpoint {
	var out []upstream.Endpoint

	index := make(map[string]int, len(u.static)+max(len(u.discovered), len(u.cached)))
	add := func(addrs []string, source string) {
		for _, a := range addrs {
			i, ok := index[a]
			if !ok {
				out = append(out, upstream.Endpoint{Address: a})
				i = len(out) - 1
				index[a] = i
			}

			out[i].Sources = append(out[i].Sources, source)
		}
	}

	add(u.static, "static")

	if u.discovered != nil {
		add(u.discovered, "discovery")
	} else {
		add(u.cached, "cache")
	}

	return out
}

// staticEndpoints are the configured endpoints in canonical form, without
// any that reaches this proxy's own listener. Validation rejects those it
// can tell from the configuration alone; this also catches an address of
// one of this host's interfaces behind a wildcard listener, and the
// address of a socket unit that differs from the configuration.
func (d *Daemon) staticEndpoints(eps []string) []string {
	out := make([]string, 0, len(eps))

	for _, ep := range eps {
		if c, err := config.CanonicalEndpoint(ep); err == nil {
			ep = c
		}

		if ap, err := netip.ParseAddrPort(ep); err == nil && d.self(ap) {
			d.log.Error("ignoring a static endpoint that is this proxy's own listener: it would connect to itself",
				zap.String("endpoint", ep), zap.Stringer("listen", d.listen))

			continue
		}

		out = append(out, ep)
	}

	return out
}

// selfCheck returns a function that reports whether a connection to an
// address reaches the listener on listen: by the kernel's rules
// (config.Reaches), and, for a wildcard listener, when it is an address of
// one of this host's interfaces (looked up only when the port matches,
// which is rare: API servers listen on another port).
func selfCheck(listen netip.AddrPort, ifaddrs func() ([]net.Addr, error)) func(netip.AddrPort) bool {
	l := listen.Addr().Unmap()

	return func(ap netip.AddrPort) bool {
		if ap.Port() != listen.Port() {
			return false
		}

		ip := ap.Addr().Unmap()
		if config.Reaches(l, ip) {
			return true
		}

		if !l.IsUnspecified() || (l.Is4() && !ip.Is4()) {
			return false
		}

		addrs, err := ifaddrs()
		if err != nil {
			return false
		}

		for _, a := range addrs {
			if p, ok := a.(*net.IPNet); ok {
				if local, ok := netip.AddrFromSlice(p.IP); ok && local.Unmap() == ip {
					return true
				}
			}
		}

		return false
	}
}

func (d *Daemon) cachePath() string {
	dir := d.config().StateDirectory
	if dir == "" {
		return ""
	}

	return filepath.Join(dir, discovery.CacheFile)
}

// limits bound what discovery and the cache may add to the set.
func (d *Daemon) limits(c config.Config) discovery.Limits {
	return discovery.Limits{Max: c.MaxDiscovered, Self: d.self}
}

// loadCache adds the cached upstreams of the last run, before serving.
// Entries dated in the future are written back dated now, so that they
// expire cache_ttl from now, not when the clock reaches their date.
func (d *Daemon) loadCache() {
	path := d.cachePath()
	if path == "" || !d.cfg.EnableDiscovery {
		return
	}

	now := time.Now()

	c, err := discovery.LoadCache(path, d.cfg.CacheTTL, now, d.limits(d.cfg))
	if err != nil {
		d.log.Warn("ignoring the upstream cache", zap.Error(err))

		return
	}

	if len(c.Dropped) > 0 {
		d.log.Warn("the upstream cache holds entries that cannot be upstreams; ignoring them",
			zap.String("file", path), zap.Errors("first", c.Dropped[:min(len(c.Dropped), 3)]), zap.Int("count", len(c.Dropped)))
	}

	if c.Clamped > 0 {
		d.log.Warn("the upstream cache holds entries dated in the future; counting them as seen now",
			zap.String("file", path), zap.Int("count", c.Clamped))

		if err := discovery.WriteCache(path, c.Entries); err != nil {
			d.log.Warn("cannot rewrite the upstream cache", zap.Error(err))
		}
	}

	fresh := c.Addresses()
	if len(fresh) > 0 || c.Expired > 0 {
		d.log.Info("loaded cached upstreams from the last run", zap.String("file", path),
			zap.Strings("upstreams", fresh), zap.Int("expired", c.Expired))
	}

	d.set.cached = fresh
	d.cacheAt = now
}

// startDiscovery starts the watch if enabled and possible. The client talks
// to the API through this very proxy, so it needs neither cluster DNS nor a
// ClusterIP, and fails over like every other client.
func (d *Daemon) startDiscovery(ctx context.Context) {
	cfg := d.config()
	if !cfg.EnableDiscovery {
		return
	}

	rc, from, err := discovery.Credentials(cfg.Kubeconfig)
	if errors.Is(err, discovery.ErrNoCredentials) {
		d.setDiscoveryOff("off: no credentials (set kubeconfig, pass one with LoadCredential=kubeconfig:..., or run in a cluster)")
		d.log.Warn("discovery off: no kubeconfig setting, no $CREDENTIALS_DIRECTORY/kubeconfig and not in a cluster; static endpoints only")

		return
	}

	if err != nil {
		d.setDiscoveryOff("off: " + err.Error())
		d.log.Error("discovery off: cannot load credentials; static endpoints only", zap.Error(err))

		return
	}

	rc = discovery.ThroughProxy(rc, dialable(d.lb.Addr()), cfg.TLSServerName)
	rc.UserAgent = "extractedprism/" + version.Get().Version

	client, err := discovery.NewClient(rc)
	if err != nil {
		d.setDiscoveryOff("off: " + err.Error())
		d.log.Error("discovery off: cannot build a client", zap.Error(err))

		return
	}

	d.watcher = discovery.NewWatcher(client, d.log.Named("discovery"), d.limits(cfg), d.onDiscovered)
	d.log.Info("discovery starting", zap.String("credentials", from), zap.String("via", rc.Host), zap.String("tls_server_name", cfg.TLSServerName))

	go d.watcher.Run(ctx)
}

func (d *Daemon) setDiscoveryOff(why string) {
	d.mu.Lock()
	defer d.mu.Unlock()

	d.discoveryOff = why
}

// dialable turns a listener address into one a client can dial.
func dialable(a net.Addr) string {
	ap, err := netip.ParseAddrPort(a.String())
	if err != nil || !ap.Addr().IsUnspecified() {
		return a.String()
	}

	lo := netip.MustParseAddr("127.0.0.1")
	if ap.Addr().Is6() {
		lo = netip.IPv6Loopback()
	}

	return netip.AddrPortFrom(lo, ap.Port()).String()
}

// onDiscovered takes a new discovered set: it replaces the cache in the
// upstream set and in the file, and is applied to the balancer.
func (d *Daemon) onDiscovered(addrs []string) {
	d.mu.Lock()
	d.set.discovered = addrs
	d.set.cached = nil
	eps := d.set.endpoints()
	d.mu.Unlock()

	d.log.Info("discovered API servers", zap.Strings("upstreams", addrs))

	if err := d.ups.Reconcile(eps); err != nil {
		d.log.Error("discovered set not applied", zap.Error(err))
	}

	d.saveCache(addrs)
}

func (d *Daemon) saveCache(addrs []string) {
	path := d.cachePath()
	if path == "" {
		return
	}

	now := time.Now()
	if err := discovery.SaveCache(path, addrs, now); err != nil {
		d.log.Warn("cannot persist the discovered upstreams", zap.Error(err))

		return
	}

	d.mu.Lock()
	d.cacheAt = now
	d.mu.Unlock()
}

// refreshCache re-confirms a steady set while the watch is healthy.
func (d *Daemon) refreshCache() {
	if d.watcher == nil {
		return
	}

	if s := d.watcher.State(); s.Phase == discovery.Watching && s.Endpoints != nil {
		d.saveCache(s.Endpoints)
	}
}

func (d *Daemon) discoveryState() string {
	d.mu.Lock()
	off := d.discoveryOff
	d.mu.Unlock()

	switch {
	case !d.config().EnableDiscovery:
		return "off"
	case d.watcher == nil && off != "":
		return off
	case d.watcher == nil:
		return "starting"
	}

	s := d.watcher.State()
	if s.Phase == discovery.Watching {
		return fmt.Sprintf("watching (%d endpoints)", len(s.Endpoints))
	}

	if s.LastError != "" {
		return string(s.Phase) + ": " + s.LastError
	}

	return string(s.Phase)
}
