package daemon

import (
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"go.uber.org/zap/zaptest"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/status"
)

// start runs a daemon for endpoints on kernel-chosen ports of health (which
// may be IPv6) and returns it with its health server's base URL.
func start(t *testing.T, healthAddr string, endpoints ...string) (*Daemon, string) {
	t.Helper()

	cfg := config.Default()
	cfg.Endpoints = endpoints
	cfg.HealthAddress = healthAddr
	cfg.HealthPort = 0 // kernel-chosen; validation is not under test here
	cfg.BindAddress = "127.0.5.1"
	cfg.BindPort = 0
	// One check round, at start, that tests wait for (waitFirstCheck):
	// nothing depends on a timer firing in time on a loaded machine, and
	// the liveness limit (three intervals without a round) is hours away.
	cfg.HealthInterval = time.Hour
	cfg.HealthTimeout = 5 * time.Second
	cfg.StateDirectory = t.TempDir()

	d, err := New(Options{Config: cfg, Logger: zaptest.NewLogger(t)})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)

	go func() { done <- d.Run(ctx) }()

	t.Cleanup(func() {
		cancel()

		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})

	return d, "http://" + d.HealthAddr().String()
}

func get(t *testing.T, url string) (int, string) {
	t.Helper()

	resp, err := http.Get(url) //nolint:noctx // test
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	body, _ := io.ReadAll(resp.Body)

	return resp.StatusCode, string(body)
}

// waitFirstCheck waits for the health-check round that Run starts at once,
// after which /readyz answers from its verdicts; there is no other round
// (the interval is an hour).
func waitFirstCheck(t *testing.T, d *Daemon, base string) {
	t.Helper()

	// Run serves the health listener (bound by New, so this request waits
	// in its backlog) only after it has started the balancer.
	get(t, base+"/healthz")

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if err := d.probe.WaitFirstRound(ctx); err != nil {
		t.Fatal(err)
	}
}

func TestHealthEndpoints(t *testing.T) {
	t.Parallel()

	up, err := net.Listen("tcp", "127.0.5.2:0")
	if err != nil {
		t.Fatal(err)
	}
	defer up.Close()

	for _, healthAddr := range []string{"127.0.5.1", "::1"} {
		t.Run(healthAddr, func(t *testing.T) {
			d, base := start(t, healthAddr, up.Addr().String(), "127.0.5.3:7")

			waitFirstCheck(t, d, base)

			if code, body := get(t, base+"/healthz"); code != http.StatusOK || body != "ok\n" {
				t.Fatalf("/healthz = %d %q", code, body)
			}

			if code, body := get(t, base+"/readyz"); code != http.StatusOK || body != "ok\n" {
				t.Fatalf("/readyz = %d %q with one upstream up", code, body)
			}

			_, body := get(t, base+"/status")

			var doc status.Document
			if err := json.Unmarshal([]byte(body), &doc); err != nil {
				t.Fatalf("/status is not the document: %v\n%s", err, body)
			}

			if !doc.Ready || len(doc.Upstreams) != 2 || doc.Upstreams[0].Address != up.Addr().String() ||
				doc.Upstreams[0].Sources[0] != "static" {
				t.Fatalf("/status: %s", body)
			}
		})
	}
}

func TestReadyzWhenAllUpstreamsAreDown(t *testing.T) {
	t.Parallel()

	d, base := start(t, "127.0.5.1", "127.0.5.4:7", "127.0.5.5:7")

	waitFirstCheck(t, d, base)

	if code, body := get(t, base+"/readyz"); code != http.StatusServiceUnavailable || body != "not ok: no usable upstream\n" {
		t.Fatalf("/readyz = %d %q with every upstream down, want 503", code, body)
	}

	// Liveness is about the daemon, not the API servers.
	if code, _ := get(t, base+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d with upstreams down, want 200", code)
	}
}

// echoServer is a real upstream that echoes; close() kills it.
func echoServer(t *testing.T, addr string) net.Listener {
	t.Helper()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(func() { ln.Close() })

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}

			go func() { defer c.Close(); _, _ = io.Copy(c, c) }()
		}
	}()

	return ln
}

