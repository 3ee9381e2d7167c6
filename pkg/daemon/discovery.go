package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
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

func (u upstreamSet) endpoints() []upstream.Endpoint {
	var out []upstream.Endpoint

	add := func(addrs []string, source string) {
		for _, a := range addrs {
			i := slices.IndexFunc(out, func(e upstream.Endpoint) bool { return e.Address == a })
			if i < 0 {
				out = append(out, upstream.Endpoint{Address: a})
				i = len(out) - 1
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

func canonical(eps []string) []string {
	out := make([]string, 0, len(eps))

	for _, ep := range eps {
		if c, err := config.CanonicalEndpoint(ep); err == nil {
			ep = c
		}

		out = append(out, ep)
	}

	return out
}

func (d *Daemon) cachePath() string {
	dir := d.config().StateDirectory
	if dir == "" {
		return ""
	}

	return filepath.Join(dir, discovery.CacheFile)
}

// loadCache adds the cached upstreams of the last run, before serving.
func (d *Daemon) loadCache() {
	path := d.cachePath()
	if path == "" || !d.cfg.EnableDiscovery {
		return
	}

	fresh, expired, err := discovery.LoadCache(path, d.cfg.CacheTTL, time.Now())
	if err != nil {
		d.log.Warn("ignoring the upstream cache", zap.Error(err))

		return
	}

	if len(fresh) > 0 || expired > 0 {
		d.log.Info("loaded cached upstreams from the last run", zap.String("file", path),
			zap.Strings("upstreams", fresh), zap.Int("expired", expired))
	}

	d.set.cached = fresh
	d.cacheAt = time.Now()
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

	d.watcher = discovery.NewWatcher(client, d.log.Named("discovery"), d.onDiscovered)
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
