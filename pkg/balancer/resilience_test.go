package balancer

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"
	"golang.org/x/sys/unix"

	"github.com/lexfrei/extractedprism/pkg/check"
	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// replier is a client-first upstream: it reads a line and answers
// "<name>:<line>".
func replier(t *testing.T, name string) string {
	t.Helper()

	return serveEach(t, func(c net.Conn) {
		defer c.Close()

		if line, err := bufio.NewReader(c).ReadString('\n'); err == nil {
			_, _ = io.WriteString(c, name+":"+line)
		}
	})
}

// dier accepts, reads the client's first bytes and resets the connection
// without answering, as a crashing API server's kernel does.
func dier(t *testing.T) string {
	t.Helper()

	return serveEach(t, func(c net.Conn) {
		_, _ = bufio.NewReader(c).ReadString('\n')
		_ = c.(*net.TCPConn).SetLinger(0) // RST
		c.Close()
	})
}

func ask(t *testing.T, b *rig, line string) string {
	t.Helper()

	c, err := dialProxy(b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := io.WriteString(c, line+"\n"); err != nil {
		t.Fatal(err)
	}

	answer, err := c.r.ReadString('\n')
	if err != nil {
		t.Fatalf("no answer through the proxy: %v", err)
	}

	return strings.TrimSuffix(answer, "\n")
}

func TestReplayWhenTheUpstreamDiesBeforeAnswering(t *testing.T) {
	t.Parallel()

	dead, live := dier(t), replier(t, "b")
	b := startOn(t, listen(t), quiet, true, dead, live)

	// The first pick is the dying upstream: it accepts, reads, resets.
	if got := ask(t, b, "hello"); got != "b:hello" {
		t.Fatalf("answer %q, want b:hello (replayed to the next upstream)", got)
	}

	if n := b.Stats().Replayed; n != 1 {
		t.Fatalf("replayed %d connections, want 1", n)
	}

	// The reset came after the client's bytes, which a client could have
	// caused: the upstream is only checked, and stays in rotation.
	if !statusOf(t, b, dead).Healthy {
		t.Fatal("a reset after the client's bytes took the upstream out")
	}
}

// An upstream that hangs up right after connecting, before it was sent a
// byte, is at fault: it is suspended, and the client is served elsewhere.
func TestHangUpBeforeAnyByteSuspends(t *testing.T) {
	t.Parallel()

	dead := serveEach(t, func(c net.Conn) {
		_ = c.(*net.TCPConn).SetLinger(0) // RST
		c.Close()
	})
	live := startServer(t, "b")
	b := startOn(t, listen(t), quiet, true, dead, live.addr())

	if got := servedBy(t, b); got != "b" {
		t.Fatalf("served by %q", got)
	}

	if statusOf(t, b, dead).Healthy {
		t.Fatal("an upstream that hung up before any byte is still in rotation")
	}
}

// No client steers health: clients that send garbage, which every
// upstream hangs up on, cost one extra upstream connection each and take
// no upstream out.
func TestGarbageClientsTakeNoUpstreamOut(t *testing.T) {
	t.Parallel()

	var accepted atomic.Int32

	hangUp := func(c net.Conn) {
		if n, _ := c.Read(make([]byte, 16)); n > 0 { // a client's, not a check's
			accepted.Add(1)
		}

		c.Close()
	}
	addrs := []string{serveEach(t, hangUp), serveEach(t, hangUp), serveEach(t, hangUp)}
	b := startOn(t, listen(t), quiet, true, addrs...)

	const clients = 5
	for range clients {
		c, err := dialProxy(b)
		if err != nil {
			t.Fatal(err)
		}

		if _, err := c.Write(make([]byte, 5)); err != nil {
			t.Fatal(err)
		}

		if _, err := c.r.ReadByte(); err == nil {
			t.Fatal("garbage got an answer")
		}

		c.Close()
	}

	for _, a := range addrs {
		if !statusOf(t, b, a).Healthy {
			t.Errorf("%s taken out by garbage from clients", a)
		}
	}

	if got := int(accepted.Load()); got != 2*clients {
		t.Errorf("%d upstream connections for %d garbage clients, want %d", got, clients, 2*clients)
	}
}

func TestNoReplayAfterTheFirstAnswer(t *testing.T) {
	t.Parallel()

	a := startServer(t, "a") // answers first (a greeting), then dies below
	bs := startServer(t, "b")
	b := startOn(t, listen(t), quiet, true, a.addr(), bs.addr())

	c, err := dialProxy(b)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if name, _ := c.greeting(); name != "a" {
		t.Fatalf("served by %q", name)
	}

	a.kill()

	// Bytes from a reached the client: moving would corrupt the stream.
	if _, err := c.r.ReadByte(); err == nil {
		t.Fatal("the connection survived its upstream's death after answering")
	}

	if n := b.Stats().Replayed; n != 0 {
		t.Fatalf("replayed %d connections after an answer", n)
	}
}

// rawListener listens on a new loopback address with the given backlog and
// never accepts: the kernel alone handles handshakes.
func rawListener(t *testing.T, backlog int) string {
	t.Helper()

	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { syscall.Close(fd) })

	ip := net.ParseIP(loopbackIP()).To4()
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte(ip)}); err != nil {
		t.Fatal(err)
	}

	if err := syscall.Listen(fd, backlog); err != nil {
		t.Fatal(err)
	}

	sa, _ := syscall.Getsockname(fd)

	return net.JoinHostPort(ip.String(), strconv.Itoa(sa.(*syscall.SockaddrInet4).Port))
}

