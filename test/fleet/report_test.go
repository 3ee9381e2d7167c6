//go:build integration

package fleet

import (
	"fmt"
	"maps"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"time"
)

// report collects the results and renders them as Markdown.
type report struct {
	s        settings
	started  time.Time
	header   []string
	loadavg  [2]string // /proc/loadavg at the start and the end
	refs     []refResult
	fleets   []fleetResult
	census   censusResult
	finished time.Time
}

func newReport(s settings, e *env) *report {
	r := &report{s: s, started: e.started, loadavg: [2]string{loadavg(), ""}}
	r.header = []string{
		"daemon: `" + commandLine(s.daemon, "version") + "` (" + s.daemon + ")",
		"API server: `" + commandLine(filepath.Join(os.Getenv("KUBE_BINS"), "kube-apiserver"), "--version") +
			"`, one, RSA-2048 serving certificate and CA (as kubeadm makes them), etcd " +
			commandLine(filepath.Join(os.Getenv("KUBE_BINS"), "etcd"), "--version"),
		fmt.Sprintf("machine: %d CPUs, kernel %s, %s", runtime.NumCPU(), commandLine("uname", "-r"), runtime.Version()),
		fmt.Sprintf("settings: FLEET_NODES=%d FLEET_IDLE_NODES=%d FLEET_WINDOW=%v FLEET_DAEMON_WINDOW=%v FLEET_BASELINE=%v FLEET_SETTLE=%v FLEET_RATES=%v FLEET_CENSUS=%v FLEET_CENSUS_NODES=%d",
			s.nodes, s.idle, s.window, s.fleetWindow, s.baseline, s.settle, s.rates, s.census, s.censusN),
	}

	return r
}

// commandLine runs a command for a one-line answer (a version).
func commandLine(name string, args ...string) string {
	out, err := exec.Command(name, args...).Output()
	if err != nil {
		return "unknown (" + err.Error() + ")"
	}

	line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")

	return strings.Join(strings.Fields(line), " ")
}

func (r *report) addRef(x refResult)     { r.refs = append(r.refs, x) }
func (r *report) addFleet(x fleetResult) { r.fleets = append(r.fleets, x) }
func (r *report) finish() {
	r.finished = time.Now()
	r.loadavg[1] = loadavg()
}

// loadavg is the first three fields of /proc/loadavg: other work on the
// machine makes the apiserver's CPU time noisier.
func loadavg() string {
	raw, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "unknown"
	}

	return strings.Join(strings.Fields(string(raw))[:3], " ")
}

func (r *report) write(path string) error {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}

	return os.WriteFile(path, []byte(r.markdown()), 0o644)
}

// coreAt is the % of one core that cost µs per node per second makes at n
// nodes.
func coreAt(usPerNodeSec float64, n int) string {
	return fmt.Sprintf("%.1f %%", usPerNodeSec*float64(n)/1e4)
}

func ms(u usage, name string) string { return fmt.Sprintf("%.1f", u[name]*1e3) }

func (r *report) markdown() string {
	var b strings.Builder

	p := func(format string, a ...any) { fmt.Fprintf(&b, format+"\n", a...) }

	p("# What an idle fleet of extractedprism daemons costs a kube-apiserver")
	p("")
	p("Made by `make bench-fleet` (test/fleet), %s, in %v. See docs/fleet.md for the method and the model.",
		r.started.UTC().Format("2006-01-02 15:04 MST"), r.finished.Sub(r.started).Round(time.Second))
	p("")

	for _, h := range r.header {
		p("- %s", h)
	}

	p("- load average at the start: %s; at the end: %s", r.loadavg[0], r.loadavg[1])

	p("")
	p("CPU is the apiserver's utime + stime from /proc/PID/stat over each window, minus the mean of the idle windows")
	p("before and after it (shown, in ms of CPU per second). 1 %% of a core = 10,000 µs per second.")

	if len(r.refs) > 0 {
		r.refTable(p)
	}

	if len(r.fleets) > 0 {
		r.fleetTable(p)
		r.trafficTable(p)
	}

	if r.census.steady != nil {
		r.censusTable(p)
	}

	return b.String()
}

func (r *report) refTable(p func(string, ...any)) {
	p("")
	p("## Reference ways of checking (%d simulated nodes, %d for the idle rows, each its own connection)", r.s.nodes, r.s.idle)
	p("")
	p("Per check, and per node per API server at the daemon's default interval of 5 s (0.2 checks/s); idle rows per")
	p("node held open. %% of a core per API server when every node checks every API server (a watch: divide by the")
	p("number of API servers, each node watches one).")
	p("")
	p("| way | checks/s | µs per check | µs/node/s | 1,000 nodes | 5,000 nodes | etcd µs/node/s | idle before/after ms/s | notes |")
	p("|---|---:|---:|---:|---:|---:|---:|---|---|")

	for _, x := range r.refs {
		m := x.measured
		api, etcd := m.net("apiserver")*1e6, m.net("etcd")*1e6

		var (
			rate, per = "—", "—"
			usPerNode float64
			note      string
		)

		switch {
		case x.probe.idle:
			usPerNode = api / float64(x.nodes)
		case x.checks == 0:
			usPerNode = math.NaN()
		default:
			cps := x.checksPerSec()
			perCheck := api / cps
			rate, per = fmt.Sprintf("%.1f", cps), fmt.Sprintf("%.0f", perCheck)
			usPerNode = perCheck / 5

			if x.probe.as != "" && x.checks > 0 {
				note = fmt.Sprintf("%.0f %% %s", 100*float64(x.flagged)/float64(x.checks), x.probe.as)
			}
		}

		if x.errors > 0 {
			note = strings.TrimPrefix(note+fmt.Sprintf("; %d errors", x.errors), "; ")
		}

		p("| %s | %s | %s | %.1f | %s | %s | %.1f | %s / %s | %s |", x.probe.what, rate, per, usPerNode,
			coreAt(usPerNode, 1000), coreAt(usPerNode, 5000), etcd/float64(x.nodes),
			ms(m.before, "apiserver"), ms(m.after, "apiserver"), note)
	}
}

