package daemon

import (
	"context"
	"errors"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/lexfrei/extractedprism/pkg/config"
)

// member binds a SO_REUSEPORT listener on addr:port (port 0: the kernel
// picks) and joins its group.
func member(t *testing.T, addr string, port int) (*net.TCPListener, *group) {
	t.Helper()

	ln, err := bind(addr, port, bindOptions{reusePort: true})
	if err != nil {
		t.Fatal(err)
	}

	g, err := join(ln)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { g.release(); _ = ln.Close() })

	return ln, g
}

func portOf(ln net.Listener) int { return ln.Addr().(*net.TCPAddr).Port }

// queued is the accept queue length of ln's socket, from sock_diag.
func queued(t *testing.T, ln net.Listener, g *group) uint32 {
	t.Helper()

	socks, err := listening(true)
	if err != nil {
		t.Fatal(err)
	}

	var q uint32

	for _, s := range socks {
		if s.addr == g.addr {
			q += s.queued
		}
	}

	return q
}

// dialN connects n clients; on loopback each handshake completes inside
// connect, into the accept queue of the member the kernel picked.
func dialN(t *testing.T, addr string, n int) []net.Conn {
	t.Helper()

	conns := make([]net.Conn, 0, n)

	for range n {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err != nil {
			t.Fatal(err)
		}

		conns = append(conns, c)
	}

	t.Cleanup(func() {
		for _, c := range conns {
			_ = c.Close()
		}
	})

	return conns
}

// acceptAll accepts what is queued on ln (up to max) and closes it.
func acceptAll(t *testing.T, ln *net.TCPListener, maxConns int) int {
	t.Helper()

	n := 0

	for range maxConns {
		_ = ln.SetDeadline(time.Now().Add(50 * time.Millisecond))

		c, err := ln.Accept()
		if err != nil {
			break
		}

		_ = c.Close()
		n++
	}

	return n
}

func TestGroupCountsItsMembers(t *testing.T) {
	t.Parallel()

	a, ga := member(t, "127.0.15.1", 0)
	if ga.joined != 1 {
		t.Fatalf("first member: joined with %d", ga.joined)
	}

	_, gb := member(t, "127.0.15.1", portOf(a))
	if gb.joined != 2 {
		t.Fatalf("second member: joined with %d", gb.joined)
	}

	// Another address on the same port is another group.
	_, gc := member(t, "127.0.15.2", portOf(a))
	if gc.joined != 1 {
		t.Fatalf("other address: joined with %d", gc.joined)
	}

	// A duplicate kept open keeps the socket listening: release first.
	ga.release()
	_ = a.Close()

	if n, err := listeners(gb.addr); err != nil || n != 1 {
		t.Fatalf("after one left: %d, %v", n, err)
	}
}

func TestTakeOverSteersNewConnections(t *testing.T) {
	t.Parallel()

	const n = 40

	oldLn, gOld := member(t, "127.0.15.3", 0)
	addr := oldLn.Addr().String()

	// Alone and ready: the first copy takes index 0.
	if k, err := gOld.takeOver(); err != nil || k != 0 {
		t.Fatalf("first copy: index %d, %v", k, err)
	}

	newLn, gNew := member(t, "127.0.15.3", portOf(oldLn))

	// The new copy is not ready yet: the old one keeps every connection.
	dialN(t, addr, n)

	if got := acceptAll(t, oldLn, 2*n); got != n {
		t.Fatalf("before the new copy is ready the old one got %d of %d", got, n)
	}

	if k, err := gNew.takeOver(); err != nil || k != 1 {
		t.Fatalf("new copy: index %d, %v", k, err)
	}

	dialN(t, addr, n)

	if q := queued(t, oldLn, gOld); q != n {
		t.Fatalf("%d connections queued in the group, want %d", q, n)
	}

	if got := acceptAll(t, newLn, 2*n); got != n {
		t.Fatalf("after the take-over the new copy got %d of %d", got, n)
	}

	if got := acceptAll(t, oldLn, n); got != 0 {
		t.Fatalf("after the take-over the old copy still got %d", got)
	}
}