// blackhole returns an address whose SYNs go unanswered: a listener whose
// accept queue is full drops them, as a firewall would.
func blackhole(t *testing.T) string {
	t.Helper()

	addr := rawListener(t, 0)

	// Fill the queue; then connects hang.
	for {
		c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
		if err != nil {
			break
		}

		t.Cleanup(func() { c.Close() })
	}

	return addr
}

func TestRacingDialBeatsABlackhole(t *testing.T) {
	t.Parallel()

	hole, live := blackhole(t), replier(t, "b")
	s := quiet
	s.HealthTimeout = time.Minute // the checks must not find the hole first
	s.DialTimeout = 30 * time.Second
	s.DialHeadStart = 50 * time.Millisecond

	b := startOn(t, listen(t), s, false, hole, live)

	if got := ask(t, b, "hi"); got != "b:hi" {
		t.Fatalf("answer %q, want b:hi", got)
	}

	if n := b.Stats().RacedDials; n < 1 {
		t.Fatalf("raced dials %d, want at least 1", n)
	}
}

// With only a blackhole to dial, the loop's deadline schedule must end the
// dial at the dial timeout and close the client, and the head start, with
// nothing left to race, must not spin.
func TestDialTimeoutClosesTheClient(t *testing.T) {
	t.Parallel()

	s := quiet
	s.HealthTimeout = time.Minute
	s.DialTimeout = 200 * time.Millisecond
	s.DialHeadStart = 20 * time.Millisecond

	b := startOn(t, listen(t), s, false, blackhole(t))

	c, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	// Generous: the point is that the proxy closes it, not how fast.
	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))

	if _, err := c.Read(make([]byte, 1)); !errors.Is(err, io.EOF) {
		t.Fatalf("read = %v, want EOF: the proxy gives up on the blackhole", err)
	}

	st := b.Stats()
	if st.Rejected != 1 {
		t.Errorf("rejected %d, want 1", st.Rejected)
	}

	if n := b.Status()[0].DialErrors["timeout"]; n != 1 {
		t.Errorf("timeout dial errors %d, want 1", n)
	}
}

