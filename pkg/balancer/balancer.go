// Package balancer is extractedprism's data path: a TCP proxy that spreads
// connections over health-checked upstreams and retries a failed dial on the
// next usable upstream, so a client only sees a failure when every upstream
// failed.
//
// It is built on go-loadbalancer's upstream.List, which schedules the health
// checks and reconciles the upstream set. Selection, dialing and copying are
// ours: the library's Pick cannot skip an upstream that just failed a dial,
// and its tcpproxy target closes the client on the first dial error.
// Connections are accepted and served by epoll loops, one per CPU (see
// loop), not by goroutines: an idle connection holds no stack and no
// buffer, and a new one costs no goroutine and no hand-over between
// threads. tcpproxy's goroutine-per-connection accept loop was measured
// at 10% of the connection rate.
package balancer

import (
	"context"
	"errors"
	"fmt"
	"net"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/siderolabs/go-loadbalancer/upstream"
	"go.uber.org/zap"
)

// Sentinel errors callers branch on.
var (
	// ErrNoUpstreams means no upstream could take a connection.
	ErrNoUpstreams = errors.New("no usable upstream")
	// ErrEmptySet is returned when asked to replace the upstreams with nothing.
	ErrEmptySet = errors.New("refusing an empty upstream set")
	// ErrListenerFailed means the accept loop ended for good.
	ErrListenerFailed = errors.New("listener failed")
)

// Endpoint is an upstream address and the sources that know of it.
type Endpoint struct {
	Address string   // host:port
	Sources []string // e.g. "static", "discovery"
}

// Options configure a Balancer.
type Options struct {
	// Listener is where clients connect, as handed in (for example
	// inherited from systemd). New takes its socket over and closes the
	// net.Listener itself; the socket is closed on Shutdown.
	Listener net.Listener
	Logger   *zap.Logger
	// Loops is the number of relay loops; zero means GOMAXPROCS.
	Loops int
	Settings
}

// Settings are the tunables that can change while running (see Apply).
type Settings struct {
	HealthInterval time.Duration
	HealthTimeout  time.Duration
	// Check judges upstreams; nil means TCPCheck.
	Check Checker
	// Fall failed checks in a row take an upstream out; Rise passing ones
	// bring it back. Zero means 1.
	Fall, Rise int
	// ResetOnFailure closes the connections of an upstream that fails its
	// checks, so clients reconnect to a healthy one at once.
	ResetOnFailure bool

	DialTimeout time.Duration
	// DialHeadStart is how long a dial may take before the next upstream is
	// dialed in parallel; zero disables racing.
	DialHeadStart   time.Duration
	KeepAlivePeriod time.Duration // 0 disables keepalive
	TCPUserTimeout  time.Duration // 0 leaves the kernel default
	// DrainTimeout is how long connections to an upstream that left the
	// set may go on before they are closed.
	DrainTimeout time.Duration
}

// healthJitter spreads check rounds by ±20% of the interval.
const healthJitter = 0.2

