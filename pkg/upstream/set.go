package upstream

import (
	"errors"
	"math/rand/v2"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/utils/clock"
)

// Sentinel errors callers branch on.
var (
	// ErrNoUpstreams means no upstream could take a connection.
	ErrNoUpstreams = errors.New("no usable upstream")
	// ErrEmptySet is returned when asked to replace the upstreams with nothing.
	ErrEmptySet = errors.New("refusing an empty upstream set")
)

// Endpoint is an upstream address and the sources that know of it.
type Endpoint struct {
	Address string   // host:port
	Sources []string // e.g. "static", "discovery"
}

// Rules are the tunables of the model; they can change while running.
type Rules struct {
	// Fall failed checks in a row take an upstream out; Rise passing ones
	// bring it back. Zero means 1.
	Fall, Rise int
	// ResetOnFailure has the engine close the connections of an upstream
	// that fails its checks, so clients reconnect to a healthy one at once.
	ResetOnFailure bool
	// DrainTimeout is how long connections to an upstream that left the
	// set may go on before the engine is told to close them.
	DrainTimeout time.Duration
	// Tiers are the check-latency bounds of the latency tiers; nil means
	// DefaultTiers, an empty slice one tier for all.
	Tiers []time.Duration
	// Interval is how often a usable upstream is checked. Retry is how
	// soon one that failed, or that the data path saw fail, is checked
	// again, doubling up to RetryMax, and the least time between two
	// checks of an upstream. Zero Retry or RetryMax, or more than
	// Interval, means Interval.
	Interval, Retry, RetryMax time.Duration
}

// DefaultTiers: an upstream that answers checks an order of magnitude
// slower is used only while no faster one is usable. The first bound is
// coarse on purpose: sub-millisecond jitter on a busy host must not move
// equal upstreams between tiers.
var DefaultTiers = []time.Duration{10 * time.Millisecond, 100 * time.Millisecond, time.Second}

// Reason says why the engine is asked to close an upstream's connections.
type Reason uint8

const (
	// ReasonFailed: the upstream failed its checks (Rules.ResetOnFailure).
	ReasonFailed Reason = iota
	// ReasonRemoved: the upstream left the set and its drain time is over.
	ReasonRemoved
)

// Closer closes the client connections of n and returns how many there
// were. The engine provides it; see the package rules for when it is called.
type Closer func(n *Node, why Reason) int

// Options configure a Set.
type Options struct {
	Clock  clock.WithDelayedExecution // nil means the real clock
	Logger *zap.Logger
	Rules  Rules
	// Rand returns a number in [0, 1) for the jitter; nil means math/rand.
	Rand func() float64
}

// Set is the upstream model.
type Set struct {
	clk    clock.WithDelayedExecution
	log    *zap.Logger
	rules  atomic.Pointer[Rules]
	closer atomic.Pointer[Closer]
	rand   func() float64
	wake   chan struct{}

	mu       sync.Mutex
	notes    []note           // log lines, written once mu is let go
	nodes    []*Node          // in configuration order
	draining map[string]*Node // listed no more, until their drain ends
	cursor   int              // of the last pick, for round-robin ties
	failOpen bool             // no upstream is usable
}

// New makes a Set of endpoints, which may not be empty.
func New(opts Options, endpoints []Endpoint) (*Set, error) {
	if len(endpoints) == 0 {
		return nil, ErrEmptySet
	}

	if opts.Clock == nil {
		opts.Clock = clock.RealClock{}
	}

	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}

	if opts.Rand == nil {
		opts.Rand = rand.Float64
	}

	s := &Set{clk: opts.Clock, log: opts.Logger, rand: opts.Rand, wake: make(chan struct{}, 1), cursor: -1, draining: map[string]*Node{}}
	s.SetRules(opts.Rules)
	s.nodes = s.reuse(endpoints)

	// What the node was configured with at start is used at once; what
	// comes later (discovery, a reload) waits for its first check.
	for _, n := range s.nodes {
		n.prove()
	}

	return s, nil
}

// SetRules changes the rules; they apply to the next event.
func (s *Set) SetRules(r Rules) {
	if r.Tiers == nil {
		r.Tiers = DefaultTiers
	}

	if r.RetryMax <= 0 || r.RetryMax > r.Interval {
		r.RetryMax = r.Interval
	}

	if r.Retry <= 0 || r.Retry > r.RetryMax {
		r.Retry = r.RetryMax
	}

	s.rules.Store(&r)
}

// SetCloser installs the engine's way of closing connections.
func (s *Set) SetCloser(c Closer) { s.closer.Store(&c) }

// close asks the engine to close n's connections; s.mu is not held.
func (s *Set) close(n *Node, why Reason) int {
	c := s.closer.Load()
	if c == nil {
		return 0
	}

	return (*c)(n, why)
}

