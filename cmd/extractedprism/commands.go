package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"os/signal"
	"runtime"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"

	sddaemon "github.com/coreos/go-systemd/v22/daemon"
	"github.com/go-logr/zapr"
	"k8s.io/klog/v2"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/daemon"
	"github.com/lexfrei/extractedprism/pkg/discovery"
	"github.com/lexfrei/extractedprism/pkg/doctor"
	"github.com/lexfrei/extractedprism/pkg/logging"
	"github.com/lexfrei/extractedprism/pkg/netdev"
	"github.com/lexfrei/extractedprism/pkg/startfail"
	"github.com/lexfrei/extractedprism/pkg/status"
	"github.com/lexfrei/extractedprism/pkg/systemd"
	"github.com/lexfrei/extractedprism/pkg/terminal"
	"github.com/lexfrei/extractedprism/pkg/version"
)

type runCmd struct {
	config.Flags `embed:""`
}

func (r *runCmd) Run(e *env) error {
	failures := startFailures()
	ready := &readyNotifier{onReady: failures.Started}

	err := r.run(e, ready)
	if err != nil && !ready.ready.Load() {
		waitAfterFailedStart(e, failures, err)
	}

	return err
}

// startFailures counts failed starts under systemd (NOTIFY_SOCKET), in
// the unit's state directory; elsewhere nothing is counted or waited for.
func startFailures() startfail.Counter {
	if os.Getenv("NOTIFY_SOCKET") == "" {
		return startfail.Open("")
	}

	dir, _, _ := strings.Cut(os.Getenv("STATE_DIRECTORY"), ":")

	return startfail.Open(dir)
}

// waitAfterFailedStart says in STATUS= why the start failed, then waits
// before the process exits (startfail): the longer, the more starts in a
// row failed. SIGTERM (systemctl stop or restart) ends the wait.
func waitAfterFailedStart(e *env, failures startfail.Counter, err error) {
	n, delay := failures.Failed()
	if delay <= 0 {
		return
	}

	status := fmt.Sprintf("start failed (%d in a row), exiting in %s: %s", n, delay, terminal.Line(err.Error(), maxStatusError))
	_, _ = sddaemon.SdNotify(false, "STATUS="+status+
		"\nEXTEND_TIMEOUT_USEC="+strconv.FormatInt((delay+10*time.Second).Microseconds(), 10))
	fmt.Fprintf(e.stderr, "extractedprism: %s\n", status)

	t := time.NewTimer(delay)
	defer t.Stop()

	select {
	case <-e.ctx.Done():
	case <-t.C:
	}
}

// maxStatusError bounds the error text in STATUS=.
const maxStatusError = 300

// readyNotifier passes messages to systemd and notes the first READY=1:
// from then on the start has succeeded (onReady runs before it is sent).
type readyNotifier struct {
	next    daemon.Notifier
	onReady func()
	ready   atomic.Bool
}

func (n *readyNotifier) Notify(state string) {
	if strings.Contains(state, "READY=1") && n.ready.CompareAndSwap(false, true) {
		n.onReady()
	}

	n.next.Notify(state)
}