// An answer and the FIN after it can arrive together, before the proxy
// reads either: the read that returns the answer is short, yet the socket
// still holds the end, and epoll will not announce it again. The client
// must get the answer and then EOF, not wait forever.
func TestAnswerAndFINTogether(t *testing.T) {
	t.Parallel()

	reached, send, sent := make(chan struct{}), make(chan struct{}), make(chan struct{})

	up := serveEach(t, func(c net.Conn) {
		// Health checks close without a byte; the proxied client sends one.
		if _, err := c.Read(make([]byte, 1)); err != nil {
			return
		}

		close(reached)
		<-send

		_, _ = io.WriteString(c, "hello")
		_ = c.Close() // on loopback both are queued at the proxy on return
		close(sent)
	})

	b := serve(t, build(t, Options{Listener: listen(t), Loops: 1}, quiet, up), true)

	c, err := net.Dial("tcp", b.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	if _, err := c.Write([]byte{'x'}); err != nil {
		t.Fatal(err)
	}

	<-reached

	// Hold the loop while the answer and the FIN arrive, so that it sees
	// them in one event.
	l := b.loops[0]
	l.mu.Lock()
	close(send)
	<-sent
	l.mu.Unlock()

	_ = c.SetReadDeadline(time.Now().Add(10 * time.Second))

	got, err := io.ReadAll(c)
	if err != nil || string(got) != "hello" {
		t.Fatalf("read %q, %v; want \"hello\" and EOF", got, err)
	}
}

func TestLeastConnections(t *testing.T) {
	t.Parallel()

	a, bs := startServer(t, "a"), startServer(t, "b")
	b := newBalancer(t, a.addr(), bs.addr()) // one latency tier (startOn)

	held := map[string][]*client{}

	for range 4 {
		c, name := greeted(t, b)
		held[name] = append(held[name], c)
	}

	if len(held["a"]) != 2 || len(held["b"]) != 2 {
		t.Fatalf("4 connections split %d/%d, want 2/2", len(held["a"]), len(held["b"]))
	}

	for _, c := range held["b"] {
		c.Close()
	}

	waitFor(t, "b's connections to end", func() bool { return statusOf(t, b, bs.addr()).ActiveConnections == 0 })

	for range 2 {
		if got := servedBy(t, b); got != "b" {
			t.Fatalf("new connection went to %q with a holding 2 and b none", got)
		}
	}
}

// flaky fails the checks of one address when told.
type flaky struct {
	addr string
	down atomic.Bool
}

func (f *flaky) Check(_ context.Context, addr string) error {
	if addr == f.addr && f.down.Load() {
		return errors.New("down")
	}

	return nil
}

func TestFallRiseAndResetOnFailure(t *testing.T) {
	t.Parallel()

	a, bs := startServer(t, "a"), startServer(t, "b")
	check := &flaky{addr: a.addr()}
	s := setup{HealthInterval: 10 * time.Millisecond, HealthTimeout: time.Second, DialTimeout: time.Second,
		Check: check, Fall: 2, Rise: 3, ResetOnFailure: true, DrainTimeout: time.Hour}
	b := startOn(t, listen(t), s, true, a.addr())

	if err := b.SetUpstreams([]Endpoint{{Address: a.addr()}, {Address: bs.addr()}}); err != nil {
		t.Fatal(err)
	}

	onA, err := dialProxy(b)
	if err != nil {
		t.Fatal(err)
	}
	defer onA.Close()

	if name, _ := onA.greeting(); name != "a" {
		t.Fatalf("served by %q", name)
	}

	check.down.Store(true)
	waitFor(t, "two failed checks to take a out", func() bool { return !statusOf(t, b, a.addr()).Healthy })

	// Its clients are closed so they reconnect elsewhere at once.
	if _, err := onA.r.ReadByte(); err == nil {
		t.Fatal("a client of the failed upstream is still connected")
	}

	// Counted once the reset is done; the client may see its end first.
	waitFor(t, "the reset to be counted", func() bool { return b.Stats().ClosedFailed >= 1 })

	if st := statusOf(t, b, a.addr()); st.Score > -2 {
		t.Fatalf("score %v after the fall, want at most -2", st.Score)
	}

	check.down.Store(false)
	waitFor(t, "three passing checks to bring a back", func() bool { return statusOf(t, b, a.addr()).Healthy })

	if st := statusOf(t, b, a.addr()); st.Score < 3 {
		t.Fatalf("back with score %v, want at least 3 (rise)", st.Score)
	}
}

func openFDs(t *testing.T) int {
	t.Helper()

	entries, err := os.ReadDir("/proc/self/fd")
	if err != nil {
		t.Fatal(err)
	}

	return len(entries)
}

// An idle proxied connection holds its two sockets and nothing else: no
// splice pipes, which io.Copy would keep for the connection's lifetime.
// Not parallel: it counts the whole process's descriptors.
func TestIdleConnectionsHoldNoPipes(t *testing.T) {
	up := startServer(t, "up")
	b := newBalancer(t, up.addr())

	// Warm Go's pipe pool with real traffic first.
	if err := oneExchangeErr(b); err != nil {
		t.Fatal(err)
	}

	const n = 100

	before := openFDs(t)

	for range n {
		c, err := dialProxy(b)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		if _, err := c.greeting(); err != nil {
			t.Fatal(err)
		}
	}

	waitFor(t, "all connections proxied", func() bool { return b.Active() == n })

	// Per connection: the client's socket and the upstream server's socket
	// (this process plays both), and the proxy's two.
	if per := float64(openFDs(t)-before) / n; per > 4.1 {
		t.Fatalf("%.2f descriptors per idle proxied connection, want 4 (2 in the proxy)", per)
	}
}

func oneExchangeErr(b *rig) error {
	_, err := oneExchange(b)

	return err
}

// hung is an upstream whose process has stopped: the kernel completes TCP
// handshakes into the backlog, nothing ever answers.
func hung(t *testing.T) string {
	t.Helper()

	return rawListener(t, 1024)
}

// A hung upstream passes TCP checks forever (HAProxy and nginx kept sending
// a third of all connections into one); the https check times out on it,
// and once it is down it gets no new connection.
func TestHungUpstreamCaughtByHTTPSCheck(t *testing.T) {
	t.Parallel()

	live := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { _, _ = io.WriteString(w, "ok") }))
	defer live.Close()

	stuck := hung(t)

	if err := (check.TCPCheck{}).Check(context.Background(), stuck); err != nil {
		t.Fatalf("the hung upstream fails even a TCP check, the test proves nothing: %v", err)
	}

	tlsConfig := live.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	// A TLS check on a busy 2-core machine can take tens of milliseconds:
	// the timeout must not take the live upstream out too.
	s := setup{HealthInterval: 400 * time.Millisecond, HealthTimeout: 300 * time.Millisecond, DialTimeout: time.Second,
		Check: check.NewHTTPSCheck(tlsConfig, "/readyz"), DrainTimeout: time.Hour}
	b := startOn(t, listen(t), s, true, stuck, live.Listener.Addr().String())

	waitFor(t, "the hung upstream to be marked down", func() bool { return !statusOf(t, b, stuck).Healthy })

	before := statusOf(t, b, stuck).TotalConnections
	client := &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, DisableKeepAlives: true, //nolint:gosec // the proxy's address is not in the test certificate
	}}

	for i := range 20 {
		resp, err := client.Get("https://" + b.Addr().String() + "/")
		if err != nil {
			t.Fatalf("request %d: %v", i, err)
		}
		resp.Body.Close()
	}

	if after := statusOf(t, b, stuck).TotalConnections; after != before {
		t.Fatalf("%d new connections went to the hung upstream after it was marked down", after-before)
	}
}

