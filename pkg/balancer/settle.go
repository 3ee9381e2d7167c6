package balancer

import (
	"time"

	"go.uber.org/zap"
)

// Settling: the socket options that matter only to a connection that
// lasts (keepalive, TCP_USER_TIMEOUT) are set once it has lived
// settleAfter, not when it opens.
//
// They make a peer that vanished without a FIN release the connection,
// which takes at least a keepalive period (30 s by default) to act on; a
// connection that ends sooner never needs them. Set at once they cost four
// syscalls on every upstream socket, a fifth of all a short connection
// costs the proxy. TCP_NODELAY is set at once: it shapes the first request.
//
// A loop keeps its unsettled sessions in a list in order of birth and,
// while the list is not empty, wakes when the oldest is due.
const settleAfter = time.Second

// youngList links a loop's unsettled sessions, oldest first.
type youngList struct{ head, tail *session }

func (y *youngList) push(s *session) {
	s.young = true
	s.older, s.younger = y.tail, nil

	if y.tail != nil {
		y.tail.younger = s
	} else {
		y.head = s
	}

	y.tail = s
}

func (y *youngList) remove(s *session) {
	if !s.young {
		return
	}

	if s.older != nil {
		s.older.younger = s.younger
	} else {
		y.head = s.younger
	}

	if s.younger != nil {
		s.younger.older = s.older
	} else {
		y.tail = s.older
	}

	s.young, s.older, s.younger = false, nil, nil
}

// settleDue settles the sessions that have lived settleAfter and returns
// the epoll_wait timeout until the next is due: -1 for none; l.mu is held.
func (l *loop) settleDue(now time.Time) int {
	for s := l.young.head; s != nil; s = l.young.head {
		due := s.born.Add(l.settleAfter)
		if due.After(now) {
			return int((due.Sub(now) + time.Millisecond - 1) / time.Millisecond)
		}

		l.young.remove(s)
		s.settle()
	}

	return -1
}

// settle sets the late options on both sockets of s. A session that is
// still dialing gets them on its upstream when the dial is won.
func (s *session) settle() {
	s.settled = true

	if opts := s.b.acceptOpts.Load(); opts != nil && len(*opts) > 0 {
		s.setOptions(s.client.fd, *opts)
	}

	if s.linked {
		s.settleUpstream()
	}
}

// settleUpstream sets the late options on the upstream socket.
func (s *session) settleUpstream() {
	if opts := s.b.sockopts.Load(); len(opts.late) > 0 {
		s.setOptions(s.up.fd, opts.late)
	}
}

func (s *session) setOptions(fd int, opts []sockopt) {
	if err := setOptions(fd, opts); err != nil {
		s.l.note(zap.DebugLevel, "socket options on a proxied connection", zap.Error(err))
	}
}

// earliest combines two epoll_wait timeouts, -1 meaning none.
func earliest(a, b int) int {
	switch {
	case a < 0:
		return b
	case b < 0:
		return a
	default:
		return min(a, b)
	}
}
