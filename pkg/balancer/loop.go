package balancer

import (
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"golang.org/x/sys/unix"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// loop is one relay event loop: an edge-triggered epoll set over the
// sockets of its sessions, served by one goroutine.
//
// The goroutine blocks in epoll_wait itself. Waiting in Go's poller
// instead (the epoll descriptor is pollable) was measured: every wake-up
// then passes through the scheduler, and request latency through the
// proxy rose from 1.3x to 2.1x a direct connection.
//
// A goroutine per direction, as net.Conn copying needs, costs two stacks
// per idle connection and a scheduler wake-up per message. Here an idle
// connection is a session struct and two epoll registrations, and a message
// costs what it costs a C proxy: epoll_wait, a read and a write. Sessions
// are started, dialed, raced and copied by the loop's goroutine. Their
// state is guarded by mu, which the loop holds while it handles a batch of
// events and which the balancer takes to close sessions from elsewhere
// (reset, drain, removal).
type loop struct {
	b    *Balancer
	epfd int
	wake int // eventfd: ends epoll_wait for stop

	mu       sync.Mutex
	regs     []reg // by slot; an event names a slot and its generation
	free     []int32
	sessions map[*session]struct{}
	ready    []*session // sessions to continue before waiting again
	pipes    []pipe     // empty pipes, ready for the next splice
	buf      []byte     // scratch for reads that must be copied
	wakes    wakes      // session deadlines
	firing   time.Time  // the now of the deadlines fireWakes is running
	// now is when this batch of events left epoll_wait: the time the
	// sessions stamp their bytes with, without a clock read per read.
	now time.Time
	// settleAfter is settleAfter; tests change it, under mu.
	settleAfter time.Duration
	young       youngList // sessions whose late socket options are not set yet
	stopped     bool
	failed      atomic.Bool // run ended on an error: Alive reports it
	// busy is when the loop last left epoll_wait (unix nanoseconds), 0
	// while it waits there: a loop busy for long is wedged (Alive).
	busy atomic.Int64

	// Made once mu is let go: a log line can block on a slow journal, and
	// the model takes its own lock.
	notes    []note
	evidence []evidence
}

// note is a log line the loop writes after letting go of its lock.
type note struct {
	lvl    zapcore.Level
	msg    string
	fields []zap.Field
}

// evidence is a report to the model the loop makes after letting go of
// its lock.
type evidence struct {
	n   *upstream.Node
	e   upstream.Evidence
	err error
}

// note queues a log line; l.mu is held.
func (l *loop) note(lvl zapcore.Level, msg string, fields ...zap.Field) {
	if l.b.log.Core().Enabled(lvl) {
		l.notes = append(l.notes, note{lvl, msg, fields})
	}
}

// report queues evidence for the model; l.mu is held.
func (l *loop) report(n *upstream.Node, e upstream.Evidence, err error) {
	l.evidence = append(l.evidence, evidence{n, e, err})
}

// unlock lets go of l.mu, then makes the queued reports and writes the
// queued lines.
func (l *loop) unlock() {
	ev, notes := l.evidence, l.notes
	if len(ev) > 0 || len(notes) > 0 {
		l.evidence, l.notes = nil, nil
	}

	l.mu.Unlock()

	for _, e := range ev {
		l.b.ups.Report(e.n, e.e, e.err)
	}

	for _, n := range notes {
		l.b.log.Log(n.lvl, n.msg, n.fields...)
	}
}

// reg is one registered descriptor. gen changes whenever the slot is
// reused, so an event for a descriptor closed earlier in the same batch is
// recognised and dropped, even if the kernel gave its number to a new one.
type reg struct {
	s   *session
	d   *dialing // for roleDial
	fd  int
	gen uint32
	ev  uint32 // the events epoll watches
	r   role
}

type role uint8

const (
	roleNone role = iota
	roleClient
	roleUpstream
	roleDial
)

// Slots of the descriptors that are not a session's.
const (
	wakeSlot     = -1 // the eventfd
	listenerSlot = -2
)

// What epoll watches on a socket. Writability is watched only while a
// socket connects or once a write to it would block: an accepted or a
// connected socket can take bytes, and epoll reports a watched condition
// that already holds when a socket is added, so watching it from the start
// would cost a wake-up per socket for nothing.
const (
	evRead  = unix.EPOLLIN | unix.EPOLLRDHUP | unix.EPOLLET
	evWrite = evRead | unix.EPOLLOUT
)

// maxSparePipes bounds the empty pipes a loop keeps for later.
const maxSparePipes = 16

func newLoop(b *Balancer) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}

	wake, err := unix.Eventfd(0, unix.EFD_NONBLOCK|unix.EFD_CLOEXEC)
	if err != nil {
		_ = unix.Close(epfd)

		return nil, fmt.Errorf("eventfd: %w", err)
	}

	ev := unix.EpollEvent{Events: unix.EPOLLIN, Fd: wakeSlot}
	if err := unix.EpollCtl(epfd, unix.EPOLL_CTL_ADD, wake, &ev); err != nil {
		_ = unix.Close(epfd)
		_ = unix.Close(wake)

		return nil, fmt.Errorf("epoll_ctl: %w", err)
	}

	return &loop{
		b: b, epfd: epfd, wake: wake,
		sessions:    map[*session]struct{}{},
		buf:         make([]byte, copyBuf),
		settleAfter: settleAfter,
	}, nil
}