// Balancer proxies connections from a listener to upstreams.
type Balancer struct {
	log      *zap.Logger
	settings atomic.Pointer[Settings]
	acc      *acceptor

	// listMu serialises replacing the list with reconciling it.
	listMu sync.Mutex
	list   *upstream.List[*node]

	mu        sync.Mutex
	nodes     []*node
	cursor    int
	lastRound time.Time
	started   time.Time

	loops    []*loop
	nextLoop atomic.Uint32
	sockopts atomic.Pointer[upstreamOpts] // from settings
	// acceptOpts are the options the listener refused, set on each
	// accepted socket instead.
	acceptOpts atomic.Pointer[[]sockopt]

	live     atomic.Int64 // sessions open
	draining atomic.Bool  // refusing new sessions
	shutdown atomic.Bool  // Shutdown was called: its descriptors are closed
	idle     chan struct{}
	idleOnce sync.Once

	stats counters
	tiers []time.Duration // latency tier bounds; tests may use one tier

	// ctx ends on Shutdown: pending dials give up and background work
	// (bg) finishes before Shutdown returns.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// New creates a Balancer for the given endpoints. Call Start to serve.
func New(opts Options, endpoints []Endpoint) (*Balancer, error) {
	if opts.Listener == nil {
		return nil, errors.New("balancer: no listener")
	}

	if len(endpoints) == 0 {
		return nil, ErrEmptySet
	}

	if opts.Logger == nil {
		opts.Logger = zap.NewNop()
	}

	acc, err := newAcceptor(opts.Listener, opts.Logger)
	if err != nil {
		return nil, err
	}

	if opts.Loops <= 0 {
		opts.Loops = runtime.GOMAXPROCS(0)
	}

	b := &Balancer{log: opts.Logger, acc: acc, idle: make(chan struct{}), cursor: -1}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.store(opts.Settings)
	b.tiers = tierBounds
	b.nodes = b.reuseNodes(endpoints)

	for range opts.Loops {
		l, err := newLoop(b)
		if err != nil {
			b.closeLoops()
			_ = acc.close()

			return nil, err
		}

		b.loops = append(b.loops, l)
	}

	return b, nil
}

// Start begins health checks and serving the listener.
func (b *Balancer) Start() error {
	b.mu.Lock()
	b.started = time.Now()
	b.lastRound = b.started
	b.mu.Unlock()

	b.listMu.Lock()
	defer b.listMu.Unlock()

	if err := b.tuneListener(b.settings.Load()); err != nil {
		return fmt.Errorf("setting socket options on %s: %w", b.Addr(), err)
	}

	list, err := b.newList(*b.settings.Load())
	if err != nil {
		return err
	}

	b.list = list

	for _, l := range b.loops {
		b.bg.Go(l.run)
	}

	if err := b.acc.start(b.loops); err != nil {
		b.list.Shutdown()

		return fmt.Errorf("serving %s: %w", b.Addr(), err)
	}

	return nil
}

// WaitFirstCheck blocks until the first health-check round has finished.
func (b *Balancer) WaitFirstCheck(ctx context.Context) error {
	b.listMu.Lock()
	list := b.list
	b.listMu.Unlock()

	if err := list.WaitForInitialHealthcheck(ctx); err != nil {
		return fmt.Errorf("waiting for the first health check: %w", err)
	}

	return nil
}

// Done is closed when the accept loop has ended, by Shutdown or by failure;
// Err then tells which.
func (b *Balancer) Done() <-chan struct{} { return b.acc.done }

// Err is ErrListenerFailed (wrapped) if the accept loop ended by itself.
func (b *Balancer) Err() error {
	b.acc.mu.Lock()
	defer b.acc.mu.Unlock()

	return b.acc.err
}

// Addr is the address clients connect to.
func (b *Balancer) Addr() net.Addr { return b.acc.addr }

// Shutdown stops accepting, waits until in-flight connections finish or ctx
// ends, then closes the rest. It returns how many connections were cut; a
// second call does nothing and returns 0.
func (b *Balancer) Shutdown(ctx context.Context) int {
	if !b.shutdown.CompareAndSwap(false, true) {
		return 0
	}

	_ = b.acc.close()

	b.listMu.Lock()
	if b.list != nil {
		b.list.Shutdown()
	}
	b.listMu.Unlock()

	cut := b.drain(ctx)
	b.stats.closedShutdown.Add(uint64(cut))

	for _, l := range b.loops {
		l.stop()
	}

	b.cancel()
	b.bg.Wait()
	b.closeLoops()

	return cut
}

func (b *Balancer) closeLoops() {
	for _, l := range b.loops {
		l.closeFDs()
	}
}

func (b *Balancer) tuneListener(s *Settings) error {
	var left []sockopt

	if err := b.acc.control(func(fd int) (err error) {
		left, err = tuneListener(fd, s)

		return err
	}); err != nil {
		return err
	}

	// On loopback the peer's kernel answers for it: keepalive probes are
	// always acknowledged and no segment stays unacknowledged, so what
	// the listener refused would only cost a syscall per connection.
	if ta, ok := b.Addr().(*net.TCPAddr); ok && ta.IP.IsLoopback() {
		left = nil
	}

	b.acceptOpts.Store(&left)

	return nil
}

// store makes s the current settings.
func (b *Balancer) store(s Settings) *Settings {
	b.sockopts.Store(upstreamOptions(&s))

	return b.settings.Swap(&s)
}

// newList starts an upstream.List over the current upstreams. The list runs
// the health-check schedule; its own scores are not read (it has no
// accessor): each node's fall/rise state kept here is what counts.
func (b *Balancer) newList(s Settings) (*upstream.List[*node], error) {
	b.mu.Lock()
	nodes := slices.Clone(b.nodes)
	b.mu.Unlock()

	list, err := upstream.NewList(slices.Values(nodes),
		upstream.WithHealthcheckInterval(s.HealthInterval),
		upstream.WithHealthcheckTimeout(s.HealthTimeout),
		upstream.WithHealthCheckJitter(healthJitter),
		upstream.WithTiers(0, maxTier, 0),
	)
	if err != nil {
		return nil, fmt.Errorf("creating upstream list: %w", err)
	}

	return list, nil
}

// Apply changes the settings of a running balancer. Dial and socket
// settings apply to the next connection; a new health interval or timeout
// restarts the health-check schedule, keeping every upstream's state.
func (b *Balancer) Apply(s Settings) error {
	old := b.store(s)

	if err := b.tuneListener(&s); err != nil {
		b.log.Warn("could not apply socket options to the listener; accepted connections keep the old ones", zap.Error(err))
	}

	if old.HealthInterval == s.HealthInterval && old.HealthTimeout == s.HealthTimeout {
		return nil
	}

	b.listMu.Lock()
	defer b.listMu.Unlock()

	if b.list == nil { // not started
		return nil
	}

	list, err := b.newList(s)
	if err != nil {
		b.store(*old)

		return err
	}

	b.list.Shutdown()
	b.list = list

	return nil
}
