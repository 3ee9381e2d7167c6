package balancer

import (
	"errors"
	"fmt"
	"net"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// acceptor feeds the relay loops from the listener. The listening socket
// is in every loop's epoll set with EPOLLEXCLUSIVE, so a new connection
// wakes one loop, which accepts it and starts its session on the spot: no
// goroutine and no hand-over between threads per connection.
//
// The acceptor keeps a duplicate of the listener's descriptor and closes
// the net.Listener it was given, which takes the socket out of Go's own
// poller: registered there, every new connection also woke the runtime's
// idle thread for nothing (measured under a connection flood: 1,850
// wake-ups a second, most of the process's voluntary context switches).
//
// Transient accept errors (out of descriptors, an aborted handshake) take
// the listener out of the loops for a backoff, then it is put back: running
// out of file descriptors once must not leave a node without its API
// server. Any other error ends accepting for good (ErrListenerFailed).
type acceptor struct {
	fd     int // the listening socket, owned
	addr   net.Addr
	closed atomic.Bool // close was called: fd is closed or about to be
	log    *zap.Logger
	// accept takes one queued connection; tests wrap it to inject errors.
	accept func(fd int) (int, error)

	recovering atomic.Bool // the last accept failed

	mu       sync.Mutex
	loops    []*loop
	armed    bool
	backoff  time.Duration
	timer    *time.Timer
	ended    bool
	err      error
	done     chan struct{} // closed when accepting ended
	doneOnce sync.Once
}

const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
	// acceptBatch is how many connections a loop accepts per wake-up
	// before it serves its sessions again.
	acceptBatch = 16
)

// newAcceptor takes over ln's socket; ln is closed.
func newAcceptor(ln net.Listener, log *zap.Logger) (*acceptor, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("balancer: listener %T is not a socket", ln)
	}

	ctl, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("balancer: listener: %w", err)
	}

	a := &acceptor{addr: ln.Addr(), log: log, accept: accept4, done: make(chan struct{})}

	var derr error
	if err := ctl.Control(func(fd uintptr) { a.fd, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil || derr != nil {
		return nil, fmt.Errorf("balancer: listener: %w", errors.Join(err, derr))
	}

	// The duplicate shares the socket, non-blocking included; closing ln
	// only removes it from Go's poller.
	_ = ln.Close()

	return a, nil
}

func accept4(fd int) (int, error) {
	nfd, _, err := syscall.Accept4(fd, syscall.SOCK_NONBLOCK|syscall.SOCK_CLOEXEC)

	return nfd, err
}

// start puts the listener into the loops.
func (a *acceptor) start(loops []*loop) error {
	a.mu.Lock()
	defer a.mu.Unlock()

	a.loops = loops

	return a.arm()
}

// arm adds the listener to every loop's epoll set; a.mu is held.
// Level-triggered: a loop that leaves connections queued is woken again.
func (a *acceptor) arm() error {
	for i, l := range a.loops {
		ev := unix.EpollEvent{Events: unix.EPOLLIN | unix.EPOLLEXCLUSIVE, Fd: listenerSlot}
		if err := unix.EpollCtl(l.epfd, unix.EPOLL_CTL_ADD, a.fd, &ev); err != nil {
			for _, l := range a.loops[:i] {
				_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, a.fd, nil)
			}

			return fmt.Errorf("epoll_ctl: %w", err)
		}
	}

	a.armed = true

	return nil
}

// disarm takes the listener out of the loops; a.mu is held.
func (a *acceptor) disarm() {
	if !a.armed {
		return
	}

	for _, l := range a.loops {
		_ = unix.EpollCtl(l.epfd, unix.EPOLL_CTL_DEL, a.fd, nil)
	}

	a.armed = false
}

