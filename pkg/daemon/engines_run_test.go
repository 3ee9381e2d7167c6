package daemon

import (
	"context"
	"errors"
	"io"
	"net"
	"os"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// A second proxy listener (the link-local one, here on loopback: the
// address is not validated below the loader) is served over the same
// model: connections through either are counted together, and when their
// upstream leaves the set the model closes them on both engines.
func TestSecondListenerSharesTheModel(t *testing.T) {
	t.Parallel()

	up := echoServer(t, "127.0.15.20:0")
	other := echoServer(t, "127.0.15.21:0")

	cfg := config.Default()
	cfg.Endpoints = []string{up.Addr().String()}
	cfg.BindAddress, cfg.BindPort = "127.0.15.22", 0
	cfg.HealthAddress, cfg.HealthPort = "127.0.15.22", 0
	cfg.LinkLocalAddress = "127.0.15.23"
	cfg.DrainTimeout = 100 * time.Millisecond
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

	addrs := d.lb.Addrs()
	if len(addrs) != 2 || addrs[1].(*net.TCPAddr).IP.String() != "127.0.15.23" {
		t.Fatalf("listeners: %v", addrs)
	}

	var held []net.Conn

	for _, a := range addrs {
		exchange(t, a.String())

		c, err := net.DialTimeout("tcp", a.String(), 5*time.Second)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		if _, err := c.Write([]byte("x")); err != nil {
			t.Fatal(err)
		}

		if _, err := io.ReadFull(c, make([]byte, 1)); err != nil {
			t.Fatal(err)
		}

		held = append(held, c)
	}

	if got := d.lb.Stats().Accepted; got != 4 {
		t.Errorf("accepted %d, want 4 (two per listener)", got)
	}

	if err := d.ups.Reconcile([]upstream.Endpoint{{Address: other.Addr().String(), Sources: []string{"static"}}}); err != nil {
		t.Fatal(err)
	}

	for i, c := range held {
		_ = c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if _, err := c.Read(make([]byte, 1)); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
			t.Errorf("listener %d: connection to the removed upstream still open: %v", i, err)
		}
	}
}