// Clients that connect and send nothing hold their connections but slow
// nobody else down.
func TestSlowLorisDoesNotStarveOthers(t *testing.T) {
	t.Parallel()

	up := replier(t, "up")
	b := startOn(t, listen(t), quiet, true, up)

	for range 500 {
		c, err := dialProxy(b)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		if _, err := io.WriteString(c, "sl"); err != nil { // a request that never ends
			t.Fatal(err)
		}
	}

	if got := ask(t, b, "hi"); got != "up:hi" {
		t.Fatalf("with 500 slow clients, a normal one got %q", got)
	}
}

// allDown fails every check when told, as every /readyz does while etcd
// stalls, or when the CA the checks trust was rotated.
type allDown struct{ down atomic.Bool }

func (d *allDown) Check(context.Context, string) error {
	if d.down.Load() {
		return errors.New("HTTP 500")
	}

	return nil
}

// When every upstream fails its checks at once, the proxy fails open:
// established connections stay and new ones go to upstreams that accept.
func TestFailOpenWhenAllFailTogether(t *testing.T) {
	t.Parallel()

	a, bs := startServer(t, "a"), startServer(t, "b")
	check := &allDown{}
	s := setup{HealthInterval: 10 * time.Millisecond, HealthTimeout: time.Second, DialTimeout: time.Second,
		Check: check, Fall: 1, Rise: 1, ResetOnFailure: true, DrainTimeout: time.Hour}
	b := startOn(t, listen(t), s, true, a.addr(), bs.addr())

	held, _ := greeted(t, b)

	check.down.Store(true)
	waitFor(t, "several failed checks of both", func() bool {
		return statusOf(t, b, a.addr()).Score <= -3 && statusOf(t, b, bs.addr()).Score <= -3
	})

	if !b.set.FailOpen() || b.Ready() {
		t.Fatalf("fail-open %v, ready %v: want fail-open and not ready", b.set.FailOpen(), b.Ready())
	}

	if err := held.roundTrip("still there"); err != nil {
		t.Fatalf("an established connection was cut while failing open: %v", err)
	}

	if name := servedBy(t, b); name != "a" && name != "b" {
		t.Fatalf("a new connection while failing open was served by %q", name)
	}

	if n := b.Stats().ClosedFailed; n != 0 {
		t.Fatalf("closed %d connections with no healthy upstream to send them to", n)
	}
}