// acceptSome accepts up to acceptBatch connections into l; l.mu is held.
func (l *loop) acceptSome() {
	a := l.b.acc
	if a.closed.Load() {
		return // an event from before close: fd may be another socket's now
	}

	for range acceptBatch {
		fd, err := a.accept(a.fd)

		switch {
		case err == nil:
			if a.recovering.Load() {
				a.recovered(l)
			}

			l.admit(fd)
		case errors.Is(err, unix.EAGAIN):
			return
		case errors.Is(err, unix.EINTR):
			continue
		case transientAcceptError(err):
			a.pause(l, err)

			return
		default:
			if a.fail(err) {
				l.note(zap.ErrorLevel, "accept loop ended; the proxy is no longer serving", zap.Error(err))
			}

			return
		}
	}
}

// recovered notes that accepting works again; l.mu is held.
func (a *acceptor) recovered(l *loop) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if a.recovering.Swap(false) {
		a.backoff = 0
		l.note(zap.InfoLevel, "accepting connections again")
	}
}

// pause takes the listener out of the loops for a backoff that doubles
// while errors go on.
func (a *acceptor) pause(l *loop, err error) {
	a.mu.Lock()
	defer a.mu.Unlock()

	if a.ended || !a.armed {
		return
	}

	a.disarm()
	a.recovering.Store(true)
	a.backoff = min(max(2*a.backoff, minAcceptBackoff), maxAcceptBackoff)
	l.note(zap.WarnLevel, "accept failed; retrying", zap.Error(err), zap.Duration("backoff", a.backoff))

	a.timer = time.AfterFunc(a.backoff, func() {
		a.mu.Lock()

		var err error
		if !a.ended && !a.armed {
			if err = a.arm(); err != nil {
				a.end(err)
			}
		}

		a.mu.Unlock()

		if err != nil {
			a.log.Error("accept loop ended; the proxy is no longer serving", zap.Error(err))
		}
	})
}

// fail ends accepting after an error the listener does not recover from,
// and reports whether it was still going.
func (a *acceptor) fail(err error) bool {
	a.mu.Lock()
	defer a.mu.Unlock()

	was := !a.ended
	a.end(err)

	return was
}

// end stops accepting; a.mu is held. err is nil for a close.
func (a *acceptor) end(err error) {
	if a.ended {
		return
	}

	a.disarm()

	if a.timer != nil {
		a.timer.Stop()
	}

	if err != nil {
		a.err = fmt.Errorf("%w: %s: %w", ErrListenerFailed, a.addr, err)
	}

	a.ended = true

	// After close, done waits for the socket to be closed: a client that
	// sees it must find the port refusing.
	if err != nil {
		a.doneOnce.Do(func() { close(a.done) })
	}
}

// close stops accepting and closes the listening socket, once: a raw
// descriptor number, once closed, may be reused for another socket. A loop
// may have the listener's last event in hand, so the socket is closed only
// after every loop has finished the batch it was serving (they accept
// under their mu, and see closed from then on).
func (a *acceptor) close() error {
	if !a.closed.CompareAndSwap(false, true) {
		return nil
	}

	a.mu.Lock()
	a.end(nil)
	loops := a.loops
	a.mu.Unlock()

	for _, l := range loops {
		l.mu.Lock()
		l.mu.Unlock() //nolint:staticcheck // an empty critical section: waiting for the batch in hand
	}

	defer a.doneOnce.Do(func() { close(a.done) })

	a.mu.Lock()
	defer a.mu.Unlock()

	if err := unix.Close(a.fd); err != nil {
		return fmt.Errorf("closing the listener: %w", err)
	}

	return nil
}

// control runs f on the listening socket unless it is closed.
func (a *acceptor) control(f func(fd int) error) error {
	a.mu.Lock()
	defer a.mu.Unlock()

	if a.closed.Load() {
		return nil
	}

	return f(a.fd)
}

// transientAcceptError reports resource shortages and aborted handshakes:
// errors after which the listener still works.
func transientAcceptError(err error) bool {
	return localShortage(err) || isErrno(err, unix.ECONNABORTED, unix.EPROTO, unix.EPERM)
}
