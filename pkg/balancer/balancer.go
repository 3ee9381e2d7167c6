// Package balancer is extractedprism's relay engine: it accepts clients,
// dials upstreams, races and retries dials, and moves bytes. Which upstream
// a client goes to, and what counts as healthy, is not its business: it
// asks the model (Upstreams, package upstream) for an upstream, reports
// back what its connections learned, and closes the connections the model
// names. A client only sees a failure when every upstream failed.
//
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
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// ErrListenerFailed means the accept loop ended for good.
var ErrListenerFailed = errors.New("listener failed")

// ErrNoUpstreams means no upstream could take a connection.
var ErrNoUpstreams = upstream.ErrNoUpstreams

// Upstreams is what the engine needs of the upstream model. Pick and
// Report are called with a loop's lock held; the model calls the closer
// (SetCloser) from elsewhere.
type Upstreams interface {
	Pick(tried []*upstream.Node) (*upstream.Node, error)
	Report(n *upstream.Node, e upstream.Evidence, err error)
	SetCloser(c upstream.Closer)
}

// Options configure a Balancer.
type Options struct {
	// Listener is where clients connect, as handed in (for example
	// inherited from systemd). New takes its socket over and closes the
	// net.Listener itself; the socket is closed on Shutdown.
	Listener net.Listener
	// Upstreams is the model that picks upstreams.
	Upstreams Upstreams
	Logger    *zap.Logger
	// Loops is the number of relay loops; zero means GOMAXPROCS.
	Loops int
	Settings
}

// Settings are the tunables that can change while running (see Apply).
type Settings struct {
	DialTimeout time.Duration
	// DialHeadStart is how long a dial may take before the next upstream is
	// dialed in parallel; zero disables racing.
	DialHeadStart   time.Duration
	KeepAlivePeriod time.Duration // 0 disables keepalive
	TCPUserTimeout  time.Duration // 0 leaves the kernel default
	// MaxConnections bounds the client connections proxied at once; one
	// over it is reset at once. 0: no bound.
	MaxConnections int
	// AnswerTimeout is how long an upstream may take to send its first
	// byte after the client's first bytes reached it; then it is reported
	// (NoAnswer) and the client moves to another upstream once. 0 waits.
	// On an established connection, it is how long the upstream may stay
	// silent after the client asked something: then it is reported, and
	// only checked soon.
	AnswerTimeout time.Duration
}

// Balancer proxies connections from a listener to upstreams.
type Balancer struct {
	log      *zap.Logger
	settings atomic.Pointer[Settings]
	acc      *acceptor
	ups      Upstreams

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
	noise struct{ dialFailed, rejected, replayed, overLimit, starved noisy }
	// replayHeld is what sessions keep in total for a replay; over
	// replayBudget a session gives up its copy (see session.keep).
	replayHeld   atomic.Int64
	replayBudget int64
	// connect starts a dial, sys moves bytes; tests inject failures there.
	connect func(netip.AddrPort, []sockopt) (int, error)
	sys     *sys
	// stallAfter is how long a loop may handle one batch of events before
	// Alive calls it wedged: a batch takes microseconds to milliseconds.
	stallAfter time.Duration
	// reactWithin: client bytes this soon after the upstream's are a
	// reaction to them, not a question (see session.asked).
	reactWithin time.Duration

	// ctx ends on Shutdown: pending dials give up and background work
	// (bg) finishes before Shutdown returns.
	ctx    context.Context
	cancel context.CancelFunc
	bg     sync.WaitGroup
}

// New creates a Balancer. Call Start to serve.
func New(opts Options) (*Balancer, error) {
	if opts.Listener == nil || opts.Upstreams == nil {
		return nil, errors.New("balancer: a listener and upstreams are needed")
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

	b := &Balancer{log: opts.Logger, acc: acc, ups: opts.Upstreams, idle: make(chan struct{}), connect: connectRaw, sys: kernel, stallAfter: stallAfter, replayBudget: replayBudget,
		reactWithin: reactWithin}
	b.ctx, b.cancel = context.WithCancel(context.Background())
	b.store(opts.Settings)

	for range opts.Loops {
		l, err := newLoop(b)
		if err != nil {
			b.closeLoops()
			_ = acc.close()

			return nil, err
		}

		b.loops = append(b.loops, l)
	}

	b.ups.SetCloser(b.closeUpstream)

	return b, nil
}

// Start begins serving the listener.
func (b *Balancer) Start() error {
	if err := b.tuneListener(b.settings.Load()); err != nil {
		return fmt.Errorf("setting socket options on %s: %w", b.Addr(), err)
	}

	for _, l := range b.loops {
		b.bg.Go(l.run)
	}

	if err := b.acc.start(b.loops); err != nil {
		return fmt.Errorf("serving %s: %w", b.Addr(), err)
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

// Apply changes the settings of a running balancer; they apply to the next
// connection.
func (b *Balancer) Apply(s Settings) {
	b.store(s)

	if err := b.tuneListener(&s); err != nil {
		b.log.Warn("could not apply socket options to the listener; accepted connections keep the old ones", zap.Error(err))
	}
}

// stallAfter: see Balancer.stallAfter. The watchdog (WatchdogSec) then
// restarts the service.
const stallAfter = 5 * time.Second

// reactWithin: see Balancer.reactWithin. A client's HTTP/2 stack answers a
// frame within milliseconds; a request rarely follows an answer this soon,
// and when it does the next one starts the wait.
const reactWithin = 100 * time.Millisecond

// ErrStalled means one of the balancer's own loops stopped making progress.
var ErrStalled = errors.New("stalled")

// Alive reports whether the engine's own loops work. It says nothing about
// the upstreams, so a watchdog built on it never restarts the proxy because
// an API server is down.
func (b *Balancer) Alive() error {
	select {
	case <-b.acc.done:
		return fmt.Errorf("accept loop: %w", ErrStalled)
	default:
	}

	for _, l := range b.loops {
		if l.failed.Load() {
			return fmt.Errorf("relay loop: %w", ErrStalled)
		}

		if busy := l.busy.Load(); busy != 0 && time.Since(time.Unix(0, busy)) > b.stallAfter {
			return fmt.Errorf("relay loop busy for %s: %w", time.Since(time.Unix(0, busy)).Round(time.Millisecond), ErrStalled)
		}
	}

	return nil
}
