package balancer

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/lexfrei/extractedprism/pkg/check"
	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// nextIP hands every test its own loopback address, so that an address with
// no listener is refused for sure and parallel tests never meet.
var nextIP atomic.Uint32

func loopbackIP() string {
	n := nextIP.Add(1)

	return fmt.Sprintf("127.1.%d.%d", n/250, n%250+1)
}

// deadAddr is an address nothing listens on: dials are refused.
func deadAddr() string { return loopbackIP() + ":7" }

// server is a real upstream. Each connection gets "<name>\n", then every line
// it sends is echoed back. kill() closes the listener and every connection,
// as a crashed process would.
type server struct {
	name string
	ln   net.Listener

	mu    sync.Mutex
	conns map[net.Conn]struct{}
	wg    sync.WaitGroup
}

func startServer(t *testing.T, name string) *server {
	t.Helper()

	ln, err := net.Listen("tcp", loopbackIP()+":0")
	if err != nil {
		t.Fatal(err)
	}

	s := &server{name: name, ln: ln, conns: map[net.Conn]struct{}{}}
	s.wg.Add(1)

	go s.serve()

	t.Cleanup(s.kill)

	return s
}

func (s *server) addr() string { return s.ln.Addr().String() }

func (s *server) serve() {
	defer s.wg.Done()

	for {
		c, err := s.ln.Accept()
		if err != nil {
			return
		}

		s.mu.Lock()
		s.conns[c] = struct{}{}
		s.mu.Unlock()

		s.wg.Add(1)

		go s.handle(c)
	}
}

func (s *server) handle(c net.Conn) {
	defer s.wg.Done()
	defer func() {
		s.mu.Lock()
		delete(s.conns, c)
		s.mu.Unlock()
		c.Close()
	}()

	if _, err := io.WriteString(c, s.name+"\n"); err != nil {
		return
	}

	// Hide ReadFrom/WriteTo: a splicing echo would hold a pipe per
	// connection and blur the proxy's own descriptor count.
	_, _ = io.Copy(struct{ io.Writer }{c}, struct{ io.Reader }{c})
}

func (s *server) kill() {
	s.ln.Close()

	s.mu.Lock()
	for c := range s.conns {
		c.Close()
	}
	s.mu.Unlock()

	s.wg.Wait()
}

// Endpoint is the model's, named here for brevity.
type Endpoint = upstream.Endpoint

// setup is what a test balancer is built with: the engine's settings, the
// model's rules and the prober's.
type setup struct {
	HealthInterval, HealthTimeout time.Duration
	Retry                         time.Duration // zero: HealthInterval
	Check                         check.Checker
	Fall, Rise                    int
	ResetOnFailure                bool
	Tiers                         []time.Duration // nil: one tier
	DrainTimeout                  time.Duration

	DialTimeout, DialHeadStart      time.Duration
	KeepAlivePeriod, TCPUserTimeout time.Duration
	AnswerTimeout                   time.Duration
	MaxConnections                  int
}

func (s setup) engine() Settings {
	return Settings{
		DialTimeout: s.DialTimeout, DialHeadStart: s.DialHeadStart, KeepAlivePeriod: s.KeepAlivePeriod,
		TCPUserTimeout: s.TCPUserTimeout, AnswerTimeout: s.AnswerTimeout, MaxConnections: s.MaxConnections,
	}
}

// rules puts every upstream in one latency tier unless Tiers says: on a
// busy host a check can take over 10 ms and put one of two equal upstreams
// in a slower tier, which tests of selection order must not depend on.
func (s setup) rules() upstream.Rules {
	tiers := s.Tiers
	if tiers == nil {
		tiers = []time.Duration{}
	}

	return upstream.Rules{
		Fall: s.Fall, Rise: s.Rise, ResetOnFailure: s.ResetOnFailure, DrainTimeout: s.DrainTimeout,
		Interval: s.HealthInterval, Retry: s.Retry, Tiers: tiers,
	}
}

func (s setup) checks() check.Settings {
	return check.Settings{Timeout: s.HealthTimeout, Check: s.Check}
}

// rig is a balancer wired as the daemon wires it: the engine over a model
// whose prober runs real checks.
type rig struct {
	*Balancer
	set    *upstream.Set
	prober *check.Prober
}

func (r *rig) SetUpstreams(eps []Endpoint) error { return r.set.Reconcile(eps) }
func (r *rig) Status() []upstream.Status         { return r.set.Status() }
func (r *rig) Ready() bool                       { return r.set.Ready() }
func (r *rig) Alive() error                      { return errors.Join(r.Balancer.Alive(), r.prober.Alive()) }

func (r *rig) Apply(s setup) {
	r.Balancer.Apply(s.engine())
	r.set.SetRules(s.rules())
	r.prober.Apply(s.checks())
}

// quiet runs health checks once at start and then hourly, so tests decide
// when state changes.
var quiet = setup{HealthInterval: time.Hour, HealthTimeout: time.Second, DialTimeout: time.Second, DrainTimeout: time.Hour}

