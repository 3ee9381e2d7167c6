package upstream

import (
	"time"

	"go.uber.org/zap"
)

// Result is the outcome of one health check.
type Result struct {
	Latency time.Duration
	Err     error // nil: passed
}

// Record applies a check result to n under the fall/rise rule.
func (s *Set) Record(n *Node, r Result) {
	rules := s.rules.Load()

	s.mu.Lock()
	was := n.usable()
	wasHealthy := n.healthy
	n.latency = r.Latency

	if r.Err != nil {
		n.fails++
		n.passes = 0
		n.lastErr = r.Err

		if n.healthy && n.fails >= max(rules.Fall, 1) {
			n.healthy = false
		}
	} else {
		n.passes++
		n.fails = 0
		n.tier = tierOf(rules.Tiers, r.Latency)
		n.suspended = false
		n.lastErr = nil

		if !n.healthy && n.passes >= max(rules.Rise, 1) {
			n.healthy = true
		}
	}

	s.logChange(n, was)
	failed := wasHealthy && !n.healthy
	s.mu.Unlock()

	if failed && rules.ResetOnFailure {
		s.reset(n)
	}
}

// reset has the engine close the connections of an upstream that failed
// its checks: waiting for TCP to notice a dead or hung peer takes minutes,
// a reconnect through the proxy takes milliseconds.
func (s *Set) reset(n *Node) {
	if cut := s.close(n, ReasonFailed); cut > 0 {
		s.log.Warn("closed the connections of an unhealthy upstream so its clients reconnect elsewhere",
			zap.String("upstream", n.addr), zap.Int("closed", cut))
	}
}

// Evidence is what the data path learned about an upstream.
type Evidence uint8

// The dial failures are numbered as DialErrorReasons.
const (
	DialRefused     Evidence = iota // refused, or reset while connecting
	DialTimeout                     // no connection within the dial timeout
	DialUnreachable                 // no route to the upstream
	DialFailed                      // any other failed dial
	// LostRace: a dial still pending after the head start while another
	// upstream connected. Counted as a dial error of reason "other".
	LostRace
	// EndedBeforeAnswer: the upstream closed or reset a connection before
	// its first byte.
	EndedBeforeAnswer
)

// DialErrorReasons names the dial failures, in Evidence order: a bounded
// label set.
var DialErrorReasons = []string{"refused", "timeout", "unreachable", "other"}

// Report records what the data path saw of n: any of these suspends it
// from selection until its next passing check, so new clients stop paying
// for it. It never closes connections.
func (s *Set) Report(n *Node, e Evidence, err error) {
	switch {
	case e <= DialFailed:
		n.dialErrors[e].Add(1)
	case e == LostRace:
		n.dialErrors[DialFailed].Add(1)
	}

	s.mu.Lock()
	defer s.mu.Unlock()

	was := n.usable()
	n.suspended = true
	n.lastErr = err
	s.logChange(n, was)
}

// logChange logs a change of n's usability; s.mu is held.
func (s *Set) logChange(n *Node, was bool) {
	now := n.usable()
	if now == was {
		return
	}

	n.changed = s.clk.Now()
	fields := []zap.Field{zap.String("upstream", n.addr), zap.Float64("score", n.score())}

	if now {
		s.log.Info("upstream healthy", append(fields, zap.Duration("latency", n.latency))...)
	} else {
		s.log.Warn("upstream unhealthy", append(fields, zap.Error(n.lastErr))...)
	}
}

func tierOf(bounds []time.Duration, latency time.Duration) int {
	for i, bound := range bounds {
		if latency < bound {
			return i
		}
	}

	return len(bounds) // with no bounds, the tier of a new upstream: 0
}
