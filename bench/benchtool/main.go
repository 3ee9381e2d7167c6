// Command benchtool is the benchmark harness behind bench/run.sh: it runs the
// upstreams (`benchtool upstream`) and drives every measurement
// (`benchtool run`). Standard library only.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"
)

func main() {
	if len(os.Args) < 2 {
		fmt.Fprintln(os.Stderr, "usage: benchtool upstream|run [flags]")
		os.Exit(2)
	}

	var err error

	switch os.Args[1] {
	case "upstream":
		err = upstreamMain(os.Args[2:])
	case "run":
		err = runMain(os.Args[2:])
	default:
		err = fmt.Errorf("unknown command %q", os.Args[1])
	}

	if err != nil {
		fmt.Fprintln(os.Stderr, "benchtool:", err)
		os.Exit(1)
	}
}

type options struct {
	ep, haproxy, nginx, nginxModule string
	skip                            map[string]string // peer -> why it is not measured

	rounds    int
	idle      int
	idleTrips int
	only      string
	deadline  time.Duration
	tmp       string
	out       string
	pidfile   string
	portBase  int

	blocks                   int
	bulkDur, latDur, rateDur time.Duration
	latMax                   int
	rateWorkers              int
	foWorkers                int
	foPeriod                 time.Duration
	foPre, foPost            time.Duration
}

type stringList map[string]string

func (s stringList) String() string { return fmt.Sprint(map[string]string(s)) }
func (s stringList) Set(v string) error {
	k, why, _ := strings.Cut(v, "=")
	s[k] = why

	return nil
}

func runMain(args []string) error {
	o := options{skip: map[string]string{}}
	fs := flag.NewFlagSet("run", flag.ExitOnError)
	fs.StringVar(&o.ep, "extractedprism", "bin/extractedprism", "extractedprism binary")
	fs.StringVar(&o.haproxy, "haproxy", "", "haproxy binary (empty: not measured)")
	fs.StringVar(&o.nginx, "nginx", "", "nginx binary (empty: not measured)")
	fs.StringVar(&o.nginxModule, "nginx-stream-module", "/usr/lib/nginx/modules/ngx_stream_module.so", "nginx stream module")
	fs.Var(stringList(o.skip), "skip", "peer=reason: a peer that could not be set up, and why (repeatable)")
	fs.IntVar(&o.rounds, "rounds", 5, "rounds; every proxy is measured once per round, in rotating order")
	fs.IntVar(&o.idle, "idle", 5000, "idle connections for the memory and fd figures")
	fs.IntVar(&o.idleTrips, "idle-round-trips", 1, "64 B round trips on each idle connection before it is left idle")
	fs.StringVar(&o.only, "only", "", "comma-separated proxies to measure (direct is always measured); empty: all")
	fs.DurationVar(&o.deadline, "deadline", 8*time.Minute, "no new round is started that would end after this")
	fs.StringVar(&o.tmp, "tmp", "", "work directory (configs, sockets, logs)")
	fs.StringVar(&o.out, "out", "bench/results", "where latest.md and latest.json go")
	fs.StringVar(&o.pidfile, "pidfile", "", "live child pids are kept here for the caller's exit trap")
	fs.IntVar(&o.portBase, "port-base", 17443, "upstreams listen on 127.0.0.2-4:BASE, proxies on 127.0.0.1:BASE+2, +102, +202")
	fs.IntVar(&o.blocks, "blocks", 4, "throughput, latency and rate are measured in this many blocks per round, the proxies taking turns block by block")
	fs.DurationVar(&o.bulkDur, "bulk", 600*time.Millisecond, "single-stream throughput: one block")
	fs.DurationVar(&o.latDur, "latency", 500*time.Millisecond, "request/response latency: one block at most this long")
	fs.IntVar(&o.latMax, "latency-n", 8000, "request/response latency: one block at most this many round trips")
	fs.DurationVar(&o.rateDur, "rate", time.Second, "new-connection rate: one block")
	fs.IntVar(&o.rateWorkers, "rate-workers", 32, "new-connection rate: workers")
	fs.IntVar(&o.foWorkers, "failover-workers", 16, "failover: workers")
	fs.DurationVar(&o.foPeriod, "failover-period", 4*time.Millisecond, "failover: each worker starts one connection per period")
	fs.DurationVar(&o.foPre, "failover-pre", time.Second, "failover: load before the kill")
	fs.DurationVar(&o.foPost, "failover-post", 2500*time.Millisecond, "failover: load after the kill")
	_ = fs.Parse(args)

	if o.tmp == "" {
		return errors.New("--tmp is required")
	}

	h := &harness{o: o, began: time.Now()}

	logdir := filepath.Join(o.tmp, "logs")
	if err := os.MkdirAll(logdir, 0o755); err != nil {
		return err
	}

	h.procs = newProcs(o.pidfile, logdir)
	defer h.procs.stopAll()

	// On a signal: stop every child, then exit.
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM, syscall.SIGHUP)

	go func() {
		sig := <-sigs

		fmt.Fprintf(os.Stderr, "benchtool: %v; stopping children\n", sig)
		h.procs.stopAll()
		os.Exit(130)
	}()

	return h.run()
}

