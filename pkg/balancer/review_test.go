package balancer

// Review findings (branch review): each test here fails on main.

import (
	"fmt"
	"net/netip"
	"testing"

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
