package balancer

import (
	"container/heap"
	"time"
)

// wakes is a loop's schedule of session deadlines (dial timeouts, head
// starts), kept by the loop itself and served through epoll_wait's
// timeout. A Go timer per dial would be simpler, but adding a timer earlier
// than the runtime's next one wakes an idle thread to re-arm its poller: a
// thread wake-up per connection, measured at 4% of the proxy's CPU.
//
// Entries are not removed when a session stops waiting; a session's wake
// sequence number moves on instead, and stale entries are dropped when they
// reach the top.
type wakes []wake

type wake struct {
	at  time.Time
	s   *session
	seq uint32
}

func (w wakes) Len() int           { return len(w) }
func (w wakes) Less(i, j int) bool { return w[i].at.Before(w[j].at) }
func (w wakes) Swap(i, j int)      { w[i], w[j] = w[j], w[i] }
func (w *wakes) Push(x any)        { *w = append(*w, x.(wake)) }
func (w *wakes) Pop() any {
	old := *w
	x := old[len(old)-1]
	old[len(old)-1] = wake{}
	*w = old[:len(old)-1]

	return x
}

// wakeAt makes at the only deadline of s; l.mu is held. A deadline set
// while fireWakes runs the ones due at now is never at or before now:
// fireWakes would run it again with the same now, forever, holding the
// loop's lock (a starved dial once did).
func (l *loop) wakeAt(s *session, at time.Time) {
	if !at.After(l.firing) {
		at = l.firing.Add(time.Millisecond)
	}

	s.wakeSeq++
	heap.Push(&l.wakes, wake{at: at, s: s, seq: s.wakeSeq})
}

// noWake cancels the deadline of s; l.mu is held.
func (s *session) noWake() { s.wakeSeq++ }

// fireWakes runs the deadlines that have passed and returns the epoll_wait
// timeout until the next one: -1 for none; l.mu is held.
func (l *loop) fireWakes(now time.Time) int {
	l.firing = now
	defer func() { l.firing = time.Time{} }()

	for len(l.wakes) > 0 {
		w := l.wakes[0]

		switch {
		case w.seq != w.s.wakeSeq || w.s.done:
			heap.Pop(&l.wakes)
		case !w.at.After(now):
			heap.Pop(&l.wakes)
			w.s.tick(now)
		default:
			// Round up: waking a little late is fine, early is a spin.
			return int((w.at.Sub(now) + time.Millisecond - 1) / time.Millisecond)
		}
	}

	return -1
}