type harness struct {
	o      options
	procs  *procs
	began  time.Time
	self   string
	ups    []string
	upKids []*child
	notify *notifyListener
	defs   []*proxyDef
	dead   map[string]string // proxy -> why it stopped being measured

}

func (h *harness) run() error {
	o := h.o

	self, err := os.Executable()
	if err != nil {
		return err
	}

	h.self = self
	h.dead = map[string]string{}

	p := ports{Upstream: o.portBase, EP: o.portBase + 2, HAProxy: o.portBase + 102, Nginx: o.portBase + 202}
	h.ups = upstreamAddrs(3, p.Upstream)

	// Everything must be free before we start.
	for _, a := range append(append([]string{}, h.ups...),
		fmt.Sprintf("127.0.0.1:%d", p.EP), fmt.Sprintf("127.0.0.1:%d", p.EP+1),
		fmt.Sprintf("127.0.0.1:%d", p.HAProxy), fmt.Sprintf("127.0.0.1:%d", p.Nginx)) {
		ln, err := net.Listen("tcp", a)
		if err != nil {
			return fmt.Errorf("%s is not free (set BENCH_PORT_BASE): %w", a, err)
		}

		_ = ln.Close()
	}

	machine := describeMachine(o)
	fmt.Fprintf(os.Stderr, "machine: %s, %d cores, kernel %s, load %s\n", machine.CPUModel, machine.NProc, machine.Kernel, machine.LoadStart)

	for i := range h.ups {
		c, err := h.startUpstream(i)
		if err != nil {
			return err
		}

		h.upKids = append(h.upKids, c)
	}

	h.notify, err = listenNotify(filepath.Join(o.tmp, "notify.sock"))
	if err != nil {
		return err
	}
	defer h.notify.close()

	cfgdir := filepath.Join(o.tmp, "conf")
	if err := os.MkdirAll(cfgdir, 0o755); err != nil {
		return err
	}

	h.defs = []*proxyDef{{Name: "direct"}}

	if d, err := extractedprismDef(o.ep, cfgdir, p, h.ups); err == nil {
		h.defs = append(h.defs, d)
	} else {
		return err
	}

	if o.haproxy != "" {
		d, err := haproxyDef(o.haproxy, cfgdir, p, h.ups)
		if err != nil {
			return err
		}

		h.defs = append(h.defs, d)
	}

	if o.nginx != "" {
		d, err := nginxDef(o.nginx, o.nginxModule, cfgdir, p, h.ups)
		if err != nil {
			return err
		}

		h.defs = append(h.defs, d)
	}

	if o.only != "" {
		want := map[string]bool{"direct": true}
		for _, n := range strings.Split(o.only, ",") {
			want[strings.TrimSpace(n)] = true
		}

		h.defs = slices.DeleteFunc(h.defs, func(d *proxyDef) bool { return !want[d.Name] })
	}

	var (
		results   []measurement
		roundDur  time.Duration
		roundsRun int
	)

	for r := range o.rounds {
		if r > 0 && time.Since(h.began)+roundDur+roundDur/5 > o.deadline {
			fmt.Fprintf(os.Stderr, "stopping after %d rounds: another would pass the %s deadline\n", r, o.deadline)

			break
		}

		rs := time.Now()
		got := h.round(r)

		for _, m := range got {
			fmt.Fprintf(os.Stderr, "round %d: %-14s %s\n", r+1, m.Proxy, m.brief())
		}

		results = append(results, got...)

		roundDur = time.Since(rs)
		roundsRun = r + 1
	}

	machine.LoadEnd = loadavg()
	rep := buildReport(machine, o, h.defs, results, roundsRun, h.dead, time.Since(h.began))

	h.procs.stopAll()

	return rep.write(o.out)
}

