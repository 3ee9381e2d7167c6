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

// openOn opens connections through the proxy until one goes to addr, which
// it keeps; the others are closed at once. Where a connection went is told
// by the upstreams' active counts. With least-connections picks it lands
// on addr only while addr has no more connections than the others. Other
// connections must not come and go meanwhile.
func openOn(t *testing.T, c *cluster, r *running, addr string) *longLived {
	t.Helper()

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pki.CAPEM)

	tlsConfig := &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc", MinVersion: tls.VersionTLS12}

	for range 10 {
		before := r.active(addr)

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

		if r.active(addr) <= before {
			conn.Close()
			eventually(t, 5*time.Second, "the connection closed", func() bool { return r.active(addr) <= before })

			continue
		}

		l := &longLived{conn: conn, closed: make(chan time.Time, 1)}

		go func() {
			_, _ = io.Copy(io.Discard, br)
			l.closed <- time.Now()
		}()

		t.Cleanup(func() { conn.Close() })

		return l
	}

	t.Fatalf("10 connections went elsewhere than %s: %+v", addr, r.upstreams())

	return nil
}

// hangResult is what a hang under a client loop showed.
type hangResult struct {
	out, reset       time.Duration // 0: not within the wait
	requests, failed int
	moved            int // waited for the answer timeout and went elsewhere
	slowest          time.Duration
	controlClosed    bool // the long-lived connection to the healthy one
}

