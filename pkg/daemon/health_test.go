package daemon

import (
	"context"
	"net"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/health"
)

// Another process holding the health port (at boot, or in the gap of a
// restart) does not stop the daemon: it proxies, says so in STATUS, and
// serves /healthz once the port is free.
func TestHealthPortTakenByAnotherProcess(t *testing.T) {
	t.Parallel()

	squatter, err := net.Listen("tcp", "127.0.5.20:0")
	if err != nil {
		t.Fatal(err)
	}

	up := echoServer(t, "127.0.5.21:0")
	_, port, _ := net.SplitHostPort(squatter.Addr().String())

	cfg := config.Default()
	cfg.Endpoints = []string{up.Addr().String()}
	cfg.BindAddress, cfg.BindPort = "127.0.5.20", 0
	cfg.HealthAddress = "127.0.5.20"
	cfg.HealthPort, _ = strconv.Atoi(port)
	cfg.EnableDiscovery = false
	cfg.HealthCheck = "tcp"

	d, err := New(Options{
		Config: cfg, Logger: zaptest.NewLogger(t),
		Health: health.Options{RetryMin: 10 * time.Millisecond, RetryMax: 20 * time.Millisecond},
	})
	if err != nil {
		t.Fatalf("New with the health port taken: %v", err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)

	go func() { done <- d.Run(ctx) }()

	defer func() {
		cancel()

		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	exchange(t, d.ProxyAddr().String())

	if d.HealthAddr() != nil {
		t.Fatalf("health server bound to %s while another process holds it", d.HealthAddr())
	}

	if s := d.summary(); !strings.Contains(s, "health server not listening") {
		t.Fatalf("STATUS %q does not say the health server is down", s)
	}

	squatter.Close()

	url := "http://" + squatter.Addr().String() + "/healthz"
	deadline := time.Now().Add(10 * time.Second)

	for {
		if resp, err := http.Get(url); err == nil { //nolint:noctx // test
			resp.Body.Close()

			if resp.StatusCode == http.StatusOK {
				break
			}
		}

		if time.Now().After(deadline) {
			t.Fatal("/healthz not served after the port was freed")
		}

		time.Sleep(10 * time.Millisecond)
	}

	if s := d.summary(); strings.Contains(s, "health server") {
		t.Fatalf("STATUS %q still says the health server is down", s)
	}

	exchange(t, d.ProxyAddr().String())
}