func (r *runCmd) run(e *env, notifier *readyNotifier) error {
	l, err := load(r.Flags)
	if err != nil {
		return err
	}

	log, level, err := logging.New(e.stderr, logging.Options{
		Level:    l.Config.LogLevel,
		Format:   l.Config.LogFormat,
		Journald: os.Getenv("JOURNAL_STREAM") != "",
	})
	if err != nil {
		return fmt.Errorf("logger: %w", err)
	}
	defer func() { _ = log.Sync() }()

	// client-go logs through klog, a process-wide logger: route it here.
	klog.SetLogger(zapr.NewLogger(logging.Quieter(log.Named("client-go"))))

	// One relay loop per CPU, and one P more than loops: a loop blocked in
	// epoll_wait holds its P, and with none idle the runtime's monitor
	// takes them back every 20 µs, waking threads for nothing (measured:
	// 6x fewer futex calls, 6% more connections per second).
	loops := runtime.GOMAXPROCS(0)
	runtime.GOMAXPROCS(loops + 1)

	notifier.next = systemd.NewNotifier(log)

	inherited, err := systemd.Listeners()
	if err != nil {
		return err
	}

	watchdog, err := systemd.WatchdogInterval()
	if err != nil {
		return err
	}

	reloads := make(chan os.Signal, 1)
	signal.Notify(reloads, syscall.SIGHUP)

	defer signal.Stop(reloads)

	d, err := daemon.New(daemon.Options{
		Config:            l.Config,
		Logger:            log,
		Level:             &level,
		Listener:          inherited.Proxy,
		LinkLocalListener: inherited.LinkLocal,
		HealthListener:    inherited.Health,
		Notifier:          notifier,
		Watchdog:          watchdog,
		SelfWatchdog:      selfWatchdog,
		OnStall:           abort,
		Loops:             loops,
		Reload: func() (config.Config, error) {
			l, err := load(r.Flags)

			return l.Config, err
		},
		Reloads: reloads,
	})
	if err != nil {
		return fmt.Errorf("starting: %w", err)
	}

	return d.Run(e.ctx)
}

// selfWatchdog is how long the loops may stay stalled, when no service
// manager keeps a watchdog (containers), before the process aborts to be
// restarted: the unit's WatchdogSec.
const selfWatchdog = 10 * time.Second

// abort ends the process with SIGABRT, as systemd's watchdog does: the Go
// runtime prints every goroutine's stack first, for the post-mortem.
func abort() {
	_ = syscall.Kill(os.Getpid(), syscall.SIGABRT)
}

type checkConfigCmd struct {
	config.Flags `embed:""`
}

func (c *checkConfigCmd) Run(e *env) error {
	l, err := load(c.Flags)
	if err != nil {
		return err
	}

	if err := l.WriteEffective(e.stdout); err != nil {
		return fmt.Errorf("check-config: %w", err)
	}

	return nil
}

type statusCmd struct {
	config.Flags `embed:""`

	JSON     bool          `help:"Print the raw /status document."`
	Watch    bool          `short:"w" help:"Refresh the table until interrupted."`
	Interval time.Duration `default:"2s" help:"Refresh interval with --watch."`
	URL      string        `name:"url" placeholder:"URL" help:"Health server base URL (default: from health_address and health_port)."`
	Timeout  time.Duration `default:"5s" help:"How long to wait for the daemon."`
}

func (s *statusCmd) Run(e *env) error {
	url := s.URL
	if url == "" {
		// Only the health settings matter here: the rest of the
		// configuration may be invalid without hiding the status.
		l, _ := config.Load(config.Input{Flags: s.Flags})
		url = healthURL(l.Config)
	}

	if !s.Watch {
		return s.show(e, url)
	}

	tick := time.NewTicker(s.Interval)
	defer tick.Stop()

	for {
		fmt.Fprint(e.stdout, "\033[H\033[2J") // home, clear
		if err := s.show(e, url); err != nil {
			fmt.Fprintln(e.stdout, err)
		}

		select {
		case <-e.ctx.Done():
			return nil
		case <-tick.C:
		}
	}
}

func (s *statusCmd) show(e *env, url string) error {
	ctx, cancel := context.WithTimeout(e.ctx, s.Timeout)
	defer cancel()

	doc, raw, err := status.Fetch(ctx, url)
	if err != nil {
		return fmt.Errorf("status: %w", err)
	}

	if s.JSON {
		_, err = e.stdout.Write(raw)
	} else {
		err = status.WriteTable(e.stdout, doc, time.Now())
	}

	if err != nil {
		return fmt.Errorf("status: %w", err)
	}

	return nil
}

// healthURL is the local health server's URL; a wildcard bind address is
// reached on loopback.
func healthURL(c config.Config) string {
	host := c.HealthAddress
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
		if ip.Is6() {
			host = "::1"
		}
	}

	return "http://" + net.JoinHostPort(host, strconv.Itoa(c.HealthPort))
}

