package upstream

import "slices"

// Pick returns the upstream for the next connection attempt, skipping
// those this client already tried: among the usable upstreams of the
// lowest latency tier, the one with the fewest active connections, ties
// taken in round-robin order. Upstreams the data path saw fail since their
// last check come next, then those failing their checks: a client is
// closed only when every upstream was tried. While any upstream is usable
// a client reaches a failing one only after the usable ones failed it;
// when none is (fail-open), the dial decides, and a returning API server
// is used the moment it accepts.
func (s *Set) Pick(tried []*Node) (*Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	var (
		best       *Node
		bestIdx    int
		lastResort *Node
		failing    *Node
		failingIdx int
	)

	count := len(s.nodes)
	for j := range count {
		i := (s.cursor + 1 + j) % count
		n := s.nodes[i]

		switch {
		case slices.Contains(tried, n):
			continue
		case !n.healthy:
			if failing == nil {
				failing, failingIdx = n, i
			}
		case n.suspended:
			if lastResort == nil {
				lastResort = n
			}
		case best == nil || n.tier < best.tier || (n.tier == best.tier && n.Active() < best.Active()):
			best, bestIdx = n, i
		}
	}

	if best != nil {
		s.cursor = bestIdx

		return best, nil
	}

	if lastResort != nil {
		return lastResort, nil
	}

	if failing != nil {
		s.cursor = failingIdx // fail-open: spread over them

		return failing, nil
	}

	return nil, ErrNoUpstreams
}