// A racing dial that finds no free descriptor waits and retries; it used
// to schedule its retry in the past, and the loop ran the same deadline
// forever, holding its lock: every session on it froze and Shutdown hung.
func TestStarvedRacingDialRetries(t *testing.T) {
	t.Parallel()

	s := quiet
	s.HealthTimeout = time.Minute
	s.DialTimeout = 5 * time.Second
	s.DialHeadStart = 20 * time.Millisecond

	live := startServer(t, "b")
	r := build(t, Options{Listener: listen(t), Loops: 1}, s, blackhole(t), live.addr())

	// The first dial (to the blackhole) goes through; for 100 ms after
	// that every dial finds no descriptor.
	var (
		calls   atomic.Int32
		starved atomic.Int64
	)

	r.connect = func(ap netip.AddrPort, opts []sockopt) (int, error) {
		if calls.Add(1) == 1 {
			starved.Store(time.Now().Add(100 * time.Millisecond).UnixNano())
		} else if time.Now().UnixNano() < starved.Load() {
			return -1, fmt.Errorf("dial %s: socket: %w", ap, unix.EMFILE)
		}

		return connectRaw(ap, opts)
	}

	serve(t, r, false)

	if got := servedBy(t, r); got != "b" {
		t.Fatalf("served by %q", got)
	}

	// One retry per 20 ms while starved, not a spin.
	if n := calls.Load(); n > 10 {
		t.Fatalf("%d connects in about 100 ms of descriptor shortage: the loop spun", n)
	}
}

