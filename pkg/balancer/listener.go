package balancer

import (
	"errors"
	"net"
	"sync"
	"syscall"
	"time"

	"go.uber.org/zap"
)

// retryListener hides transient Accept errors from tcpproxy, whose accept
// loop ends for good on the first error of any kind: running out of file
// descriptors once must not leave a node without its API server.
type retryListener struct {
	net.Listener
	log *zap.Logger

	closeOnce sync.Once
	closed    chan struct{}
}

const (
	minAcceptBackoff = 5 * time.Millisecond
	maxAcceptBackoff = time.Second
)

func newRetryListener(ln net.Listener, log *zap.Logger) *retryListener {
	return &retryListener{Listener: ln, log: log, closed: make(chan struct{})}
}

// Accept returns the next connection, waiting out transient errors with
// exponential backoff. Only a closed or broken listener ends it.
func (l *retryListener) Accept() (net.Conn, error) {
	var backoff time.Duration

	for {
		c, err := l.Listener.Accept()
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
		err = l.Listener.Close()
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
