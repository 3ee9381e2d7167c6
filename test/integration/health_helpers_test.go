//go:build integration

package integration

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// Helpers of the health-model tests (issue 14): failopen_test.go,
// badclients_test.go and health_failover_test.go run the daemon against
// real API servers and etcd with its default health settings, unless a
// test says why not. Tests that mostly wait run in parallel, each on an API server
// port of its own; the ones that measure failover times run alone.

const configMaps = "/api/v1/namespaces/default/configmaps"

// addrs are the API servers' addresses, host:port, in start order.
func (c *cluster) addrs() []string {
	out := make([]string, 0, len(c.servers))
	for _, s := range c.servers {
		out = append(out, net.JoinHostPort(s.IP, strconv.Itoa(s.Port)))
	}

	return out
}

// proxiedAdmin talks to the API through the proxy as the admin, checking
// the certificate like kubelet would with tls-server-name.
func (c *cluster) proxiedAdmin(r *running) *kubeharness.Client {
	return c.pki.Client("https://"+r.d.ProxyAddr().String(), c.pki.Admin, "kubernetes.default.svc")
}

// readyzOf asks an API server itself, not through the proxy: 200 or an
// error.
func (c *cluster) readyzOf(ctx context.Context, a *kubeharness.APIServer) error {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()

	_, err := c.pki.Client(a.URL(), kubeharness.TokenUser{}, "").Do(ctx, http.MethodGet, "/readyz", "", nil)

	return err
}

// getVersion is GET /version through the proxy (on a new connection with
// httpsClient): an API server serves it without etcd.
func getVersion(client *http.Client, proxy string) error {
	resp, err := client.Get("https://" + proxy + "/version")
	if err != nil {
		return err
	}
	defer resp.Body.Close()

	_, _ = io.Copy(io.Discard, resp.Body)

	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("GET /version: HTTP %d", resp.StatusCode)
	}

	return nil
}

// watchConfigMaps lists the ConfigMaps of "default" through client and
// watches them from there, for up to 10 minutes server-side.
func watchConfigMaps(t *testing.T, client *kubeharness.Client) *kubeharness.Watch {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	var list struct {
		Metadata struct {
			ResourceVersion string `json:"resourceVersion"`
		} `json:"metadata"`
	}

	if err := client.GetJSON(ctx, configMaps, &list); err != nil {
		t.Fatal(err)
	}

	w, err := client.Watch(t.Context(), configMaps, list.Metadata.ResourceVersion, 600)
	if err != nil {
		t.Fatal(err)
	}

	t.Cleanup(w.Close)

	return w
}

// createConfigMap creates a ConfigMap in "default" straight at an API
// server, not through the proxy.
func (c *cluster) createConfigMap(t *testing.T, name string) {
	t.Helper()

	ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
	defer cancel()

	if err := c.admin.Create(ctx, fmt.Appendf(nil,
		`{"apiVersion":"v1","kind":"ConfigMap","metadata":{"name":%q,"namespace":"default"}}`, name)); err != nil {
		t.Fatal(err)
	}
}

// waitAdded waits for the ADDED event of the ConfigMap name on w and
// returns how long it took.
func waitAdded(t *testing.T, w *kubeharness.Watch, name string, within time.Duration) time.Duration {
	t.Helper()

	start := time.Now()
	deadline := time.NewTimer(within)
	defer deadline.Stop()

	for {
		select {
		case ev, ok := <-w.Events:
			if !ok {
				t.Fatalf("the watch ended before %s was added: %v", name, w.Err())
			}

			var obj struct {
				Metadata struct {
					Name string `json:"name"`
				} `json:"metadata"`
			}

			if err := json.Unmarshal(ev.Object, &obj); err != nil {
				t.Fatalf("watch event %s: %v", ev.Type, err)
			}

			if ev.Type == "ADDED" && obj.Metadata.Name == name {
				return time.Since(start)
			}
		case <-deadline.C:
			t.Fatalf("no ADDED event for %s on the watch within %s", name, within)
		}
	}
}

