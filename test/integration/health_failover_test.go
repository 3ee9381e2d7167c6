//go:build integration

package integration

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"io"
	"net"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// attempt is one request of a client loop.
type attempt struct {
	start, end time.Time
	body       string
	err        error
}

// clientLoop makes requests with do, each on a new connection, every
// `every` (0: back to back), until stop is closed or limit requests are
// made.
func clientLoop(do func() (string, error), every time.Duration, limit int, stop <-chan struct{}) <-chan []attempt {
	out := make(chan []attempt, 1)

	go func() {
		var got []attempt

		for range limit {
			a := attempt{start: time.Now()}
			a.body, a.err = do()
			a.end = time.Now()
			got = append(got, a)

			select {
			case <-stop:
				out <- got

				return
			case <-time.After(max(every-a.end.Sub(a.start), 0)):
			}
		}

		out <- got
	}()

	return out
}

// waitCount waits for cond like eventually and returns how long it took.
func waitCount(t *testing.T, within time.Duration, what string, cond func() bool) time.Duration {
	t.Helper()

	start := time.Now()
	eventually(t, within, what, cond)

	return time.Since(start)
}

// longLived is a TLS connection through the proxy that has had one answer
// and then stays idle, like a client's kept-alive connection.
type longLived struct {
	conn   net.Conn
	closed chan time.Time // when the proxy closed it
}

// openTo opens connections through the proxy until one goes to one of
// addrs, which it keeps and names; the others are closed at once. Where a
// connection went is told by the upstreams' active counts, so other
// connections must not come and go meanwhile. The picks decide where it
// lands: the lowest latency tier, then the fewest connections.
func openTo(t *testing.T, c *cluster, r *running, addrs ...string) (*longLived, string) {
	t.Helper()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pki.CAPEM)

	tlsConfig := &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc", MinVersion: tls.VersionTLS12}

	for range 10 {
		before := r.upstreams()

		conn, err := tls.Dial("tcp", r.d.ProxyAddr().String(), tlsConfig)
		if err != nil {
			t.Fatal(err)
		}

		if _, err := io.WriteString(conn, "GET /version HTTP/1.1\r\nHost: kubernetes\r\n\r\n"); err != nil {
			t.Fatal(err)
		}

		br := bufio.NewReader(conn)

		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}

		_, _ = io.Copy(io.Discard, resp.Body)
		resp.Body.Close()

		var to string

		for a, u := range r.upstreams() {
			if u.ActiveConnections > before[a].ActiveConnections {
				to = a
			}
		}

		if !slices.Contains(addrs, to) {
			conn.Close()
			eventually(t, 5*time.Second, "the connection closed", func() bool { return r.active(to) <= before[to].ActiveConnections })

			continue
		}

		l := &longLived{conn: conn, closed: make(chan time.Time, 1)}

		go func() {
			_, _ = io.Copy(io.Discard, br)
			l.closed <- time.Now()
		}()

		t.Cleanup(func() { conn.Close() })

		return l, to
	}

	t.Fatalf("10 connections went elsewhere than %v: %+v", addrs, r.upstreams())

	return nil, ""
}

// ask has the connection ask GET /version every `every` until stop, as a
// client that sends all its requests over one connection does (kubelet);
// the answers are read by openTo's reader.
func (l *longLived) ask(every time.Duration, stop <-chan struct{}) {
	go func() {
		tick := time.NewTicker(every)
		defer tick.Stop()

		for {
			select {
			case <-stop:
				return
			case <-tick.C:
			}

			if _, err := io.WriteString(l.conn, "GET /version HTTP/1.1\r\nHost: kubernetes\r\n\r\n"); err != nil {
				return
			}
		}
	}()
}

// hangResult is what a hang under a client loop showed.
type hangResult struct {
	out, reset       time.Duration // 0: not within the wait
	requests, failed int
	moved            int // waited for the answer timeout and went elsewhere
	slowest          time.Duration
	controlClosed    bool // the long-lived connection to the healthy one
}