// yieldEvery is how often a busy loop passes through the scheduler. A
// goroutine that only ever leaves and re-enters syscalls looks to the
// runtime like one that never yields: every 10 ms it is preempted by a
// signal, and the runtime's monitor, finding work each time, polls at its
// fastest (20 µs). Measured under a connection flood: 3,000 monitor
// wake-ups and 200 preemption signals a second, about 7% of the proxy's
// CPU. A voluntary yield costs a trip through the run queue and wakes an
// idle thread, so it is done at half the preemption period, no more.
const yieldEvery = 5 * time.Millisecond

// run serves events until stop.
func (l *loop) run() {
	events := make([]unix.EpollEvent, 256)
	timeout := -1
	yielded := time.Now()

	for {
		l.busy.Store(0)
		n, err := unix.EpollWait(l.epfd, events, timeout)
		woke := time.Now()
		l.busy.Store(woke.UnixNano())

		if err != nil && !errors.Is(err, unix.EINTR) {
			l.b.log.Error("epoll_wait failed; relay loop ends", zap.Error(err))
			l.failed.Store(true)

			return
		}

		l.mu.Lock()
		if l.stopped {
			l.mu.Unlock()

			return
		}

		l.now = woke

		for _, ev := range events[:max(n, 0)] {
			l.dispatch(ev)
		}

		ready := l.ready
		l.ready = nil

		for _, s := range ready {
			s.queued = false
			s.progress()
		}

		now := time.Now()

		timeout = earliest(l.fireWakes(now), l.settleDue(now))
		if len(l.ready) > 0 {
			timeout = 0
		}
		l.unlock()

		if now.Sub(yielded) > yieldEvery {
			yielded = now
			runtime.Gosched()
		}
	}
}

func (l *loop) dispatch(ev unix.EpollEvent) {
	switch ev.Fd {
	case wakeSlot:
		return
	case listenerSlot:
		l.acceptSome()

		return
	}

	r := &l.regs[ev.Fd]
	if r.gen != uint32(ev.Pad) || r.s == nil || r.s.done {
		return // stale: closed earlier in this batch
	}

	s := r.s

	switch r.r {
	case roleDial:
		s.dialEvent(r.d, ev.Events)
	case roleClient:
		s.client.saw(ev.Events)
		s.progress()
	case roleUpstream:
		s.up.saw(ev.Events)
		s.progress()
	}
}

