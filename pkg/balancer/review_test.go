package balancer

// Found by an adversarial review; each test here failed before its fix.

import (
	"fmt"
	"net/netip"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"
)

// connect(2) fails with EADDRNOTAVAIL when this host has no free local port
// left for the upstream's address: a shortage here, like EMFILE, not
// evidence about the upstream. It is easy for a local client to cause: the
// proxy closes the upstream side first when a client ends its connection,
// so every proxied connection leaves a TIME_WAIT on the proxy's ephemeral
// port for 60 s, and for a non-loopback API server (tcp_tw_reuse=2, the
// default) about 28,000 ports / 60 s = 470 short connections a second per
// upstream exhaust them. dialEvidence classes it as DialFailed, strong
// evidence: the upstream is suspended (and its check fails the same way,
// see check's review test), though nothing is wrong with it.
func TestReviewNoLocalPortIsNotEvidence(t *testing.T) {
	t.Parallel()

	a, live := startServer(t, "a"), startServer(t, "b")
	r := build(t, Options{Listener: listen(t), Loops: 1}, quiet, a.addr(), live.addr())

	short := netip.MustParseAddrPort(a.addr())
	r.connect = func(ap netip.AddrPort, opts []sockopt) (int, error) {
		if ap == short {
			return -1, fmt.Errorf("dial %s: %w", ap, unix.EADDRNOTAVAIL)
		}

		return connectRaw(ap, opts)
	}

	serve(t, r, true)

	if got := servedBy(t, r); got != "b" {
		t.Fatalf("served by %q", got)
	}

	if !statusOf(t, r, a.addr()).Healthy {
		t.Fatal("no free local port to reach a took a out of rotation: a local shortage was taken for evidence about the upstream")
	}
}

// Lines any client can cause are written at most once a second (noisy),
// but "no descriptor to dial an upstream with" is not rate-limited
// (session.starve logs when !s.starved, and tick clears s.starved before
// each retry): while the process is short of descriptors (or the kernel of
// memory: ENFILE, ENOBUFS, ENOMEM) every starving session writes a warning
// every 20 ms (starvedRetry) until its dial timeout: 100 lines per client
// with the default 2 s, 500,000 lines a second at max_connections.
func TestReviewStarvedDialsLogQuietly(t *testing.T) {
	t.Parallel()

	s := quiet
	s.DialTimeout = 100 * time.Millisecond
	r := build(t, Options{Listener: listen(t), Loops: 1}, s, startServer(t, "a").addr())

	core, lines := observer.New(zapcore.WarnLevel)
	r.log = zap.New(core)
	r.connect = func(ap netip.AddrPort, _ []sockopt) (int, error) {
		return -1, fmt.Errorf("dial %s: socket: %w", ap, unix.EMFILE)
	}

	serve(t, r, true)

	const clients = 20
	for range clients {
		c, err := dialProxy(r)
		if err != nil {
			t.Fatal(err)
		}

		_, _ = c.r.ReadByte() // closed once its dial timeout passes
		c.Close()
	}

	if n := lines.FilterMessageSnippet("no descriptor").Len(); n > 5 {
		t.Fatalf("%d clients in %s wrote %d \"no descriptor\" warnings; client-caused lines are at most one a second",
			clients, time.Duration(clients)*s.DialTimeout, n)
	}
}