// hang SIGSTOPs the API server at addr while a client makes a new
// connection through the proxy every `every` (none if 0), and waits up to
// wait for its long-lived client to be reset; then it resumes the server.
// control, if not nil, is a long-lived connection to another upstream,
// which must stay open.
func hang(t *testing.T, c *cluster, r *running, addr string, long, control *longLived, every, wait time.Duration) hangResult {
	t.Helper()

	server := c.servers[slices.Index(all, addr)]
	client := c.httpsClient(t)
	proxy := r.d.ProxyAddr().String()
	stop := make(chan struct{})
	loop := closedLoop()

	if every > 0 {
		loop = clientLoop(func() (string, error) { return "", getVersion(client, proxy) }, every, 500, stop)
	}

	if err := server.Pause(); err != nil {
		t.Fatal(err)
	}

	paused := time.Now()

	var res hangResult

	deadline := time.After(wait)
	tick := time.NewTicker(50 * time.Millisecond)

	defer tick.Stop()

	for res.reset == 0 {
		select {
		case at := <-long.closed:
			res.reset = at.Sub(paused)
		case <-tick.C:
			if res.out == 0 && !r.upstreams()[addr].Healthy {
				res.out = time.Since(paused)
			}

			continue
		case <-deadline:
		}

		break
	}

	close(stop)

	if err := server.Resume(); err != nil {
		t.Fatal(err)
	}

	for _, a := range <-loop {
		res.requests++

		if a.err != nil {
			res.failed++

			t.Errorf("a new connection %v after the hang failed: %v", a.start.Sub(paused).Round(time.Millisecond), a.err)
		}

		if d := a.end.Sub(a.start); d > 900*time.Millisecond {
			res.moved++
			res.slowest = max(res.slowest, d)
		}
	}

	if control != nil {
		select {
		case <-control.closed:
			res.controlClosed = true
		default:
		}
	}

	return res
}

// closedLoop is a client loop that made no request.
func closedLoop() <-chan []attempt {
	out := make(chan []attempt, 1)
	out <- nil

	return out
}

// late says what took longer than the issue allows: out of rotation
// within 5 s, its long-lived clients reset within 10 s.
func (h hangResult) late() error {
	switch {
	case h.out == 0 || h.out > 5*time.Second:
		return fmt.Errorf("the hung API server out of rotation: %v, want within 5 s", h)
	case h.reset == 0 || h.reset > 10*time.Second:
		return fmt.Errorf("its long-lived client reset: %v, want within 10 s", h)
	}

	return nil
}

func (h hangResult) String() string {
	show := func(d time.Duration) string {
		if d == 0 {
			return "not within the wait"
		}

		return d.Round(time.Millisecond).String()
	}

	return fmt.Sprintf("out of rotation: %s, its long-lived client reset: %s; %d new connections, %d failed, "+
		"%d waited for the answer timeout and moved (slowest %v)",
		show(h.out), show(h.reset), h.requests, h.failed, h.moved, h.slowest.Round(time.Millisecond))
}

// crashUnderLoad SIGKILLs the API server that takes most of the traffic
// while two clients make requests back to back, each on a new connection,
// checks that none started after the crash fails, and returns which one
// crashed.
func crashUnderLoad(t *testing.T, c *cluster, r *running) int {
	t.Helper()

	client := c.httpsClient(t)
	proxy := r.d.ProxyAddr().String()
	version := func() (string, error) { return "", getVersion(client, proxy) }

	before, _ := r.connections()
	stop := make(chan struct{})
	loops := []<-chan []attempt{clientLoop(version, 0, 5000, stop), clientLoop(version, 0, 5000, stop)}

	eventually(t, 10*time.Second, "100 connections", func() bool { n, _ := r.connections(); return n >= before+100 })

	crashed, most := 0, uint64(0)

	for i, a := range all {
		if n := r.upstreams()[a].TotalConnections; n > most {
			most, crashed = n, i
		}
	}

	if err := c.servers[crashed].Kill(); err != nil {
		t.Fatal(err)
	}

	killed := time.Now()
	down := waitCount(t, 5*time.Second, "the crashed API server out of rotation", func() bool { return !r.upstreams()[all[crashed]].Healthy })

	// The traffic after the crash is what is measured: 300 connections.
	sent, _ := r.connections()
	eventually(t, 20*time.Second, "300 connections after the crash", func() bool { n, _ := r.connections(); return n >= sent+300 })
	close(stop)

	var total, after, failedAfter, failedInFlight int

	for _, l := range loops {
		for _, a := range <-l {
			total++

			switch {
			case a.start.After(killed):
				after++

				if a.err != nil {
					failedAfter++

					t.Errorf("a connection started %v after the crash failed: %v", a.start.Sub(killed).Round(time.Millisecond), a.err)
				}
			case a.end.After(killed) && a.err != nil:
				failedInFlight++
			}
		}
	}

	spread := map[string]string{}
	for a, st := range r.upstreams() {
		spread[a] = fmt.Sprintf("%d connections, tier %d", st.TotalConnections, st.Tier)
	}

	t.Logf("crash: %d requests on new connections, %d started after the SIGKILL of %s, %d of those failed; %d in flight "+
		"at the crash failed; the crashed API server was out of rotation %v after it; %v",
		total, after, all[crashed], failedAfter, failedInFlight, down.Round(time.Millisecond), spread)

	return crashed
}