// TestSettleAfterTheOldCopyLeft: the surviving copy takes index 0 back, so
// the copy after it does not get connections before it is ready.
func TestSettleAfterTheOldCopyLeft(t *testing.T) {
	t.Parallel()

	const n = 20

	oldLn, gOld := member(t, "127.0.15.4", 0)
	port := portOf(oldLn)
	survivor, gSurvivor := member(t, "127.0.15.4", port)

	if _, err := gSurvivor.takeOver(); err != nil {
		t.Fatal(err)
	}

	if ok, err := gSurvivor.settle(); ok || err != nil {
		t.Fatalf("settled while the old copy is there: %v %v", ok, err)
	}

	gOld.release()
	_ = oldLn.Close()

	if ok, err := gSurvivor.settle(); !ok || err != nil || gSurvivor.index != 0 {
		t.Fatalf("not settled when alone: %v %v index %d", ok, err, gSurvivor.index)
	}

	next, _ := member(t, "127.0.15.4", port)
	dialN(t, survivor.Addr().String(), n)

	if got := acceptAll(t, survivor, 2*n); got != n {
		t.Fatalf("the survivor got %d of %d while the next copy is not ready", got, n)
	}

	if got := acceptAll(t, next, n); got != 0 {
		t.Fatalf("the next copy got %d before it was ready", got)
	}
}

// TestClosingResetsTheAcceptQueue is why the hand-over steers first:
// closing a SO_REUSEPORT listener resets the connections waiting in its
// accept queue, though another member could have taken them (unless
// net.ipv4.tcp_migrate_req=1; test/integration measures both).
func TestClosingResetsTheAcceptQueue(t *testing.T) {
	t.Parallel()

	const n = 10

	oldLn, gOld := member(t, "127.0.15.5", 0)
	_, gNew := member(t, "127.0.15.5", portOf(oldLn))

	if err := gOld.steer(0); err != nil { // everything into the old queue
		t.Fatal(err)
	}

	conns := dialN(t, oldLn.Addr().String(), n)

	gOld.release()
	gNew.release()
	_ = oldLn.Close()

	// With net.ipv4.tcp_migrate_req=1 the kernel moves the queue to the
	// other member instead.
	want := n
	if b, _ := os.ReadFile("/proc/sys/net/ipv4/tcp_migrate_req"); strings.TrimSpace(string(b)) == "1" {
		want = 0
	}

	reset := 0

	for _, c := range conns {
		_ = c.SetReadDeadline(time.Now().Add(time.Second))
		if _, err := c.Read(make([]byte, 1)); errors.Is(err, syscall.ECONNRESET) {
			reset++
		}
	}

	if reset != want {
		t.Fatalf("%d of %d queued connections reset, want %d", reset, n, want)
	}

	t.Logf("closing a listener with %d queued connections reset all %d", n, reset)
}

// Under socket activation the daemon binds what it was not handed without
// SO_REUSEPORT: a health port held by a SO_REUSEPORT socket is then busy.
func TestActivatedDaemonBindsWithoutReusePort(t *testing.T) {
	t.Parallel()

	held, _ := member(t, "127.0.15.30", 0)

	proxy, err := net.Listen("tcp", "127.0.15.31:0")
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()

	cfg := config.Default()
	cfg.Endpoints = []string{"127.0.15.32:6443"}
	cfg.HealthAddress = "127.0.15.30"
	cfg.HealthPort = portOf(held)
	cfg.StateDirectory = ""

	// The health server proxies anyway and retries (see Run): the bind
	// error is kept, not returned.
	d, err := New(Options{Config: cfg, Logger: zaptest.NewLogger(t), Listener: proxy})
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { d.lb.Shutdown(context.Background()) })

	if !errors.Is(d.hlnErr, ErrAddressInUse) {
		t.Fatalf("health port held by a SO_REUSEPORT socket, under socket activation: %v, want %v", d.hlnErr, ErrAddressInUse)
	}
}
