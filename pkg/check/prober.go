// Package check runs the upstreams' health checks when the upstream model
// says they are due, and records their results there. The checks
// themselves (TCP, HTTPS) are Checkers.
//
// go-loadbalancer's upstream.List used to run a fixed schedule. Its scores,
// tiers and Pick were never read (the model keeps its own), its checks ran
// one upstream after another (a round of N dead upstreams took N
// timeouts), a cancelled check counted as a failed one, and it could not
// check one upstream sooner than the others, which checking harder only
// when something looks wrong needs.
package check

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
	"k8s.io/utils/clock"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// ErrStalled means the check schedule stopped making progress.
var ErrStalled = errors.New("stalled")

// heartbeat bounds how long the schedule sleeps, so Alive can tell a
// stuck schedule from a quiet one.
const heartbeat = 5 * time.Second

// Settings can change while running (Apply).
type Settings struct {
	Timeout time.Duration
	Check   Checker // nil means TCPCheck
}

// Prober runs each upstream's check when the model says it is due, each
// in its own goroutine, so dead upstreams never delay the others.
type Prober struct {
	set      *upstream.Set
	log      *zap.Logger
	clk      clock.Clock
	settings atomic.Pointer[Settings]
	first    chan struct{} // closed once the first checks are recorded
	lastLoop atomic.Int64  // unix nanoseconds of the schedule's last turn

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup
}

// New makes a Prober for set; clk nil means the real clock.
func New(set *upstream.Set, s Settings, log *zap.Logger, clk clock.Clock) *Prober {
	if clk == nil {
		clk = clock.RealClock{}
	}

	if log == nil {
		log = zap.NewNop()
	}

	p := &Prober{set: set, log: log, clk: clk, first: make(chan struct{})}
	p.settings.Store(&s)
	p.ctx, p.cancel = context.WithCancel(context.Background())

	return p
}

// Start checks every upstream at once, then follows the schedule until
// Stop.
func (p *Prober) Start() {
	p.lastLoop.Store(p.clk.Now().UnixNano())
	p.wg.Go(p.run)
}

// Stop ends the schedule and waits for the checks in flight; unfinished
// ones are not recorded.
func (p *Prober) Stop() {
	p.cancel()
	p.wg.Wait()
}

// Apply changes the settings; checks in flight finish with the old ones.
func (p *Prober) Apply(s Settings) { p.settings.Store(&s) }

// WaitFirstRound blocks until the first check of every upstream has
// finished.
func (p *Prober) WaitFirstRound(ctx context.Context) error {
	select {
	case <-p.first:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the first health check: %w", ctx.Err())
	}
}

// Alive reports whether the schedule keeps turning.
func (p *Prober) Alive() error {
	last := time.Unix(0, p.lastLoop.Load())
	if age := p.clk.Since(last); age > 3*heartbeat {
		return fmt.Errorf("health checks: schedule stuck for %s: %w", age.Round(time.Millisecond), ErrStalled)
	}

	return nil
}

func (p *Prober) run() {
	due, next := p.set.Due()

	// The first checks may take their whole timeout: the schedule goes on
	// turning meanwhile (Alive, upstreams added by discovery).
	var first sync.WaitGroup
	for _, n := range due {
		first.Go(func() { p.probe(n) })
	}

	p.wg.Go(func() {
		first.Wait()
		close(p.first)
	})

	for {
		p.lastLoop.Store(p.clk.Now().UnixNano())

		wait := heartbeat
		if !next.IsZero() {
			wait = min(wait, max(next.Sub(p.clk.Now()), 0))
		}

		t := p.clk.NewTimer(wait)

		select {
		case <-p.ctx.Done():
			t.Stop()

			return
		case <-p.set.Wake():
		case <-t.C():
		}

		t.Stop()

		due, next = p.set.Due()
		for _, n := range due {
			p.wg.Go(func() { p.probe(n) })
		}
	}
}

func (p *Prober) probe(n *upstream.Node) {
	s := p.settings.Load()

	ctx, cancel := context.WithTimeout(p.ctx, s.Timeout)
	defer cancel()

	resolve(ctx, n)

	var check Checker = TCPCheck{}
	if s.Check != nil {
		check = s.Check
	}

	// The check dials what the relay loops will dial: the resolved address.
	target := n.Addr()
	if ap := n.DialAddr(); ap != nil {
		target = ap.String()
	}

	start := p.clk.Now()
	err := check.Check(ctx, target)
	latency := p.clk.Since(start)

	switch {
	case p.ctx.Err() != nil:
		// Stopped: an unfinished check says nothing of the upstream.
		p.set.Skip(n)
	case localShortage(err):
		// Out of descriptors or memory here says nothing of the upstream:
		// taking it out (and resetting its clients) would turn a local
		// shortage into an outage.
		p.log.Warn("health check not run: the host is short of descriptors, memory or local ports",
			zap.String("upstream", n.Addr()), zap.Error(err))
		p.set.Skip(n)
	default:
		p.set.Record(n, upstream.Result{Latency: latency, Err: err, Gone: errors.Is(err, unix.ECONNREFUSED)})
	}
}

// localShortage reports that this host is out of descriptors, memory or
// local ports: nothing an upstream did.
func localShortage(err error) bool {
	for _, errno := range []unix.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.EADDRNOTAVAIL} {
		if errors.Is(err, errno) {
			return true
		}
	}

	return false
}

// resolve looks up a host-name upstream before each check, so that the
// relay loops, which cannot wait on DNS, always have a recent address. A
// failed lookup keeps the previous one; the check then tells whether it
// still works.
func resolve(ctx context.Context, n *upstream.Node) {
	host, port, err := net.SplitHostPort(n.Addr())
	if err != nil {
		return
	}

	if _, err := netip.ParseAddr(host); err == nil {
		return // an address, set when the node was made
	}

	pn, err := strconv.ParseUint(port, 10, 16)
	if err != nil {
		return
	}

	ips, err := net.DefaultResolver.LookupNetIP(ctx, "ip", host)
	if err != nil || len(ips) == 0 {
		return
	}

	// One address is kept; for a dual-stack name (localhost) prefer IPv4,
	// where a server that listens on one family mostly listens.
	ip := ips[0]
	if i := slices.IndexFunc(ips, func(a netip.Addr) bool { return a.Unmap().Is4() }); i >= 0 {
		ip = ips[i]
	}

	n.SetDialAddr(netip.AddrPortFrom(ip.Unmap(), uint16(pn)))
}
