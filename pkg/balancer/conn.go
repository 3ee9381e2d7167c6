package balancer

import (
	"context"
	"errors"
	"net"
	"sync"
	"time"

	"github.com/siderolabs/tcpproxy"
	"go.uber.org/zap"
)

// HandleConn implements tcpproxy.Target: it connects the client to an
// upstream (see dial and session) and copies bytes both ways until both
// sides are done.
func (b *Balancer) HandleConn(client net.Conn) {
	defer client.Close()

	if !b.conns.add(client) {
		return // shutting down
	}
	defer b.conns.remove(client)

	b.stats.accepted.Add(1)

	s := &session{b: b, client: client, replay: true}

	up, n, err := b.connectRacing(&s.tried)
	if err != nil {
		b.stats.rejected.Add(1)
		b.log.Warn("closing client: no upstream could take it",
			zap.String("client", client.RemoteAddr().String()), zap.Error(err))

		return
	}

	s.attach(up, n)
	defer s.detach()

	b.tune(client)
	// Check first: formatting the client's address per connection is work
	// for nothing unless debug logging is on.
	if ce := b.log.Check(zap.DebugLevel, "proxying"); ce != nil {
		ce.Write(zap.String("client", client.RemoteAddr().String()), zap.String("upstream", n.addr))
	}
	s.run()
}

type dialResult struct {
	conn net.Conn
	node *node
	err  error
}

// connectRacing dials upstreams in pick order until one connects. A failed
// dial moves to the next upstream at once; a dial still pending after the
// head start is raced by the next upstream, and the first to connect wins,
// so a blackholed upstream costs a client at most the head start.
func (b *Balancer) connectRacing(tried *[]*node) (net.Conn, *node, error) {
	results := make(chan dialResult)
	pending := 0

	start := func() bool {
		n, err := b.pick(*tried)
		if err != nil {
			return false
		}

		*tried = append(*tried, n)
		pending++

		go func() {
			c, err := b.dial(n.addr)
			results <- dialResult{c, n, err}
		}()

		return true
	}

	if !start() {
		return nil, nil, ErrNoUpstreams
	}

	headStart := b.settings.Load().DialHeadStart

	race := time.NewTimer(headStart)
	defer race.Stop()

	if headStart <= 0 {
		race.Stop()
	}

	var lastErr error

	for pending > 0 {
		select {
		case r := <-results:
			pending--

			if r.err == nil {
				if pending > 0 {
					b.bg.Go(func() { b.discardDials(results, pending) })
				}

				return r.conn, r.node, nil
			}

			lastErr = r.err
			b.dialFailed(r.node, r.err)

			if start() {
				b.stats.retried.Add(1)
			}
		case <-race.C:
			if start() {
				b.stats.raced.Add(1)
				race.Reset(headStart)
			}
		}
	}

	return nil, nil, errors.Join(ErrNoUpstreams, lastErr)
}

// discardDials collects the dials that lost a race: winners are closed,
// failures still take their upstream out.
func (b *Balancer) discardDials(results <-chan dialResult, pending int) {
	for range pending {
		r := <-results
		if r.err == nil {
			_ = r.conn.Close()
		} else {
			b.dialFailed(r.node, r.err)
		}
	}
}

func (b *Balancer) dialFailed(n *node, err error) {
	n.counters.dialErrors[dialErrorReason(err)].Add(1)
	b.suspend(n, err)
	b.log.Warn("dial failed; trying the next upstream", zap.String("upstream", n.addr), zap.Error(err))
}

func (b *Balancer) dial(addr string) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(b.ctx, b.settings.Load().DialTimeout)
	defer cancel()

	d := net.Dialer{KeepAlive: -1} // set by tune, the same way on both sides

	start := time.Now()
	c, err := d.DialContext(ctx, "tcp", addr)
	b.stats.dials.observe(time.Since(start))

	return c, err
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