func (h *harness) startUpstream(i int) (*child, error) {
	c, err := h.procs.start(fmt.Sprintf("upstream%d", i+1), []string{h.self, "upstream", "--addr", h.ups[i]}, nil, true, nil)
	if err != nil {
		return nil, err
	}

	if err := waitDial(h.ups[i], 5*time.Second); err != nil {
		return nil, fmt.Errorf("upstream %s did not come up: %w", h.ups[i], err)
	}

	return c, nil
}

// restartUpstreams brings back any upstream the failover test killed.
func (h *harness) restartUpstreams() bool {
	restarted := false

	for i, c := range h.upKids {
		if !c.exited() {
			continue
		}

		restarted = true

		nc, err := h.startUpstream(i)
		if err != nil {
			fmt.Fprintln(os.Stderr, "benchtool: restarting upstream:", err)

			continue
		}

		h.upKids[i] = nc
	}

	return restarted
}

func (h *harness) usage(c *child) usage {
	if c == nil {
		return usage{}
	}

	u, _ := readUsage(c.pid())

	return u
}

// idle opens o.idle connections (one round trip each), lets them sit, and
// measures what they cost the proxy.
func (h *harness) idle(d *proxyDef, proxy *child, tgt *target, m *measurement) {
	time.Sleep(200 * time.Millisecond)

	before, err := readUsage(proxy.pid())
	if err != nil {
		m.Notes = append(m.Notes, "idle: "+err.Error())

		return
	}

	gBefore := goMetrics(d.Health)

	conns, failed, ferr := idleConns(tgt, h.o.idle, 32, h.o.idleTrips)
	opened := time.Now()
	if failed > 0 {
		m.Notes = append(m.Notes, fmt.Sprintf("idle: %d of %d connections failed (first: %v)", failed, h.o.idle, ferr))
	}

	// Settle: the proxy's descriptor count stops moving.
	after := before
	stable := 0

	for end := time.Now().Add(3 * time.Second); time.Now().Before(end) && stable < 3; {
		time.Sleep(100 * time.Millisecond)

		u, err := readUsage(proxy.pid())
		if err != nil {
			break
		}

		if u.FDs == after.FDs {
			stable++
		} else {
			stable = 0
		}

		after = u
	}

	time.Sleep(200 * time.Millisecond)
	after, _ = readUsage(proxy.pid())
	gAfter := goMetrics(d.Health)

	// CPU while the connections sit idle (health checks included), from
	// 1.2 s after the last one opened: extractedprism sets keepalive on a
	// connection once it has lived a second, a one-off that is not idling.
	time.Sleep(time.Until(opened.Add(1200 * time.Millisecond)))

	later0, _ := readUsage(proxy.pid())
	cpuFrom := time.Now()

	time.Sleep(time.Second)

	later, _ := readUsage(proxy.pid())
	cpuDur := time.Since(cpuFrom)

	n := float64(len(conns))
	if n > 0 {
		m.M["idle_conns"] = n
		m.M["base_rss_kib"] = float64(before.RSSKiB)
		m.M["rss_with_idle_kib"] = float64(after.RSSKiB)
		m.M["kib_per_idle_conn"] = float64(after.RSSKiB-before.RSSKiB) / n
		m.M["fds_per_idle_conn"] = float64(after.FDs-before.FDs) / n
		m.M["idle_cpu_pct"] = float64(later.CPUTicks-later0.CPUTicks) / userHZ / cpuDur.Seconds() * 100

		for k, v := range gAfter {
			if b, ok := gBefore[k]; ok {
				m.M["go_"+k+"_per_idle_conn"] = (v - b) / n
			}
		}
	}

	for _, c := range conns {
		_ = c.Close()
	}

	// Wait for the proxy to let go of them.
	for end := time.Now().Add(5 * time.Second); time.Now().Before(end); {
		u, err := readUsage(proxy.pid())
		if err != nil || u.FDs <= before.FDs+16 {
			break
		}

		time.Sleep(50 * time.Millisecond)
	}
}