func (r *report) fleetTable(p func(string, ...any)) {
	p("")
	p("## The daemon fleet (%d real daemons, idle, one API server)", r.s.nodes)
	p("")
	p("Checks counted by the apiserver (`GET /readyz`); µs per check is the fleet's whole cost over them.")
	p("")
	p("| variant | µs/node/s | 1,000 nodes | 5,000 nodes | checks/s | µs per check | etcd µs/node/s | daemon's own CPU | idle before/after ms/s |")
	p("|---|---:|---:|---:|---:|---:|---:|---:|---|")

	per := map[string]float64{}

	for _, x := range r.fleets {
		if x.skipped != "" {
			p("| %s | not measured: %s | | | | | | | |", x.variant.what, strings.ReplaceAll(x.skipped, "\n", " "))

			continue
		}

		m := x.measured
		api := m.net("apiserver") * 1e6 / float64(x.nodes)
		per[x.variant.name] = api

		checks, perCheck := "—", "—"
		if n := x.traffic.requests["GET /readyz 200"]; n > 0 {
			cps := n / x.traffic.secs
			checks, perCheck = fmt.Sprintf("%.1f", cps), fmt.Sprintf("%.0f", m.net("apiserver")*1e6/cps)
		}

		p("| %s | %.0f | %s | %s | %s | %s | %.1f | %.3f %% | %s / %s |", x.variant.what, api, coreAt(api, 1000), coreAt(api, 5000),
			checks, perCheck, m.net("etcd")*1e6/float64(x.nodes), x.daemonCPU*100, ms(m.before, "apiserver"), ms(m.after, "apiserver"))
	}

	split := func(what, a, b string) {
		va, okA := per[a]
		vb, okB := per[b]

		if okA && okB {
			p("| %s | %.0f | %s | %s | | | | | |", what, va-vb, coreAt(va-vb, 1000), coreAt(va-vb, 5000))
		}
	}

	split("→ discovery (default − no-discovery)", "default", "no-discovery")
	split("→ discovery (tcp − tcp-no-discovery)", "tcp", "tcp-no-discovery")
	split("→ https checks over tcp checks (no-discovery − tcp-no-discovery)", "no-discovery", "tcp-no-discovery")
}

func (r *report) trafficTable(p func(string, ...any)) {
	p("")
	p("## What reached the API server in each fleet window, per daemon per minute")
	p("")
	p("From the apiserver's `apiserver_request_total` (a watch counts when it ends; the apiserver's own requests, e.g. its")
	p("lease and its informers' watches, are in it too and shrink per daemon as the fleet grows),")
	p("`apiserver_watch_events_total` for EndpointSlices, and the namespace's TCP PassiveOpens (connections accepted by")
	p("the apiserver and by the daemons' own proxies, through which discovery connects). The bench's own `/metrics`")
	p("scrape is one `GET` per window.")
	p("")
	p("| variant | requests (verb resource code: per daemon per minute) | watch events | TCP connections accepted | watches open at the end | apiserver log lines in the window |")
	p("|---|---|---:|---:|---:|---:|")

	for _, x := range r.fleets {
		if x.skipped != "" {
			continue
		}

		t := x.traffic
		perMin := func(v float64) float64 { return v / float64(x.nodes) / t.secs * 60 }

		var reqs []string
		for _, k := range slices.Sorted(maps.Keys(t.requests)) {
			reqs = append(reqs, fmt.Sprintf("%s: %.3f", k, perMin(t.requests[k])))
		}

		p("| %s | %s | %.2f | %.2f | %.0f | %.0f |", x.variant.name, strings.Join(reqs, "<br>"), perMin(t.watchEvents), perMin(t.passiveOpens), t.watches, t.logLines)
	}
}

func (r *report) censusTable(p func(string, ...any)) {
	c := r.census
	mins := c.window.Minutes()

	p("")
	p("## Census: every request of %d default daemons, from the audit log", c.nodes)
	p("")
	p("The apiserver restarted with an audit policy at level Metadata; each request counted once. \"At start\" is")
	p("per daemon until the fleet was up and %v settled; \"steady\" per daemon per minute over the next %v.",
		r.s.settle, c.window.Round(time.Second))
	p("")
	p("| request → answer (who, user agent) | at start, per daemon | steady, per daemon per minute | example |")
	p("|---|---:|---:|---|")

	kinds := slices.Sorted(maps.Keys(c.steady))
	for k := range c.atStart {
		if !slices.Contains(kinds, k) {
			kinds = append(kinds, k)
		}
	}

	n := float64(c.nodes)

	for _, k := range kinds {
		p("| `%s` | %.2f | %.3f | `%s` |", k, float64(c.atStart[k])/n, float64(c.steady[k])/n/mins, c.examples[k])
	}

	p("")
	p("TCP connections accepted in the namespace while steady: %.2f per daemon per minute.", c.passiveOpens/n/mins)

	if len(c.watchLifetimes) > 0 {
		l := c.watchLifetimes
		p("Watches that ended while steady: %d, lasting %v to %v (median %v).", len(l),
			l[0].Round(time.Second), l[len(l)-1].Round(time.Second), l[len(l)/2].Round(time.Second))
	} else {
		p("No watch ended while steady.")
	}
}
