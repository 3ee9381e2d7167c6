package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/status"
)

// start runs a daemon for endpoints on kernel-chosen ports of health (which
// may be IPv6) and returns it with its health server's base URL.
func start(t *testing.T, healthAddr string, endpoints ...string) (*Daemon, string) {
	t.Helper()

	cfg := config.Default()
	cfg.Endpoints = endpoints
	cfg.HealthAddress = healthAddr
	cfg.HealthPort = 0 // kernel-chosen; validation is not under test here
	cfg.BindAddress = "127.0.5.1"
	cfg.BindPort = 0
	cfg.HealthInterval = 50 * time.Millisecond
	cfg.HealthTimeout = 40 * time.Millisecond
	cfg.StateDirectory = t.TempDir()

	d, err := New(Options{Config: cfg, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)

	go func() { done <- d.Run(ctx) }()

	t.Cleanup(func() {
		cancel()

		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	return d, "http://" + d.HealthAddr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()

	resp, err := http.Get(url) //nolint:noctx // test
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	body, _ := io.ReadAll(resp.Body)

	return resp.StatusCode, string(body)
}

// waitStatus polls until the health loop, which runs on its own timer,
// has made ready equal want.
func waitReady(t *testing.T, base string, want int) {
	t.Helper()

	deadline := time.Now().Add(10 * time.Second)
	for {
		code, _ := get(t, base+"/readyz")
		if code == want {
			return
		}

		if time.Now().After(deadline) {
			t.Fatalf("/readyz stayed %d, want %d", code, want)
		}

		time.Sleep(10 * time.Millisecond)
	}
}

func TestHealthEndpoints(t *testing.T) {
	t.Parallel()

	up, err := net.Listen("tcp", "127.0.5.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()

	for _, healthAddr := range []string{"127.0.5.1", "::1"} {
		t.Run(healthAddr, func(t *testing.T) {
			_, base := start(t, healthAddr, up.Addr().String(), "127.0.5.3:7")

			if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
				t.Fatalf("/healthz = %d %q", code, body)
			}

			waitReady(t, base, http.StatusOK)

			_, body := get(t, base+"/status")

			var doc status.Document
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatalf("/status is not the document: %v\n%s", err, body)
			}

			if !doc.Ready || len(doc.Upstreams) != 2 || doc.Upstreams[0].Address != up.Addr().String() ||
				doc.Upstreams[0].Sources[0] != "static" {
				t.Fatalf("/status: %s", body)
			}
		})
	}
}

func TestReadyzWhenAllUpstreamsAreDown(t *testing.T) {
	t.Parallel()

	_, base := start(t, "127.0.5.1", "127.0.5.4:7", "127.0.5.5:7")

	waitReady(t, base, http.StatusServiceUnavailable)

	// Liveness is about the daemon, not the API servers.
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d with upstreams down, want 200", code)
	}
}