// goMetrics reads a few Go runtime gauges from extractedprism's /metrics.
func goMetrics(health string) map[string]float64 {
	if health == "" {
		return nil
	}

	cl := http.Client{Timeout: 2 * time.Second}

	resp, err := cl.Get("http://" + health + "/metrics")
	if err != nil {
		return nil
	}
	defer resp.Body.Close()

	want := map[string]string{
		"go_goroutines":                 "goroutines",
		"go_memstats_stack_inuse_bytes": "stack_bytes",
		"go_memstats_heap_inuse_bytes":  "heap_inuse_bytes",
		"go_memstats_sys_bytes":         "sys_bytes",
	}
	out := map[string]float64{}

	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 1<<20)

	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 2 {
			continue
		}

		if k, ok := want[f[0]]; ok {
			if v, err := strconv.ParseFloat(f[1], 64); err == nil {
				out[k] = v
			}
		}
	}

	return out
}

func ms(d time.Duration) float64 { return float64(d.Microseconds()) / 1e3 }

type machineInfo struct {
	NProc     int               `json:"nproc"`
	CPUModel  string            `json:"cpu_model"`
	Kernel    string            `json:"kernel"`
	OS        string            `json:"os"`
	MemTotal  string            `json:"mem_total"`
	GoVersion string            `json:"go_version"`
	LoadStart string            `json:"loadavg_start"`
	LoadEnd   string            `json:"loadavg_end"`
	Versions  map[string]string `json:"versions"`
}

func describeMachine(o options) machineInfo {
	m := machineInfo{NProc: runtime.NumCPU(), GoVersion: runtime.Version(), LoadStart: loadavg(), Versions: map[string]string{}}

	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPUModel = strings.TrimSpace(v)

				break
			}
		}
	}

	if b, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(b))
	}

	if b, err := os.ReadFile("/etc/os-release"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "PRETTY_NAME="); ok {
				m.OS = strings.Trim(v, `"`)
			}
		}
	}

	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				kb, _ := strconv.ParseFloat(strings.Fields(v)[0], 64)
				m.MemTotal = fmt.Sprintf("%.1f GiB", kb/1024/1024)
			}
		}
	}

	version := func(name string, argv ...string) {
		if argv[0] == "" {
			return
		}

		out, _ := exec.Command(argv[0], argv[1:]...).CombinedOutput()
		line, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
		m.Versions[name] = line
	}
	version("extractedprism", o.ep, "version")
	version("haproxy", o.haproxy, "-v")
	version("nginx", o.nginx, "-v")

	return m
}

func loadavg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return ""
	}

	f := strings.Fields(string(b))
	if len(f) < 3 {
		return ""
	}

	return strings.Join(f[:3], " ")
}