func ended(w *kubeharness.Watch) bool {
	select {
	case <-w.Done():
		return true
	default:
		return false
	}
}

// failOpenSeen is what the daemon says of fail-open: /status, the
// extractedprism_fail_open metric and the STATUS= sent to systemd.
type failOpenSeen struct{ status, metric, notified bool }

func (r *running) failOpen(t *testing.T) failOpenSeen {
	t.Helper()

	return failOpenSeen{
		status:   r.d.Status().FailOpen,
		metric:   r.metric(t, "extractedprism_fail_open") == 1,
		notified: strings.Contains(r.states.status(), "FAILING OPEN"),
	}
}

func (f failOpenSeen) all() bool { return f.status && f.metric && f.notified }

func (f failOpenSeen) none() bool { return !f.status && !f.metric && !f.notified }

// closedByProxy is how many client connections the proxy closed because
// their upstream failed its checks or left the set.
func (r *running) closedByProxy(t *testing.T) float64 {
	t.Helper()

	return r.metric(t, `extractedprism_connections_closed_total{reason="upstream_failed"}`) +
		r.metric(t, `extractedprism_connections_closed_total{reason="upstream_removed"}`)
}

// linesSince returns the daemon's log lines at level or above since start.
func linesSince(logs *observer.ObservedLogs, start time.Time, level zapcore.Level) []observer.LoggedEntry {
	var out []observer.LoggedEntry

	for _, e := range logs.All() {
		if !e.Time.Before(start) && e.Level >= level {
			out = append(out, e)
		}
	}

	return out
}

func messages(entries []observer.LoggedEntry) []string {
	out := make([]string, 0, len(entries))
	for _, e := range entries {
		out = append(out, fmt.Sprintf("%s %s %s: %s %v", e.Time.Format("15:04:05.000"), e.Level, e.LoggerName, e.Message, e.ContextMap()))
	}

	return out
}

// holdWithTraffic calls step every 200 ms for d, with the number of the
// step, and returns how many steps it made.
func holdWithTraffic(t *testing.T, d time.Duration, step func(i int)) int {
	t.Helper()

	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()

	n := 0
	for end := time.Now().Add(d); time.Now().Before(end); <-tick.C {
		step(n)
		n++
	}

	return n
}

// stopTogether stops daemons at once: each waits up to its drain timeout
// for the connections still open.
func stopTogether(t *testing.T, daemons ...*running) {
	t.Cleanup(func() {
		var wg sync.WaitGroup
		for _, r := range daemons {
			wg.Go(r.stop)
		}

		wg.Wait()
	})
}

// connections sums the upstreams' counters: connections made to them in
// all, and open now.
func (r *running) connections() (total uint64, active int64) {
	for _, u := range r.d.Status().Upstreams {
		total += u.TotalConnections
		active += u.ActiveConnections
	}

	return total, active
}

// allHealthy reports whether every listed upstream is usable and passed its
// last check, and the daemon's /readyz answers 200, and if not, why.
func (r *running) allHealthy(t *testing.T, want int) error {
	t.Helper()

	doc := r.d.Status()
	if len(doc.Upstreams) != want {
		return fmt.Errorf("%d upstreams listed, want %d", len(doc.Upstreams), want)
	}

	for _, u := range doc.Upstreams {
		if !u.Healthy || u.Score < 1 {
			return fmt.Errorf("%s unhealthy or not checked yet: score %v, %s", u.Address, u.Score, u.LastError)
		}
	}

	resp, err := http.Get("http://" + r.d.HealthAddr().String() + "/readyz") //nolint:noctx // test
	if err != nil {
		return err
	}

	resp.Body.Close()

	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("the daemon's /readyz: HTTP %d", resp.StatusCode)
	}

	return nil
}

func (r *running) active(addr string) int64 { return r.upstreams()[addr].ActiveConnections }
