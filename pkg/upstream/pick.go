package upstream

import "slices"

// Pick returns the upstream for the next connection attempt, skipping
// those this client already tried: among the usable upstreams of the
// lowest latency tier, the one with the fewest active connections, ties
// taken in round-robin order. Suspended upstreams are a last resort;
// upstreams failing health checks are never returned, so with all of them
// down a client is closed at once.
func (s *Set) Pick(tried []*Node) (*Node, error) {
	s.mu.Lock()
	defer s.mu.Unlock()

	var (
		best       *Node
		bestIdx    int
		lastResort *Node
	)

	count := len(s.nodes)
	for j := range count {
		i := (s.cursor + 1 + j) % count
		n := s.nodes[i]

		switch {
		case slices.Contains(tried, n) || !n.healthy:
			continue
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

	return nil, ErrNoUpstreams
}
