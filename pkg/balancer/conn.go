package balancer

import (
	"context"
	"errors"
	"io"
	"net"
	"sync"
	"time"

	"github.com/siderolabs/tcpproxy"
	"go.uber.org/zap"
)

// HandleConn implements tcpproxy.Target: it connects the client to an
// upstream, trying the next one when a dial fails, and copies bytes both
// ways until both sides are done.
func (b *Balancer) HandleConn(client net.Conn) {
	defer client.Close()

	if !b.conns.add(client) {
		return // shutting down
	}
	defer b.conns.remove(client)

	b.stats.accepted.Add(1)

	up, n, err := b.connect(client)
	if err != nil {
		b.stats.rejected.Add(1)
		b.log.Warn("closing client: no upstream could take it",
			zap.String("client", client.RemoteAddr().String()), zap.Error(err))

		return
	}
	defer up.Close()

	n.active.Add(1)
	n.total.Add(1)
	defer n.active.Add(-1)

	b.conns.attach(client, up, n)
	b.tune(client)
	b.tune(up)

	b.log.Debug("proxying", zap.String("client", client.RemoteAddr().String()), zap.String("upstream", n.addr))

	in, out := splice(client, up)
	n.counters.bytesIn.Add(uint64(in))
	n.counters.bytesOut.Add(uint64(out))
}

// connect dials upstreams in pick order until one answers.
func (b *Balancer) connect(client net.Conn) (net.Conn, *node, error) {
	var (
		tried   []*node
		lastErr error
	)

	for {
		n, err := b.pick(tried)
		if err != nil {
			return nil, nil, errors.Join(err, lastErr)
		}

		if len(tried) > 0 {
			b.stats.retried.Add(1)
		}

		tried = append(tried, n)

		start := time.Now()
		up, err := b.dial(n.addr)
		b.stats.dials.observe(time.Since(start))

		if err == nil {
			return up, n, nil
		}

		lastErr = err
		n.counters.dialErrors[dialErrorReason(err)].Add(1)
		b.suspend(n, err)
		b.log.Warn("dial failed; trying the next upstream",
			zap.String("upstream", n.addr), zap.String("client", client.RemoteAddr().String()), zap.Error(err))
	}
}

func (b *Balancer) dial(addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(context.Background(), b.settings.Load().DialTimeout)
	defer cancel()

	d := net.Dialer{KeepAlive: -1} // set by tune, the same way on both sides

	return d.DialContext(ctx, "tcp", addr)
}

// tune applies keepalive and TCP_USER_TIMEOUT so that a peer that vanished
// without a FIN does not hold the other side forever.
func (b *Balancer) tune(c net.Conn) {
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return
	}

	s := b.settings.Load()

	if s.KeepAlivePeriod > 0 {
		_ = tc.SetKeepAliveConfig(net.KeepAliveConfig{Enable: true, Idle: s.KeepAlivePeriod, Interval: s.KeepAlivePeriod})
	}

	if s.TCPUserTimeout > 0 {
		_ = tcpproxy.SetTCPUserTimeout(tc, s.TCPUserTimeout)
	}
}

// splice copies both ways and returns the bytes sent each way. A clean EOF
// on one side is passed on as a half-close (FIN) and the other direction
// keeps flowing; an error on either side ends both. Copies between two TCP
// connections use splice(2).
func splice(client, up net.Conn) (in, out int64) {
	type result struct {
		n   int64
		err error
	}

	inc := make(chan result, 1)

	go func() {
		n, err := copyHalf(up, client)
		inc <- result{n, err}
	}()

	out, err := copyHalf(client, up)
	if err != nil {
		// Unblock the other direction.
		_ = client.Close()
		_ = up.Close()
	}

	r := <-inc
	if r.err != nil && err == nil {
		_ = client.Close()
		_ = up.Close()
	}

	return r.n, out
}

func copyHalf(dst, src net.Conn) (int64, error) {
	n, err := io.Copy(dst, src)
	if err != nil {
		return n, err
	}

	if tc, ok := dst.(*net.TCPConn); ok {
		return n, tc.CloseWrite()
	}

	return n, nil
}

// connSet tracks in-flight client connections, to drain them on shutdown
// and when their upstream leaves the set.
type connSet struct {
	mu      sync.Mutex
	conns   map[net.Conn]tracked // by client
	closing bool
	empty   chan struct{} // closed when the set empties while closing
}

type tracked struct {
	up   net.Conn // nil while dialing
	node *node
}

func (s *connSet) init() {
	s.conns = map[net.Conn]tracked{}
	s.empty = make(chan struct{})
}

func (s *connSet) add(c net.Conn) bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	if s.closing {
		return false
	}

	s.conns[c] = tracked{}

	return true
}

func (s *connSet) attach(client, up net.Conn, n *node) {
	s.mu.Lock()
	defer s.mu.Unlock()

	s.conns[client] = tracked{up: up, node: n}
}

// closeNode closes the connections to n and returns how many there were.
func (s *connSet) closeNode(n *node) int {
	s.mu.Lock()
	defer s.mu.Unlock()

	cut := 0

	for client, t := range s.conns {
		if t.node == n {
			_ = client.Close()
			_ = t.up.Close()
			cut++
		}
	}

	return cut
}

func (s *connSet) remove(c net.Conn) {
	s.mu.Lock()
	defer s.mu.Unlock()

	delete(s.conns, c)

	if s.closing && len(s.conns) == 0 {
		close(s.empty)
	}
}

// drain refuses new connections, waits for the tracked ones to finish until
// ctx ends, then closes those left and returns how many there were.
func (s *connSet) drain(ctx context.Context) int {
	s.mu.Lock()
	s.closing = true

	if len(s.conns) == 0 {
		s.mu.Unlock()

		return 0
	}
	s.mu.Unlock()

	select {
	case <-s.empty:
		return 0
	case <-ctx.Done():
	}

	s.mu.Lock()
	cut := len(s.conns)

	for client, t := range s.conns {
		_ = client.Close()
		if t.up != nil {
			_ = t.up.Close()
		}
	}
	s.mu.Unlock()

	// Closing both ends makes every handler return promptly.
	select {
	case <-s.empty:
	case <-time.After(time.Second):
	}

	return cut
}

// Active returns the number of client connections in flight.
func (b *Balancer) Active() int {
	b.conns.mu.Lock()
	defer b.conns.mu.Unlock()

	return len(b.conns.conns)
}
