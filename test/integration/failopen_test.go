//go:build integration

package integration

import (
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// etcd stalls under three API servers: every /readyz fails, so every
// upstream fails its checks at once. The API servers still serve what needs
// no etcd and keep their watches open, so the proxy fails open: it keeps
// every connection and sends new ones on, and says so; when etcd returns
// the watch delivers what happened after.
//
// Two daemons share the cluster. One has the default settings: its next
// check (health_interval 5m) comes after the stall, and the API servers
// keep answering, so there is no data-path evidence either: it never
// notices, which is the best outcome for a stall this short. The other
// checks every 3 s, only so that each upstream has failed a check within
// the 10 s held (a check at most 3.6 s after its /readyz failed, then up
// to health_timeout, 3 s), and fail-open is seen and reported.
func TestEtcdStallFailsOpen(t *testing.T) {
	t.Parallel() // on a port of its own; it mostly waits

	c := startCluster(t, kubeharness.APIServerOptions{Port: 6444}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	ups := c.addrs()
	kc := c.kubeconfig(t)
	discover := func(cfg *config.Config) {
		cfg.Kubeconfig = kc // discovery on; the https checks trust the kubeconfig's CA
	}
	dflt := startDefaultDaemon(t, ups[0], discover)
	fast := startDefaultDaemon(t, ups[0], func(cfg *config.Config) {
		discover(cfg)
		cfg.HealthInterval = 3 * time.Second
	})
	daemons := []*running{dflt, fast}
	stopTogether(t, daemons...)

	var watches []*kubeharness.Watch

	for _, r := range daemons {
		eventually(t, 30*time.Second, "all three discovered and healthy", func() bool {
			u := r.upstreams()
			return len(u) == 3 && u[ups[0]].Healthy && u[ups[1]].Healthy && u[ups[2]].Healthy
		})

		if !logged(r.logs, "https health checks") {
			t.Fatal("the daemon does not use https checks")
		}

		watches = append(watches, watchConfigMaps(t, c.proxiedAdmin(r)))
	}

	if err := c.etcd.Pause(); err != nil {
		t.Fatal(err)
	}

	stalled := time.Now() // the harness resumes it at cleanup if the test ends first

	// The stall must be real: every API server's own /readyz fails.
	for _, s := range c.servers {
		eventually(t, 40*time.Second, s.IP+"'s /readyz failing", func() bool { return c.readyzOf(t.Context(), s) != nil })
	}

	t.Logf("every API server's /readyz failed %v after etcd stopped", time.Since(stalled).Round(time.Millisecond))

	var (
		seen       failOpenSeen
		failOpenAt time.Duration
		dfltOpen   bool
	)

	client := c.httpsClient(t)
	requests := holdWithTraffic(t, 10*time.Second, func(i int) {
		for j, r := range daemons {
			if err := getVersion(client, r.d.ProxyAddr().String()); err != nil {
				t.Fatalf("daemon %d: a new connection through the proxy, %d into the hold: %v", j, i, err)
			}

			if ended(watches[j]) {
				t.Fatalf("daemon %d: the proxied watch ended during the stall: %v", j, watches[j].Err())
			}
		}

		f := fast.failOpen(t)
		seen.status = seen.status || f.status
		seen.metric = seen.metric || f.metric
		seen.notified = seen.notified || f.notified

		if failOpenAt == 0 && f.status {
			failOpenAt = time.Since(stalled)
		}

		dfltOpen = dfltOpen || dflt.d.Status().FailOpen
	})

	t.Logf("during the stall: %d new connections through each proxy, all GET /version 200; the 3 s daemon failed open %v "+
		"after etcd stopped; the default daemon failed open: %v", requests, failOpenAt.Round(time.Millisecond), dfltOpen)

	if !seen.all() {
		t.Errorf("fail-open during the stall: /status %v, metric %v, STATUS= %v; want all", seen.status, seen.metric, seen.notified)
	}

	if err := c.etcd.Resume(); err != nil {
		t.Fatal(err)
	}

	resumed := time.Now()

	for _, s := range c.servers {
		eventually(t, 30*time.Second, s.IP+"'s /readyz ok again", func() bool { return c.readyzOf(t.Context(), s) == nil })
	}

	t.Logf("every API server's /readyz ok %v after etcd resumed", time.Since(resumed).Round(time.Millisecond))

	eventually(t, 40*time.Second, "fail-open over", func() bool { return fast.failOpen(t).none() })
	t.Logf("fail-open over %v after etcd resumed", time.Since(resumed).Round(time.Millisecond))

	c.createConfigMap(t, "after-the-stall")

	for j, r := range daemons {
		t.Logf("daemon %d: the ConfigMap created after the stall arrived on the proxied watch after %v",
			j, waitAdded(t, watches[j], "after-the-stall", 15*time.Second).Round(time.Millisecond))

		if n := r.closedByProxy(t); n != 0 {
			t.Errorf("daemon %d: the proxy closed %v client connections", j, n)
		}
	}

	if n := fast.logs.FilterMessageSnippet("failing open").Len(); n != 1 {
		t.Errorf("fail-open logged %d times, want once:\n%s", n, strings.Join(messages(fast.logs.All()), "\n"))
	}
}

// The check CA verifies no API server (rotated, or the wrong file): every
// check fails from the first, on every node at once, while the API servers
// are fine. The proxy fails open from the start and says so; traffic and
// watches flow as if nothing were wrong, and nothing is reset although
// every upstream keeps failing its checks.
func TestUntrustedCheckCAFailsOpen(t *testing.T) {
	t.Parallel() // on a port of its own; it mostly waits

	c := startCluster(t, kubeharness.APIServerOptions{Port: 6445}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	ups := c.addrs()
	kc := c.kubeconfig(t)
	unrelated := kubeharness.NewPKI(t, t.TempDir(), kubeharness.DefaultSANs(kubeharness.IPv4Addr1))
	start := time.Now()
	r := startDefaultDaemon(t, ups[0], func(cfg *config.Config) {
		cfg.Kubeconfig = kc // discovery on, trusting the right CA
		cfg.HealthCAFile = unrelated.CACertFile
	})

	eventually(t, 10*time.Second, "fail-open with all three discovered, each failing its check on the certificate", func() bool {
		u := r.upstreams()
		for _, a := range ups {
			if !strings.Contains(u[a].LastError, "certificate") {
				return false
			}
		}

		return r.failOpen(t).all()
	})
	t.Logf("failing open %v after the start; %s", time.Since(start).Round(time.Millisecond), r.d.Status().Summary())

	w := watchConfigMaps(t, c.proxiedAdmin(r))
	client := c.httpsClient(t)
	proxy := r.d.ProxyAddr().String()

	requests := holdWithTraffic(t, 10*time.Second, func(i int) {
		if err := getVersion(client, proxy); err != nil {
			t.Fatalf("a new connection through the proxy, %d into the hold: %v", i, err)
		}

		if ended(w) {
			t.Fatalf("the proxied watch ended: %v", w.Err())
		}

		if f := r.failOpen(t); !f.all() {
			t.Fatalf("fail-open not reported throughout (step %d): %+v", i, f)
		}
	})

	c.createConfigMap(t, "under-an-untrusted-ca")
	t.Logf("%d new connections through the proxy, all GET /version 200; the ConfigMap created then arrived on the proxied watch after %v",
		requests, waitAdded(t, w, "under-an-untrusted-ca", 15*time.Second).Round(time.Millisecond))

	for _, a := range ups {
		if u := r.upstreams()[a]; u.Healthy || u.Score > -2 {
			t.Errorf("%s: healthy %v, score %v: want failing, two checks or more in a row", a, u.Healthy, u.Score)
		}
	}

	if n := r.closedByProxy(t); n != 0 {
		t.Errorf("the proxy closed %v client connections", n)
	}

	// No upstream ever passed a check here, so nothing may say one did.
	if logged(r.logs, "fail-open ended") {
		t.Errorf("the daemon said fail-open ended, yet no upstream ever passed a check:\n%s",
			strings.Join(messages(linesSince(r.logs, start, zapcore.InfoLevel)), "\n"))
	}

	if n := r.logs.FilterMessageSnippet("failing open").Len(); n != 1 {
		t.Errorf("fail-open logged %d times, want once", n)
	}
}

// While every upstream fails its checks (here: the check CA verifies none),
// an upstream newly listed (a reload here; discovery the same) has passed
// no check yet. It must neither end fail-open nor count as the healthy
// upstream that the clients of a failing one could be reset to: if it is
// hung, those clients would be cut and sent to it for nothing.
func TestUncheckedNewcomerEndsNoFailOpen(t *testing.T) {
	t.Parallel() // on a port of its own; it mostly waits

	c := startCluster(t, kubeharness.APIServerOptions{Port: 6447}, false, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, kubeharness.IPv4Addr3)
	ups := c.addrs()
	unrelated := kubeharness.NewPKI(t, t.TempDir(), kubeharness.DefaultSANs(kubeharness.IPv4Addr1))
	r := startDefaultDaemon(t, ups[0], func(cfg *config.Config) {
		cfg.Endpoints = ups[:2]
		cfg.EnableDiscovery = false
		cfg.HealthCAFile = unrelated.CACertFile
	})

	eventually(t, 15*time.Second, "failing open, each upstream having failed two checks in a row", func() bool {
		u := r.upstreams()
		return r.d.Status().FailOpen && u[ups[0]].Score <= -2 && u[ups[1]].Score <= -2
	})

	w := watchConfigMaps(t, c.proxiedAdmin(r))

	// The newcomer hangs: it accepts, and answers nothing, checks included.
	if err := c.servers[2].Pause(); err != nil {
		t.Fatal(err)
	}

	since := time.Now()
	r.reload(t, func(cfg *config.Config) { cfg.Endpoints = ups })

	// Two clients while its first check runs (health_timeout, 3 s): they go
	// to it, get no answer within 1 s and move to the failing upstreams.
	client := c.httpsClient(t)
	errs := make(chan error, 2)

	for range 2 {
		go func() { errs <- getVersion(client, r.d.ProxyAddr().String()) }()
	}

	for range 2 {
		if err := <-errs; err != nil {
			t.Errorf("a client while the newcomer was unchecked: %v", err)
		}
	}

	eventually(t, 10*time.Second, "the newcomer's first check failed", func() bool { return r.upstreams()[ups[2]].LastError != "" })

	if ended(w) {
		t.Errorf("the proxied watch was closed: %v", w.Err())
	}

	if n := r.closedByProxy(t); n != 0 {
		t.Errorf("the proxy closed %v client connections while no upstream passed its checks", n)
	}

	if logged(r.logs, "fail-open ended") {
		t.Errorf("the daemon said fail-open ended, yet no upstream ever passed a check:\n%s",
			strings.Join(messages(linesSince(r.logs, since, zapcore.InfoLevel)), "\n"))
	}
}
