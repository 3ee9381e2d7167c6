// Package daemon wires extractedprism's parts together: it binds (or is
// handed) the listeners, runs the balancer and the health server, keeps the
// service manager informed, applies reloads, and shuts everything down in
// order.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strconv"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/lexfrei/extractedprism/pkg/balancer"
	"github.com/lexfrei/extractedprism/pkg/check"
	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/discovery"
	"github.com/lexfrei/extractedprism/pkg/health"
	"github.com/lexfrei/extractedprism/pkg/metrics"
	"github.com/lexfrei/extractedprism/pkg/status"
	"github.com/lexfrei/extractedprism/pkg/systemd"
	"github.com/lexfrei/extractedprism/pkg/terminal"
	"github.com/lexfrei/extractedprism/pkg/upstream"
	"github.com/lexfrei/extractedprism/pkg/version"
)

// Notifier passes state to the service manager (sd_notify).
type Notifier interface{ Notify(state string) }

type nopNotifier struct{}

func (nopNotifier) Notify(string) {}

// Options are what a Daemon is built from.
type Options struct {
	Config config.Config
	Logger *zap.Logger
	// Level is the logger's level, changed live by a reload; may be nil.
	Level *zap.AtomicLevel

	// Listener and HealthListener, when set, are served instead of binding
	// the configured addresses (socket activation, tests).
	Listener       net.Listener
	HealthListener net.Listener
	// LinkLocalListener, when set, is served too, for pods without host
	// networking, instead of binding link_local_address.
	LinkLocalListener net.Listener

	// Notifier receives READY/STATUS/RELOADING/STOPPING/WATCHDOG; may be nil.
	Notifier Notifier
	// Watchdog is the service manager's watchdog timeout; 0 for none.
	Watchdog time.Duration
	// SelfWatchdog, without a service manager's watchdog, is how long the
	// loops may stay stalled before OnStall is called to end the process;
	// 0 for never.
	SelfWatchdog time.Duration
	OnStall      func()
	// Loops is the number of relay loops; zero means GOMAXPROCS.
	Loops int
	// Health bounds the health server; zero values are its defaults.
	Health health.Options

	// Reload re-reads the configuration; each value on Reloads asks for it.
	Reload  func() (config.Config, error)
	Reloads <-chan os.Signal
}

// Daemon is a running extractedprism.
type Daemon struct {
	opts    Options
	log     *zap.Logger
	notify  Notifier
	ups     *upstream.Set
	probe   *check.Prober
	lb      *engines
	hs      *health.Server
	hln     net.Listener  // bound or inherited in New, nil if the bind failed
	hlnErr  error         // why it failed
	hsDone  chan struct{} // closed when the health server has stopped
	started time.Time

	watcher *discovery.Watcher // nil when discovery is off

	// groups are the proxy listeners this daemon bound with SO_REUSEPORT,
	// handed over to it once ready (see group); guarded by mu.
	groups    []*group
	takenOver bool

	listen netip.AddrPort            // the proxy listener's address
	self   func(netip.AddrPort) bool // whether an address reaches the listener

	mu           sync.Mutex
	cfg          config.Config
	reloadErr    error
	set          upstreamSet
	discoveryOff string    // why discovery is off, if it is
	cacheAt      time.Time // when the cache was last written or loaded
	reloads      metrics.Reloads
}

