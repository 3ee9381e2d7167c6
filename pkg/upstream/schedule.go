package upstream

import "time"

// The check schedule is the model's: when each upstream is checked next
// follows from what is known of it. A usable upstream is checked every
// Interval (±jitter); one that fails is retried after Retry, backing off
// to RetryMax; evidence from the data path has it checked at once, but
// never more often than every Retry, so no client can turn the proxy into
// a load generator. The prober (package check) asks Due and runs the
// checks.

// jitter spreads checks by ±20% of their delay, so the nodes of a fleet
// started together do not check together.
const jitter = 0.2

// schedule sets n's next check after d, jittered; s.mu is held.
func (s *Set) schedule(n *Node, d time.Duration) {
	d = time.Duration((1 + jitter*(2*s.rand()-1)) * float64(d))
	n.due = s.clk.Now().Add(d)
}

// soon brings n's next check forward because the traffic saw something;
// s.mu is held. Only for an upstream that passes its checks: a failing one
// is retried on its backoff whatever the traffic says (every refused client
// of a fail-open node would otherwise have it checked every second). The
// least time after its last check doubles with each brought-forward check
// that passes, from Retry to Interval, and starts over after an Interval
// without evidence: no client can multiply the checks an API server gets.
func (s *Set) soon(n *Node) {
	if !n.healthy {
		return
	}

	rules := s.rules.Load()
	now := s.clk.Now()

	if n.gap == 0 || now.Sub(n.lastEvidence) > rules.Interval {
		n.gap = rules.Retry
	}

	n.lastEvidence = now

	if s.bringForward(n, n.gap) {
		n.byEvidence = true
	}
}

// bringForward moves n's next check to gap after its last one, or now,
// if that is sooner than planned; s.mu is held.
func (s *Set) bringForward(n *Node, gap time.Duration) bool {
	at := n.lastCheck.Add(gap)
	if now := s.clk.Now(); at.Before(now) {
		at = now
	}

	if n.checking || !at.Before(n.due) {
		return false
	}

	n.due = at
	s.poke()

	return true
}

func (s *Set) poke() {
	select {
	case s.wake <- struct{}{}:
	default:
	}
}

// Wake is signalled when a check was brought forward: the prober asks Due
// again.
func (s *Set) Wake() <-chan struct{} { return s.wake }

// Due returns the upstreams whose check is due, now handed to the caller
// until it Records or Skips each, and when the next one is due (zero if
// none is scheduled: every upstream is being checked).
func (s *Set) Due() ([]*Node, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()

	now := s.clk.Now()

	var (
		due  []*Node
		next time.Time
	)

	for _, n := range s.nodes {
		switch {
		case n.checking:
		case !n.due.After(now):
			n.checking = true
			due = append(due, n)
		case next.IsZero() || n.due.Before(next):
			next = n.due
		}
	}

	return due, next
}

// Skip hands back a check that was not run (the process was short of
// descriptors, or is stopping): it is retried later and counts for nothing.
func (s *Set) Skip(n *Node) {
	s.mu.Lock()
	defer s.mu.Unlock()

	n.checking = false
	s.schedule(n, s.rules.Load().Retry)
	s.poke()
}
