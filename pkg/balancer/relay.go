package balancer

import (
	"errors"
	"io"
	"time"

	"go.uber.org/zap"
	"golang.org/x/sys/unix"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// replayLimit bounds the client bytes kept until the upstream's first
// answer. A Kubernetes client's TLS ClientHello fits many times over.
const replayLimit = 16 << 10

// replayBudget bounds what all sessions keep for a replay together: 2,000
// clients sending a partial ClientHello once held 37 MB. Past it a session
// is proxied without its copy, and cannot move to another upstream.
const replayBudget = 8 << 20

// unaskedWithin is how soon after connecting an upstream must hang up on a
// client that sent nothing for it to count against the upstream.
const unaskedWithin = time.Second

const (
	// copyBuf is a loop's read buffer. A read that fills it means a bulk
	// transfer, which continues zero-copy with splice.
	copyBuf = 64 << 10
	// maxSplice is asked of each splice; the pipe's capacity is the
	// real bound.
	maxSplice = 1 << 20
	// turnBytes is what one session may move before others get a turn.
	turnBytes = 1 << 20
)

// session is one proxied client connection, served by a loop; every field
// is guarded by the loop's mu.
//
// Until the upstream sends its first byte the session keeps what the
// client sent; if the upstream resets or closes before answering, it moves
// to the next upstream and replays those bytes. No server byte has reached
// the client yet, so this is safe even for TLS: the ClientHello is simply
// sent again. It saves the connections a dying upstream's kernel had
// already accepted, which a dial retry alone cannot.
type session struct {
	l *loop
	b *Balancer

	client, up side
	linked     bool           // up is connected and attached
	n          *upstream.Node // the upstream of up

	born  time.Time
	tried []*upstream.Node
	dials []*dialing // connects in flight, racing
	// Room for the usual one or two, without an allocation each.
	triedBuf  [2]*upstream.Node
	dialsBuf  [2]*dialing
	lastDial  time.Time
	wakeSeq   uint32         // of the current deadline in l.wakes
	starved   bool           // waiting for a descriptor to dial with
	retryAt   time.Time      // no dial before: the last one found no descriptor
	exhausted bool           // every upstream was tried: nothing left to race
	moved     *upstream.Node // the upstream that ended before answering
	movedOnce bool           // a weak reason moved it already: never again
	heard     bool           // the upstream's first byte was reported
	linkedAt  time.Time      // when up connected

	// After the first answer: when the upstream last sent a byte, and
	// since when client bytes it has not answered wait (zero: none), and
	// whether that silence was reported. See asked.
	upAt, askedAt time.Time
	silent        bool

	replay bool   // buf holds everything the client sent
	buf    []byte // client bytes before the answer, sent or not
	sent   int
	held   int // of buf, counted in the balancer's replayHeld

	c2u, u2c dir

	queued bool // in l.ready
	done   bool

	settled        bool     // the late socket options are set
	young          bool     // in l.young, waiting to settle
	older, younger *session // neighbours in l.young
}

// side is one socket of a session and what epoll said of it since it
// last would block.
type side struct {
	fd     int
	slot   int32
	rd, wr bool
	// hup: the peer's FIN (or an error) has arrived. A short read then
	// does not mean the socket is empty: the end is still to be read, and
	// no new edge will announce it.
	hup bool
}

// drained records what a read of m bytes into a buffer of size says: a
// short read emptied the socket, unless its end is still to be read.
func (sd *side) drained(m, size int) {
	sd.rd = m == size || sd.hup
}

// dir is one direction of the copy. Bytes read but not yet written are
// either in a pipe (spliced) or in pending (copied); never both.
type dir struct {
	p       pipe
	hasPipe bool
	inPipe  int
	pending []byte
	bulk    bool // the last read filled the buffer: splice the rest
	eof     bool // the source ended
	shut    bool // the destination's write side is shut
	n       int64
}

// srcError is a failed read, told apart from a failed write because a
// reset by the upstream before its answer is retried elsewhere, and a
// reset by the client is not.
type srcError struct{ err error }

func (e srcError) Error() string { return e.err.Error() }
func (e srcError) Unwrap() error { return e.err }

// start begins a session for an accepted client; l.mu is held.
//
// A client that speaks first (TLS does) has usually sent its first bytes by
// the time it is accepted, so they are read at once, before the socket is
// added to epoll (which would report them again), and the dial that follows
// can send them straight away.
func (l *loop) start(fd int) {
	s := &session{l: l, b: l.b, replay: true, born: time.Now()}
	s.client = side{fd: fd, slot: -1, rd: true, wr: true}
	s.tried, s.dials = s.triedBuf[:0], s.dialsBuf[:0]

	if err := s.clientToUpstream(); err != nil {
		_ = unix.Close(fd)
		l.b.sessionEnded()
		l.note(zap.DebugLevel, "client connection ended before an upstream was dialed", zap.Error(err))

		return
	}

	slot, err := l.register(fd, s, roleClient, nil, evRead)
	if err != nil {
		l.b.stats.rejected.Add(1)
		_ = unix.Close(fd)
		l.b.sessionEnded()
		l.note(zap.WarnLevel, "closing client", zap.Error(err))

		return
	}

	s.client.slot = slot
	l.sessions[s] = struct{}{}
	l.young.push(s)

	if !s.dialNext() {
		s.noUpstream(nil)
	}
}

// answered reports that the upstream sent its first byte.
func (s *session) answered() bool { return s.u2c.n > 0 }

// progress moves bytes both ways until each would block, and ends the
// session on an error or when both directions are done.
func (s *session) progress() {
	if s.done {
		return
	}

	if !s.linked {
		// Until an upstream connects, what the client sends is kept for it.
		if err := s.clientToUpstream(); err != nil {
			s.fail(err)
		}

		return
	}

	if err := s.clientToUpstream(); err != nil {
		s.fail(err)

		return
	}

	if !s.linked {
		return // moving to another upstream
	}

	err := s.relay(&s.u2c, &s.up, &s.client, s.replay && !s.answered())
	if err != nil && s.replay && !s.answered() {
		err = s.beforeAnswer(err)
	}

	if !s.heard && s.answered() {
		s.heard = true
		s.noWake()
		if !s.n.Usable() { // a sign of return
			s.l.report(s.n, upstream.Answered, nil)
		}
	}

	if err != nil {
		s.fail(err)

		return
	}

	if s.c2u.shut && s.u2c.shut {
		s.finish()
	}
}

// beforeAnswer moves on to the next upstream when the current one ended
// or reset before its first byte, unless the client is done too.
func (s *session) beforeAnswer(err error) error {
	var se srcError
	if !errors.As(err, &se) {
		return err
	}

	clientDone := errors.Is(se.err, io.EOF) && s.c2u.eof
	if !clientDone && (errors.Is(se.err, io.EOF) || errors.Is(se.err, unix.ECONNRESET)) {
		return s.moveOn(se.err, upstream.EndedBeforeAnswer)
	}

	return err
}

// clientToUpstream sends the client's bytes. Before the answer they go
// through buf, kept for a replay; after it, and once buf is sent, relay
// takes over. With no upstream linked yet it only reads into buf.
func (s *session) clientToUpstream() error {
	for s.buf != nil || (s.replay && !s.answered()) {
		if s.sent < len(s.buf) {
			if !s.linked || !s.up.wr {
				return nil
			}

			m, err := s.b.sys.write(s.up.fd, s.buf[s.sent:])

			switch {
			case errors.Is(err, unix.EAGAIN):
				return s.blocked(&s.up)
			case errors.Is(err, unix.EINTR):
				continue
			case err != nil && s.replay && !s.answered():
				return s.moveOn(unix.ECONNRESET, upstream.EndedBeforeAnswer)
			case err != nil:
				return err
			}

			s.sent += m

			continue
		}

		if !s.replay || s.answered() {
			s.drop()

			break
		}

		if s.c2u.eof {
			if !s.linked {
				return nil
			}

			return s.shut(&s.c2u, &s.up)
		}

		if !s.client.rd {
			return nil
		}

		m, err := s.b.sys.read(s.client.fd, s.l.buf[:replayLimit])

		switch {
		case errors.Is(err, unix.EAGAIN):
			s.client.rd = false

			return nil
		case errors.Is(err, unix.EINTR):
			continue
		case err != nil:
			return err
		case m == 0:
			s.c2u.eof = true

			continue
		}

		s.client.drained(m, replayLimit)
		s.c2u.n += int64(m)
		s.keep(s.l.buf[:m])
	}

	if !s.linked {
		return nil
	}

	return s.relay(&s.c2u, &s.client, &s.up, false)
}

// keep adds what the client sent to buf. The copy for a replay is kept
// while this session's stays within replayLimit and all sessions' within
// the balancer's budget.
func (s *session) keep(p []byte) {
	s.buf = append(s.buf, p...)
	s.held += len(p)

	held := s.b.replayHeld.Add(int64(len(p)))
	s.replay = s.replay && len(s.buf) <= replayLimit && held <= s.b.replayBudget
}

// drop lets buf go.
func (s *session) drop() {
	s.b.replayHeld.Add(-int64(s.held))
	s.buf, s.replay, s.held = nil, false, 0
}

// blocked records that dst would block, and has epoll report when it can
// take bytes again.
func (s *session) blocked(dst *side) error {
	dst.wr = false

	return s.l.watchWrites(dst.slot)
}

// moveOn leaves an upstream that ended before answering for the next one,
// to which won replays buf. An upstream that hung up before it was sent a
// byte is at fault; one that hung up on what the client sent may not be
// (garbage is hung up on), so that moves a client once and only has the
// upstream checked: one bad client costs one extra upstream connection
// and takes no upstream out. weak is the evidence reported then.
func (s *session) moveOn(cause error, weak upstream.Evidence) error {
	failed := s.n
	ev := upstream.EndedUnasked

	// Only a hang-up right after connecting, before any byte was sent, is
	// the upstream's doing for sure: a client that sends nothing is hung
	// up on in the end too.
	if s.sent > 0 || time.Since(s.linkedAt) > unaskedWithin {
		if s.movedOnce {
			s.l.report(failed, weak, cause)

			return cause
		}

		ev, s.movedOnce = weak, true
	}

	s.l.report(failed, ev, cause)
	s.unlink()
	s.moved = failed
	s.c2u.shut = false
	s.u2c = dir{}

	if !s.dialNext() && len(s.dials) == 0 {
		return errors.Join(ErrNoUpstreams, cause)
	}

	return nil
}

// answerDue is the answer timeout of a linked session: an upstream that
// has not answered the client's first bytes is reported, and the client
// moves to another upstream, once.
func (s *session) answerDue() {
	if s.answered() || s.sent == 0 || s.heard {
		return
	}

	s.heard = true // reported once

	if !s.replay || s.movedOnce {
		s.l.report(s.n, upstream.NoAnswer, errNoAnswer)

		return
	}

	if err := s.moveOn(errNoAnswer, upstream.NoAnswer); err != nil {
		s.fail(err)
	}
}

// stamp notes bytes that just moved in d: the upstream's end any wait for
// an answer, and client bytes the upstream had been quiet before start one
// (asked); l.mu is held.
func (s *session) stamp(d *dir) {
	switch {
	case d == &s.u2c:
		s.upAt, s.askedAt, s.silent = s.l.now, time.Time{}, false
	case !s.upAt.IsZero() && s.askedAt.IsZero():
		s.asked()
	}
}

// asked starts the wait for the upstream's answer to client bytes on an
// established connection. The answer timeout of the first bytes
// (answerDue) covers new connections only; an upstream that hangs under a
// client that keeps its connection (kubelet sends everything over one) would
// go unnoticed until that client's own ping times out (client-go: 45 s) or
// the next periodic check. Bytes the client sends within reactWithin of
// the upstream's are a reaction (an HTTP/2 WINDOW_UPDATE or SETTINGS ack,
// which are never answered) and start no wait. A silence is only weak
// evidence (an upload, a slow request): it has the upstream checked soon,
// and the check decides; once per silence. An upstream that has ended its
// side will not answer, and is not waited for.
func (s *session) asked() {
	at := s.b.settings.Load().AnswerTimeout
	if at <= 0 || s.u2c.eof || s.l.now.Sub(s.upAt) < s.b.reactWithin {
		return
	}

	s.askedAt = s.l.now
	s.l.wakeAt(s, s.askedAt.Add(at))
}

// silenceDue reports an established connection's upstream that has not
// answered the client's bytes since asked: it is checked soon.
func (s *session) silenceDue() {
	if !s.linked || s.askedAt.IsZero() || s.silent {
		return
	}

	s.silent = true
	s.b.stats.unanswered.Add(1)
	s.l.report(s.n, upstream.NoAnswer, errSilent)
}

func (s *session) unlink() {
	s.l.closeSlot(s.up.slot)
	s.up = side{}
	s.linked = false
	s.n.Detach(uint64(s.c2u.n), uint64(s.u2c.n))
	s.c2u.n, s.u2c.n = 0, 0
	s.n = nil
	s.upAt, s.askedAt, s.silent = time.Time{}, time.Time{}, false
}

// relay moves bytes from src to dst until one would block. Small reads are
// copied through the loop's buffer: one read and one write per message. A
// read that fills the buffer starts a bulk transfer, which is spliced
// through a pipe until the source runs dry. Bytes dst cannot take yet stay
// with the direction, and nothing more is read until they are gone. With
// holdEOF the source's end is returned as an error instead of passed on.
func (s *session) relay(d *dir, src, dst *side, holdEOF bool) error {
	budget := turnBytes

	for budget > 0 {
		if d.inPipe > 0 || len(d.pending) > 0 {
			m, err := s.flush(d, dst)
			if err != nil || m == 0 {
				return err
			}

			budget -= m

			continue
		}

		if d.eof {
			return s.shut(d, dst)
		}

		if !src.rd {
			return nil
		}

		var (
			m   int
			err error
		)

		if d.bulk {
			m, err = s.spliceIn(d, src)
		} else {
			m, err = s.readIn(d, src, dst)
		}

		if err != nil {
			return err
		}

		if m == 0 && d.eof && holdEOF && d.n == 0 {
			return srcError{io.EOF}
		}

		if m > 0 {
			s.stamp(d)
		}

		d.n += int64(m)
		budget -= m
	}

	s.l.again(s)

	return nil
}

// readIn reads into the loop's buffer and writes what it got; what dst
// does not take is copied to d.pending.
func (s *session) readIn(d *dir, src, dst *side) (int, error) {
	m, err := s.b.sys.read(src.fd, s.l.buf)

	switch {
	case errors.Is(err, unix.EAGAIN):
		src.rd = false

		return 0, nil
	case errors.Is(err, unix.EINTR):
		return 0, nil
	case err != nil:
		return 0, srcError{err}
	case m == 0:
		d.eof = true

		return 0, nil
	}

	// A short read emptied the socket: epoll reports the next arrival.
	src.drained(m, len(s.l.buf))
	d.bulk = m == len(s.l.buf)

	w := 0
	if dst.wr {
		w, err = s.b.sys.write(dst.fd, s.l.buf[:m])

		switch {
		case errors.Is(err, unix.EAGAIN):
			w, err = 0, s.blocked(dst)
		case errors.Is(err, unix.EINTR):
			w, err = 0, nil
		}

		if err != nil {
			return 0, err
		}

		w = max(w, 0)
	}

	if w < m {
		d.pending = append([]byte(nil), s.l.buf[w:m]...)
	}

	return m, nil
}

// spliceIn moves what src has queued into a pipe, zero-copy.
func (s *session) spliceIn(d *dir, src *side) (int, error) {
	if !d.hasPipe {
		p, err := s.l.getPipe()
		if err != nil {
			// Out of descriptors: copy instead of splicing.
			d.bulk = false

			return 0, nil
		}

		d.p, d.hasPipe = p, true
	}

	m, err := s.b.sys.splice(src.fd, d.p.w, maxSplice)

	switch {
	case errors.Is(err, unix.EAGAIN):
		src.rd, d.bulk = false, false
		s.dropPipe(d)

		return 0, nil
	case errors.Is(err, unix.EINTR):
		return 0, nil
	case err != nil:
		return 0, srcError{err}
	case m == 0:
		d.eof = true
		s.dropPipe(d)

		return 0, nil
	}

	d.inPipe = int(m)

	return int(m), nil
}

// flush writes what the direction holds to dst; 0 means dst would block.
func (s *session) flush(d *dir, dst *side) (int, error) {
	if !dst.wr {
		return 0, nil
	}

	var (
		m   int
		err error
	)

	if d.inPipe > 0 {
		var n int64
		n, err = s.b.sys.splice(d.p.r, dst.fd, d.inPipe)
		m = int(n)
	} else {
		m, err = s.b.sys.write(dst.fd, d.pending)
	}

	switch {
	case errors.Is(err, unix.EAGAIN):
		return 0, s.blocked(dst)
	case errors.Is(err, unix.EINTR):
		return 1, nil // try again
	case err != nil:
		return 0, err
	}

	if d.inPipe > 0 {
		d.inPipe -= m
		if d.inPipe == 0 {
			s.dropPipe(d)
		}
	} else {
		d.pending = d.pending[m:]
		if len(d.pending) == 0 {
			d.pending = nil
		}
	}

	return max(m, 1), nil
}

// dropPipe gives an empty pipe back to the loop.
func (s *session) dropPipe(d *dir) {
	if d.hasPipe && d.inPipe == 0 {
		s.l.putPipe(d.p)
		d.hasPipe = false
	}
}

// shut passes the source's end on as a half-close, once. When the other
// direction is already done, the session is about to close both sockets,
// and the close sends the FIN.
func (s *session) shut(d *dir, dst *side) error {
	if d.shut {
		return nil
	}

	d.shut = true

	if s.c2u.shut && s.u2c.shut {
		return nil
	}

	if err := unix.Shutdown(dst.fd, unix.SHUT_WR); err != nil && !errors.Is(err, unix.ENOTCONN) {
		return err
	}

	return nil
}

// fail ends the session after an error on either side.
func (s *session) fail(err error) {
	s.l.note(zap.DebugLevel, "connection ended with an error", zap.Error(err))

	s.finish()
}

// finish closes both sides and everything the session holds.
func (s *session) finish() {
	if s.done {
		return
	}

	s.done = true

	s.drop()
	s.noWake()
	s.l.young.remove(s)

	for _, d := range s.dials {
		s.l.closeSlot(d.slot)
	}

	s.dials = nil

	if s.linked {
		s.unlink()
	}

	s.l.closeSlot(s.client.slot)

	for _, d := range []*dir{&s.c2u, &s.u2c} {
		if d.hasPipe && d.inPipe > 0 {
			d.p.close() // holds bytes nobody will read
		} else {
			s.dropPipe(d)
		}
	}

	delete(s.l.sessions, s)
	s.b.sessionEnded()
}
