package systemd

import (
	"context"
	"errors"
	"net"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
)

// notifySocket listens where NOTIFY_SOCKET points, as systemd does, and
// returns the datagrams it receives.
func notifySocket(t *testing.T) <-chan string {
	t.Helper()

	path := filepath.Join(t.TempDir(), "notify")

	conn, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { conn.Close() })
	t.Setenv("NOTIFY_SOCKET", path)

	msgs := make(chan string, 100)

	go func() {
		buf := make([]byte, 4096)

		for {
			n, err := conn.Read(buf)
			if err != nil {
				close(msgs)

				return
			}

			msgs <- string(buf[:n])
		}
	}()

	return msgs
}

func next(t *testing.T, msgs <-chan string) string {
	t.Helper()

	select {
	case m := <-msgs:
		return m
	case <-time.After(10 * time.Second):
		t.Fatal("no sd_notify message")

		return ""
	}
}

func TestNotify(t *testing.T) {
	msgs := notifySocket(t)
	n := NewNotifier(zaptest.NewLogger(t))

	n.Notify("READY=1\nSTATUS=1/1 upstreams healthy")
	n.Notify(Reloading())
	n.Notify("STOPPING=1")

	if m := next(t, msgs); m != "READY=1\nSTATUS=1/1 upstreams healthy" {
		t.Fatalf("got %q", m)
	}

	if m := next(t, msgs); !strings.HasPrefix(m, "RELOADING=1\nMONOTONIC_USEC=") {
		t.Fatalf("reloading: got %q", m)
	}

	if m := next(t, msgs); m != "STOPPING=1" {
		t.Fatalf("got %q", m)
	}
}

func TestWatchdogStopsWhenALoopWedges(t *testing.T) {
	msgs := notifySocket(t)
	n := NewNotifier(zaptest.NewLogger(t))

	var wedged atomic.Bool

	alive := func() error {
		if wedged.Load() {
			return errors.New("health checks: no round for 1m")
		}

		return nil
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})

	go func() {
		Watchdog(ctx, n, 40*time.Millisecond, alive, zaptest.NewLogger(t))
		close(done)
	}()

	for range 3 {
		if m := next(t, msgs); m != "WATCHDOG=1" {
			t.Fatalf("got %q, want WATCHDOG=1", m)
		}
	}

	wedged.Store(true)

	// At most one ping was already on its way; then silence. Ten periods
	// of silence is what a 40ms WatchdogSec would kill us for.
	drained := 0

	for {
		select {
		case m := <-msgs:
			if drained++; drained > 1 {
				t.Fatalf("ping %q after the loop wedged", m)
			}

			continue
		case <-time.After(400 * time.Millisecond):
		}

		break
	}

	wedged.Store(false)

	if m := next(t, msgs); m != "WATCHDOG=1" {
		t.Fatalf("after recovery got %q, want WATCHDOG=1", m)
	}

	cancel()
	<-done
}

func TestWatchdogOffWithoutTimeout(t *testing.T) {
	t.Setenv("WATCHDOG_USEC", "")

	if d, err := WatchdogInterval(); d != 0 || err != nil {
		t.Fatalf("WatchdogInterval() = %v, %v without WATCHDOG_USEC", d, err)
	}

	t.Setenv("WATCHDOG_USEC", "4000000")

	if d, err := WatchdogInterval(); d != 4*time.Second || err != nil {
		t.Fatalf("WatchdogInterval() = %v, %v, want 4s", d, err)
	}

	// Returns at once: nothing to ping.
	Watchdog(context.Background(), NewNotifier(zaptest.NewLogger(t)), 0, nil, zaptest.NewLogger(t))
}
