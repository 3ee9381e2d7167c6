package balancer

import (
	"context"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// admit starts a session for an accepted connection; l.mu is held.
func (l *loop) admit(fd int) {
	b := l.b
	b.stats.accepted.Add(1)

	if !b.admitOne() {
		// A reset, not a wait in the backlog: the client fails at once and
		// can try again; one runaway client cannot take every descriptor.
		// Counted before the reset, which the client may see at once.
		b.stats.overLimit.Add(1)
		_ = unix.SetsockoptLinger(fd, unix.SOL_SOCKET, unix.SO_LINGER, &unix.Linger{Onoff: 1, Linger: 0})
		_ = unix.Close(fd)
		b.noise.overLimit.note(l, zap.WarnLevel, "connection over max_connections reset",
			zap.Int("max_connections", b.settings.Load().MaxConnections))

		return
	}

	if b.draining.Load() {
		_ = unix.Close(fd)
		b.sessionEnded()

		return
	}

	l.start(fd)
}

// admitOne counts a session in, unless max_connections are open. Loops
// admit at once, so the count is claimed, not read and then added to.
func (b *Balancer) admitOne() bool {
	limit := int64(b.settings.Load().MaxConnections)

	for {
		live := b.live.Load()
		if limit > 0 && live >= limit {
			return false
		}

		if b.live.CompareAndSwap(live, live+1) {
			return true
		}
	}
}

// sessionEnded counts a session out and tells a drain waiting for the
// last one.
func (b *Balancer) sessionEnded() {
	if b.live.Add(-1) == 0 && b.draining.Load() {
		b.idleOnce.Do(func() { close(b.idle) })
	}
}

// dialFailed tells the model of a failed dial; l.mu is held.
func (l *loop) dialFailed(n *upstream.Node, err error) {
	l.dialLost(n, dialEvidence(err), err)
}

func (l *loop) dialLost(n *upstream.Node, e upstream.Evidence, err error) {
	n.CountDialError(e)
	l.report(n, e, err)
	l.b.noise.dialFailed.note(l, zap.WarnLevel, "dial failed; trying the next upstream", zap.String("upstream", n.Addr()), zap.Error(err))
}

// closeUpstream is the model's Closer: it closes the connections to n and
// returns how many there were.
func (b *Balancer) closeUpstream(n *upstream.Node, why upstream.Reason) int {
	if b.shutdown.Load() {
		return 0 // Shutdown closes everything itself
	}

	cut := b.closeSessions(func(s *session) bool { return s.n == n })

	switch why {
	case upstream.ReasonFailed:
		b.stats.closedFailed.Add(uint64(cut))
	case upstream.ReasonRemoved:
		b.stats.closedRemoved.Add(uint64(cut))
	}

	return cut
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
