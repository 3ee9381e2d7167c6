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

	// The best of each class: usable, suspended, failing. Within a class,
	// the lowest tier, then the fewest connections, ties in round-robin
	// order, so that even a node whose every upstream is suspended (its
	// own network blipped) spreads its clients.
	var (
		best [3]*Node
		at   [3]int
	)

	count := len(s.nodes)
	for j := range count {
		i := (s.cursor + 1 + j) % count
		n := s.nodes[i]

		if slices.Contains(tried, n) {
			continue
		}

		c := 0

		switch {
		case !n.healthy:
			c = 2
		case n.suspended:
			c = 1
		}

		if b := best[c]; b == nil || n.tier < b.tier || (n.tier == b.tier && n.Active() < b.Active()) {
			best[c], at[c] = n, i
		}
	}

	for c, n := range best {
		if n != nil {
			s.cursor = at[c]

			return n, nil
		}
	}

	return nil, ErrNoUpstreams
}