// note is a log line written once the Set's lock is let go: Pick waits for
// that lock, and a relay loop waits for Pick.
type note struct {
	lvl    zapcore.Level
	msg    string
	fields []zap.Field
}

// note queues a log line; s.mu is held.
func (s *Set) note(lvl zapcore.Level, msg string, fields ...zap.Field) {
	s.notes = append(s.notes, note{lvl, msg, fields})
}

// unlock lets go of s.mu, then writes the queued lines.
func (s *Set) unlock() {
	notes := s.notes
	s.notes = nil
	s.mu.Unlock()

	for _, n := range notes {
		s.log.Log(n.lvl, n.msg, n.fields...)
	}
}

// Nodes returns the listed upstreams, in configuration order.
func (s *Set) Nodes() []*Node {
	s.mu.Lock()
	defer s.mu.Unlock()

	return slices.Clone(s.nodes)
}

// Reconcile replaces the set with endpoints. Upstreams that stay keep
// their health state and connections; new ones are checked at once and
// used once they pass (an EndpointSlice is not trusted to name only
// working API servers); those that leave drain. An empty set is refused:
// the proxy never ends up with nothing to send connections to.
func (s *Set) Reconcile(endpoints []Endpoint) error {
	if len(endpoints) == 0 {
		return ErrEmptySet
	}

	drain := s.rules.Load().DrainTimeout

	s.mu.Lock()
	old := s.nodes
	s.nodes = s.reuse(endpoints)

	for _, n := range old {
		if !slices.Contains(s.nodes, n) {
			s.retire(n, drain)
		}
	}

	for _, n := range s.nodes {
		switch {
		case slices.Contains(old, n):
		case n.revived:
			s.note(zap.InfoLevel, "upstream listed again while draining; its connections stay",
				zap.String("upstream", n.addr), zap.Int64("active_connections", n.Active()))
		default:
			s.note(zap.InfoLevel, "upstream added", zap.String("upstream", n.addr), zap.Strings("sources", n.sources))
			s.poke() // due at once
		}
	}

	s.updateFailOpen()
	s.unlock()

	return nil
}

// reuse maps endpoints to nodes, keeping the existing node of an address
// so that its state survives, and reviving one that is draining; s.mu is
// held or s is not shared yet.
func (s *Set) reuse(endpoints []Endpoint) []*Node {
	out := make([]*Node, 0, len(endpoints))
	listed := make(map[string]*Node, len(s.nodes))
	placed := make(map[string]*Node, len(endpoints))

	for _, n := range s.nodes {
		n.revived = false
		listed[n.addr] = n
	}

	for _, ep := range endpoints {
		if n := placed[ep.Address]; n != nil {
			n.sources = append(n.sources, ep.Sources...)

			continue
		}

		n := listed[ep.Address]
		if n == nil {
			n = s.revive(ep.Address)
		}

		if n == nil {
			n = newNode(ep.Address, s.clk.Now())
		}

		n.sources = slices.Clone(ep.Sources)
		placed[ep.Address] = n
		out = append(out, n)
	}

	return out
}

// revive lists a draining node again and stops its drain; s.mu is held.
func (s *Set) revive(addr string) *Node {
	n := s.draining[addr]
	if n == nil {
		return nil
	}

	delete(s.draining, addr)
	n.drain.Stop()
	n.drain = nil
	n.revived = true

	return n
}

// retire lets the connections of a removed upstream go on for the drain
// timeout, then has the engine close the rest so clients reconnect to a
// listed one; s.mu is held. The address cannot be draining already:
// listing it again revived the node that was.
func (s *Set) retire(n *Node, drain time.Duration) {
	s.note(zap.InfoLevel, "upstream removed; draining its connections",
		zap.String("upstream", n.addr), zap.Int64("active_connections", n.Active()), zap.Duration("drain_timeout", drain))

	s.draining[n.addr] = n

	var t clock.Timer
	t = s.clk.AfterFunc(drain, func() {
		s.mu.Lock()
		current := n.drain == t
		if current {
			delete(s.draining, n.addr)
			n.drain = nil
		}
		s.mu.Unlock()

		if current {
			s.expire(n)
		}
	})
	n.drain = t
}

// expire has the engine close what is left of a drained node.
func (s *Set) expire(n *Node) {
	if cut := s.close(n, ReasonRemoved); cut > 0 {
		s.log.Info("closed connections to a removed upstream", zap.String("upstream", n.addr), zap.Int("closed", cut))
	}
}

// Ready reports whether at least one upstream is usable.
func (s *Set) Ready() bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	return slices.ContainsFunc(s.nodes, (*Node).usable)
}