// New binds what is not handed in and builds the parts. Nothing is served
// until Run.
func New(opts Options) (*Daemon, error) {
	cfg := opts.Config
	d := &Daemon{opts: opts, cfg: cfg, log: opts.Logger, notify: opts.Notifier}

	if d.notify == nil {
		d.notify = nopNotifier{}
	}

	// Under socket activation systemd runs one copy at a time and holds
	// its sockets across restarts: nothing to hand over, and what is bound
	// here (the health port, when the unit passes none) needs no
	// SO_REUSEPORT.
	activated := opts.Listener != nil || opts.LinkLocalListener != nil || opts.HealthListener != nil
	bo := bindOptions{reusePort: cfg.ReusePort && !activated}

	ln, err := d.listener(opts.Listener, "proxy", cfg.BindAddress, cfg.BindPort, bo)
	if err != nil {
		return nil, err
	}

	lns := []net.Listener{ln}

	if opts.LinkLocalListener != nil || cfg.LinkLocalAddress != "" {
		ll, err := d.listener(opts.LinkLocalListener, "link-local", cfg.LinkLocalAddress, cfg.BindPort, bindOptions{reusePort: bo.reusePort, freeBind: true})
		if err != nil {
			d.releaseGroups()
			_ = ln.Close()

			return nil, err
		}

		lns = append(lns, ll)
	}

	// What reaches the listener is known now: keep it out of the set.
	d.listen, _ = netip.ParseAddrPort(ln.Addr().String())
	d.self = selfCheck(d.listen, net.InterfaceAddrs)
	d.set.static = d.staticEndpoints(cfg.Endpoints)
	d.loadCache()

	// A health port another process holds is no reason not to proxy: the
	// health server keeps trying to bind it (see Run).
	d.hln, d.hlnErr = d.listener(opts.HealthListener, "health", cfg.HealthAddress, cfg.HealthPort, bo)
	if err := d.hlnErr; err != nil {
		d.log.Error("health server cannot listen; proxying anyway and retrying", zap.Error(err))
	} else if tl, ok := d.hln.(*net.TCPListener); ok && opts.HealthListener == nil && bo.reusePort {
		d.takeOverHealth(tl)
	}

	if err := d.build(lns, cfg); err != nil {
		d.releaseGroups()
		closeAll(lns)

		if d.hln != nil {
			_ = d.hln.Close()
		}

		return nil, err
	}

	d.hs = health.New(health.Checks{
		Alive:   d.alive,
		Ready:   d.ready,
		Status:  func() any { return d.Status() },
		Metrics: metrics.Handler(metrics.NewRegistry(d.metrics, version.Get())),
	}, d.log, opts.Health)

	return d, nil
}

// listener returns ln if handed in, logging when its address is not the
// configured one (the socket unit wins), or binds addr:port. A proxy
// listener bound with SO_REUSEPORT joins d.groups.
func (d *Daemon) listener(ln net.Listener, what, addr string, port int, bo bindOptions) (net.Listener, error) {
	want := net.JoinHostPort(addr, strconv.Itoa(port))

	if ln != nil {
		if got := ln.Addr().String(); got != want && (what != "link-local" || addr != "") {
			d.log.Warn("using the inherited "+what+" socket, whose address differs from the configuration; the socket unit wins",
				zap.String("socket", got), zap.String("configured", want))
		}

		return ln, nil
	}

	l, err := bind(addr, port, bo)
	if err != nil {
		return nil, fmt.Errorf("%s listener: %w", what, err)
	}

	if bo.reusePort && what != "health" {
		if g := d.joinGroup(l); g != nil {
			d.groups = append(d.groups, g)
		}
	}

	return l, nil
}

// joinGroup returns l's SO_REUSEPORT group, or nil when the hand-over
// cannot work here (logged): the listener still serves, and an update
// falls back to the kernel's hash.
func (d *Daemon) joinGroup(l *net.TCPListener) *group {
	g, err := join(l)
	if err != nil {
		d.log.Warn("SO_REUSEPORT hand-over unavailable", zap.Stringer("listen", l.Addr()), zap.Error(err))

		return nil
	}

	if g.joined > 1 {
		d.log.Info("sharing the port with another copy (an update in progress?); taking its new connections over once ready",
			zap.Stringer("listen", l.Addr()), zap.Int("listeners", g.joined))
	}

	return g
}

// takeOverHealth has the health listener take its group's connections at
// once: kubelet probes the copy whose pod they are about, the newest.
func (d *Daemon) takeOverHealth(l *net.TCPListener) {
	g := d.joinGroup(l)
	if g == nil {
		return
	}
	defer g.release()

	if _, err := g.takeOver(); err != nil {
		d.log.Warn("cannot take the health port's connections over; probes may reach another copy", zap.Error(err))
	}
}

func closeAll(lns []net.Listener) {
	for _, l := range lns {
		if l != nil {
			_ = l.Close()
		}
	}
}

// build makes the upstream model, its prober and the relay engines over it.
func (d *Daemon) build(lns []net.Listener, cfg config.Config) error {
	var err error

	d.ups, err = upstream.New(upstream.Options{Logger: d.log.Named("upstream"), Rules: rules(cfg)}, d.set.endpoints())
	if err != nil {
		return fmt.Errorf("upstreams: %w", err)
	}

	d.probe = check.New(d.ups, d.checkSettings(cfg), d.log.Named("check"), nil)

	var ups balancer.Upstreams = d.ups
	if len(lns) > 1 {
		ups = &sharedUpstreams{Set: d.ups}
	}

	var all []*balancer.Balancer

	for i, ln := range lns {
		loops := d.opts.Loops
		if i > 0 {
			loops = 1 // pods' connections through the link-local address: few
		}

		b, err := balancer.New(balancer.Options{
			Listener:  ln,
			Upstreams: ups,
			Logger:    d.log.Named("balancer"),
			Loops:     loops,
			Settings:  engineSettings(cfg),
		})
		if err != nil {
			newEngines(all).Shutdown(context.Background())

			return fmt.Errorf("balancer: %w", err)
		}

		all = append(all, b)
	}

	d.lb = newEngines(all)

	return nil
}

