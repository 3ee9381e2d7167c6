package upstream

// Evidence is what the data path learned about an upstream. No client can
// take an upstream out of rotation: only evidence a client cannot cause
// suspends one (strong); what a client could have caused (garbage that
// the upstream hangs up on, a request it never finishes) only has the
// upstream checked soon (weak), and the check decides.
type Evidence uint8

// The dial failures are numbered as DialErrorReasons.
const (
	DialRefused     Evidence = iota // strong: refused, or reset while connecting
	DialTimeout                     // strong: no connection within the dial timeout
	DialUnreachable                 // strong: no route to the upstream
	DialFailed                      // strong: any other failed dial
	// LostRace (strong): a dial still pending after the head start while
	// another upstream connected. Counted as a dial error "other".
	LostRace
	// EndedUnasked (strong): the upstream closed or reset a connection
	// before it was sent a byte.
	EndedUnasked
	// EndedBeforeAnswer (weak): the upstream closed or reset a connection
	// after the client's first bytes and before its own first byte.
	EndedBeforeAnswer
	// NoAnswer (weak): the upstream has not answered the client's first
	// bytes within the answer timeout.
	NoAnswer
	// Answered: the upstream sent a client its first byte. For an
	// upstream out of rotation it is a sign of return: it is checked soon.
	Answered
)

// DialErrorReasons names the dial failures, in Evidence order: a bounded
// label set.
var DialErrorReasons = []string{"refused", "timeout", "unreachable", "other"}

// CountDialError counts a failed dial of n (a dial Evidence) for the
// metrics. The engine counts at once; Report may come a little later.
func (n *Node) CountDialError(e Evidence) {
	switch {
	case e <= DialFailed:
		n.dialErrors[e].Add(1)
	case e == LostRace:
		n.dialErrors[DialFailed].Add(1)
	}
}

// Strong reports whether e is evidence about the upstream alone.
func (e Evidence) Strong() bool { return e <= EndedUnasked }

// Report records what the data path saw of n. Strong evidence suspends it
// from selection until its next passing check, so new clients stop paying
// for it; any evidence that it may have changed has it checked soon. It
// never closes connections.
func (s *Set) Report(n *Node, e Evidence, err error) {
	s.mu.Lock()
	defer s.unlock()

	switch {
	case e == Answered:
		if n.healthy && n.suspended {
			s.soon(n)
		}
	case e.Strong():
		was := n.usable()
		n.suspended = true
		n.lastErr = err
		s.changed(n, was)
		s.soon(n)
	default:
		s.soon(n)
	}
}
