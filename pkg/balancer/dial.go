package balancer

import (
	"errors"
	"fmt"
	"net/netip"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// Dialing: a session's connects, raced after the head start, timed out by
// the loop's deadline schedule (see wakes), retried on the next upstream.

var (
	errNotResolved = errors.New("upstream name not resolved yet")
	errLostRace    = errors.New("connect still pending after the dial head start while another upstream connected")
	errNoAnswer    = errors.New("no answer to the client's first bytes within the answer timeout")
	errSilent      = errors.New("no answer to a client's bytes on an established connection within the answer timeout")
)

// dialing is one connect in flight.
type dialing struct {
	fd    int
	slot  int32
	n     *upstream.Node
	ap    netip.AddrPort
	start time.Time
}

// dialNext starts a connect to the next upstream to try. It returns false
// when there is none. A dial that fails at once (refused on loopback, a
// name not resolved) moves on to the next upstream here, counted as a
// retry; the callers count the retry after a dial that failed later.
func (s *session) dialNext() bool {
	opts := s.b.sockopts.Load().dial

	for retry := false; ; retry = true {
		n, err := s.b.ups.Pick(s.tried)
		if err != nil {
			s.exhausted = true

			return false
		}

		if retry {
			s.b.stats.retried.Add(1)
		}

		s.tried = append(s.tried, n)

		ap := n.DialAddr()
		if ap == nil {
			s.l.dialFailed(n, errNotResolved)

			continue
		}

		start := time.Now()

		fd, err := s.b.connect(*ap, opts)
		if localShortage(err) {
			// The process is out of descriptors or memory, not the
			// upstream: try again shortly, within the dial timeout.
			s.tried = s.tried[:len(s.tried)-1]

			return s.starve(err)
		}

		if err != nil {
			s.b.stats.dials.observe(time.Since(start))
			s.l.dialFailed(n, err)

			continue
		}

		d := &dialing{fd: fd, n: n, ap: *ap, start: start}

		sent, err := s.sendEarly(d)
		if err != nil {
			_ = unix.Close(fd)
			s.b.stats.dials.observe(time.Since(start))
			s.l.dialFailed(n, err)

			continue
		}

		r, ev := roleDial, uint32(evWrite)
		if sent > 0 {
			r, ev = roleUpstream, evRead
		}

		d.slot, err = s.l.register(fd, s, r, d, ev)
		if err != nil {
			_ = unix.Close(fd)
			s.l.dialFailed(n, err)

			continue
		}

		s.dials = append(s.dials, d)
		s.lastDial = start

		if sent > 0 {
			s.won(d, 0, sent)
		} else {
			s.schedule()
		}

		return true
	}
}

// sendEarly writes the client's first bytes on a connect that may already
// have completed, and reports how many went. On loopback the handshake is
// done by the time connect returns, so the request leaves now instead of
// after a wake-up for writability. 0 means the connect is still in flight
// (or there is nothing to send, or another dial is racing); an error means
// it failed.
func (s *session) sendEarly(d *dialing) (int, error) {
	if len(s.buf) == 0 || len(s.dials) > 0 {
		return 0, nil
	}

	m, err := s.b.sys.write(d.fd, s.buf)

	switch {
	case errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EINTR):
		return 0, nil
	case err != nil:
		return 0, dialError(d.ap, err)
	}

	return m, nil
}

// starvedRetry is how soon a dial that found no free descriptor is tried
// again.
const starvedRetry = 20 * time.Millisecond

// starve waits starvedRetry for a descriptor, unless the dial timeout
// would pass first.
func (s *session) starve(err error) bool {
	if time.Since(s.born)+starvedRetry > s.b.settings.Load().DialTimeout {
		return false
	}

	if !s.starved {
		s.b.noise.starved.note(s.l, zap.WarnLevel, "no descriptor, memory or local port to dial an upstream with; retrying", zap.Error(err))
	}

	s.starved = true
	s.retryAt = time.Now().Add(starvedRetry)
	s.l.wakeAt(s, s.retryAt)

	return true
}

// localShortage reports that this host is out of descriptors, memory or
// local ports (EADDRNOTAVAIL: every port to the upstream's address is in
// use or in TIME_WAIT): nothing an upstream or a client did.
func localShortage(err error) bool {
	return isErrno(err, unix.EMFILE, unix.ENFILE, unix.ENOBUFS, unix.ENOMEM, unix.EADDRNOTAVAIL)
}

func isErrno(err error, errnos ...unix.Errno) bool {
	for _, errno := range errnos {
		if errors.Is(err, errno) {
			return true
		}
	}

	return false
}

