package balancer

import (
	"errors"
	"fmt"
	"net"
	"os"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"
)

// retryListener accepts connections as bare descriptors for the relay
// loops (see clientSocket), and hides transient Accept errors from
// tcpproxy, whose accept loop ends for good on the first error of any kind:
// running out of file descriptors once must not leave a node without its
// API server.
type retryListener struct {
	net.Listener
	// file is a duplicate of the listener's descriptor: a net.Listener's
	// RawConn cannot wait for readability, an *os.File's can.
	file *os.File
	ctl  syscall.RawConn // the listener's own, for socket options
	log  *zap.Logger
	// accept takes one connection; tests wrap it to inject errors.
	accept func() (net.Conn, error)

	closeOnce sync.Once
	closed    chan struct{}
}

const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

func newRetryListener(ln net.Listener, log *zap.Logger) (*retryListener, error) {
	sc, ok := ln.(syscall.Conn)
	if !ok {
		return nil, fmt.Errorf("balancer: listener %T is not a socket", ln)
	}

	lraw, err := sc.SyscallConn()
	if err != nil {
		return nil, fmt.Errorf("balancer: listener: %w", err)
	}

	var (
		dup  int
		derr error
	)

	if err := lraw.Control(func(fd uintptr) { dup, derr = unix.FcntlInt(fd, unix.F_DUPFD_CLOEXEC, 0) }); err != nil {
		return nil, fmt.Errorf("balancer: listener: %w", err)
	}

	if derr != nil {
		return nil, fmt.Errorf("balancer: duplicating the listener: %w", derr)
	}

	// The descriptor is non-blocking (it shares the listener's file
	// status), so the file waits in Go's poller.
	file := os.NewFile(uintptr(dup), "listener")

	raw, err := file.SyscallConn()
	if err != nil {
		_ = file.Close()

		return nil, fmt.Errorf("balancer: listener: %w", err)
	}

	l := &retryListener{Listener: ln, file: file, ctl: lraw, log: log, closed: make(chan struct{})}
	l.accept = func() (net.Conn, error) { return acceptRaw(raw, ln.Addr()) }

	return l, nil
}

// Accept returns the next connection, waiting out transient errors with
// exponential backoff. Only a closed or broken listener ends it.
func (l *retryListener) Accept() (net.Conn, error) {
	var backoff time.Duration

	for {
		c, err := l.accept()
		if err == nil {
			if backoff > 0 {
				l.log.Info("accepting connections again")
			}

			return c, nil
		}

		if !transientAcceptError(err) {
			return nil, err
		}

		backoff = min(max(2*backoff, minAcceptBackoff), maxAcceptBackoff)
		l.log.Warn("accept failed; retrying", zap.Error(err), zap.Duration("backoff", backoff))

		select {
		case <-time.After(backoff):
		case <-l.closed:
			return nil, net.ErrClosed
		}
	}
}

// Close closes the listener once.
func (l *retryListener) Close() error {
	var err error

	l.closeOnce.Do(func() {
		close(l.closed)
		err = errors.Join(l.Listener.Close(), l.file.Close())
	})

	return err
}

// transientAcceptError reports resource shortages and aborted handshakes:
// errors after which the listener still works.
func transientAcceptError(err error) bool {
	for _, errno := range []syscall.Errno{
		syscall.EMFILE, syscall.ENFILE, syscall.ENOBUFS, syscall.ENOMEM,
		syscall.ECONNABORTED, syscall.EPROTO, syscall.EPERM,
	} {
		if errors.Is(err, errno) {
			return true
		}
	}

	return false
}
