//go:build integration

// Package fleet measures what an idle fleet of extractedprism daemons costs
// a real kube-apiserver: every node runs the daemon, so what one daemon sends,
// 5,000 nodes send to every API server at once.
//
// BenchmarkFleet starts etcd and one kube-apiserver (an RSA-2048 serving
// certificate, as kubeadm makes it) in the private network namespace of
// hack/netns-run.sh, then measures the apiserver's CPU time (utime + stime
// from /proc/PID/stat) while
//
//   - simulated nodes check it in each of the reference ways (a new TLS
//     connection and GET /readyz, TLS resumption, kept-alive HTTP/1.1, HTTP/2,
//     HTTP/2 PING, TCP connect, an idle watch, an idle held connection), and
//   - N real daemons (the built binary, default settings, discovery on with a
//     client-certificate kubeconfig and the shipped RBAC, the CA given) sit
//     idle, each on its own loopback address, in several variants of the
//     settings that split their cost into checks and discovery.
//
// Each measured window is framed by idle windows, before and after, whose
// mean is subtracted. A last phase restarts the apiserver with an audit log
// and counts, by kind, every request the daemons send per minute.
//
// Run it with `make bench-fleet` (see docs/fleet.md); the report goes to
// bench/results/fleet.md. FLEET_DAEMON names the daemon binary to measure,
// so a build of another commit can be measured with this harness.
package fleet

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"
)

// settings are read from the environment (FLEET_*), so `make bench-fleet`
// can pass them through; see docs/fleet.md.
type settings struct {
	daemon string        // FLEET_DAEMON: the extractedprism binary
	nodes  int           // FLEET_NODES: daemons, and simulated nodes per reference row
	idle   int           // FLEET_IDLE_NODES: simulated nodes of the idle rows (watch, held)
	window time.Duration // FLEET_WINDOW: one measured window of a reference row
	// FLEET_DAEMON_WINDOW: one measured window of a fleet variant
	fleetWindow time.Duration
	baseline    time.Duration // FLEET_BASELINE: one idle window
	settle      time.Duration // FLEET_SETTLE: after the fleet is up, before its window
	rates       []float64     // FLEET_RATES: checks per second of the reference rows
	phases      []string      // FLEET_PHASES: any of refs, fleet, census
	probes      []string      // FLEET_PROBES: reference rows by name (see probes)
	variants    []string      // FLEET_VARIANTS: fleet variants by name (see variants)
	census      time.Duration // FLEET_CENSUS: how long the audited fleet runs
	censusN     int           // FLEET_CENSUS_NODES: daemons in the audited fleet
	out         string        // FLEET_OUT: the report (Markdown)
}

func loadSettings(tb testing.TB) settings {
	tb.Helper()

	s := settings{
		daemon:      envOr("FLEET_DAEMON", "../../bin/extractedprism"),
		nodes:       envInt(tb, "FLEET_NODES", 100),
		idle:        envInt(tb, "FLEET_IDLE_NODES", 500),
		window:      envDuration(tb, "FLEET_WINDOW", 30*time.Second),
		fleetWindow: envDuration(tb, "FLEET_DAEMON_WINDOW", 60*time.Second),
		baseline:    envDuration(tb, "FLEET_BASELINE", 15*time.Second),
		settle:      envDuration(tb, "FLEET_SETTLE", 15*time.Second),
		phases:      envList("FLEET_PHASES", "refs,fleet,census"),
		variants:    envList("FLEET_VARIANTS", strings.Join(named(variants(), variantName), ",")),
		probes:      envList("FLEET_PROBES", strings.Join(named(probes(), probeName), ",")),
		census:      envDuration(tb, "FLEET_CENSUS", 4*time.Minute),
		censusN:     envInt(tb, "FLEET_CENSUS_NODES", 20),
		out:         envOr("FLEET_OUT", "../../bench/results/fleet.md"),
	}

	for _, r := range envList("FLEET_RATES", "20,200") {
		f, err := strconv.ParseFloat(r, 64)
		if err != nil || f <= 0 {
			tb.Fatalf("FLEET_RATES: %q is not a positive number", r)
		}

		s.rates = append(s.rates, f)
	}

	abs, err := filepath.Abs(s.daemon)
	if err != nil {
		tb.Fatal(err)
	}

	s.daemon = abs

	if s.idle < 1 || s.idle > 5000 {
		tb.Fatalf("FLEET_IDLE_NODES=%d: between 1 and 5000", s.idle)
	}

	if s.nodes < 1 || s.nodes > maxNodes {
		tb.Fatalf("FLEET_NODES=%d: between 1 and %d (each daemon is ~20 MiB, each node a loopback address)", s.nodes, maxNodes)
	}

	return s
}

func (s settings) has(phase string) bool {
	for _, p := range s.phases {
		if p == phase {
			return true
		}
	}

	return false
}

func envOr(name, def string) string {
	if v := os.Getenv(name); v != "" {
		return v
	}

	return def
}

func envList(name, def string) []string {
	var out []string

	for _, v := range strings.Split(envOr(name, def), ",") {
		if v = strings.TrimSpace(v); v != "" {
			out = append(out, v)
		}
	}

	return out
}

func envInt(tb testing.TB, name string, def int) int {
	tb.Helper()

	v, err := strconv.Atoi(envOr(name, strconv.Itoa(def)))
	if err != nil {
		tb.Fatalf("%s: %v", name, err)
	}

	return v
}

func envDuration(tb testing.TB, name string, def time.Duration) time.Duration {
	tb.Helper()

	v, err := time.ParseDuration(envOr(name, def.String()))
	if err != nil || v <= 0 {
		tb.Fatalf("%s: want a positive duration such as 30s: %v", name, err)
	}

	return v
}

// BenchmarkFleet is the whole measurement; run it once (-benchtime 1x).
func BenchmarkFleet(b *testing.B) {
	s := loadSettings(b)

	if _, err := os.Stat(s.daemon); err != nil && s.has("fleet") {
		b.Fatalf("FLEET_DAEMON: %v (build it with `make build`)", err)
	}

	cluster := startEnv(b, s)
	rep := newReport(s, cluster)

	defer func() {
		if err := rep.write(s.out); err != nil {
			b.Error(err)
		}

		b.Logf("report: %s", s.out)
	}()

	ctx := context.Background()

	if s.has("refs") {
		for _, rate := range s.rates {
			for _, p := range pick(b, "FLEET_PROBES", probes(), probeName, s.probes) {
				if p.idle && rate != s.rates[0] {
					continue // idle rows do not depend on the rate
				}

				rep.addRef(cluster.measureProbe(ctx, b, p, rate))
			}
		}
	}

	if s.has("fleet") {
		for _, v := range pick(b, "FLEET_VARIANTS", variants(), variantName, s.variants) {
			rep.addFleet(cluster.measureFleet(ctx, b, v))
		}
	}

	if s.has("census") {
		rep.census = cluster.census(ctx, b)
	}

	rep.finish()
	b.Log("\n" + rep.markdown())
}

// maxNodes bounds the fleet: 127.0.1.1-127.0.4.250 hold 1,000 daemons, and
// 1,000 daemons take ~20 GiB.
const maxNodes = 1000

// nodeAddr is node i's own loopback address (i from 0).
func nodeAddr(i int) string {
	return "127.0." + strconv.Itoa(1+i/250) + "." + strconv.Itoa(1+i%250)
}
