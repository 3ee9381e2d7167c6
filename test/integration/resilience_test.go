//go:build integration

package integration

import (
	"net"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// An API server that begins a graceful shutdown turns /readyz red while it
// still accepts connections for --shutdown-delay-duration. The https check
// sees it and new connections stop going there at once; a TCP check could
// not tell.
func TestGracefulShutdownSeenByHTTPSCheck(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{ExtraArgs: []string{"--shutdown-delay-duration=8s"}}, false,
		kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
	r := startDaemon(t, all[0], func(cfg *config.Config) {
		cfg.Endpoints = all[:2]
		cfg.EnableDiscovery = false // only the check may notice
		cfg.HealthCheck = "https"
		cfg.HealthCAFile = c.pki.CACertFile
	})

	eventually(t, 10*time.Second, "both healthy by https checks", func() bool {
		u := r.upstreams()
		return u[all[0]].Healthy && u[all[1]].Healthy
	})

	if !logged(r.logs, "https health checks") {
		t.Fatal("the daemon did not use https checks")
	}

	if err := c.servers[1].Terminate(); err != nil {
		t.Fatal(err)
	}

	eventually(t, 5*time.Second, "the stopping API server marked down", func() bool { return !r.upstreams()[all[1]].Healthy })

	// It still accepts TCP: only the https check could see it going.
	conn, err := net.DialTimeout("tcp", all[1], time.Second)
	if err != nil {
		t.Fatalf("the stopping API server no longer accepts TCP, the test proves nothing: %v", err)
	}
	conn.Close()

	before := r.upstreams()[all[1]].TotalConnections
	client := c.httpsClient(t)

	for i := range 20 {
		if body, err := readyz(client, r.d.ProxyAddr().String()); err != nil || body != "ok" {
			t.Fatalf("request %d during the shutdown: %q, %v", i, body, err)
		}
	}

	if after := r.upstreams()[all[1]].TotalConnections; after != before {
		t.Fatalf("%d new connections went to the stopping API server", after-before)
	}
}