func exchange(t *testing.T, proxy string) {
	t.Helper()

	c, err := net.DialTimeout("tcp", proxy, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()

	_ = c.SetDeadline(time.Now().Add(10 * time.Second))

	if _, err := c.Write([]byte("ping")); err != nil {
		t.Fatal(err)
	}

	buf := make([]byte, 4)
	if _, err := io.ReadFull(c, buf); err != nil {
		t.Fatalf("no echo through the proxy: %v", err)
	}
}

// metricValue scrapes /metrics and returns the sample of name whose labels
// include want.
func metricValue(t *testing.T, base, name string, want map[string]string) (float64, bool) {
	t.Helper()

	_, body := get(t, base+"/metrics")

	parser := expfmt.NewTextParser(model.UTF8Validation)

	families, err := parser.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics does not parse: %v", err)
	}

	fam, ok := families[name]
	if !ok {
		return 0, false
	}

	for _, m := range fam.GetMetric() {
		labels := map[string]string{}
		for _, l := range m.GetLabel() {
			labels[l.GetName()] = l.GetValue()
		}

		if !matches(labels, want) {
			continue
		}

		switch {
		case m.GetCounter() != nil:
			return m.GetCounter().GetValue(), true
		case m.GetGauge() != nil:
			return m.GetGauge().GetValue(), true
		case m.GetHistogram() != nil:
			return float64(m.GetHistogram().GetSampleCount()), true
		}
	}

	return 0, false
}

func matches(labels, want map[string]string) bool {
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}

	return true
}

// /metrics moves with real traffic and a failover.
func TestMetricsDuringFailover(t *testing.T) {
	t.Parallel()

	a := echoServer(t, "127.0.5.6:0")
	b := echoServer(t, "127.0.5.7:0")
	// The one check round, at start, sees b alive, and no later round can
	// take b out before the dials after its death find it refusing.
	d, base := start(t, "127.0.5.1", a.Addr().String(), b.Addr().String())

	waitFirstCheck(t, d, base)

	for range 5 {
		exchange(t, d.ProxyAddr().String())
	}

	// The upstream that dies must be one new connections go to: b, unless
	// a slow check on a busy host put it in a slower latency tier than a,
	// which then takes every connection.
	victim, survivor := b, a
	if tierOf(t, d, a.Addr().String()) < tierOf(t, d, b.Addr().String()) {
		victim, survivor = a, b
	}

	victimAddr, survivorAddr := victim.Addr().String(), survivor.Addr().String()
	victim.Close() // the next dials to it are refused and retried on the survivor

	for range 6 {
		exchange(t, d.ProxyAddr().String())
	}

	for _, c := range []struct {
		name   string
		labels map[string]string
		check  func(float64) bool
		what   string
	}{
		{"extractedprism_connections_accepted_total", nil, func(v float64) bool { return v >= 11 }, ">= 11"},
		{"extractedprism_upstream_connections_total", map[string]string{"upstream": survivorAddr}, func(v float64) bool { return v >= 6 }, ">= 6"},
		{"extractedprism_upstream_dial_errors_total", map[string]string{"upstream": victimAddr, "reason": "refused"}, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"extractedprism_upstream_healthy", map[string]string{"upstream": victimAddr}, func(v float64) bool { return v == 0 }, "0"},
		{"extractedprism_upstream_healthy", map[string]string{"upstream": survivorAddr}, func(v float64) bool { return v == 1 }, "1"},
		{"extractedprism_dial_retries_total", nil, func(v float64) bool { return v >= 1 }, ">= 1"},
		{"extractedprism_connections_rejected_total", nil, func(v float64) bool { return v == 0 }, "0"},
		{"extractedprism_upstream_sent_bytes_total", map[string]string{"upstream": survivorAddr}, func(v float64) bool { return v >= 24 }, ">= 24"},
		{"extractedprism_dial_duration_seconds", nil, func(v float64) bool { return v >= 12 }, ">= 12 observations"},
		{"extractedprism_build_info", nil, func(v float64) bool { return v == 1 }, "1"},
		{"go_goroutines", nil, func(v float64) bool { return v > 0 }, "> 0"},
	} {
		v, ok := metricValue(t, base, c.name, c.labels)
		if !ok || !c.check(v) {
			t.Errorf("%s%v = %v (present %v), want %s", c.name, c.labels, v, ok, c.what)
		}
	}
}

func tierOf(t *testing.T, d *Daemon, addr string) int {
	t.Helper()

	for _, u := range d.ups.Status() {
		if u.Address == addr {
			return u.Tier
		}
	}

	t.Fatalf("no upstream %s in the status", addr)

	return 0
}
