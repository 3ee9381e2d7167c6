package health

import (
	"net"
	"net/http"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Stats count what the connection limit did.
type Stats struct {
	Conns   int    // held now
	Busy    int    // of those, in the middle of a request
	Evicted uint64 // idle (or silent) connections closed to make room
	Waited  uint64 // accepts that waited for a busy connection to end
}

// tracker holds the server's connections, as http.Server reports their
// states, and keeps them at most max.
type tracker struct {
	max int
	log *zap.Logger

	mu      sync.Mutex
	open    map[net.Conn]*connState
	evicted uint64
	waited  uint64
	logged  time.Time // when the limit was last logged
	freed   chan struct{}
}

type connState struct {
	evictable bool      // idle, or no byte of a request read yet
	since     time.Time // when it became evictable
}

// logLimitEvery bounds the log lines about the limit.
const logLimitEvery = time.Minute

func newTracker(limit int, log *zap.Logger) *tracker {
	return &tracker{max: limit, log: log, open: map[net.Conn]*connState{}, freed: make(chan struct{}, 1)}
}

func (t *tracker) len() int {
	t.mu.Lock()
	defer t.mu.Unlock()

	return len(t.open)
}

func (t *tracker) stats() Stats {
	t.mu.Lock()
	defer t.mu.Unlock()

	s := Stats{Conns: len(t.open), Evicted: t.evicted, Waited: t.waited}

	for _, c := range t.open {
		if !c.evictable {
			s.Busy++
		}
	}

	return s
}

// state is http.Server's ConnState hook.
func (t *tracker) state(c net.Conn, st http.ConnState) {
	t.mu.Lock()
	defer t.mu.Unlock()

	switch st {
	case http.StateNew, http.StateIdle:
		if e, ok := t.open[c]; ok {
			e.evictable, e.since = true, time.Now()
		}
	case http.StateActive:
		if e, ok := t.open[c]; ok {
			e.evictable = false
		}
	case http.StateClosed, http.StateHijacked:
		if _, ok := t.open[c]; ok {
			delete(t.open, c)
			t.signal()
		}
	}
}

// signal wakes an Accept waiting for room; t.mu is held.
func (t *tracker) signal() {
	select {
	case t.freed <- struct{}{}:
	default:
	}
}

// room reports whether a new connection can be taken now; t.mu is held.
func (t *tracker) room() bool {
	if len(t.open) < t.max {
		return true
	}

	for _, c := range t.open {
		if c.evictable {
			return true
		}
	}

	return false
}

// admit takes a new connection, closing the connection that has been
// evictable longest if the limit is reached.
func (t *tracker) admit(c net.Conn) {
	t.mu.Lock()
	defer t.mu.Unlock()

	if len(t.open) >= t.max {
		var (
			oldest net.Conn
			since  time.Time
		)

		for oc, st := range t.open {
			if st.evictable && (oldest == nil || st.since.Before(since)) {
				oldest, since = oc, st.since
			}
		}

		if oldest != nil {
			delete(t.open, oldest)
			_ = oldest.Close()
			t.evicted++
			t.logLimit("health server at its connection limit: closing the idle connection held longest for each new one")
		}
	}

	t.open[c] = &connState{evictable: true, since: time.Now()}
}

// logLimit logs at most once every logLimitEvery; t.mu is held.
func (t *tracker) logLimit(msg string) {
	if now := time.Now(); now.Sub(t.logged) >= logLimitEvery {
		t.logged = now
		t.log.Warn(msg, zap.Int("limit", t.max), zap.Uint64("evicted_total", t.evicted), zap.Uint64("waited_total", t.waited))
	}
}

// listener wraps ln so that its Accept keeps to the limit.
func (t *tracker) listener(ln net.Listener) net.Listener {
	return &limitListener{Listener: ln, t: t, done: make(chan struct{})}
}

type limitListener struct {
	net.Listener

	t         *tracker
	done      chan struct{}
	closeOnce sync.Once
}

// Accept accepts a connection, then, while every connection is in the
// middle of a request, waits for one to end before handing it over: the
// one accepted connection and those behind it in the listen backlog wait.
func (l *limitListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if err != nil {
		return nil, err //nolint:wrapcheck // http.Server inspects it
	}

	for waited := false; ; {
		l.t.mu.Lock()
		ok := l.t.room()

		if !ok && !waited {
			waited = true
			l.t.waited++
			l.t.logLimit("health server at its connection limit with every connection busy: new connections wait in the backlog")
		}
		l.t.mu.Unlock()

		if ok {
			break
		}

		select {
		case <-l.t.freed:
		case <-l.done:
			_ = c.Close()

			return nil, net.ErrClosed
		}
	}

	l.t.admit(c)

	return c, nil
}

func (l *limitListener) Close() error {
	l.closeOnce.Do(func() { close(l.done) })

	return l.Listener.Close() //nolint:wrapcheck // as net.Listener
}