// Fixed parts of the health model; the README says why.
const (
	// checkRetry is how soon an upstream that failed a check, or that the
	// data path saw fail, is checked again, doubling up to checkRetryMax.
	// An upstream that refuses costs its API server nothing to check; one
	// that accepts and fails /readyz (starting, or etcd stalled) costs
	// 5,000 nodes / 30 s x 1.9 ms = 31 % of a core at worst.
	checkRetry    = time.Second
	checkRetryMax = 30 * time.Second
	// answerTimeout is how long an upstream may take to answer a new
	// client's first bytes before the client moves on and it is checked.
	answerTimeout = time.Second
)

func rules(c config.Config) upstream.Rules {
	return upstream.Rules{
		Fall: c.HealthFall, Rise: c.HealthRise, ResetOnFailure: c.ResetOnFailure, DrainTimeout: c.DrainTimeout,
		Interval: c.HealthInterval, Retry: checkRetry, RetryMax: checkRetryMax,
	}
}

func (d *Daemon) checkSettings(c config.Config) check.Settings {
	return check.Settings{Timeout: c.HealthTimeout, Check: d.checker(c)}
}

func engineSettings(c config.Config) balancer.Settings {
	return balancer.Settings{
		DialTimeout:     c.DialTimeout,
		DialHeadStart:   c.DialHeadStart,
		KeepAlivePeriod: c.KeepAlivePeriod,
		TCPUserTimeout:  c.TCPUserTimeout,
		AnswerTimeout:   answerTimeout,
		MaxConnections:  c.MaxConnections,
	}
}

// alive reports whether the daemon's own machinery works: the relay
// engine's loops and the check schedule. Never the upstreams' health.
func (d *Daemon) alive() error {
	return errors.Join(d.lb.Alive(), d.probe.Alive())
}

// ProxyAddr is where clients connect.
func (d *Daemon) ProxyAddr() net.Addr { return d.lb.Addr() }

// HealthAddr is where the health server listens; nil while it cannot.
func (d *Daemon) HealthAddr() net.Addr {
	if a := d.hs.Addr(); a != nil {
		return a
	}

	if d.hln != nil { // bound in New, about to be served
		return d.hln.Addr()
	}

	return nil
}

// statusEvery is how often STATUS= is refreshed when it changed.
const statusEvery = time.Second

// Run serves until ctx ends (a clean shutdown, nil) or a listener fails
// (an error wrapping balancer.ErrListenerFailed).
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()

	d.probe.Start()

	if err := d.lb.Start(); err != nil {
		d.probe.Stop()

		return fmt.Errorf("starting balancer: %w", err)
	}

	d.hsDone = make(chan struct{})

	go func() {
		defer close(d.hsDone)

		c := d.config()
		d.hs.Run(d.hln, net.JoinHostPort(c.HealthAddress, strconv.Itoa(c.HealthPort)))
	}()

	// Ready as soon as the listener is served, never gated on upstream
	// health: on a control-plane node the API server is a static pod that
	// kubelet, ordered after us, has yet to start.
	summary := d.summary()
	d.notify.Notify("READY=1\nSTATUS=" + summary)
	fields := []zap.Field{zap.Stringer("listen", d.lb.Addr())}
	if addrs := d.lb.Addrs(); len(addrs) > 1 {
		fields = append(fields, zap.Stringer("link_local", addrs[1]))
	}

	d.log.Info("serving", append(fields, zap.String("health", d.healthAddr()),
		zap.Strings("endpoints", d.config().Endpoints), zap.String("version", version.Get().Version))...)

	wdCtx, stopWatchdog := context.WithCancel(context.Background())
	defer stopWatchdog()

	go systemd.Watchdog(wdCtx, d.notify, d.opts.Watchdog, d.alive, d.log)

	if d.opts.Watchdog <= 0 && d.opts.SelfWatchdog > 0 && d.opts.OnStall != nil {
		go selfWatchdog(wdCtx, d.opts.SelfWatchdog, d.alive, d.opts.OnStall, d.log)
	}

	discoveryCtx, stopDiscovery := context.WithCancel(context.Background())
	defer stopDiscovery()

	d.startDiscovery(discoveryCtx)

	tick := time.NewTicker(statusEvery)
	defer tick.Stop()

	refresh := time.NewTicker(cacheRefresh)
	defer refresh.Stop()

	var runErr error

