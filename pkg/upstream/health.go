package upstream

import (
	"time"

	"go.uber.org/zap"
)

// Result is the outcome of one health check.
type Result struct {
	Latency time.Duration
	Err     error // nil: passed
	// Gone: nothing listens at the address (the connection was refused).
	// The server has exited or closed its listener: its remaining
	// connections are on their way out, and holding them only holds up its
	// graceful shutdown.
	Gone bool
}

// Record applies a check result to n under the fall/rise rule and
// schedules its next check.
func (s *Set) Record(n *Node, r Result) {
	rules := s.rules.Load()

	s.mu.Lock()
	was := n.usable()
	first := n.lastCheck.IsZero()
	n.checking = false
	n.lastCheck = s.clk.Now()
	// The tier follows the faster of the last two checks: one slow check
	// (a busy host, a GC pause) must not keep an upstream out of its tier
	// for a whole interval; two in a row do.
	settled := min(r.Latency, n.latency)
	n.latency = r.Latency

	if r.Err != nil {
		s.failed(n, r.Err, rules)
	} else {
		s.passed(n, settled, rules, first)
	}

	s.changed(n, was)
	reset := r.Err != nil && s.resetDue(n, rules, r.Gone)
	s.poke() // the prober plans its next wake-up with this check's
	s.unlock()

	if reset {
		s.resetClients(n)
	}
}

// failed counts a failed check; s.mu is held.
func (s *Set) failed(n *Node, err error, rules *Rules) {
	n.fails++
	n.passes = 0
	n.lastErr = err
	n.unproven = false // a failed first check: rise as any failed upstream
	n.byEvidence = false

	if n.failedSince.IsZero() {
		n.failedSince = s.clk.Now()

		// Is it this one alone, or all of them (etcd, the check CA)? The
		// others are asked soon: only one that passes after this failure
		// began is a reason to reset this one's clients (resetDue).
		for _, m := range s.nodes {
			if m != n && m.usable() {
				s.bringForward(m, rules.Retry)
			}
		}
	}

	if n.healthy && n.fails >= max(rules.Fall, 1) {
		n.healthy = false
	}

	// Check harder while it fails: retry soon, then back off, so a fleet
	// that sees the same failure does not hammer a recovering API server.
	n.backoff = min(max(2*n.backoff, rules.Retry), rules.RetryMax)
	s.schedule(n, n.backoff)
}

// passed counts a passing check; s.mu is held.
func (s *Set) passed(n *Node, latency time.Duration, rules *Rules, first bool) {
	n.passes++
	n.fails = 0
	n.tier = tierOf(rules.Tiers, latency)
	n.suspended = false
	n.lastErr = nil
	n.reset = false
	n.lastPass = s.clk.Now()
	n.failedSince = time.Time{}

	if n.byEvidence { // and it passed: the next such check waits longer
		n.byEvidence = false
		n.gap = min(2*n.gap, rules.Interval)
	}

	if n.unproven || !n.healthy && n.passes >= max(rules.Rise, 1) {
		n.unproven, n.healthy = false, true
	}

	switch {
	case n.healthy && first:
		// Anywhere within the first interval: daemons started together
		// (a fleet-wide restart) must not check together ever after.
		n.backoff = 0
		n.due = s.clk.Now().Add(time.Duration(s.rand() * float64(rules.Interval)))
	case n.healthy:
		n.backoff = 0
		s.schedule(n, rules.Interval)
	default:
		s.schedule(n, rules.Retry) // rising: confirm soon
	}
}

// resetDue decides whether the clients of n, which just failed a check,
// are to be reset; s.mu is held. Only once per failure, never on a single
// failed check, and only when nothing listens at its address any more
// (gone), or another upstream passed a check since this one began to fail
// and is usable for them to go to: when all fail
// together (etcd stalls, the check CA is rotated), the API servers mostly
// still serve, and cutting every watch of every node would turn a blip
// into a relist storm.
func (s *Set) resetDue(n *Node, rules *Rules, gone bool) bool {
	if !rules.ResetOnFailure || n.healthy || n.reset || n.fails < max(rules.Fall, 2) {
		return false
	}

	if gone { // nobody is served by it much longer: let it finish shutting down
		n.reset = true

		return true
	}

	for _, m := range s.nodes {
		if m != n && m.usable() && m.lastPass.After(n.failedSince) {
			n.reset = true

			return true
		}
	}

	return false
}

// resetClients has the engine close the connections of an upstream that
// failed its checks: waiting for TCP to notice a dead or hung peer takes
// minutes, a reconnect through the proxy takes milliseconds.
func (s *Set) resetClients(n *Node) {
	if cut := s.close(n, ReasonFailed); cut > 0 {
		s.log.Warn("closed the connections of an unhealthy upstream so its clients reconnect to a healthy one",
			zap.String("upstream", n.addr), zap.Int("closed", cut))
	}
}

// changed logs a change of n's usability and of fail-open; s.mu is held.
func (s *Set) changed(n *Node, was bool) {
	now := n.usable()
	n.usableNow.Store(now)

	if now != was {
		n.changed = s.clk.Now()
		fields := []zap.Field{zap.String("upstream", n.addr), zap.Float64("score", n.score())}

		if now {
			s.note(zap.InfoLevel, "upstream healthy", append(fields, zap.Duration("latency", n.latency))...)
		} else {
			s.note(zap.WarnLevel, "upstream unhealthy", append(fields, zap.Error(n.lastErr))...)
		}
	}

	s.updateFailOpen()
}

// updateFailOpen notes when no upstream is usable any more, or again;
// s.mu is held.
func (s *Set) updateFailOpen() {
	open := true

	for _, n := range s.nodes {
		if n.usable() { // a new one has not passed a check yet: it is no reason to stop failing open
			open = false

			break
		}
	}

	if open == s.failOpen {
		return
	}

	s.failOpen = open
	if open {
		s.note(zap.ErrorLevel, "no upstream passes its checks: failing open. Established connections are kept and new ones "+
			"go to any upstream that accepts them, until one passes again.")
	} else {
		s.note(zap.InfoLevel, "an upstream passes its checks again: fail-open ended")
	}
}

// FailOpen reports whether no upstream passes its checks, so that new
// connections go to any upstream that accepts them.
func (s *Set) FailOpen() bool {
	s.mu.Lock()
	defer s.mu.Unlock()

	return s.failOpen
}

func tierOf(bounds []time.Duration, latency time.Duration) int {
	for i, bound := range bounds {
		if latency < bound {
			return i
		}
	}

	return len(bounds) // with no bounds, the tier of a new upstream: 0
}