// hangWithTraffic hangs whichever of addrs new connections go to, while a
// client connects every 200 ms. If the other is of the same latency tier,
// it gets a long-lived connection too (a control, which must stay open),
// and both as many connections: the picks then alternate.
func hangWithTraffic(t *testing.T, c *cluster, r *running, addrs []string) {
	t.Helper()

	eventually(t, 20*time.Second, "the discovery watch connected, nothing else", func() bool { _, n := r.connections(); return n == 1 })

	long, h := openTo(t, c, r, addrs...)
	o := addrs[0]

	if o == h {
		o = addrs[1]
	}

	var control *longLived

	if u := r.upstreams(); u[h].Tier == u[o].Tier {
		control, _ = openTo(t, c, r, o)

		for r.active(h) < r.active(o) {
			openTo(t, c, r, h)
		}

		for r.active(o) < r.active(h) {
			openTo(t, c, r, o)
		}
	}

	t.Logf("%d connections to the one to hang, %d to the healthy one; latency tiers %d and %d",
		r.active(h), r.active(o), r.upstreams()[h].Tier, r.upstreams()[o].Tier)
	res := hang(t, c, r, h, long, control, 200*time.Millisecond, 15*time.Second)
	t.Logf("hang, a new connection every 200 ms: %v", res)

	switch {
	case res.late() != nil:
		t.Error(res.late())
	case res.controlClosed:
		t.Error("the long-lived connection to the healthy API server was closed too")
	}
}

// An API server crashes under a client loop: no connection started after
// the crash fails. One hangs (SIGSTOP: it accepts, never answers) while
// another is healthy: it is out of rotation within 5 s and its long-lived
// clients are reset within 10 s, with the default settings. Twice: with a
// client connecting every 200 ms (the figures of the issue), and with no
// new connection at all, as on a node whose clients keep theirs open; the
// same as when the picks send the new ones elsewhere (it holds more
// connections, or its last check put it in a slower latency tier).
func TestCrashAndHangFailover(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	kc := c.kubeconfig(t)
	r := startDefaultDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = kc })

	eventually(t, 30*time.Second, "all three discovered and healthy", func() bool { return r.allHealthy(t, 3) == nil })

	crashed := -1

	t.Run("crash", func(t *testing.T) { crashed = crashUnderLoad(t, c, r) })

	if crashed < 0 {
		t.FailNow()
	}

	left := []string{all[(crashed+1)%3], all[(crashed+2)%3]}

	t.Run("hang, a new connection every 200 ms", func(t *testing.T) { hangWithTraffic(t, c, r, left) })

	bothHealthy := func() {
		eventually(t, 40*time.Second, "both healthy again", func() bool {
			u := r.upstreams()
			return u[left[0]].Healthy && u[left[1]].Healthy
		})
	}

	bothHealthy()
	t.Run("hang, no new connection, its long-lived client asking every 200 ms", func(t *testing.T) { hangAsking(t, c, r, left) })
	bothHealthy()

	// A hung API server that no client sends anything to is noticed by its
	// next check only (health_interval, 5m): no test here, as no bound of
	// 10 s holds then; the README and docs/fleet.md say so.
}