// A loop that stops coming back to epoll_wait is wedged: Alive (and so
// /healthz and WATCHDOG=1) says so, and says so no more once it moves.
func TestWedgedLoopIsNotAlive(t *testing.T) {
	t.Parallel()

	r := build(t, Options{Listener: listen(t), Loops: 1}, quiet, startServer(t, "a").addr())
	r.stallAfter = 50 * time.Millisecond
	serve(t, r, true)

	l := r.loops[0]
	l.mu.Lock()

	locked := true
	defer func() {
		if locked { // a failed wait must not leave Shutdown blocked
			l.mu.Unlock()
		}
	}()

	// A connection wakes the loop, which then waits for its lock.
	c, err := net.Dial("tcp", r.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	waitFor(t, "Alive to call the loop wedged", func() bool { return errors.Is(r.Balancer.Alive(), ErrStalled) })
	l.mu.Unlock()
	locked = false

	waitFor(t, "the loop to move again", func() bool { return r.Balancer.Alive() == nil })
}

// Every upstream refusing: lines any client can cause are written at most
// once a second each, the metrics count every client, and no line is
// written while the loop holds its lock (one loop once wrote 229,417
// lines in 10 s, holding it).
func TestRefusedClientsLogQuietly(t *testing.T) {
	t.Parallel()

	core, lines := observer.New(zapcore.DebugLevel)

	var (
		l        atomic.Pointer[loop]
		heldLock atomic.Int32
	)

	log := zap.New(zapcore.RegisterHooks(core, func(zapcore.Entry) error {
		if lp := l.Load(); lp != nil {
			if !lp.mu.TryLock() {
				heldLock.Add(1)
			} else {
				lp.mu.Unlock()
			}
		}

		return nil
	}))

	set, err := upstream.New(upstream.Options{Logger: log, Rules: quiet.rules()},
		[]Endpoint{{Address: deadAddr()}, {Address: deadAddr()}})
	if err != nil {
		t.Fatal(err)
	}

	b, err := New(Options{Listener: listen(t), Logger: log, Loops: 1, Upstreams: set, Settings: quiet.engine()})
	if err != nil {
		t.Fatal(err)
	}

	l.Store(b.loops[0])
	r := serve(t, &rig{Balancer: b, set: set, prober: check.New(set, quiet.checks(), log, nil)}, true)

	const clients = 300

	start := time.Now()

	for range clients {
		c, err := dialProxy(r)
		if err != nil {
			t.Fatal(err)
		}

		if _, err := c.r.ReadByte(); err == nil {
			t.Fatal("a client got a byte with every upstream refusing")
		}

		c.Close()
	}

	waitFor(t, "every client to be counted", func() bool { return b.Stats().Rejected == clients })

	limit := int(time.Since(start)/noisyEvery) + 1
	for _, msg := range []string{"closing client: no upstream could take it", "dial failed; trying the next upstream"} {
		if n := lines.FilterMessage(msg).Len(); n < 1 || n > limit {
			t.Errorf("%q written %d times for %d clients, want 1 to %d", msg, n, clients, limit)
		}
	}

	if n := heldLock.Load(); n > 0 {
		t.Errorf("%d lines written while the loop held its lock", n)
	}
}

// At max_connections a new client is reset at once and counted; when one
// ends, the next gets in.
func TestMaxConnections(t *testing.T) {
	t.Parallel()

	s := quiet
	s.MaxConnections = 2
	b := startOn(t, listen(t), s, true, startServer(t, "a").addr())

	first, _ := greeted(t, b)
	greeted(t, b)

	// The reset may come before the dial returns, or at the first read.
	if c, err := dialProxy(b); err == nil {
		_, err = c.r.ReadByte()
		c.Close()

		if err == nil {
			t.Fatal("a connection over the limit was served")
		}
	}

	if n := b.Stats().OverLimit; n != 1 {
		t.Fatalf("over the limit: %d, want 1", n)
	}

	first.Close()
	waitFor(t, "the closed connection to end", func() bool { return b.Active() < 2 })

	if name := servedBy(t, b); name != "a" {
		t.Fatalf("under the limit again, served by %q", name)
	}
}

// Past the replay budget a client is proxied without its copy: when its
// upstream hangs up before answering, it cannot move, and is closed. Once
// the budget is free again, the same client is replayed.
func TestReplayBudget(t *testing.T) {
	t.Parallel()

	holder := serveEach(t, func(c net.Conn) { // reads, never answers
		defer c.Close()
		_, _ = io.Copy(io.Discard, c)
	})
	dead, live := dier(t), replier(t, "c")

	r := build(t, Options{Listener: listen(t)}, quiet, holder, dead, live)
	r.replayBudget = 1000
	serve(t, r, true)

	// 800 bytes kept for the holder's client...
	held, err := dialProxy(r)
	if err != nil {
		t.Fatal(err)
	}
	defer held.Close()

	if _, err := held.Write(make([]byte, 800)); err != nil {
		t.Fatal(err)
	}

	waitFor(t, "the held bytes", func() bool { return r.replayHeld.Load() == 800 })

	// ...leave 200: the next client's 300 bytes are not kept, and the
	// upstream that hangs up on it cannot be left for another.
	ask := func() (string, error) {
		c, err := dialProxy(r)
		if err != nil {
			return "", err
		}
		defer c.Close()

		if _, err := io.WriteString(c, strings.Repeat("x", 299)+"\n"); err != nil {
			return "", err
		}

		return c.r.ReadString('\n')
	}

	if got, err := ask(); err == nil {
		t.Fatalf("a client past the budget was replayed: %q", got)
	}

	if n := r.Stats().Replayed; n != 0 {
		t.Fatalf("replayed %d past the budget", n)
	}

	held.Close()
	waitFor(t, "the budget to be free", func() bool { return r.replayHeld.Load() == 0 })

	if got, err := ask(); err != nil || !strings.HasPrefix(got, "c:") {
		t.Fatalf("within the budget: %q, %v; want a replay to c", got, err)
	}
}

// A client that sent more than replayLimit before the answer cannot be
// moved: its upstream hanging up ends it. Within the limit it moves.
func TestReplayLimit(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		size     int
		replayed bool
	}{
		{replayLimit - 1, true},
		{replayLimit + 1, false},
	} {
		t.Run(strconv.Itoa(tc.size), func(t *testing.T) {
			t.Parallel()

			dead := serveEach(t, func(c net.Conn) { // reads it all, then resets
				_, _ = io.ReadFull(c, make([]byte, tc.size))
				_ = c.(*net.TCPConn).SetLinger(0)
				c.Close()
			})
			live := serveEach(t, func(c net.Conn) {
				defer c.Close()

				if _, err := io.ReadFull(c, make([]byte, tc.size)); err == nil {
					_, _ = io.WriteString(c, "ok")
				}
			})
			b := startOn(t, listen(t), quiet, true, dead, live)

			c, err := dialProxy(b)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()

			if _, err := c.Write(randomBytes(t, tc.size)); err != nil {
				t.Fatal(err)
			}

			answer, _ := io.ReadAll(c)
			if got := string(answer) == "ok"; got != tc.replayed {
				t.Fatalf("%d bytes before the answer: answered %v (%q), want %v", tc.size, got, answer, tc.replayed)
			}

			if n := b.Stats().Replayed; (n == 1) != tc.replayed {
				t.Fatalf("replayed %d", n)
			}
		})
	}
}