// schedule sets the session's deadline to the next dial timeout or head
// start.
func (s *session) schedule() {
	st := s.b.settings.Load()

	next := s.dials[0].start.Add(st.DialTimeout)

	// The next race is after the head start of the last dial, and after
	// the wait of a race that found no descriptor.
	race := s.lastDial.Add(st.DialHeadStart)
	if race.Before(s.retryAt) {
		race = s.retryAt
	}

	if st.DialHeadStart > 0 && !s.exhausted && race.Before(next) {
		next = race
	}

	s.l.wakeAt(s, next)
}

// tick times out dials that took too long and races a dial that passed
// its head start with the next upstream.
func (s *session) tick(now time.Time) {
	if s.linked {
		s.answerDue()
		s.silenceDue()

		return
	}

	if s.starved && len(s.dials) == 0 {
		s.starved = false
		if !s.dialNext() {
			s.noUpstream(nil)
		}

		return
	}

	if len(s.dials) == 0 {
		return
	}

	st := s.b.settings.Load()

	for _, d := range append([]*dialing(nil), s.dials...) {
		if now.Sub(d.start) >= st.DialTimeout {
			s.dropDial(d, fmt.Errorf("dial %s: %w", d.ap, unix.ETIMEDOUT))
		}
	}

	switch {
	case len(s.dials) == 0:
		if !s.dialNext() {
			s.noUpstream(nil)

			return
		}

		s.b.stats.retried.Add(1)
	case st.DialHeadStart > 0 && now.Sub(s.lastDial) >= st.DialHeadStart && !now.Before(s.retryAt):
		if s.dialNext() {
			s.b.stats.raced.Add(1)
		}
	}

	if !s.done && len(s.dials) > 0 {
		s.schedule()
	}
}

// dialEvent is epoll's word on a connect in flight. A failed connect
// always reports EPOLLERR, so SO_ERROR is read only then.
func (s *session) dialEvent(d *dialing, events uint32) {
	if events&(unix.EPOLLERR|unix.EPOLLHUP) == 0 {
		s.won(d, events, 0)

		return
	}

	if err := connectResult(d.fd, d.ap); err != nil {
		s.dropDial(d, err)

		if s.dialNext() {
			s.b.stats.retried.Add(1)
		} else if len(s.dials) == 0 {
			s.noUpstream(err)
		}

		return
	}

	s.won(d, events, 0)
}

// dropDial ends a connect that failed.
func (s *session) dropDial(d *dialing, err error) {
	s.b.stats.dials.observe(time.Since(d.start))
	s.l.dialFailed(d.n, err)

	for i, x := range s.dials {
		if x == d {
			s.dials = append(s.dials[:i], s.dials[i+1:]...)

			break
		}
	}

	s.l.closeSlot(d.slot)
}

// won makes d the session's upstream, to which sent bytes of buf have
// gone already, and cancels the other dials. One still pending after the
// head start lost to a faster upstream: it is suspended like a failed
// dial, so that new clients stop paying the head start for it until its
// next passing check.
func (s *session) won(d *dialing, events uint32, sent int) {
	now := time.Now()
	s.b.stats.dials.observe(now.Sub(d.start))

	s.noWake()

	headStart := s.b.settings.Load().DialHeadStart

	for _, other := range s.dials {
		if other == d {
			continue
		}

		s.l.closeSlot(other.slot)

		if headStart > 0 && now.Sub(other.start) >= headStart {
			s.l.dialLost(other.n, upstream.LostRace, fmt.Errorf("dial %s: %w", other.ap, errLostRace))
		}
	}

	s.dials = s.dials[:0]

	s.l.retag(d.slot, roleUpstream)
	s.up = side{fd: d.fd, slot: d.slot, wr: true}
	s.up.saw(events)
	s.linked = true
	s.linkedAt = now
	s.n = d.n
	d.n.Attach()
	s.sent = sent

	if at := s.b.settings.Load().AnswerTimeout; at > 0 {
		s.l.wakeAt(s, now.Add(at))
	}

	if s.settled {
		s.settleUpstream()
	}

	if from := s.moved; from != nil {
		s.moved = nil
		s.b.stats.replayed.Add(1)
		s.b.noise.replayed.note(s.l, zap.InfoLevel, "upstream ended or did not answer before its first byte; replayed the client's first bytes to the next one",
			zap.String("from", from.Addr()), zap.String("to", d.n.Addr()))
	} else {
		s.l.note(zap.DebugLevel, "proxying", zap.String("upstream", d.n.Addr()))
	}

	s.progress()
}

// noUpstream closes a client that no upstream could take.
func (s *session) noUpstream(err error) {
	s.b.stats.rejected.Add(1)
	s.b.noise.rejected.note(s.l, zap.WarnLevel, "closing client: no upstream could take it", zap.Error(errors.Join(ErrNoUpstreams, err)))
	s.finish()
}