// hangAsking hangs whichever of addrs a long-lived connection goes to
// while that connection asks every 200 ms and no new connection is made:
// the silence of its upstream is all there is to notice.
func hangAsking(t *testing.T, c *cluster, r *running, addrs []string) {
	t.Helper()

	eventually(t, 20*time.Second, "the discovery watch connected, nothing else", func() bool { _, n := r.connections(); return n == 1 })

	long, h := openTo(t, c, r, addrs...)
	stop := make(chan struct{})
	long.ask(200*time.Millisecond, stop)

	res := hang(t, c, r, h, long, nil, 0, 15*time.Second)
	close(stop)
	t.Logf("hang, no new connection, a long-lived client asking every 200 ms: %v", res)

	if err := res.late(); err != nil {
		t.Error(err)
	}
}

// An API server started with --shutdown-delay-duration=10s is sent
// SIGTERM: it leaves the kubernetes EndpointSlice at once, turns its
// /readyz red and keeps serving for 10 s. With discovery on, it gets no new
// connection 2 s after the SIGTERM; without, only the periodic check
// (health_interval 5m) or its closing listener can tell: this measures it.
func TestGracefulShutdownWithDefaults(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
	stopping := kubeharness.StartAPIServer(t, c.etcd, kubeharness.IPv4Addr3,
		kubeharness.APIServerOptions{PKI: c.pki, ExtraArgs: []string{"--shutdown-delay-duration=10s"}})

	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()

	if _, err := c.admin.WaitForKubernetesSlice(ctx, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3); err != nil {
		t.Fatal(err)
	}

	kc := c.kubeconfig(t)
	with := startDefaultDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = kc })
	without := startDefaultDaemon(t, all[0], func(cfg *config.Config) {
		cfg.Endpoints = all
		cfg.EnableDiscovery = false
		cfg.HealthCAFile = c.pki.CACertFile
	})
	stopTogether(t, with, without)

	for _, r := range []*running{with, without} {
		eventually(t, 30*time.Second, "all three healthy", func() bool { return r.allHealthy(t, 3) == nil })
	}

	client := c.httpsClient(t)
	stop := make(chan struct{})
	loops := map[string]<-chan []attempt{}

	for name, r := range map[string]*running{"with discovery": with, "without discovery": without} {
		proxy := r.d.ProxyAddr().String()
		loops[name] = clientLoop(func() (string, error) { return readyz(client, proxy) }, 50*time.Millisecond, 1000, stop)
	}

	// Only upstreams of the lowest latency tier get new connections: on a
	// busy host a first check over 10 ms puts one in a higher tier.
	tiers := map[string]int{}
	for a, u := range without.upstreams() {
		tiers[a] = u.Tier
	}

	if err := stopping.Terminate(); err != nil {
		t.Fatal(err)
	}

	term := time.Now()
	removed := waitCount(t, 5*time.Second, "the stopping API server removed by discovery", func() bool {
		_, listed := with.upstreams()[all[2]]
		return !listed
	})

	if err := stopping.Wait(40 * time.Second); err != nil {
		t.Fatal(err)
	}

	exited := time.Since(term)

	// Traffic after the exit too: 20 more connections through each.
	for _, r := range []*running{with, without} {
		sent, _ := r.connections()
		eventually(t, 10*time.Second, "traffic after the exit", func() bool { n, _ := r.connections(); return n >= sent+20 })
	}

	close(stop)

	for name, l := range loops {
		var hits, failed int

		var last time.Duration

		attempts := <-l
		for _, a := range attempts {
			switch {
			case a.err != nil:
				failed++

				t.Errorf("%s: a request %v after the SIGTERM failed: %v", name, a.start.Sub(term).Round(time.Millisecond), a.err)
			case strings.Contains(a.body, "shutdown"): // its /readyz, red: the stopping API server answered
				hits++
				last = max(last, a.start.Sub(term))
			}
		}

		lastHit := "none"
		if hits > 0 {
			lastHit = "the last " + last.Round(time.Millisecond).String()
		}

		t.Logf("%s: %d requests on new connections every 50 ms, %d failed; %d went to the stopping API server, %s "+
			"after the SIGTERM (it exited %v after it)", name, len(attempts), failed, hits, lastHit, exited.Round(time.Millisecond))

		if name == "with discovery" && last > 2*time.Second {
			t.Errorf("with discovery, the stopping API server got a new connection %v after the SIGTERM, want none after 2 s", last)
		}
	}

	t.Logf("with discovery, the stopping API server left the upstream set %v after the SIGTERM; latency tiers without "+
		"discovery: %v", removed.Round(time.Millisecond), tiers)
}
