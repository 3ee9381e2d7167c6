package balancer

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

func TestBytesFlowBothWaysWithHalfClose(t *testing.T) {
	t.Parallel()

	// The upstream sends a banner and half-closes, then reads the client's
	// data until the client half-closes, and reports what it got. Health
	// probes connect too; only the client sends data.
	banner, want := randomBytes(t, 1<<20), randomBytes(t, 300_000)
	got := make(chan []byte, 1)
	addr := serveEach(t, func(c net.Conn) {
		defer c.Close()

		if _, err := c.Write(banner); err != nil {
			return
		}

		_ = c.(*net.TCPConn).CloseWrite()

		if data, err := io.ReadAll(c); err == nil && len(data) > 0 {
			got <- data
		}
	})

	b := newBalancer(t, addr)

	c, err := dialProxy(b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	fromServer, err := io.ReadAll(c)
	if err != nil {
		t.Fatalf("reading until the upstream's FIN: %v", err)
	}

	if !bytes.Equal(fromServer, banner) {
		t.Fatalf("got %d bytes from upstream, not the %d it sent", len(fromServer), len(banner))
	}

	// After the upstream's half-close the client can still send.
	if _, err := c.Write(want); err != nil {
		t.Fatal(err)
	}

	if err := c.Conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}

	if data := <-got; !bytes.Equal(data, want) {
		t.Fatalf("upstream got %d bytes, not the %d sent", len(data), len(want))
	}
}

func TestFailedDialIsRetriedInOrder(t *testing.T) {
	t.Parallel()

	a, bs, cs := startServer(t, "a"), startServer(t, "b"), startServer(t, "c")
	b := newBalancer(t, a.addr(), bs.addr(), cs.addr())

	// a passed the first check, so it is still picked first; its dial fails.
	a.kill()

	var got []string
	for range 4 {
		got = append(got, servedBy(t, b))
		// Least-connections: the next pick must not see this one still open
		// (its end may be served by another loop than the next accept).
		waitFor(t, "the proxy to close the connection", func() bool { return b.Active() == 0 })
	}

	if want := []string{"b", "c", "b", "c"}; !slices.Equal(got, want) {
		t.Fatalf("served by %v, want %v (a skipped after its failed dial)", got, want)
	}

	st := statusOf(t, b, a.addr())
	if st.Healthy || !strings.Contains(st.LastError, "refused") {
		t.Fatalf("a after a refused dial: %+v, want unhealthy with the dial error", st)
	}
}

func TestOnlyTheLastUpstreamAnswers(t *testing.T) {
	t.Parallel()

	a, bs, cs := startServer(t, "a"), startServer(t, "b"), startServer(t, "c")
	b := newBalancer(t, a.addr(), bs.addr(), cs.addr())

	a.kill()
	bs.kill()

	if got := servedBy(t, b); got != "c" {
		t.Fatalf("served by %q, want c", got)
	}

	for _, s := range []*server{a, bs} {
		if statusOf(t, b, s.addr()).Healthy {
			t.Errorf("%s still healthy after a refused dial", s.name)
		}
	}
}

func TestUpstreamKilledMidTraffic(t *testing.T) {
	t.Parallel()

	a, bs := startServer(t, "a"), startServer(t, "b")
	b := newBalancer(t, a.addr(), bs.addr())

	const (
		workers   = 4
		perWorker = 100
		killAfter = 100
	)

	var (
		started, afterKill, failedAfterKill, cutBeforeKill atomic.Int64
		killed                                             atomic.Bool
		killOnce                                           sync.Once
		servedByA                                          atomic.Int64
		wg                                                 sync.WaitGroup
	)

	for range workers {
		wg.Go(func() {
			for range perWorker {
				if started.Add(1) == killAfter {
					killOnce.Do(func() { a.kill(); killed.Store(true) })
				}

				afterTheKill := killed.Load()

				name, err := oneExchange(b)
				switch {
				case afterTheKill && err != nil:
					failedAfterKill.Add(1)
					t.Errorf("connection started after the kill failed: %v", err)
				case afterTheKill:
					afterKill.Add(1)
					if name == "a" {
						servedByA.Add(1)
					}
				case err != nil:
					cutBeforeKill.Add(1)
				}
			}
		})
	}

	wg.Wait()

	if afterKill.Load() == 0 {
		t.Fatal("no connection ran after the kill; the test proves nothing")
	}

	if servedByA.Load() != 0 {
		t.Fatalf("%d connections reached the killed upstream", servedByA.Load())
	}

	// Exchanges that were on a when it died are cut: only replaying the
	// client's first bytes could save those.
	if cut := cutBeforeKill.Load(); cut > workers {
		t.Fatalf("%d connections cut by the kill, at most %d were in flight", cut, workers)
	}

	t.Logf("after the kill: %d ok, %d failed; cut in flight: %d", afterKill.Load(), failedAfterKill.Load(), cutBeforeKill.Load())
}

