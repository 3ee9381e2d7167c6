//go:build integration

package integration

import (
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// closedWithin reads from conn until the proxy closes it, and says how
// long that took from since.
func closedWithin(conn net.Conn, since time.Time, within time.Duration) (time.Duration, error) {
	if err := conn.SetReadDeadline(since.Add(within)); err != nil {
		return 0, err
	}

	_, err := io.Copy(io.Discard, conn)
	if errors.Is(err, os.ErrDeadlineExceeded) {
		return 0, fmt.Errorf("still open after %s", within)
	}

	return time.Since(since), nil // EOF or a reset: closed either way
}

// What one local client sends (garbage, or nothing at all) says nothing of
// an upstream: both leave every upstream healthy and the daemon ready; one
// costs at most one extra upstream connection; the log stays quiet.
func TestBadClientsLeaveUpstreamsHealthy(t *testing.T) {
	t.Parallel() // on a port of its own; it mostly waits

	c := startCluster(t, kubeharness.APIServerOptions{Port: 6446}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
	ups := c.addrs()
	kc := c.kubeconfig(t)
	r := startDefaultDaemon(t, ups[0], func(cfg *config.Config) { cfg.Kubeconfig = kc })

	eventually(t, 30*time.Second, "both discovered and healthy", func() bool { return r.allHealthy(t, 2) == nil })

	proxy := r.d.ProxyAddr().String()
	quiet := time.Now()
	_, active := r.connections()

	// A client that sends nothing and holds on: the API server hangs up on
	// it in the end (kube-apiserver's TLS handshake timeout is its
	// ReadHeaderTimeout, 32 s), not the proxy; the proxy moves it to
	// another upstream once, which hangs up after as long.
	silent, err := net.Dial("tcp", proxy)
	if err != nil {
		t.Fatal(err)
	}

	defer silent.Close()

	silentFrom := time.Now()

	type ending struct {
		after time.Duration
		err   error
	}

	silentEnd := make(chan ending, 1)

	go func() {
		d, err := closedWithin(silent, silentFrom, 150*time.Second)
		silentEnd <- ending{d, err}
	}()

	eventually(t, 5*time.Second, "the silent client proxied", func() bool { _, a := r.connections(); return a == active+1 })

	// 5 zero bytes: not TLS, the API server hangs up at once.
	zero := func() (time.Duration, error) {
		conn, err := net.Dial("tcp", proxy)
		if err != nil {
			return 0, err
		}
		defer conn.Close()

		from := time.Now()
		if _, err := conn.Write(make([]byte, 5)); err != nil {
			return 0, err
		}

		return closedWithin(conn, from, 10*time.Second)
	}

	before, _ := r.connections()

	took, err := zero()
	if err != nil {
		t.Fatalf("the 5-zero-byte client: %v", err)
	}

	after, _ := r.connections()
	t.Logf("the 5-zero-byte client was closed after %v, having cost %d upstream connections", took.Round(time.Millisecond), after-before)

	if after-before > 2 {
		t.Errorf("one garbage client cost %d upstream connections, want at most 2 (one extra)", after-before)
	}

	if err := r.allHealthy(t, 2); err != nil {
		t.Fatalf("after the 5-zero-byte client: %v", err)
	}

	// Many of them, one after another: still nothing taken out.
	const many = 50
	for i := range many {
		if _, err := zero(); err != nil {
			t.Fatalf("garbage client %d: %v", i, err)
		}

		if err := r.allHealthy(t, 2); err != nil {
			t.Fatalf("after garbage client %d: %v", i, err)
		}
	}

	// The silent client ends when the API servers hang up on it; meanwhile
	// every upstream stays healthy.
	tick := time.NewTicker(time.Second)
	defer tick.Stop()

	for done := false; !done; {
		select {
		case end := <-silentEnd:
			if end.err != nil {
				t.Fatalf("the silent client: %v", end.err)
			}

			t.Logf("the silent client was closed %v after it connected", end.after.Round(time.Millisecond))

			if end.after < 30*time.Second {
				t.Errorf("the silent client was closed after %v, before any API server hung up on it", end.after)
			}

			done = true
		case <-tick.C:
		}

		if err := r.allHealthy(t, 2); err != nil {
			t.Fatalf("while the silent client was held: %v", err)
		}
	}

	// Quiet: only the rate-limited line of a client moved to another
	// upstream, at most once a second, and nothing at warning level.
	lines := linesSince(r.logs, quiet, zapcore.InfoLevel)
	t.Logf("%d log lines at info or above during the bad clients:\n%s", len(lines), strings.Join(messages(lines), "\n"))

	var last time.Time

	for _, e := range lines {
		if e.Level > zapcore.InfoLevel || !strings.Contains(e.Message, "replayed the client's first bytes") {
			t.Errorf("a bad client caused the line %q (%s)", e.Message, e.Level)
		}

		if e.Time.Sub(last) < 900*time.Millisecond {
			t.Errorf("two lines within %v", e.Time.Sub(last))
		}

		last = e.Time
	}
}