// saw records an epoll event for the side.
func (sd *side) saw(events uint32) {
	sd.rd = sd.rd || events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0
	sd.wr = sd.wr || events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0
	sd.hup = sd.hup || events&(unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0
}

// register adds fd to the epoll set for s, watching ev; l.mu is held.
func (l *loop) register(fd int, s *session, r role, d *dialing, ev uint32) (int32, error) {
	var slot int32

	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		l.regs = append(l.regs, reg{})
		slot = int32(len(l.regs) - 1)
	}

	g := &l.regs[slot]
	g.s, g.d, g.fd, g.r, g.ev = s, d, fd, r, ev

	e := unix.EpollEvent{Events: ev, Fd: slot, Pad: int32(g.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &e); err != nil {
		l.release(slot)

		return -1, fmt.Errorf("epoll_ctl: %w", err)
	}

	return slot, nil
}

// watchWrites has epoll report when the slot's socket can take bytes
// again. A write that would block has just been refused, so the kernel
// will announce the space; and a modified registration is checked at
// once, so space that freed in between is not missed.
func (l *loop) watchWrites(slot int32) error {
	g := &l.regs[slot]
	if g.ev&unix.EPOLLOUT != 0 {
		return nil
	}

	g.ev = evWrite

	e := unix.EpollEvent{Events: g.ev, Fd: slot, Pad: int32(g.gen)}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_MOD, g.fd, &e); err != nil {
		return fmt.Errorf("epoll_ctl: %w", err)
	}

	return nil
}

// retag changes the role of a registered slot (a dial that won becomes
// the upstream).
func (l *loop) retag(slot int32, r role) {
	l.regs[slot].r = r
	l.regs[slot].d = nil
}

// closeSlot closes the slot's descriptor, which also leaves the epoll set.
func (l *loop) closeSlot(slot int32) {
	_ = unix.Close(l.regs[slot].fd)
	l.release(slot)
}

func (l *loop) release(slot int32) {
	g := &l.regs[slot]
	*g = reg{gen: g.gen + 1}
	l.free = append(l.free, slot)
}

// again queues s to continue after this batch: it stopped while it could
// still move bytes, to give other sessions their turn.
func (l *loop) again(s *session) {
	if !s.queued {
		s.queued = true
		l.ready = append(l.ready, s)
	}
}

// getPipe returns an empty pipe, new if none is spare.
func (l *loop) getPipe() (pipe, error) {
	if n := len(l.pipes); n > 0 {
		p := l.pipes[n-1]
		l.pipes = l.pipes[:n-1]

		return p, nil
	}

	var fds [2]int
	if err := l.b.sys.pipe(fds[:]); err != nil {
		return pipe{}, fmt.Errorf("pipe2: %w", err)
	}

	// As Go's own splice does: a larger pipe moves a bulk transfer in
	// fewer syscalls. Pages are taken only as data passes through.
	_, _ = unix.FcntlInt(uintptr(fds[0]), unix.F_SETPIPE_SZ, maxSplice)

	return pipe{r: fds[0], w: fds[1]}, nil
}

// putPipe keeps an empty pipe for later, or closes it.
func (l *loop) putPipe(p pipe) {
	if len(l.pipes) < maxSparePipes {
		l.pipes = append(l.pipes, p)

		return
	}

	p.close()
}

// stop ends the loop and frees its descriptors. Sessions must be closed.
func (l *loop) stop() {
	l.mu.Lock()
	l.stopped = true

	for _, p := range l.pipes {
		p.close()
	}

	l.pipes = nil
	l.mu.Unlock()

	_, _ = unix.Write(l.wake, []byte{1, 0, 0, 0, 0, 0, 0, 0})
}

// closeFDs releases the epoll and eventfd descriptors once run returned.
func (l *loop) closeFDs() {
	_ = unix.Close(l.epfd)
	_ = unix.Close(l.wake)
}

// pipe is a pipe's two ends, used as a splice buffer.
type pipe struct{ r, w int }

func (p pipe) close() {
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}
