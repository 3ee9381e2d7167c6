package daemon

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/discovery"
	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// The proxy's own listener is recognised by the kernel's rules, and behind
// a wildcard listener by the addresses of this host's real interfaces.
func TestSelfCheck(t *testing.T) {
	t.Parallel()

	addrs, err := net.InterfaceAddrs()
	if err != nil {
		t.Fatal(err)
	}

	var local []netip.Addr

	for _, a := range addrs {
		if p, ok := a.(*net.IPNet); ok {
			if ip, ok := netip.AddrFromSlice(p.IP); ok && !ip.Unmap().IsLoopback() && ip.Unmap().Is4() {
				local = append(local, ip.Unmap())
			}
		}
	}

	wildcard := selfCheck(netip.MustParseAddrPort("0.0.0.0:7445"), net.InterfaceAddrs)
	loopback := selfCheck(netip.MustParseAddrPort("127.0.0.1:7445"), net.InterfaceAddrs)

	for _, ip := range local {
		if !wildcard(netip.AddrPortFrom(ip, 7445)) {
			t.Errorf("%s:7445 (an address of this host) does not reach 0.0.0.0:7445", ip)
		}

		if wildcard(netip.AddrPortFrom(ip, 6443)) || loopback(netip.AddrPortFrom(ip, 7445)) {
			t.Errorf("%s: another port, or a loopback listener, taken for the listener", ip)
		}
	}

	for ap, want := range map[string]bool{
		"127.0.0.1:7445": true, "127.0.0.2:7445": true, "0.0.0.0:7445": true, "[::1]:7445": false, "192.0.2.200:7445": false,
	} {
		if got := wildcard(netip.MustParseAddrPort(ap)); got != want {
			t.Errorf("0.0.0.0:7445: %s reaches it = %v, want %v", ap, got, want)
		}
	}

	t.Logf("checked %d addresses of this host's interfaces: %v", len(local), local)
}

// The set is merged by address: static first, then discovery (or, before
// discovery answers, the cache), each address once with all its sources.
func TestUpstreamSetMerge(t *testing.T) {
	t.Parallel()

	u := upstreamSet{static: []string{"a:1", "b:1"}, cached: []string{"b:1", "c:1"}}
	want := []upstream.Endpoint{
		{Address: "a:1", Sources: []string{"static"}},
		{Address: "b:1", Sources: []string{"static", "cache"}},
		{Address: "c:1", Sources: []string{"cache"}},
	}

	if got := u.endpoints(); !reflect.DeepEqual(got, want) {
		t.Fatalf("with the cache: %+v, want %+v", got, want)
	}

	u.discovered = []string{"c:1", "d:1"}
	want = []upstream.Endpoint{
		{Address: "a:1", Sources: []string{"static"}},
		{Address: "b:1", Sources: []string{"static"}},
		{Address: "c:1", Sources: []string{"discovery"}},
		{Address: "d:1", Sources: []string{"discovery"}},
	}

	if got := u.endpoints(); !reflect.DeepEqual(got, want) {
		t.Fatalf("with discovery: %+v, want %+v", got, want)
	}
}

// The merge is linear: a set at the highest max_discovered with as many
// static endpoints costs microseconds.
func BenchmarkUpstreamSetMerge(b *testing.B) {
	var u upstreamSet

	for i := range config.MaxDiscoveredLimit {
		u.static = append(u.static, fmt.Sprintf("10.1.%d.%d:6443", i/250, i%250+1))
		u.discovered = append(u.discovered, fmt.Sprintf("10.2.%d.%d:6443", i/250, i%250+1))
	}

	for b.Loop() {
		_ = u.endpoints()
	}
}

// newOnly builds a daemon without running it (nothing is dialed) on a
// kernel-chosen port of 127.0.5.1.
func newOnly(t *testing.T, change func(*config.Config)) *Daemon {
	t.Helper()

	cfg := config.Default()
	cfg.Endpoints = []string{"127.0.5.9:7"}
	cfg.BindAddress, cfg.BindPort = "127.0.5.1", 0
	cfg.HealthAddress, cfg.HealthPort = "127.0.5.1", 0
	cfg.StateDirectory = t.TempDir()
	change(&cfg)

	return newUnrun(t, Options{Config: cfg})
}

// newUnrun is New, with the sockets closed when the test ends.
func newUnrun(t *testing.T, opts Options) *Daemon {
	t.Helper()

	opts.Logger = zaptest.NewLogger(t)

	d, err := New(opts)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() {
		d.lb.Shutdown(context.Background())

		if d.hln != nil {
			d.hln.Close() // never served
		}
	})

	return d
}

// The cache is loaded within bounds: invalid entries and the proxy's own
// listener are left out, and entries dated in the future are written back
// dated now, so they expire.
func TestCacheLoadedWithinBounds(t *testing.T) {
	t.Parallel()

	dir := t.TempDir()
	now := time.Now()
	entries := []discovery.CacheEntry{
		{Address: "192.0.2.10:6443", LastSeen: now.Add(-time.Minute)},
		{Address: "192.0.2.11:6443", LastSeen: now.Add(1000 * time.Hour)},
		{Address: "api.example:6443", LastSeen: now},
		{Address: "127.0.5.1:7445", LastSeen: now},
	}

	if err := discovery.WriteCache(filepath.Join(dir, discovery.CacheFile), entries); err != nil {
		t.Fatal(err)
	}

	d := newOnly(t, func(c *config.Config) { c.StateDirectory = dir })

	if want := []string{"192.0.2.10:6443", "192.0.2.11:6443"}; !slices.Equal(d.set.cached, want) {
		t.Errorf("cached upstreams %v, want %v", d.set.cached, want)
	}

	data, err := os.ReadFile(filepath.Join(dir, discovery.CacheFile))
	if err != nil {
		t.Fatal(err)
	}

	var doc struct{ Endpoints []discovery.CacheEntry }
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}

	for _, e := range doc.Endpoints {
		if e.LastSeen.After(time.Now()) {
			t.Errorf("%s still dated in the future after the load: %s", e.Address, e.LastSeen)
		}
	}
}

// A static endpoint that is the listener the daemon was handed (a socket
// unit's, which validation cannot see) is left out of the set.
func TestStaticEndpointOnOwnListenerIsDropped(t *testing.T) {
	t.Parallel()

	ln, err := net.Listen("tcp", "127.0.5.1:0")
	if err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.Endpoints = []string{"127.0.5.9:7", ln.Addr().String()}
	cfg.HealthAddress, cfg.HealthPort = "127.0.5.1", 0
	cfg.EnableDiscovery = false

	d := newUnrun(t, Options{Config: cfg, Listener: ln})

	if want := []string{"127.0.5.9:7"}; !slices.Equal(d.set.static, want) {
		t.Fatalf("static set %v, want %v", d.set.static, want)
	}
}
