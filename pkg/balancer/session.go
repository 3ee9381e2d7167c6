package balancer

import (
	"errors"
	"io"
	"net"
	"sync"
	"sync/atomic"
	"syscall"

	"go.uber.org/zap"
)

// replayLimit bounds the client bytes kept until the upstream's first
// answer. A Kubernetes client's TLS ClientHello fits many times over.
const replayLimit = 16 << 10

// session is one proxied client connection. Until the upstream sends its
// first byte it keeps what the client sent; if the upstream resets or closes
// before answering, the session moves to the next upstream and replays
// those bytes. No server byte has reached the client yet, so this is safe
// even for TLS: the ClientHello is simply sent again. It saves the
// connections a dying upstream's kernel had already accepted, which a dial
// retry alone cannot.
type session struct {
	b      *Balancer
	client net.Conn
	tried  []*node

	answered atomic.Bool

	mu        sync.Mutex // guards the fields below and writes to up before the answer
	up        net.Conn
	n         *node
	buf       []byte // client bytes sent before the answer
	replay    bool   // buf holds everything the client sent
	clientEOF bool
}

// attach makes up the session's upstream; s.mu is held or s is not shared.
func (s *session) attach(up net.Conn, n *node) {
	if s.n != nil {
		s.n.active.Add(-1)
	}

	s.up, s.n = up, n
	n.active.Add(1)
	n.total.Add(1)
	s.b.conns.attach(s.client, up, n)
	s.b.tune(up)
}

func (s *session) detach() {
	s.mu.Lock()
	defer s.mu.Unlock()

	_ = s.up.Close()
	s.n.active.Add(-1)
}

func (s *session) current() (net.Conn, *node) {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.up, s.n
}

// run copies both ways. An error on either side closes both, which ends
// the other direction; a clean end is passed on as a half-close.
func (s *session) run() {
	inc := make(chan int64, 1)

	go func() {
		n, err := s.clientToUpstream()
		if err != nil {
			s.closeBoth()
		}
		inc <- n
	}()

	out, err := s.upstreamToClient()
	if err != nil {
		s.closeBoth()
	}

	in := <-inc
	_, n := s.current()
	n.counters.bytesIn.Add(uint64(in))
	n.counters.bytesOut.Add(uint64(out))
}

func (s *session) closeBoth() {
	up, _ := s.current()
	_ = s.client.Close()
	_ = up.Close()
}

func (s *session) clientToUpstream() (int64, error) {
	var total int64

	for !s.answered.Load() {
		buf, n, err := readReady(s.client)
		if n > 0 {
			total += int64(n)
			err = errors.Join(err, s.forward((*buf)[:n]))
		}

		bufPool.Put(buf)

		if errors.Is(err, io.EOF) {
			return total, s.halfClose()
		}

		if err != nil {
			return total, err
		}
	}

	up, _ := s.current()
	n, err := pump(up, s.client)
	total += n

	if err != nil {
		return total, err
	}

	return total, closeWrite(up)
}

// forward sends client bytes before the answer, keeping them for a replay.
// A write error is left to the other direction when a replay can follow.
func (s *session) forward(p []byte) error {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.replay && !s.answered.Load() && len(s.buf)+len(p) <= replayLimit {
		s.buf = append(s.buf, p...)
	} else {
		s.replay, s.buf = false, nil
	}

	if _, err := s.up.Write(p); err != nil && !s.replay {
		return err
	}

	return nil
}

func (s *session) halfClose() error {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.clientEOF = true

	return closeWrite(s.up)
}

func (s *session) upstreamToClient() (int64, error) {
	for {
		up, _ := s.current()

		buf, n, err := readReady(up)
		if n > 0 {
			s.answer()

			_, werr := s.client.Write((*buf)[:n])
			bufPool.Put(buf)

			if werr != nil {
				return int64(n), werr
			}

			rest, err := pump(s.client, up)
			if err != nil {
				return int64(n) + rest, err
			}

			return int64(n) + rest, closeWrite(s.client)
		}

		bufPool.Put(buf)

		if err == nil {
			continue
		}

		if !s.move(err) {
			if errors.Is(err, io.EOF) {
				return 0, closeWrite(s.client)
			}

			return 0, err
		}
	}
}

// answer marks the first upstream byte: from now on nothing is replayed.
func (s *session) answer() {
	if s.answered.Swap(true) {
		return
	}

	s.mu.Lock()
	s.replay, s.buf = false, nil
	s.mu.Unlock()
}

// move switches to the next upstream after the current one ended before
// answering, and replays what the client sent. A clean close after the
// client's own half-close is an answer of sorts and is not retried.
func (s *session) move(cause error) bool {
	s.mu.Lock()
	ok := s.replay && !(errors.Is(cause, io.EOF) && s.clientEOF)
	failed := s.n
	s.mu.Unlock()

	if !ok || !(errors.Is(cause, io.EOF) || errors.Is(cause, syscall.ECONNRESET)) {
		return false
	}

	s.b.suspend(failed, cause)

	up, n, err := s.b.connectRacing(&s.tried)
	if err != nil {
		return false
	}

	s.mu.Lock()
	old := s.up
	s.attach(up, n)
	_, werr := up.Write(s.buf)

	if werr == nil && s.clientEOF {
		werr = closeWrite(up)
	}
	s.mu.Unlock()

	_ = old.Close()

	s.b.stats.replayed.Add(1)
	s.b.log.Info("upstream ended before answering; replayed the client's first bytes to the next one",
		zap.String("from", failed.addr), zap.String("to", n.addr), zap.NamedError("cause", cause))

	return werr == nil
}

// bufPool holds the buffers of the phase before the first answer. They are
// taken only when a socket is readable, so a connection that waits holds
// none.
var bufPool = sync.Pool{New: func() any {
	b := make([]byte, 16<<10)

	return &b
}}

// readReady waits until c is readable without holding a buffer, then reads
// what is there into a pooled one, which the caller puts back. EOF is
// reported as io.EOF.
func readReady(c net.Conn) (*[]byte, int, error) {
	if tc, ok := c.(*net.TCPConn); ok {
		if raw, err := tc.SyscallConn(); err == nil {
			buf, n, err := readRaw(raw)
			if buf == nil {
				buf = bufPool.Get().(*[]byte)
			}

			if n == 0 && err == nil {
				err = io.EOF
			}

			return buf, n, err
		}
	}

	buf := bufPool.Get().(*[]byte)
	n, err := c.Read(*buf)

	return buf, n, err
}

func closeWrite(c net.Conn) error {
	if tc, ok := c.(*net.TCPConn); ok {
		return tc.CloseWrite()
	}

	return nil
}