// hang SIGSTOPs server while a client makes a new connection through the
// proxy every 200 ms, and waits up to wait for its long-lived client to
// be reset; then it resumes the server. control, if not nil, is a
// long-lived connection to another upstream, which must stay open.
func hang(t *testing.T, c *cluster, r *running, server *kubeharness.APIServer, addr string, long, control *longLived, wait time.Duration) hangResult {
	t.Helper()

	client := c.httpsClient(t)
	proxy := r.d.ProxyAddr().String()
	stop := make(chan struct{})
	loop := clientLoop(func() (string, error) { return "", getVersion(client, proxy) }, 200*time.Millisecond, 500, stop)

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

func (h hangResult) String() string {
	show := func(d time.Duration) string {
		if d == 0 {
			return "not within the wait"
		}

		return d.Round(time.Millisecond).String()
	}

	return fmt.Sprintf("out of rotation: %s, its long-lived client reset: %s; %d new connections every 200 ms, %d failed, "+
		"%d waited for the answer timeout and moved (slowest %v)",
		show(h.out), show(h.reset), h.requests, h.failed, h.moved, h.slowest.Round(time.Millisecond))
}

// crashUnderLoad SIGKILLs the busiest of candidates while two clients make
// requests back to back, each on a new connection, and checks that none
// started after the crash fails.
func crashUnderLoad(t *testing.T, c *cluster, r *running, candidates []int) {
	t.Helper()

	client := c.httpsClient(t)
	proxy := r.d.ProxyAddr().String()
	version := func() (string, error) { return "", getVersion(client, proxy) }

	before, _ := r.connections()
	stop := make(chan struct{})
	loops := []<-chan []attempt{clientLoop(version, 0, 5000, stop), clientLoop(version, 0, 5000, stop)}

	eventually(t, 10*time.Second, "100 connections", func() bool { n, _ := r.connections(); return n >= before+100 })

	crashed, most := candidates[0], uint64(0)

	for _, i := range candidates {
		if n := r.upstreams()[all[i]].TotalConnections; n > most {
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
}

// hangAvoided hangs hung while it holds at least two connections more than
// ok, of the same latency tier: with least-connections picks no new
// connection goes to it.
func hangAvoided(t *testing.T, c *cluster, r *running, hung, ok int) {
	t.Helper()

	h, o := all[hung], all[ok]

	// The discovery watch is connected (it may have been on a crashed
	// one): the counts must not change while they are arranged.
	eventually(t, 20*time.Second, "the discovery watch connected, nothing else", func() bool { _, n := r.connections(); return n == 1 })

	// Connections to the healthy one are opened to tie the counts where
	// needed, and closed again.
	var onOK []*longLived
	for r.active(h) > r.active(o) {
		onOK = append(onOK, openOn(t, c, r, o))
	}

	long := openOn(t, c, r, h)
	for r.active(h) <= r.active(o) {
		openOn(t, c, r, h)
	}

	onOK = append(onOK, openOn(t, c, r, o))
	for _, l := range onOK {
		l.conn.Close()
		<-l.closed
	}

	eventually(t, 5*time.Second, "two connections more to the one to hang", func() bool { return r.active(h) >= r.active(o)+2 })
	t.Logf("%d connections to the one to hang, %d to the healthy one", r.active(h), r.active(o))

	res := hang(t, c, r, c.servers[hung], h, long, nil, 12*time.Second)
	t.Logf("hang, more connections than the healthy one: %v", res)

	if res.reset == 0 || res.reset > 10*time.Second {
		t.Errorf("the long-lived client of a hung API server that new connections avoid (it holds more "+
			"connections than the healthy one): %v, want it reset within 10 s. Only a check can notice it, "+
			"and the next is up to health_interval (2m) away", res)
	}
}

// hangChosen hangs whichever of a and b new connections go to: of the
// lower latency tier, or, in the same tier, with as many connections as
// the other (the picks then alternate).
func hangChosen(t *testing.T, c *cluster, r *running, a, b int) {
	t.Helper()

	if r.upstreams()[all[b]].Tier < r.upstreams()[all[a]].Tier {
		a, b = b, a
	}

	h, o := all[a], all[b]

	eventually(t, 20*time.Second, "the discovery watch connected, nothing else", func() bool { _, n := r.connections(); return n == 1 })

	long := openOn(t, c, r, h)

	var control *longLived

	if u := r.upstreams(); u[h].Tier == u[o].Tier {
		control = openOn(t, c, r, o)

		for r.active(h) < r.active(o) {
			openOn(t, c, r, h)
		}

		for r.active(o) < r.active(h) {
			openOn(t, c, r, o)
		}
	}

	t.Logf("%d connections to the one to hang, %d to the healthy one; tiers %d and %d",
		r.active(h), r.active(o), r.upstreams()[h].Tier, r.upstreams()[o].Tier)
	res := hang(t, c, r, c.servers[a], h, long, control, 15*time.Second)
	t.Logf("hang, new connections going to it: %v", res)

	switch {
	case res.out == 0 || res.out > 5*time.Second:
		t.Errorf("the hung API server out of rotation: %v, want within 5 s", res)
	case res.reset == 0 || res.reset > 10*time.Second:
		t.Errorf("its long-lived client reset: %v, want within 10 s", res)
	case res.controlClosed:
		t.Error("the long-lived connection to the healthy API server was closed too")
	}
}

// An API server crashes under a client loop: no connection started after
// the crash fails. One hangs (SIGSTOP: it accepts, never answers) while
// another is healthy and a client connects every 200 ms: it is out of
// rotation within 5 s and its long-lived clients are reset within 10 s,
// with the default settings. Twice: once while it holds more connections
// than the healthy one (with least-connections picks no new connection
// reaches it), once while it is the one new connections go to.
//
// Which API server plays which part follows the latency tiers their first
// checks gave them (on a busy host one may be slower than 10 ms): only one
// of the lowest tier receives new connections.
func TestCrashAndHangFailover(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	kc := c.kubeconfig(t)
	r := startDefaultDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = kc })

	eventually(t, 30*time.Second, "all three discovered and healthy", func() bool { return r.allHealthy(t, 3) == nil })

	lowest := func(among []int) []int {
		u := r.upstreams()
		tier := u[all[among[0]]].Tier

		for _, i := range among {
			tier = min(tier, u[all[i]].Tier)
		}

		var out []int

		for _, i := range among {
			if u[all[i]].Tier == tier {
				out = append(out, i)
			}
		}

		return out
	}

	bothHealthy := func(a, b int) {
		eventually(t, 40*time.Second, "both healthy again", func() bool {
			u := r.upstreams()
			return u[all[a]].Healthy && u[all[b]].Healthy
		})
	}

	others := func(i int) []int { return []int{(i + 1) % 3, (i + 2) % 3} }

	low := lowest([]int{0, 1, 2})
	if len(low) == 1 {
		// Only one receives new connections: it crashes first; the two
		// left share a tier.
		crashed := low[0]
		left := others(crashed)

		t.Run("crash", func(t *testing.T) { crashUnderLoad(t, c, r, low) })

		if r.upstreams()[all[left[0]]].Tier != r.upstreams()[all[left[1]]].Tier {
			t.Fatalf("three latency tiers: %+v; the test cannot arrange least-connections picks", r.upstreams())
		}

		t.Run("hang, more connections than the healthy one", func(t *testing.T) { hangAvoided(t, c, r, left[0], left[1]) })
		bothHealthy(left[0], left[1])
		t.Run("hang, new connections going to it", func(t *testing.T) { hangChosen(t, c, r, left[0], left[1]) })

		return
	}

	t.Run("hang, more connections than the healthy one", func(t *testing.T) { hangAvoided(t, c, r, low[0], low[1]) })
	bothHealthy(low[0], low[1])

	// The busiest of the lowest tier crashes, then the two left.
	var crashed int

	t.Run("crash", func(t *testing.T) {
		victims := lowest([]int{0, 1, 2})
		crashUnderLoad(t, c, r, victims)

		for _, i := range victims {
			if !r.upstreams()[all[i]].Healthy {
				crashed = i
			}
		}
	})

	left := others(crashed)
	t.Run("hang, new connections going to it", func(t *testing.T) { hangChosen(t, c, r, left[0], left[1]) })
}

// An API server started with --shutdown-delay-duration=10s is sent
// SIGTERM: it leaves the kubernetes EndpointSlice at once, turns its
// /readyz red and keeps serving for 10 s. With discovery on, it gets no new
// connection 2 s after the SIGTERM; without, only the periodic check
// (health_interval 2m) or its closing listener can tell: this measures it.
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
