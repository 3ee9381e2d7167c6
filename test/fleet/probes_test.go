//go:build integration

package fleet

import (
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptrace"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// probe is one reference way of checking an API server. Each simulated node
// opens its own session, so nothing is shared between nodes that would not
// be shared between machines.
type probe struct {
	name string
	what string
	// idle probes make no checks: their cost is that of holding the session
	// open, per node per second.
	idle bool
	// as names what check's flag reports (a resumed session, a reused
	// connection); empty when it means nothing.
	as   string
	open func(ctx context.Context, e *env, node int) (session, error)
}

type session interface {
	// check makes one check; flag says it went as the probe intends (see
	// probe.as).
	check(ctx context.Context) (flag bool, err error)
	close()
}

func probes() []probe {
	return []probe{
		{name: "tls-new", what: "new TLS connection + `GET /readyz` (the daemon's check today)", open: openHTTP(httpNew, "/readyz")},
		{name: "tls-resume", what: "new TLS connection with session resumption + `GET /readyz`", as: "resumed", open: openHTTP(httpResume, "/readyz")},
		{name: "h1-keepalive", what: "kept-alive HTTP/1.1 connection, `GET /readyz`", as: "reused", open: openHTTP(httpKeepAlive, "/readyz")},
		// /readyz without its etcd checks: it still fails once a graceful
		// shutdown has begun, but not when etcd stalls under every API
		// server at once. (/readyz/shutdown alone would do, but anonymous
		// users may read only /readyz itself, with any query.)
		{name: "h1-no-etcd", what: "kept-alive HTTP/1.1 connection, `GET " + noEtcdPath + "`", as: "reused", open: openHTTP(httpKeepAlive, noEtcdPath)},
		{name: "h1-keepalive-cert", what: "kept-alive HTTP/1.1 connection, `GET /readyz` with the node's client certificate", as: "reused", open: openHTTP(httpKeepAliveCert, "/readyz")},
		// The apiserver closes an anonymous HTTP/2 connection after one
		// request (UnauthenticatedHTTP2DOSMitigation, on since 1.29), so
		// this one pays a new TLS connection per check.
		{name: "h2-readyz", what: "HTTP/2 connection, anonymous `GET /readyz`", as: "reused", open: openHTTP(httpH2, "/readyz")},
		{name: "h2-readyz-cert", what: "kept-alive HTTP/2 connection, `GET /readyz` with the node's client certificate", as: "reused", open: openHTTP(httpH2Cert, "/readyz")},
		{name: "h2-ping", what: "kept-alive HTTP/2 connection, PING frame", open: openPing},
		{name: "tcp", what: "TCP connect + close", open: openTCP},
		{name: "watch", what: "idle watch of the `kubernetes` EndpointSlice (client-go informer, as the daemon's)", idle: true, open: openWatch},
		{name: "watch-renew", what: "idle watch as above, renewed every 10 s (each watch asks `timeoutSeconds=10`)", idle: true, open: openRenewingWatch},
		{name: "held", what: "idle kept-alive TLS connection, TCP keepalive every 15 s (no requests)", idle: true, open: openHeld},
	}
}

const noEtcdPath = "/readyz?exclude=etcd&exclude=etcd-readiness"

func probeName(p probe) string { return p.name }

// checkTimeout is the daemon's default health_timeout.
const checkTimeout = 3 * time.Second

type httpKind int

const (
	httpNew httpKind = iota
	httpResume
	httpKeepAlive
	httpKeepAliveCert
	httpH2
	httpH2Cert
)

type httpSession struct {
	client *http.Client
	url    string
	kind   httpKind
}

func openHTTP(kind httpKind, path string) func(context.Context, *env, int) (session, error) {
	return func(_ context.Context, e *env, node int) (session, error) {
		cfg := e.tlsConfig()

		if kind == httpKeepAliveCert || kind == httpH2Cert {
			cert, err := e.clientCert(node)
			if err != nil {
				return nil, err
			}

			cfg.Certificates = []tls.Certificate{cert}
		}

		var rt http.RoundTripper

		switch kind {
		case httpNew, httpResume:
			if kind == httpResume {
				cfg.ClientSessionCache = tls.NewLRUClientSessionCache(1)
			}

			rt = &http.Transport{TLSClientConfig: cfg, DisableKeepAlives: true}
		case httpKeepAlive, httpKeepAliveCert:
			// A non-nil, empty TLSNextProto keeps it at HTTP/1.1.
			rt = &http.Transport{TLSClientConfig: cfg, MaxIdleConnsPerHost: 1,
				TLSNextProto: map[string]func(string, *tls.Conn) http.RoundTripper{}}
		case httpH2, httpH2Cert:
			rt = &http2.Transport{TLSClientConfig: cfg}
		}

		return &httpSession{client: &http.Client{Transport: rt}, url: "https://" + e.apiAddr() + path, kind: kind}, nil
	}
}

func (h *httpSession) check(ctx context.Context) (bool, error) {
	reused := false
	trace := &httptrace.ClientTrace{GotConn: func(i httptrace.GotConnInfo) { reused = i.Reused }}

	req, err := http.NewRequestWithContext(httptrace.WithClientTrace(ctx, trace), http.MethodGet, h.url, nil)
	if err != nil {
		return false, err
	}

	resp, err := h.client.Do(req)
	if err != nil {
		return false, err
	}
	defer resp.Body.Close()

	body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	if resp.StatusCode != http.StatusOK || string(body) != "ok" {
		return false, fmt.Errorf("%s: %s %q", h.url, resp.Status, body)
	}

	switch h.kind {
	case httpResume:
		return resp.TLS != nil && resp.TLS.DidResume, nil
	case httpKeepAlive, httpKeepAliveCert:
		return reused && resp.ProtoMajor == 1, nil
	case httpH2, httpH2Cert:
		return reused && resp.ProtoMajor == 2, nil
	default:
		return true, nil
	}
}

func (h *httpSession) close() { h.client.CloseIdleConnections() }

type pingSession struct{ cc *http2.ClientConn }

func openPing(ctx context.Context, e *env, _ int) (session, error) {
	cfg := e.tlsConfig()
	cfg.NextProtos = []string{"h2"}

	d := tls.Dialer{Config: cfg}

	conn, err := d.DialContext(ctx, "tcp", e.apiAddr())
	if err != nil {
		return nil, err
	}

	if p := conn.(*tls.Conn).ConnectionState().NegotiatedProtocol; p != "h2" {
		conn.Close()

		return nil, fmt.Errorf("ALPN chose %q, not h2", p)
	}

	cc, err := (&http2.Transport{}).NewClientConn(conn)
	if err != nil {
		conn.Close()

		return nil, err
	}

	return &pingSession{cc: cc}, nil
}

func (p *pingSession) check(ctx context.Context) (bool, error) { return true, p.cc.Ping(ctx) }
func (p *pingSession) close()                                  { _ = p.cc.Close() }

type tcpSession struct{ addr string }

func openTCP(_ context.Context, e *env, _ int) (session, error) {
	return tcpSession{addr: e.apiAddr()}, nil
}

func (t tcpSession) check(ctx context.Context) (bool, error) {
	var d net.Dialer

	c, err := d.DialContext(ctx, "tcp", t.addr)
	if err != nil {
		return false, err
	}

	return true, c.Close()
}

func (tcpSession) close() {}

type heldSession struct{ conn *tls.Conn }

// openHeld makes one request, so the connection sits where a kept-alive
// check leaves it between checks (the server's idle state, 90 s timeout),
// then holds it.
func openHeld(ctx context.Context, e *env, _ int) (session, error) {
	cfg := e.tlsConfig()
	cfg.NextProtos = []string{"http/1.1"}
	d := tls.Dialer{NetDialer: &net.Dialer{KeepAlive: 15 * time.Second}, Config: cfg}

	conn, err := d.DialContext(ctx, "tcp", e.apiAddr())
	if err != nil {
		return nil, err
	}

	tc := conn.(*tls.Conn)
	if _, err := io.WriteString(tc, "GET /readyz HTTP/1.1\r\nHost: "+serverName+"\r\n\r\n"); err != nil {
		tc.Close()

		return nil, err
	}

	_ = tc.SetReadDeadline(time.Now().Add(checkTimeout))
	buf := make([]byte, 4096)

	if n, err := tc.Read(buf); err != nil || n < 12 || string(buf[9:12]) != "200" {
		tc.Close()

		return nil, fmt.Errorf("held connection: first answer %q: %v", buf[:n], err)
	}

	_ = tc.SetReadDeadline(time.Time{})

	return &heldSession{conn: tc}, nil
}

func (heldSession) check(context.Context) (bool, error) { return true, nil }
func (h *heldSession) close()                           { _ = h.conn.Close() }

// refResult is one reference row.
type refResult struct {
	probe     probe
	rate      float64 // checks per second asked for (0: idle probe)
	nodes     int
	checks    int64 // in the window
	errors    int64
	flagged   int64
	measured  framed
	firstErrs []string
}

// checksPerSec is the rate achieved in the window.
func (r refResult) checksPerSec() float64 { return float64(r.checks) / r.measured.secs }

// measureProbe runs s.nodes simulated nodes checking at rate checks/s in
// all (each node every nodes/rate seconds), or holding idle sessions.
func (e *env) measureProbe(ctx context.Context, b *testing.B, p probe, rate float64) refResult {
	b.Helper()

	r := refResult{probe: p, nodes: e.s.nodes}
	if p.idle {
		r.nodes = e.s.idle
	} else {
		r.rate = rate
	}

	b.Logf("reference %s at %.0f checks/s: %s", p.name, r.rate, p.what)

	var err error

	r.measured, err = e.meter.frame(ctx, b, e.s, e.s.window, func() (func() usage, error) {
		sessions := e.openSessions(ctx, b, p, r.nodes)
		run := newChecker(sessions, r.rate)

		return func() usage {
			// One whole interval first, so every node has started.
			time.Sleep(min(run.interval, 10*time.Second) + time.Second)

			c0, e0, f0 := run.checks.Load(), run.errors.Load(), run.flagged.Load()
			u := e.meter.over(ctx, b, e.s.window)
			r.checks, r.errors, r.flagged = run.checks.Load()-c0, run.errors.Load()-e0, run.flagged.Load()-f0

			run.stop()
			r.firstErrs = run.firstErrors()

			for _, s := range sessions {
				s.close()
			}

			return u
		}, nil
	})
	if err != nil {
		b.Fatal(err)
	}

	if r.errors > 0 {
		b.Errorf("%s: %d of %d checks failed, e.g. %v", p.name, r.errors, r.checks+r.errors, r.firstErrs)
	}

	b.Logf("reference %s: %d checks, %d %s, apiserver %.1f ms/s over idle %.1f / %.1f", p.name, r.checks, r.flagged, p.as,
		r.measured.net("apiserver")*1e3, r.measured.before["apiserver"]*1e3, r.measured.after["apiserver"]*1e3)

	return r
}

// openSessions opens every node's session, a few at a time.
func (e *env) openSessions(ctx context.Context, b *testing.B, p probe, n int) []session {
	b.Helper()

	ctx, cancel := context.WithTimeout(ctx, 2*time.Minute)
	defer cancel()

	sessions := make([]session, n)

	err := inParallel(n, 8, func(i int) (err error) {
		sessions[i], err = p.open(ctx, e, i)

		return err
	})
	if err != nil {
		for _, s := range sessions {
			if s != nil {
				s.close()
			}
		}

		b.Fatalf("%s: opening sessions: %v", p.name, err)
	}

	return sessions
}

// checker runs each session's checks on its own schedule: every interval,
// from a random phase, so the load is as even as a fleet's.
type checker struct {
	interval                time.Duration
	checks, errors, flagged atomic.Int64
	cancel                  context.CancelFunc
	wg                      sync.WaitGroup

	mu   sync.Mutex
	errs []string
}

func newChecker(sessions []session, rate float64) *checker {
	ctx, cancel := context.WithCancel(context.Background())
	c := &checker{cancel: cancel}

	if rate == 0 {
		return c
	}

	c.interval = time.Duration(float64(len(sessions)) / rate * float64(time.Second))

	for _, s := range sessions {
		phase := time.Duration(rand.Int64N(int64(c.interval)))

		c.wg.Go(func() { c.loop(ctx, s, phase) })
	}

	return c
}

func (c *checker) loop(ctx context.Context, s session, phase time.Duration) {
	next := time.Now().Add(phase)

	for {
		select {
		case <-ctx.Done():
			return
		case <-time.After(time.Until(next)):
		}

		next = next.Add(c.interval)
		cctx, cancel := context.WithTimeout(ctx, checkTimeout)
		flag, err := s.check(cctx)
		cancel()

		switch {
		case ctx.Err() != nil:
			return
		case err != nil:
			c.errors.Add(1)
			c.noteError(err)
		default:
			c.checks.Add(1)

			if flag {
				c.flagged.Add(1)
			}
		}
	}
}

func (c *checker) noteError(err error) {
	c.mu.Lock()
	defer c.mu.Unlock()

	if len(c.errs) < 3 {
		c.errs = append(c.errs, err.Error())
	}
}

func (c *checker) firstErrors() []string {
	c.mu.Lock()
	defer c.mu.Unlock()

	return c.errs
}

func (c *checker) stop() {
	c.cancel()
	c.wg.Wait()
}