type versionCmd struct {
	JSON bool `help:"Print as JSON."`
}

func (v *versionCmd) Run(e *env) error {
	info := version.Get()
	if v.JSON {
		return json.NewEncoder(e.stdout).Encode(info)
	}

	_, err := fmt.Fprintln(e.stdout, info)

	return err
}

type doctorCmd struct {
	config.Flags `embed:""`

	KubeletKubeconfig string `name:"kubelet-kubeconfig" placeholder:"PATH" default:"/etc/kubernetes/kubelet.conf" help:"kubelet's kubeconfig, checked to point at the proxy; skipped when missing."`
}

// errUnhealthy makes doctor exit non-zero after it printed its findings.
var errUnhealthy = errors.New("doctor found problems")

func (c *doctorCmd) Run(e *env) error {
	l, err := load(c.Flags)
	if err != nil {
		fmt.Fprintln(e.stdout, "fail  configuration: invalid")

		return err
	}

	fmt.Fprintf(e.stdout, "ok    configuration: %s\n", l.Path)

	opts := doctor.Options{Config: l.Config, Proxy: proxyAddr(l.Config)}
	if _, err := os.Stat(c.KubeletKubeconfig); err == nil {
		opts.KubeletKubeconfig = c.KubeletKubeconfig
	}

	if pool, _, err := discovery.CAPool(l.Config.HealthCAFile, l.Config.Kubeconfig); err == nil {
		opts.RootCAs = pool
	}

	for _, r := range doctor.Run(e.ctx, e.stdout, opts) {
		if r.Verdict == doctor.Fail {
			return errUnhealthy
		}
	}

	return nil
}

// proxyAddr is where local clients reach the proxy.
func proxyAddr(c config.Config) string {
	host := c.BindAddress
	if ip, err := netip.ParseAddr(host); err == nil && ip.IsUnspecified() {
		host = "127.0.0.1"
	}

	return net.JoinHostPort(host, strconv.Itoa(c.BindPort))
}

// linkLocalCmd puts the link-local address on the node, for pods without
// host networking. Run by extractedprism-link-local.service and the
// DaemonSet's init container, with CAP_NET_ADMIN and nothing else; the
// daemon never needs it.
type linkLocalCmd struct {
	Address   string `name:"address" env:"EP_LINK_LOCAL_ADDRESS" default:"169.254.7.45" placeholder:"ADDR" help:"The link-local address: 169.254.7.45 unless set here or by $$EP_LINK_LOCAL_ADDRESS (link_local_address)."`
	Interface string `name:"interface" default:"extractedprism0" placeholder:"NAME" help:"The interface to put it on (extractedprism0), made as a dummy if missing."`
	Remove    bool   `name:"remove" help:"Delete the interface instead."`
}

func (c *linkLocalCmd) Run(e *env) error {
	if c.Remove {
		removed, err := netdev.Remove(c.Interface)
		if err != nil {
			return err
		}

		if removed {
			fmt.Fprintf(e.stdout, "removed %s\n", c.Interface)
		}

		return nil
	}

	if err := config.CheckLinkLocal(c.Address); err != nil {
		return fmt.Errorf("--address: %w", err)
	}

	res, err := netdev.Ensure(c.Interface, netip.MustParseAddr(c.Address))
	if err != nil {
		return err
	}

	switch {
	case res.Created:
		fmt.Fprintf(e.stdout, "created %s (%s) with %s\n", c.Interface, res.Kind, c.Address)
	case res.Added:
		fmt.Fprintf(e.stdout, "added %s to %s\n", c.Address, c.Interface)
	default:
		fmt.Fprintf(e.stdout, "%s already has %s\n", c.Interface, c.Address)
	}

	if res.Kind == "bridge" {
		fmt.Fprintln(e.stdout, "note: this kernel has no dummy driver; an empty bridge stands in")
	}

	return nil
}
