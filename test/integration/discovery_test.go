//go:build integration

package integration

import (
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/discovery"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

var all = []string{addr(kubeharness.IPv4Addr1), addr(kubeharness.IPv4Addr2), addr(kubeharness.IPv4Addr3)}

// One static endpoint; the other two API servers are discovered with the
// least-privilege Role and receive real HTTPS traffic through the proxy.
func TestDiscoveredAPIServersReceiveTraffic(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	r := startDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = c.kubeconfig(t) })

	eventually(t, 30*time.Second, "all three API servers in the upstream set", func() bool {
		return slices.Equal(r.addresses(), all)
	})

	if got := r.upstreams()[all[1]].Sources; !slices.Contains(got, "discovery") {
		t.Fatalf("%s sources %v, want discovery", all[1], got)
	}

	if got := r.upstreams()[all[0]].Sources; !slices.Equal(got, []string{"static", "discovery"}) {
		t.Fatalf("%s sources %v, want static and discovery", all[0], got)
	}

	if s := r.d.Status().Discovery; s != "watching (3 endpoints)" {
		t.Fatalf("discovery state %q", s)
	}

	client := c.httpsClient(t)
	proxy := r.d.ProxyAddr().String()

	for i := range 30 {
		if body, err := readyz(client, proxy); err != nil || body != "ok" {
			t.Fatalf("request %d through the proxy: %q, %v", i, body, err)
		}
	}

	for _, a := range all {
		if n := r.upstreams()[a].TotalConnections; n == 0 {
			t.Errorf("%s received no connection", a)
		}
	}
}

// A gracefully stopped API server leaves the set at once; SIGKILLed, it is
// avoided by health checks at once and removed when its lease expires.
func TestStoppedAndKilledAPIServersLeave(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	r := startDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = c.kubeconfig(t) })

	eventually(t, 30*time.Second, "all three discovered", func() bool { return slices.Equal(r.addresses(), all) })

	if err := c.servers[2].Terminate(); err != nil {
		t.Fatal(err)
	}

	eventually(t, 5*time.Second, "the stopped API server removed", func() bool { return slices.Equal(r.addresses(), all[:2]) })

	if err := c.servers[1].Kill(); err != nil {
		t.Fatal(err)
	}

	eventually(t, 5*time.Second, "the killed API server marked down by health checks", func() bool {
		return !r.upstreams()[all[1]].Healthy
	})

	client := c.httpsClient(t)
	for i := range 10 {
		if body, err := readyz(client, r.d.ProxyAddr().String()); err != nil || body != "ok" {
			t.Fatalf("request %d with one API server dead: %q, %v", i, body, err)
		}
	}

	// The lease TTL (15 s) plus the reconcile interval (10 s) bound this.
	eventually(t, 40*time.Second, "the killed API server removed when its lease expired", func() bool {
		return slices.Equal(r.addresses(), all[:1])
	})
}

// The watch survives an API server restart and an etcd compaction that
// makes resuming it fail with 410 Gone: later changes are still seen.
func TestWatchSurvivesRestartAndCompaction(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{NoEndpointSliceWatchCache: true}, true,
		kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	r := startDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = c.kubeconfig(t) })

	eventually(t, 30*time.Second, "all three discovered", func() bool { return slices.Equal(r.addresses(), all) })

	lists := r.metric(t, "extractedprism_discovery_lists_total")

	// Crash-restarts: served without a watch cache, a watch never lets an
	// apiserver finish a graceful shutdown.
	for _, s := range c.servers[:2] {
		if err := s.Kill(); err != nil {
			t.Fatal(err)
		}

		if _, err := c.etcd.Compact(t.Context()); err != nil {
			t.Fatal(err)
		}

		if err := s.Restart(); err != nil {
			t.Fatal(err)
		}
	}

	if err := c.servers[2].Terminate(); err != nil {
		t.Fatal(err)
	}

	eventually(t, 30*time.Second, "the change after restart and compaction seen", func() bool {
		return slices.Equal(r.addresses(), all[:2])
	})

	// The watch could not resume from a compacted revision: it relisted.
	if n := r.metric(t, "extractedprism_discovery_lists_total"); n <= lists {
		t.Fatalf("%v lists before the compactions, %v after: no relist", lists, n)
	}
}

// Without the Role: one clear error, static endpoints only, never empty.
func TestForbiddenMeansStaticOnly(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, false, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
	r := startDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = c.kubeconfig(t) })

	eventually(t, 30*time.Second, "the forbidden error reported", func() bool {
		return strings.HasPrefix(r.d.Status().Discovery, "forbidden: ")
	})

	if n := r.logs.FilterMessageSnippet("discovery forbidden").Len(); n != 1 {
		t.Fatalf("logged the forbidden error %d times, want once", n)
	}

	if got := r.addresses(); !slices.Equal(got, all[:1]) {
		t.Fatalf("upstreams %v, want only the static one", got)
	}

	if body, err := readyz(c.httpsClient(t), r.d.ProxyAddr().String()); err != nil || body != "ok" {
		t.Fatalf("static-only service: %q, %v", body, err)
	}
}

// The cache brings the discovered set back after a restart while every API
// server is down, and a stale entry expires.
func TestCacheAcrossRestarts(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	state := t.TempDir()
	kubeconfig := c.kubeconfig(t)
	edit := func(cfg *config.Config) { cfg.Kubeconfig = kubeconfig; cfg.StateDirectory = state }

	r := startDaemon(t, all[0], edit)
	eventually(t, 30*time.Second, "all three discovered", func() bool { return slices.Equal(r.addresses(), all) })
	r.stop()

	if err := c.etcd.Stop(); err != nil { // every API server, then etcd
		t.Fatal(err)
	}

	r = startDaemon(t, all[0], edit)
	if got := r.addresses(); !slices.Equal(got, all) {
		t.Fatalf("after a restart with the API down, upstreams %v, want %v from the cache", got, all)
	}

	if got := r.upstreams()[all[2]].Sources; !slices.Equal(got, []string{"cache"}) {
		t.Fatalf("%s sources %v, want cache", all[2], got)
	}

	r.stop()

	// Age every entry beyond the TTL: the next start ignores them.
	path := filepath.Join(state, discovery.CacheFile)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	var doc map[string]any
	if err := json.Unmarshal(data, &doc); err != nil {
		t.Fatal(err)
	}

	for _, e := range doc["endpoints"].([]any) {
		e.(map[string]any)["last_seen"] = time.Now().Add(-8 * 24 * time.Hour).Format(time.RFC3339)
	}

	data, _ = json.Marshal(doc)
	if err := os.WriteFile(path, data, 0o600); err != nil {
		t.Fatal(err)
	}

	r = startDaemon(t, all[0], edit)
	if got := r.addresses(); !slices.Equal(got, all[:1]) {
		t.Fatalf("with an expired cache, upstreams %v, want only the static one", got)
	}

	if !logged(r.logs, "loaded cached upstreams") || r.logs.FilterField(zapInt("expired", 3)).Len() != 1 {
		t.Fatalf("the expiry was not logged: %v", r.logs.All())
	}
}
