package balancer

import (
	"context"
	"net"
	"net/netip"
	"slices"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/siderolabs/go-loadbalancer/upstream"
	"go.uber.org/zap"
)

// node is one upstream: the upstream.Backend that upstream.List checks, and
// our own view of its health, which selection and status read.
type node struct {
	addr string
	b    *Balancer
	// dialAddr is where connections go: addr itself when it is an IP
	// address, else what the name last resolved to (see resolve).
	dialAddr atomic.Pointer[netip.AddrPort]

	active   atomic.Int64
	total    atomic.Uint64
	counters nodeCounters

	// Guarded by b.mu.
	sources   []string
	healthy   bool // by the fall/rise rule; new upstreams start healthy
	fails     int  // failed checks in a row
	passes    int  // passing checks in a row
	tier      upstream.Tier
	suspended bool // a dial failed since the last passing check
	latency   time.Duration
	lastErr   error
	changed   time.Time
	probe     *probe
}

// probe is one health check in flight; done is closed when it has a result.
type probe struct {
	done    chan struct{}
	latency time.Duration
	err     error
}

// Latency tiers: an upstream that answers checks an order of magnitude
// slower is used only while no faster one is usable. The first bound is
// coarse on purpose: sub-millisecond jitter on a busy host must not move
// equal upstreams between tiers.
var tierBounds = []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second}

const maxTier = upstream.Tier(3)

func tierOf(bounds []time.Duration, latency time.Duration) upstream.Tier {
	for i, bound := range bounds {
		if latency < bound {
			return upstream.Tier(i)
		}
	}

	return upstream.Tier(len(bounds)) // with no bounds, the tier of a new upstream: 0
}

// HealthCheck implements upstream.Backend. upstream.List calls it for one
// upstream after another; the first call of a round starts probes of every
// upstream at once, so a round takes one timeout, not one per dead upstream.
func (n *node) HealthCheck(ctx context.Context) (upstream.Tier, error) {
	p := n.b.probeFor(n)

	select {
	case <-p.done:
	case <-ctx.Done():
		// Only on shutdown: the probe has the same timeout and started first.
		p = &probe{err: ctx.Err()}
	}

	return n.b.record(n, p)
}

// resolve looks up a host-name upstream before each check, so that the
// relay loops, which cannot wait on DNS, always have a recent address.
// A failed lookup keeps the previous one; the check then tells whether it
// still works.
func (n *node) resolve(ctx context.Context) {
	host, port, err := net.SplitHostPort(n.addr)
	if err != nil {
		return
	}

	if _, err := netip.ParseAddr(host); err == nil {
		return // an address, set when the node was made
	}

	p, err := strconv.ParseUint(port, 10, 16)
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

	ap := netip.AddrPortFrom(ip.Unmap(), uint16(p))
	n.dialAddr.Store(&ap)
}

// usable reports whether new connections may go to n.
func (n *node) usable() bool { return n.healthy && !n.suspended }

// score is the current streak: passing checks in a row, or minus the
// failed ones.
func (n *node) score() float64 {
	if n.fails > 0 {
		return float64(-n.fails)
	}

	return float64(n.passes)
}

func (b *Balancer) probeFor(n *node) *probe {
	b.mu.Lock()
	defer b.mu.Unlock()

	if n.probe != nil {
		return n.probe
	}

	b.lastRound = time.Now()

	for _, m := range append(slices.Clone(b.nodes), n) {
		if m.probe == nil {
			m.probe = &probe{done: make(chan struct{})}
			go b.runProbe(m, m.probe)
		}
	}

	return n.probe
}

func (b *Balancer) runProbe(n *node, p *probe) {
	defer close(p.done)

	s := b.settings.Load()

	ctx, cancel := context.WithTimeout(context.Background(), s.HealthTimeout)
	defer cancel()

	n.resolve(ctx)

	var check Checker = TCPCheck{}
	if s.Check != nil {
		check = s.Check
	}

	start := time.Now()
	// The check dials what the relay loops will dial: the resolved address.
	target := n.addr
	if ap := n.dialAddr.Load(); ap != nil {
		target = ap.String()
	}

	p.err = check.Check(ctx, target)
	p.latency = time.Since(start)
}

// record applies a probe result to n under the fall/rise rule and returns
// what upstream.List expects.
func (b *Balancer) record(n *node, p *probe) (upstream.Tier, error) {
	s := b.settings.Load()

	b.mu.Lock()
	defer b.mu.Unlock()

	if n.probe == p {
		n.probe = nil
	}

	// Out of descriptors or memory here says nothing of the upstream:
	// taking it out (and resetting its clients) would turn a local
	// shortage into an outage. The round is skipped for it.
	if localShortage(p.err) {
		b.log.Warn("health check not run: the process is short of descriptors or memory",
			zap.String("upstream", n.addr), zap.Error(p.err))

		return n.tier, nil
	}

	was := n.usable()
	n.latency = p.latency

	if p.err != nil {
		n.fails++
		n.passes = 0
		n.lastErr = p.err

		if n.healthy && n.fails >= max(s.Fall, 1) {
			n.healthy = false

			if s.ResetOnFailure {
				b.bg.Go(func() { b.reset(n) })
			}
		}
	} else {
		n.passes++
		n.fails = 0
		n.tier = tierOf(b.tiers, p.latency)
		n.suspended = false
		n.lastErr = nil

		if !n.healthy && n.passes >= max(s.Rise, 1) {
			n.healthy = true
		}
	}

	b.logChange(n, was)

	if p.err != nil {
		return -1, p.err
	}

	return n.tier, nil
}

