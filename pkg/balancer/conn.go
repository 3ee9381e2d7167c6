package balancer

import (
	"context"
	"fmt"
	"net"

	"go.uber.org/zap"
)

// HandleConn implements tcpproxy.Target: it hands the accepted socket to a
// relay loop, which connects it to an upstream (see dialNext) and copies
// bytes both ways until both sides are done.
func (b *Balancer) HandleConn(c net.Conn) {
	cs, ok := c.(*clientSocket)
	if !ok {
		// Only our listener feeds the proxy; anything else is a bug.
		b.log.Error("closing a connection of unexpected type", zap.String("type", fmt.Sprintf("%T", c)))
		_ = c.Close()

		return
	}

	b.stats.accepted.Add(1)
	b.live.Add(1)

	if b.draining.Load() {
		_ = cs.Close()
		b.sessionEnded()

		return
	}

	l := b.loops[b.nextLoop.Add(1)%uint32(len(b.loops))]

	l.mu.Lock()
	defer l.mu.Unlock()

	l.start(cs.take())
}

// sessionEnded counts a session out and tells a drain waiting for the
// last one.
func (b *Balancer) sessionEnded() {
	if b.live.Add(-1) == 0 && b.draining.Load() {
		b.idleOnce.Do(func() { close(b.idle) })
	}
}

func (b *Balancer) dialFailed(n *node, err error) {
	n.counters.dialErrors[dialErrorReason(err)].Add(1)
	b.suspend(n, err)
	b.log.Warn("dial failed; trying the next upstream", zap.String("upstream", n.addr), zap.Error(err))
}

// closeNode closes the connections to n and returns how many there were.
func (b *Balancer) closeNode(n *node) int {
	return b.closeSessions(func(s *session) bool { return s.n == n })
}

func (b *Balancer) closeSessions(match func(*session) bool) int {
	cut := 0

	for _, l := range b.loops {
		l.mu.Lock()

		for s := range l.sessions {
			if match(s) {
				s.finish()
				cut++
			}
		}
		l.mu.Unlock()
	}

	return cut
}

// drain refuses new connections, waits for the open ones to finish until
// ctx ends, then closes those left and returns how many there were.
func (b *Balancer) drain(ctx context.Context) int {
	b.draining.Store(true)

	if b.live.Load() == 0 {
		return 0
	}

	select {
	case <-b.idle:
		return 0
	case <-ctx.Done():
	}

	return b.closeSessions(func(*session) bool { return true })
}

// Active returns the number of client connections in flight.
func (b *Balancer) Active() int { return int(b.live.Load()) }
