package balancer

import (
	"errors"
	"fmt"
	"os"
	"sync"
	"syscall"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// loop is one relay event loop: an edge-triggered epoll set over the
// sockets of its sessions, served by one goroutine.
//
// The goroutine never blocks in epoll_wait: a thread blocked in a syscall
// holds its P, and the runtime's monitor would take it back every 20 µs,
// a storm of wake-ups under load. Instead the epoll descriptor itself
// waits in Go's poller (it is readable when it has events) and is only
// ever polled with a zero timeout.
//
// A goroutine per direction, as net.Conn copying needs, costs two stacks
// per idle connection and a scheduler wake-up per message. Here an idle
// connection is a session struct and two epoll registrations, and a message
// costs what it costs a C proxy: epoll_wait, then a splice in and a splice
// out. All session state is guarded by mu, which the loop holds while it
// handles a batch of events; HandleConn, timers and the balancer take it
// to start, race or close sessions from other goroutines.
type loop struct {
	b    *Balancer
	epfd int
	file *os.File // epfd, to wait in Go's poller; Close ends run
	raw  syscall.RawConn

	mu       sync.Mutex
	regs     []reg // by slot; an event names a slot and its generation
	free     []int32
	sessions map[*session]struct{}
	ready    []*session // sessions to continue before waiting again
	pipes    []pipe     // empty pipes, ready for the next splice
	buf      []byte     // scratch for reads that must be copied
}

// reg is one registered descriptor. gen changes whenever the slot is
// reused, so an event for a descriptor closed earlier in the same batch is
// recognised and dropped, even if the kernel gave its number to a new one.
type reg struct {
	s   *session
	d   *dialing // for roleDial
	fd  int
	gen uint32
	r   role
}

type role uint8

const (
	roleNone role = iota
	roleClient
	roleUpstream
	roleDial
)

// maxSparePipes bounds the empty pipes a loop keeps for later.
const maxSparePipes = 16

func newLoop(b *Balancer) (*loop, error) {
	epfd, err := unix.EpollCreate1(unix.EPOLL_CLOEXEC)
	if err != nil {
		return nil, fmt.Errorf("epoll_create1: %w", err)
	}

	// Non-blocking, so that os.NewFile registers it with the poller.
	if err := unix.SetNonblock(epfd, true); err != nil {
		_ = unix.Close(epfd)

		return nil, fmt.Errorf("epoll: %w", err)
	}

	file := os.NewFile(uintptr(epfd), "epoll")

	raw, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()

		return nil, fmt.Errorf("epoll: %w", err)
	}

	return &loop{
		b: b, epfd: epfd, file: file, raw: raw,
		sessions: map[*session]struct{}{},
		buf:      make([]byte, copyBuf),
	}, nil
}

// run serves events until stop.
func (l *loop) run() {
	events := make([]unix.EpollEvent, 256)
	more := false // sessions wait in l.ready

	for {
		var (
			n    int
			werr error
		)

		err := l.raw.Read(func(fd uintptr) bool {
			n, werr = unix.EpollWait(int(fd), events, 0)

			return n > 0 || more || (werr != nil && !errors.Is(werr, unix.EINTR))
		})
		if err != nil {
			return // stopped
		}

		if werr != nil && !errors.Is(werr, unix.EINTR) {
			l.b.log.Error("epoll_wait failed; relay loop ends", zap.Error(werr))

			return
		}

		l.mu.Lock()

		for _, ev := range events[:max(n, 0)] {
			l.dispatch(ev)
		}

		ready := l.ready
		l.ready = nil

		for _, s := range ready {
			s.queued = false
			s.progress()
		}

		more = len(l.ready) > 0
		l.mu.Unlock()
	}
}

func (l *loop) dispatch(ev unix.EpollEvent) {
	r := &l.regs[ev.Fd]
	if r.gen != uint32(ev.Pad) || r.s == nil || r.s.done {
		return // stale: closed earlier in this batch
	}

	s := r.s
	in := ev.Events&(unix.EPOLLIN|unix.EPOLLERR|unix.EPOLLHUP|unix.EPOLLRDHUP) != 0
	out := ev.Events&(unix.EPOLLOUT|unix.EPOLLERR|unix.EPOLLHUP) != 0

	switch r.r {
	case roleDial:
		s.dialEvent(r.d, in)
	case roleClient:
		s.client.rd = s.client.rd || in
		s.client.wr = s.client.wr || out
		s.progress()
	case roleUpstream:
		s.up.rd = s.up.rd || in
		s.up.wr = s.up.wr || out
		s.progress()
	}
}

// register adds fd to the epoll set for s; l.mu is held.
func (l *loop) register(fd int, s *session, r role, d *dialing) (int32, error) {
	var slot int32

	if n := len(l.free); n > 0 {
		slot = l.free[n-1]
		l.free = l.free[:n-1]
	} else {
		l.regs = append(l.regs, reg{})
		slot = int32(len(l.regs) - 1)
	}

	g := &l.regs[slot]
	g.s, g.d, g.fd, g.r = s, d, fd, r

	ev := unix.EpollEvent{
		Events: unix.EPOLLIN | unix.EPOLLOUT | unix.EPOLLRDHUP | unix.EPOLLET,
		Fd:     slot,
		Pad:    int32(g.gen),
	}
	if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, fd, &ev); err != nil {
		l.release(slot)

		return -1, fmt.Errorf("epoll_ctl: %w", err)
	}

	return slot, nil
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
	if err := unix.Pipe2(fds[:], unix.O_NONBLOCK|unix.O_CLOEXEC); err != nil {
		return pipe{}, fmt.Errorf("pipe2: %w", err)
	}

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
	for _, p := range l.pipes {
		p.close()
	}

	l.pipes = nil
	l.mu.Unlock()

	_ = l.file.Close() // run's wait ends; the descriptor goes when it has
}

// pipe is a pipe's two ends, used as a splice buffer.
type pipe struct{ r, w int }

func (p pipe) close() {
	_ = unix.Close(p.r)
	_ = unix.Close(p.w)
}
