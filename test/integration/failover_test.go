//go:build integration

package integration

import (
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// Discovery's client goes through the proxy, so it fails over like any
// other client: with the API server its kubeconfig names gone for good, and
// every other one since crashed and restarted (so whatever connection the
// watch had is gone too), it still sees the next change. A client that
// used the kubeconfig's server would be stuck on a dead address. When no
// API server is left at all, discovery says so.
func TestDiscoveryFailsOverThroughTheProxy(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	// The kubeconfig's server is servers[0]; the static endpoint too.
	r := startDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = c.kubeconfig(t) })

	eventually(t, 30*time.Second, "all three discovered", func() bool { return slices.Equal(r.addresses(), all) })

	// Gone for good: it never comes back in this test. SIGTERM takes it out
	// of the slice at once; SIGKILL then ends it without waiting for its
	// graceful shutdown, which an open watch can hold up.
	if err := c.servers[0].Terminate(); err != nil {
		t.Fatal(err)
	}

	eventually(t, 10*time.Second, "the stopped API server out of the discovered set", func() bool {
		return !slices.Contains(r.upstreams()[all[0]].Sources, "discovery")
	})

	if err := c.servers[0].Kill(); err != nil {
		t.Fatal(err)
	}

	// One at a time, each back in the set and healthy before the next goes:
	// the daemon only knows the API servers the slice listed, and the test
	// is of failing over to a live one, not of losing all it knew.
	for i, s := range c.servers[1:] {
		if err := s.Kill(); err != nil {
			t.Fatal(err)
		}

		if err := s.Restart(); err != nil {
			t.Fatal(err)
		}

		eventually(t, 40*time.Second, s.IP+" back in the set and healthy", func() bool {
			u, ok := r.upstreams()[all[i+1]]
			return ok && u.Healthy && slices.Contains(u.Sources, "discovery")
		})
	}

	if err := c.servers[2].Terminate(); err != nil {
		t.Fatal(err)
	}

	eventually(t, 30*time.Second, "the change after every API server the watch could use died", func() bool {
		u := r.upstreams()
		return slices.Equal(r.addresses(), all[:2]) && slices.Equal(u[all[1]].Sources, []string{"discovery"})
	})

	if s := r.d.Status().Discovery; s != "watching (1 endpoints)" {
		t.Fatalf("discovery state %q, want watching (1 endpoints)", s)
	}

	// Nothing left: the proxy has no upstream and closes every connection,
	// so each request of discovery gets no answer.
	if err := c.etcd.Stop(); err != nil {
		t.Fatal(err)
	}

	eventually(t, 30*time.Second, "discovery unreachable with every API server down", func() bool {
		return strings.HasPrefix(r.d.Status().Discovery, "unreachable: ")
	})

	if n := r.logs.FilterMessageSnippet("discovery cannot reach the API").Len(); n != 1 {
		t.Fatalf("logged 'cannot reach the API' %d times, want once", n)
	}

	// An outage does not empty the set: the static endpoint stays.
	if got := r.addresses(); !slices.Contains(got, all[0]) {
		t.Fatalf("upstreams %v during the outage, want the static %s among them", got, all[0])
	}
}
