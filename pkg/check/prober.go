// Package check runs the upstreams' health checks on a schedule and
// records their results in the upstream model. The checks themselves
// (TCP, HTTPS) are Checkers.
//
// go-loadbalancer's upstream.List used to run the schedule. Its scores,
// tiers and Pick were never read (the model keeps its own), its checks run
// one upstream after another (a round of N dead upstreams took N
// timeouts), a cancelled check counted as a failed one, and its schedule
// can be neither shortened nor asked for an early check. What is left of
// it is a timer with jitter, kept here.
package check

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
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

// jitter spreads check rounds by ±20% of the interval.
const jitter = 0.2

// Settings can change while running (Apply).
type Settings struct {
	Interval time.Duration
	Timeout  time.Duration
	Check    Checker // nil means TCPCheck
}

// Prober checks every upstream of a set, all at once, every interval
// (±jitter), so a round takes at most one timeout however many upstreams
// are dead.
type Prober struct {
	set      *upstream.Set
	log      *zap.Logger
	clk      clock.Clock
	settings atomic.Pointer[Settings]

	poke  chan struct{} // the interval changed
	first chan struct{} // closed after the first round

	mu        sync.Mutex
	lastRound time.Time

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

	p := &Prober{set: set, log: log, clk: clk, poke: make(chan struct{}, 1), first: make(chan struct{})}
	p.settings.Store(&s)
	p.ctx, p.cancel = context.WithCancel(context.Background())

	return p
}

// Start runs the first round at once, then the schedule, until Stop.
func (p *Prober) Start() {
	p.mu.Lock()
	p.lastRound = p.clk.Now()
	p.mu.Unlock()

	p.wg.Go(p.run)
}

// Stop ends the schedule and waits for a round in flight; its unfinished
// checks are not recorded.
func (p *Prober) Stop() {
	p.cancel()
	p.wg.Wait()
}

// Apply changes the settings. A round in flight finishes with the old
// ones; a new interval re-staggers the next round within it.
func (p *Prober) Apply(s Settings) {
	if old := p.settings.Swap(&s); old.Interval != s.Interval {
		select {
		case p.poke <- struct{}{}:
		default:
		}
	}
}

// WaitFirstRound blocks until the first round has finished.
func (p *Prober) WaitFirstRound(ctx context.Context) error {
	select {
	case <-p.first:
		return nil
	case <-ctx.Done():
		return fmt.Errorf("waiting for the first health check: %w", ctx.Err())
	}
}

// Alive reports whether rounds keep coming: one is due every interval
// (±jitter) and lasts at most a timeout.
func (p *Prober) Alive() error {
	p.mu.Lock()
	last := p.lastRound
	p.mu.Unlock()

	s := p.settings.Load()
	if age := p.clk.Since(last); age > 3*s.Interval+s.Timeout {
		return fmt.Errorf("health checks: no round for %s: %w", age.Round(time.Millisecond), ErrStalled)
	}

	return nil
}

func (p *Prober) run() {
	p.round()
	close(p.first)

	// The second round is staggered anywhere within the first interval, so
	// daemons started together do not check together.
	t := p.clk.NewTimer(p.stagger())
	defer func() { t.Stop() }()

	for {
		select {
		case <-p.ctx.Done():
			return
		case <-p.poke:
			t.Stop()
			t = p.clk.NewTimer(p.stagger())
		case <-t.C():
			p.round()

			iv := p.settings.Load().Interval
			t = p.clk.NewTimer(time.Duration((1 + jitter*(2*rand.Float64()-1)) * float64(iv)))
		}
	}
}

func (p *Prober) stagger() time.Duration {
	return time.Duration(rand.Float64() * float64(p.settings.Load().Interval))
}

// round checks every upstream in parallel and records each result as it
// comes.
func (p *Prober) round() {
	s := p.settings.Load()

	p.mu.Lock()
	p.lastRound = p.clk.Now()
	p.mu.Unlock()

	var wg sync.WaitGroup
	for _, n := range p.set.Nodes() {
		wg.Go(func() { p.probe(s, n) })
	}

	wg.Wait()
}

func (p *Prober) probe(s *Settings, n *upstream.Node) {
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
		return // stopped: an unfinished check says nothing of the upstream
	case localShortage(err):
		// Out of descriptors or memory here says nothing of the upstream:
		// taking it out (and resetting its clients) would turn a local
		// shortage into an outage.
		p.log.Warn("health check not run: the process is short of descriptors or memory",
			zap.String("upstream", n.Addr()), zap.Error(err))

		return
	}

	p.set.Record(n, upstream.Result{Latency: latency, Err: err})
}

// localShortage reports that this process is out of descriptors or memory:
// nothing an upstream did.
func localShortage(err error) bool {
	for _, errno := range []unix.Errno{unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM} {
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