func oneExchange(b *rig) (string, error) {
	c, err := dialProxy(b)
	if err != nil {
		return "", err
	}
	defer c.Close()

	name, err := c.greeting()
	if err != nil {
		return "", err
	}

	return name, c.roundTrip("ping")
}

func TestAllUpstreamsDown(t *testing.T) {
	t.Parallel()

	a, bs := startServer(t, "a"), startServer(t, "b")
	b := newBalancer(t, a.addr(), bs.addr())

	a.kill()
	bs.kill()

	for i := range 2 { // the first dials and fails, the second finds none usable
		c, err := dialProxy(b)
		if err != nil {
			t.Fatal(err)
		}

		_, err = c.r.ReadByte()
		c.Close()

		var ne net.Error
		if errors.As(err, &ne) && ne.Timeout() {
			t.Fatalf("client %d: still open after 10s, want it closed at once", i)
		}

		if !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
			t.Fatalf("client %d: read %v, want the connection closed", i, err)
		}
	}

	if b.Ready() {
		t.Fatal("Ready() with every upstream refusing")
	}
}

func TestHealthChecksTakeDownAndBringBack(t *testing.T) {
	t.Parallel()

	ln, err := net.Listen("tcp", loopbackIP()+":0")
	if err != nil {
		t.Fatal(err)
	}

	addr := ln.Addr().String()
	ln.Close()

	bl, err := net.Listen("tcp", loopbackIP()+":0")
	if err != nil {
		t.Fatal(err)
	}

	b := serve(t, build(t, Options{Listener: bl},
		setup{HealthInterval: 20 * time.Millisecond, HealthTimeout: 10 * time.Millisecond, DialTimeout: time.Second}, addr), false)

	waitFor(t, "the dead upstream to be marked down", func() bool { return !b.Ready() })

	// The same address comes alive: the next passing check brings it back.
	ln, err = net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()

	waitFor(t, "the upstream to come back", b.Ready)

	if err := b.Alive(); err != nil {
		t.Fatalf("Alive() = %v with health rounds running", err)
	}
}

// waitFor polls cond, which watches state changed by the health loop's own
// timer; there is no event to wait on from outside.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()

	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}

		time.Sleep(5 * time.Millisecond)
	}
}

func TestReconcile(t *testing.T) {
	t.Parallel()

	a, bs := startServer(t, "a"), startServer(t, "b")
	b := newBalancer(t, a.addr())

	onA, err := dialProxy(b)
	if err != nil {
		t.Fatal(err)
	}
	defer onA.Close()

	if name, _ := onA.greeting(); name != "a" {
		t.Fatalf("first connection served by %q, want a", name)
	}

	if err := b.SetUpstreams([]Endpoint{{Address: a.addr()}, {Address: bs.addr()}}); err != nil {
		t.Fatal(err)
	}

	// Added while running, b is used once its first check passes; it is
	// checked at once.
	waitFor(t, "b's first check", func() bool { return statusOf(t, b, bs.addr()).Healthy })

	if got := []string{servedBy(t, b), servedBy(t, b)}; !slices.Contains(got, "b") {
		t.Fatalf("after adding b, served by %v", got)
	}

	if err := b.SetUpstreams([]Endpoint{{Address: bs.addr()}}); err != nil {
		t.Fatal(err)
	}

	for range 3 {
		if got := servedBy(t, b); got != "b" {
			t.Fatalf("after removing a, served by %q", got)
		}
	}

	// A removed upstream's established connection keeps working for the
	// drain timeout (an hour here)...
	if err := onA.roundTrip("still here"); err != nil {
		t.Fatalf("connection to the removed upstream: %v", err)
	}

	if err := b.SetUpstreams(nil); !errors.Is(err, upstream.ErrEmptySet) {
		t.Fatalf("SetUpstreams(nil) = %v, want ErrEmptySet", err)
	}

	if got := servedBy(t, b); got != "b" {
		t.Fatalf("after the refused empty set, served by %q", got)
	}
}