// reset closes the client connections of an upstream that failed its
// checks: waiting for TCP to notice a dead or hung peer takes minutes, a
// reconnect through the proxy takes milliseconds.
func (b *Balancer) reset(n *node) {
	if cut := b.closeNode(n); cut > 0 {
		b.stats.closedFailed.Add(uint64(cut))
		b.log.Warn("closed the connections of an unhealthy upstream so its clients reconnect elsewhere",
			zap.String("upstream", n.addr), zap.Int("closed", cut))
	}
}

// logChange logs a change of n's usability; b.mu is held.
func (b *Balancer) logChange(n *node, was bool) {
	now := n.usable()
	if now == was {
		return
	}

	n.changed = time.Now()
	fields := []zap.Field{zap.String("upstream", n.addr), zap.Float64("score", n.score())}

	if now {
		b.log.Info("upstream healthy", append(fields, zap.Duration("latency", n.latency))...)
	} else {
		b.log.Warn("upstream unhealthy", append(fields, zap.Error(n.lastErr))...)
	}
}

// suspend takes n out of selection after a failed dial until its next
// passing health check.
func (b *Balancer) suspend(n *node, err error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	was := n.usable()
	n.suspended = true
	n.lastErr = err
	b.logChange(n, was)
}

// pick returns the upstream for the next connection attempt, skipping those
// this client already tried: among the usable upstreams of the lowest
// latency tier, the one with the fewest active connections, ties taken in
// round-robin order. Upstreams suspended by a failed dial are a last
// resort; upstreams failing health checks are never tried, so with all of
// them down a client is closed at once.
func (b *Balancer) pick(tried []*node) (*node, error) {
	b.mu.Lock()
	defer b.mu.Unlock()

	var (
		best       *node
		bestIdx    int
		lastResort *node
	)

	count := len(b.nodes)
	for j := range count {
		i := (b.cursor + 1 + j) % count
		n := b.nodes[i]

		switch {
		case slices.Contains(tried, n) || !n.healthy:
			continue
		case n.suspended:
			if lastResort == nil {
				lastResort = n
			}
		case best == nil || n.tier < best.tier || (n.tier == best.tier && n.active.Load() < best.active.Load()):
			best, bestIdx = n, i
		}
	}

	if best != nil {
		b.cursor = bestIdx

		return best, nil
	}

	if lastResort != nil {
		return lastResort, nil
	}

	return nil, ErrNoUpstreams
}

// SetUpstreams replaces the upstream set. Upstreams that stay keep their
// health state and connections; new ones start usable. An empty set is
// refused: the proxy never ends up with nothing to send connections to.
func (b *Balancer) SetUpstreams(endpoints []Endpoint) error {
	if len(endpoints) == 0 {
		return ErrEmptySet
	}

	b.mu.Lock()
	old := b.nodes
	b.nodes = b.reuseNodes(endpoints)
	nodes := slices.Clone(b.nodes)
	b.mu.Unlock()

	for _, n := range nodes {
		if !slices.Contains(old, n) {
			b.log.Info("upstream added", zap.String("upstream", n.addr), zap.Strings("sources", n.sources))
		}
	}

	for _, n := range old {
		if !slices.Contains(nodes, n) {
			b.retire(n)
		}
	}

	b.listMu.Lock()
	defer b.listMu.Unlock()

	if b.list != nil {
		b.list.Reconcile(slices.Values(b.currentNodes()))
	}

	return nil
}

// retire lets the connections of a removed upstream finish for the drain
// timeout, then closes the rest so clients reconnect to a listed one.
func (b *Balancer) retire(n *node) {
	drain := b.settings.Load().DrainTimeout
	b.log.Info("upstream removed; draining its connections",
		zap.String("upstream", n.addr), zap.Int64("active_connections", n.active.Load()), zap.Duration("drain_timeout", drain))

	time.AfterFunc(drain, func() {
		if b.ctx.Err() != nil {
			return // shut down: drain already closed everything
		}

		if cut := b.closeNode(n); cut > 0 {
			b.stats.closedRemoved.Add(uint64(cut))
			b.log.Info("closed connections to a removed upstream", zap.String("upstream", n.addr), zap.Int("closed", cut))
		}
	})
}

func (b *Balancer) currentNodes() []*node {
	b.mu.Lock()
	defer b.mu.Unlock()

	return slices.Clone(b.nodes)
}

// reuseNodes maps endpoints to nodes, keeping the existing node of an
// address so that its state survives; b.mu is held or b is not shared yet.
func (b *Balancer) reuseNodes(endpoints []Endpoint) []*node {
	out := make([]*node, 0, len(endpoints))

	for _, ep := range endpoints {
		if j := slices.IndexFunc(out, func(n *node) bool { return n.addr == ep.Address }); j >= 0 {
			out[j].sources = append(out[j].sources, ep.Sources...)

			continue
		}

		i := slices.IndexFunc(b.nodes, func(n *node) bool { return n.addr == ep.Address })

		var n *node
		if i >= 0 {
			n = b.nodes[i]
		} else {
			n = &node{addr: ep.Address, b: b, healthy: true, changed: time.Now()}
			if ap, err := netip.ParseAddrPort(n.addr); err == nil {
				n.dialAddr.Store(&ap)
			}
		}

		n.sources = slices.Clone(ep.Sources)
		out = append(out, n)
	}

	return out
}