// tiered answers checks of slow after a delay that puts it in a slower
// latency tier.
type tiered struct{ slow string }

func (c tiered) Check(ctx context.Context, addr string) error {
	if err := (check.TCPCheck{}).Check(ctx, addr); err != nil {
		return err
	}

	if addr == c.slow {
		select {
		case <-time.After(150 * time.Millisecond):
		case <-ctx.Done():
			return ctx.Err()
		}
	}

	return nil
}

// With the real latency tiers, an upstream whose checks take an order of
// magnitude longer gets no connection while a faster one is usable, even
// with more connections on the fast one; it takes over when the fast one
// is gone.
func TestLatencyTiersPreferTheFaster(t *testing.T) {
	t.Parallel()

	fast, slow := startServer(t, "fast"), startServer(t, "slow")
	s := quiet
	s.HealthInterval = 300 * time.Millisecond // the tier follows two checks in a row
	s.Check = tiered{slow: slow.addr()}
	s.Tiers = upstream.DefaultTiers
	b := startOn(t, listen(t), s, true, slow.addr(), fast.addr())

	// A loaded host may slow the fast one's check past 10 ms, never past
	// the slow one's 150 ms.
	waitFor(t, "the slow upstream in a slower tier", func() bool {
		return statusOf(t, b, slow.addr()).Tier > statusOf(t, b, fast.addr()).Tier
	})

	for i := range 4 {
		if _, name := greeted(t, b); name != "fast" {
			t.Fatalf("connection %d went to %q with the faster upstream usable", i, name)
		}
	}

	fast.kill()

	if name := servedBy(t, b); name != "slow" {
		t.Fatalf("with the fast one gone, served by %q", name)
	}
}

// An upstream that does not answer a new client's first bytes within the
// answer timeout loses the client to another upstream, once; it stays in
// rotation (a partial request is never answered either), and is checked.
func TestNoAnswerMovesOnce(t *testing.T) {
	t.Parallel()

	var hungConns atomic.Int32

	hung := func() string {
		return serveEach(t, func(c net.Conn) { // reads, never answers
			defer c.Close()

			// Counts clients' connections, not the checks' (which send nothing).
			if n, _ := c.Read(make([]byte, 64)); n > 0 {
				hungConns.Add(1)
			}

			_, _ = io.Copy(io.Discard, c)
		})
	}

	s := quiet
	s.AnswerTimeout = 100 * time.Millisecond

	t.Run("to a live one", func(t *testing.T) {
		b := startOn(t, listen(t), s, true, hung(), replier(t, "b"))

		if got := ask(t, b, "hello"); got != "b:hello" {
			t.Fatalf("answer %q, want b:hello after the hung upstream's timeout", got)
		}

		if n := b.Stats().Replayed; n != 1 {
			t.Fatalf("replayed %d, want 1", n)
		}

		if !b.Ready() || !statusOf(t, b, b.Status()[0].Address).Healthy {
			t.Fatal("no answer within the timeout took the upstream out")
		}
	})

	t.Run("never more than once", func(t *testing.T) {
		hungConns.Store(0)
		b := startOn(t, listen(t), s, true, hung(), hung(), hung())

		c, err := dialProxy(b)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()

		if _, err := io.WriteString(c, "partial"); err != nil {
			t.Fatal(err)
		}

		waitFor(t, "the move", func() bool { return b.Stats().Replayed == 1 })

		_ = c.SetReadDeadline(time.Now().Add(5 * s.AnswerTimeout))
		if _, err := c.r.ReadByte(); err == nil {
			t.Fatal("a hung upstream answered")
		}

		if n := hungConns.Load(); n != 2 {
			t.Fatalf("%d upstream connections for one client, want 2", n)
		}
	})
}