func TestAcceptErrors(t *testing.T) {
	t.Parallel()

	up := startServer(t, "up")

	for _, tc := range []struct {
		name      string
		err       error
		survives  bool
		failCount int32
	}{
		{"EMFILE", &net.OpError{Op: "accept", Err: &osSyscallError{syscall.EMFILE}}, true, 5},
		{"ENFILE", &net.OpError{Op: "accept", Err: &osSyscallError{syscall.ENFILE}}, true, 2},
		{"ECONNABORTED", &net.OpError{Op: "accept", Err: &osSyscallError{syscall.ECONNABORTED}}, true, 1},
		{"permanent", errors.New("listener broke"), false, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			b := build(t, Options{Listener: listen(t)}, quiet, up.addr())

			// The first failCount accepts fail with tc.err.
			var fails atomic.Int32

			fails.Store(tc.failCount)

			accept := b.acc.accept
			b.acc.accept = func(fd int) (int, error) {
				if fails.Add(-1) >= 0 {
					return -1, tc.err
				}

				return accept(fd)
			}

			serve(t, b, false)

			if !tc.survives {
				// Accepting starts when a connection is queued.
				c, err := net.Dial("tcp", b.Addr().String())
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()

				<-b.Done()

				if !errors.Is(b.Err(), ErrListenerFailed) {
					t.Fatalf("Err() = %v, want ErrListenerFailed", b.Err())
				}

				if b.Alive() == nil {
					t.Fatal("Alive() = nil with the accept loop gone")
				}

				return
			}

			if got := servedBy(t, b); got != "up" {
				t.Fatalf("after %d %s errors, served by %q", tc.failCount, tc.name, got)
			}

			if b.Err() != nil {
				t.Fatalf("Err() = %v", b.Err())
			}
		})
	}
}

// osSyscallError is how an errno arrives from Accept (an *os.SyscallError).
type osSyscallError struct{ errno syscall.Errno }

func (e *osSyscallError) Error() string { return "accept4: " + e.errno.Error() }
func (e *osSyscallError) Unwrap() error { return e.errno }

func TestShutdownDrainsThenCuts(t *testing.T) {
	t.Parallel()

	t.Run("drains", func(t *testing.T) {
		t.Parallel()

		up := startServer(t, "up")
		b := newBalancer(t, up.addr())

		c, err := dialProxy(b)
		if err != nil {
			t.Fatal(err)
		}

		if _, err := c.greeting(); err != nil {
			t.Fatal(err)
		}

		cut := make(chan int, 1)

		go func() {
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			cut <- b.Shutdown(ctx)
		}()

		<-b.Done() // no longer accepting

		if _, err := net.DialTimeout("tcp", b.Addr().String(), time.Second); err == nil {
			t.Fatal("new connection accepted during shutdown")
		}

		if err := c.roundTrip("in flight"); err != nil {
			t.Fatalf("in-flight connection during drain: %v", err)
		}

		c.Close()

		if n := <-cut; n != 0 {
			t.Fatalf("Shutdown cut %d connections, want 0 after the client finished", n)
		}
	})

	t.Run("cuts after the drain timeout", func(t *testing.T) {
		t.Parallel()

		up := startServer(t, "up")
		b := newBalancer(t, up.addr())

		c, err := dialProxy(b)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		if _, err := c.greeting(); err != nil {
			t.Fatal(err)
		}

		ctx, cancel := context.WithCancel(context.Background())
		cancel() // drain time is up at once

		if n := b.Shutdown(ctx); n != 1 {
			t.Fatalf("Shutdown cut %d connections, want 1", n)
		}

		if _, err := c.r.ReadByte(); err == nil {
			t.Fatal("the idle connection is still open after the drain timeout")
		}
	})
}

func TestRemovedUpstreamIsDrainedThenClosed(t *testing.T) {
	t.Parallel()

	servers := map[string]*server{"a": startServer(t, "a"), "b": startServer(t, "b")}
	b := newBalancer(t, servers["a"].addr(), servers["b"].addr())

	b.Apply(setup{HealthInterval: time.Hour, HealthTimeout: time.Second, DialTimeout: time.Second, DrainTimeout: 0})

	// Remove whichever upstream took the connection.
	c, removed := greeted(t, b)

	kept := map[string]string{"a": "b", "b": "a"}[removed]
	if err := b.SetUpstreams([]Endpoint{{Address: servers[kept].addr()}}); err != nil {
		t.Fatal(err)
	}

	// ...then it is closed, so the client reconnects to a listed upstream.
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("connection to the removed upstream still open after the drain timeout")
	}

	if got := servedBy(t, b); got != kept {
		t.Fatalf("reconnected to %q, want %s", got, kept)
	}
}

func TestIPv6(t *testing.T) {
	t.Parallel()

	up, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}

	addr := serveOn(t, up, banner("v6"))

	ln, err := net.Listen("tcp", "[::1]:0")
	if err != nil {
		t.Fatal(err)
	}

	b := startOn(t, ln, quiet, false, addr)

	if got := servedBy(t, b); got != "v6" {
		t.Fatalf("served by %q over IPv6", got)
	}
}

// A host-name upstream is dialed at the address its health check resolved
// (the relay loops cannot wait on DNS).
func TestHostNameUpstream(t *testing.T) {
	t.Parallel()

	// localhost is the one name every resolver here answers; a kernel-chosen
	// port on 127.0.0.1 keeps the test apart from others.
	up, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}

	_, port, _ := net.SplitHostPort(serveOn(t, up, banner("named")))
	b := newBalancer(t, net.JoinHostPort("localhost", port))

	if got := servedBy(t, b); got != "named" {
		t.Fatalf("served by %q through localhost:%s", got, port)
	}
}
