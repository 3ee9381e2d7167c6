// Package daemon wires extractedprism's parts together: it binds (or is
// handed) the listeners, runs the balancer and the health server, and shuts
// them down in order.
package daemon

import (
	"context"
	"errors"
	"fmt"
	"net"
	"strconv"
	"time"

	"go.uber.org/zap"

	"github.com/lexfrei/extractedprism/pkg/balancer"
	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/health"
	"github.com/lexfrei/extractedprism/pkg/status"
	"github.com/lexfrei/extractedprism/pkg/version"
)

// Options are what a Daemon is built from.
type Options struct {
	Config config.Config
	Logger *zap.Logger
	// Listener and HealthListener, when set, are served instead of binding
	// the configured addresses (socket activation, tests).
	Listener       net.Listener
	HealthListener net.Listener
}

// Daemon is a running extractedprism.
type Daemon struct {
	cfg     config.Config
	log     *zap.Logger
	lb      *balancer.Balancer
	hs      *health.Server
	started time.Time
}

// New binds what is not handed in and builds the parts. Nothing is served
// until Run.
func New(opts Options) (*Daemon, error) {
	cfg := opts.Config
	log := opts.Logger

	ln, err := listenUnlessGiven(opts.Listener, cfg.BindAddress, cfg.BindPort)
	if err != nil {
		return nil, fmt.Errorf("proxy listener: %w", err)
	}

	hln, err := listenUnlessGiven(opts.HealthListener, cfg.HealthAddress, cfg.HealthPort)
	if err != nil {
		_ = ln.Close()

		return nil, fmt.Errorf("health listener: %w", err)
	}

	d := &Daemon{cfg: cfg, log: log}

	d.lb, err = balancer.New(balancer.Options{
		Listener:        ln,
		Logger:          log.Named("balancer"),
		HealthInterval:  cfg.HealthInterval,
		HealthTimeout:   cfg.HealthTimeout,
		DialTimeout:     cfg.DialTimeout,
		KeepAlivePeriod: cfg.KeepAlivePeriod,
		TCPUserTimeout:  cfg.TCPUserTimeout,
	}, staticEndpoints(cfg.Endpoints))
	if err != nil {
		_ = ln.Close()
		_ = hln.Close()

		return nil, fmt.Errorf("balancer: %w", err)
	}

	d.hs = health.New(hln, health.Checks{
		Alive:  d.lb.Alive,
		Ready:  d.ready,
		Status: func() any { return d.Status() },
	}, log)

	return d, nil
}

func listenUnlessGiven(ln net.Listener, addr string, port int) (net.Listener, error) {
	if ln != nil {
		return ln, nil
	}

	l, err := net.Listen("tcp", net.JoinHostPort(addr, strconv.Itoa(port)))
	if err != nil {
		return nil, fmt.Errorf("listening: %w", err)
	}

	return l, nil
}

// staticEndpoints turns validated configuration endpoints into upstreams.
func staticEndpoints(eps []string) []balancer.Endpoint {
	out := make([]balancer.Endpoint, 0, len(eps))

	for _, ep := range eps {
		if canon, err := config.CanonicalEndpoint(ep); err == nil {
			ep = canon
		}

		out = append(out, balancer.Endpoint{Address: ep, Sources: []string{"static"}})
	}

	return out
}

// ProxyAddr is where clients connect.
func (d *Daemon) ProxyAddr() net.Addr { return d.lb.Addr() }

// HealthAddr is where the health server listens.
func (d *Daemon) HealthAddr() net.Addr { return d.hs.Addr() }

// Run serves until ctx ends (a clean shutdown, nil) or a listener fails
// (an error wrapping balancer.ErrListenerFailed).
func (d *Daemon) Run(ctx context.Context) error {
	d.started = time.Now()

	if err := d.lb.Start(); err != nil {
		return fmt.Errorf("starting balancer: %w", err)
	}

	hsErr := make(chan error, 1)

	go func() { hsErr <- d.hs.Serve() }()

	d.log.Info("serving",
		zap.Stringer("listen", d.lb.Addr()), zap.Stringer("health", d.hs.Addr()),
		zap.Strings("endpoints", d.cfg.Endpoints), zap.String("version", version.Get().Version))

	var runErr error

	select {
	case <-ctx.Done():
	case <-d.lb.Done():
		runErr = d.lb.Err()
	case err := <-hsErr:
		runErr = err
	}

	d.shutdown()

	return runErr
}

// shutdown stops accepting, lets in-flight connections finish for up to
// drain_timeout, closes what is left, then stops the health server.
func (d *Daemon) shutdown() {
	active := d.lb.Active()
	d.log.Info("shutting down: no new connections; draining",
		zap.Int("active_connections", active), zap.Duration("drain_timeout", d.cfg.DrainTimeout))

	ctx, cancel := context.WithTimeout(context.Background(), d.cfg.DrainTimeout)
	cut := d.lb.Shutdown(ctx)

	cancel()

	hctx, hcancel := context.WithTimeout(context.Background(), time.Second)
	if err := d.hs.Shutdown(hctx); err != nil {
		d.log.Warn("health server did not stop cleanly", zap.Error(err))
	}

	hcancel()

	d.log.Info("stopped", zap.Int("drained", active-cut), zap.Int("closed", cut))
}

// ErrNotReady is /readyz's answer when no upstream is usable.
var ErrNotReady = errors.New("no usable upstream")

func (d *Daemon) ready() error {
	if d.lb.Ready() {
		return nil
	}

	return ErrNotReady
}

// Status is the current /status document.
func (d *Daemon) Status() status.Document {
	return status.Document{
		Version:   version.Get().Version,
		Ready:     d.lb.Ready(),
		Listen:    d.lb.Addr().String(),
		StartedAt: d.started,
		Discovery: d.discoveryState(),
		Upstreams: d.lb.Status(),
	}
}

func (d *Daemon) discoveryState() string {
	if !d.cfg.EnableDiscovery {
		return "off"
	}

	return "not available in this build (static endpoints only)"
}