loop:
	for {
		select {
		case <-ctx.Done():
			break loop
		case <-d.lb.Done():
			runErr = d.lb.Err()

			break loop
		case <-d.opts.Reloads:
			d.reload()
		case <-tick.C:
			// Also without readiness probes: /readyz takes over first.
			if d.ups.Ready() {
				d.takeOver()
			}

			d.settleGroups()

			if s := d.summary(); s != summary {
				summary = s
				d.notify.Notify("STATUS=" + s)
			}
		case <-refresh.C:
			d.refreshCache()
		}
	}

	stopDiscovery()
	stopWatchdog()
	d.shutdown()

	return runErr
}

// shutdown stops accepting, lets in-flight connections finish for up to
// drain_timeout, closes what is left, then stops the health server.
func (d *Daemon) shutdown() {
	active := d.lb.Active()
	drain := d.config().DrainTimeout

	d.notify.Notify(fmt.Sprintf("STOPPING=1\nSTATUS=stopping: draining %d connections for up to %s", active, drain))
	d.log.Info("shutting down: no new connections; draining",
		zap.Int("active_connections", active), zap.Duration("drain_timeout", drain))

	d.probe.Stop()
	d.releaseGroups()

	ctx, cancel := context.WithTimeout(context.Background(), drain)
	cut := d.lb.Shutdown(ctx)

	cancel()

	hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
	if err := d.hs.Shutdown(hctx); err != nil {
		d.log.Warn("health server did not stop cleanly", zap.Error(err))
	}

	<-d.hsDone

	hcancel()

	d.log.Info("stopped", zap.Int("drained", active-cut), zap.Int("closed", cut))
}

func (d *Daemon) config() config.Config {
	d.mu.Lock()
	defer d.mu.Unlock()

	return d.cfg
}

// ErrNotReady is /readyz's answer when no upstream is usable.
var ErrNotReady = errors.New("no usable upstream")

func (d *Daemon) ready() error {
	if d.ups.Ready() {
		d.takeOver()

		return nil
	}

	return ErrNotReady
}

// Status is the current /status document.
func (d *Daemon) Status() status.Document {
	return status.Document{
		Version:   version.Get().Version,
		Ready:     d.ups.Ready(),
		Listen:    d.lb.Addr().String(),
		StartedAt: d.started,
		Discovery: d.discoveryState(),
		FailOpen:  d.ups.FailOpen(),
		Upstreams: d.ups.Status(),
	}
}

// healthAddr is the health server's address, or why it has none.
func (d *Daemon) healthAddr() string {
	if a := d.HealthAddr(); a != nil {
		return a.String()
	}

	return "not listening"
}

// maxStatusError bounds an error's text in STATUS=.
const maxStatusError = 300

// summary is the one-line state for STATUS=.
func (d *Daemon) summary() string {
	s := d.Status().Summary()

	if err := d.hs.BindError(); err != nil {
		s += "; health server not listening: " + err.Error()
	} else if d.hs.Addr() == nil && d.hlnErr != nil { // before its first retry
		s += "; health server not listening: " + d.hlnErr.Error()
	}

	d.mu.Lock()
	defer d.mu.Unlock()

	if d.reloadErr != nil {
		s += "; last reload rejected, running the previous configuration: " + terminal.Line(d.reloadErr.Error(), maxStatusError)
	}

	return s
}

// metrics is the snapshot /metrics reports.
func (d *Daemon) metrics() metrics.Snapshot {
	d.mu.Lock()
	snap := metrics.Snapshot{Reloads: d.reloads, Discovery: metrics.Discovery{CacheAt: d.cacheAt, State: "off"}}
	d.mu.Unlock()

	snap.Balancer = d.lb.Stats()
	snap.Upstreams = d.ups.Status()
	snap.FailOpen = d.ups.FailOpen()

	if d.watcher != nil {
		s := d.watcher.State()
		snap.Discovery.State = string(s.Phase)
		snap.Discovery.Events = s.Events
		snap.Discovery.Lists = s.Lists
		snap.Discovery.LastSync = s.LastSync
		snap.Discovery.Errors = map[string]uint64{}

		for phase, n := range s.Errors {
			snap.Discovery.Errors[string(phase)] = n
		}
	}

	return snap
}