// muting is an upstream that greets with name and echoes lines until muted;
// muted, it reads and never answers, as a hung API server would. Its check
// fails addr while muted.
type muting struct {
	name, addr string
	muted      atomic.Bool
}

func startMuting(t *testing.T, name string) *muting {
	t.Helper()

	m := &muting{name: name}
	m.addr = serveEach(t, func(c net.Conn) {
		defer c.Close()

		if _, err := io.WriteString(c, name+"\n"); err != nil {
			return
		}

		r := bufio.NewReader(c)

		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}

			if !m.muted.Load() {
				_, _ = io.WriteString(c, line)
			}
		}
	})

	return m
}

func (m *muting) Check(_ context.Context, addr string) error {
	if addr != m.addr {
		return nil
	}

	if m.muted.Load() {
		return errors.New("no answer")
	}

	return nil
}

// An upstream that stops answering under a client that keeps its
// connection (kubelet sends everything over one) is caught by that
// client's question: the silence has it checked at once, the check fails,
// and its clients are reset. A client that asks nothing, or only reacts to
// the upstream's bytes at once (an HTTP/2 WINDOW_UPDATE), has nothing
// checked.
func TestSilentUpstreamOfAnEstablishedConnection(t *testing.T) {
	t.Parallel()

	const answer = 100 * time.Millisecond

	for _, tc := range []struct {
		name        string
		reactWithin time.Duration
		ask         bool
		caught      bool
	}{
		{name: "asked", ask: true, caught: true},
		{name: "idle", ask: false},
		{name: "a reaction", reactWithin: time.Hour, ask: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			a, other := startMuting(t, "a"), startServer(t, "b")
			s := setup{HealthInterval: time.Hour, Retry: 20 * time.Millisecond, HealthTimeout: time.Second, Check: a,
				Fall: 1, Rise: 1, ResetOnFailure: true, DialTimeout: time.Second, AnswerTimeout: answer, DrainTimeout: time.Hour}
			r := build(t, Options{Listener: listen(t)}, s, a.addr, other.addr())
			r.reactWithin = tc.reactWithin
			b := serve(t, r, true)

			c, name := greeted(t, b)
			if name != "a" {
				c, name = greeted(t, b) // least connections: the next goes to a
			}

			if name != "a" {
				t.Fatalf("greeted by %q twice", name)
			}

			if err := c.roundTrip("hello"); err != nil {
				t.Fatal(err)
			}

			a.muted.Store(true)

			if tc.ask {
				if _, err := io.WriteString(c, "anyone?\n"); err != nil {
					t.Fatal(err)
				}
			}

			if !tc.caught {
				// What is measured is that nothing happens. (Not the checks:
				// the first periodic one may fall anywhere in the hour.)
				time.Sleep(10 * answer)
				if n := b.Stats().Unanswered; n != 0 {
					t.Fatalf("%d silences reported, want none", n)
				}

				return
			}

			if _, err := c.r.ReadByte(); err == nil {
				t.Fatal("the muted upstream answered")
			}

			if n := b.Stats().Unanswered; n != 1 {
				t.Fatalf("%d silences reported, want 1", n)
			}

			if st := statusOf(t, b, a.addr); st.Healthy {
				t.Fatal("the silent upstream is still healthy after its client was reset")
			}

			waitFor(t, "the reset to be counted", func() bool { return b.Stats().ClosedFailed == 1 })
		})
	}
}