func listen(tb testing.TB) net.Listener {
	tb.Helper()

	ln, err := net.Listen("tcp", loopbackIP()+":0")
	if err != nil {
		tb.Fatal(err)
	}

	return ln
}

// serveEach accepts on a new loopback address and hands every connection to
// handle, which owns it. It returns the address.
func serveEach(tb testing.TB, handle func(net.Conn)) string {
	tb.Helper()

	return serveOn(tb, listen(tb), handle)
}

// serveOn is serveEach on a listener of the caller's.
func serveOn(tb testing.TB, ln net.Listener, handle func(net.Conn)) string {
	tb.Helper()

	tb.Cleanup(func() { ln.Close() })

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}

			go handle(c)
		}
	}()

	return ln.Addr().String()
}

// build makes a rig over addrs, not started; opts.Listener is needed.
func build(tb testing.TB, opts Options, s setup, addrs ...string) *rig {
	tb.Helper()

	eps := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = Endpoint{Address: a, Sources: []string{"static"}}
	}

	log := zap.NewNop() // benchmarks measure, they do not log
	if t, ok := tb.(*testing.T); ok {
		log = zaptest.NewLogger(t)
	}

	set, err := upstream.New(upstream.Options{Logger: log.Named("upstream"), Rules: s.rules()}, eps)
	if err != nil {
		tb.Fatal(err)
	}

	opts.Upstreams, opts.Logger, opts.Settings = set, log, s.engine()

	b, err := New(opts)
	if err != nil {
		tb.Fatal(err)
	}

	return &rig{Balancer: b, set: set, prober: check.New(set, s.checks(), log.Named("check"), nil)}
}

// startOn starts a balancer serving ln with settings s. With wait it
// returns after the first health-check round, so the round's results
// cannot land in the middle of the test; a round with a blackholed upstream
// never finishes, hence the choice.
func startOn(tb testing.TB, ln net.Listener, s setup, wait bool, addrs ...string) *rig {
	tb.Helper()

	return serve(tb, build(tb, Options{Listener: ln}, s, addrs...), wait)
}

// serve starts r, stops it at the end of the test and, with wait, returns
// after the first health-check round.
func serve(tb testing.TB, r *rig, wait bool) *rig {
	tb.Helper()

	r.prober.Start()

	if err := r.Start(); err != nil {
		tb.Fatal(err)
	}

	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		r.prober.Stop()
		r.Shutdown(ctx)
	})

	if wait {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		if err := r.prober.WaitFirstRound(ctx); err != nil {
			tb.Fatal(err)
		}
	}

	return r
}

// newBalancer starts a quiet balancer on its own loopback address.
func newBalancer(t *testing.T, addrs ...string) *rig {
	t.Helper()

	return startOn(t, listen(t), quiet, true, addrs...)
}

// client is one proxied connection with line-level helpers. Every read has
// a deadline so a broken proxy fails the test instead of hanging it.
type client struct {
	net.Conn
	r *bufio.Reader
}

func dialProxy(b *rig) (*client, error) {
	c, err := net.DialTimeout("tcp", b.Addr().String(), 5*time.Second)
	if err != nil {
		return nil, err
	}

	_ = c.SetDeadline(time.Now().Add(10 * time.Second))

	return &client{Conn: c, r: bufio.NewReader(c)}, nil
}

// greeting returns the name of the upstream that took the connection.
func (c *client) greeting() (string, error) {
	line, err := c.r.ReadString('\n')
	if err != nil {
		return "", err
	}

	return line[:len(line)-1], nil
}

// roundTrip sends a line and expects it back.
func (c *client) roundTrip(msg string) error {
	if _, err := io.WriteString(c, msg+"\n"); err != nil {
		return err
	}

	line, err := c.r.ReadString('\n')
	if err != nil {
		return err
	}

	if line != msg+"\n" {
		return fmt.Errorf("echo: got %q, want %q", line, msg)
	}

	return nil
}

// servedBy opens a connection and returns which upstream answered.
func servedBy(t *testing.T, b *rig) string {
	t.Helper()

	c, name := greeted(t, b)
	c.Close()

	return name
}

// greeted opens a proxied connection, closed at the end of the test, and
// returns it with the name of the upstream that greeted it.
func greeted(t *testing.T, b *rig) (*client, string) {
	t.Helper()

	c, err := dialProxy(b)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { c.Close() })

	name, err := c.greeting()
	if err != nil {
		t.Fatalf("no greeting through the proxy: %v", err)
	}

	return c, name
}

// statusOf is the state of the upstream at addr, which must be listed: an
// empty status would pass every "not healthy" check.
func statusOf(t *testing.T, b *rig, addr string) upstream.Status {
	t.Helper()

	for _, s := range b.Status() {
		if s.Address == addr {
			return s
		}
	}

	t.Fatalf("%s is not listed", addr)

	return upstream.Status{}
}

// banner is a handler that greets with name and hangs up.
func banner(name string) func(net.Conn) {
	return func(c net.Conn) {
		_, _ = io.WriteString(c, name+"\n")
		c.Close()
	}
}
