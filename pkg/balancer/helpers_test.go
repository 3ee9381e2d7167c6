package balancer

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
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

// quiet runs health checks once at start and then hourly, so tests decide
// when state changes.
var quiet = Settings{HealthInterval: time.Hour, HealthTimeout: time.Second, DialTimeout: time.Second, DrainTimeout: time.Hour}

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

// startOn starts a balancer serving ln with settings s. With wait it
// returns after the first health-check round, so the round's results
// cannot land in the middle of the test; a round with a blackholed upstream
// never finishes, hence the choice.
func startOn(tb testing.TB, ln net.Listener, s Settings, wait bool, addrs ...string) *Balancer {
	tb.Helper()

	eps := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		eps[i] = Endpoint{Address: a, Sources: []string{"static"}}
	}

	log := zap.NewNop() // benchmarks measure, they do not log
	if t, ok := tb.(*testing.T); ok {
		log = zaptest.NewLogger(t)
	}

	b, err := New(Options{Listener: ln, Logger: log, Settings: s}, eps)
	if err != nil {
		tb.Fatal(err)
	}

	// One latency tier: on a busy host a check can take over 10 ms and put
	// one of two equal upstreams in a slower tier, which tests of selection
	// order must not depend on. TestTierOf covers the tiers.
	b.tiers = nil

	return serve(tb, b, wait)
}

// serve starts b, stops it at the end of the test and, with wait, returns
// after the first health-check round.
func serve(tb testing.TB, b *Balancer, wait bool) *Balancer {
	tb.Helper()

	if err := b.Start(); err != nil {
		tb.Fatal(err)
	}

	tb.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		b.Shutdown(ctx)
	})

	if wait {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()

		if err := b.WaitFirstCheck(ctx); err != nil {
			tb.Fatal(err)
		}
	}

	return b
}

// newBalancer starts a quiet balancer on its own loopback address.
func newBalancer(t *testing.T, addrs ...string) *Balancer {
	t.Helper()

	return startOn(t, listen(t), quiet, true, addrs...)
}

// client is one proxied connection with line-level helpers. Every read has
// a deadline so a broken proxy fails the test instead of hanging it.
type client struct {
	net.Conn
	r *bufio.Reader
}

func dialProxy(b *Balancer) (*client, error) {
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
func servedBy(t *testing.T, b *Balancer) string {
	t.Helper()

	c, name := greeted(t, b)
	c.Close()

	return name
}

// greeted opens a proxied connection, closed at the end of the test, and
// returns it with the name of the upstream that greeted it.
func greeted(t *testing.T, b *Balancer) (*client, string) {
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

func statusOf(b *Balancer, addr string) UpstreamStatus {
	for _, s := range b.Status() {
		if s.Address == addr {
			return s
		}
	}

	return UpstreamStatus{}
}

// banner is a handler that greets with name and hangs up.
func banner(name string) func(net.Conn) {
	return func(c net.Conn) {
		_, _ = io.WriteString(c, name+"\n")
		c.Close()
	}
}
