package upstream

import (
	"slices"
	"time"
)

// Status is the state of one upstream, as /status shows it, with the
// counters /metrics adds.
type Status struct {
	Address           string    `json:"address"`
	Healthy           bool      `json:"healthy"`
	Score             float64   `json:"score"`
	Tier              int       `json:"tier"`
	Sources           []string  `json:"sources"`
	ActiveConnections int64     `json:"active_connections"`
	TotalConnections  uint64    `json:"total_connections"`
	LatencyMillis     float64   `json:"check_latency_ms"`
	LastError         string    `json:"last_error,omitempty"`
	LastChange        time.Time `json:"last_change"`

	DialErrors map[string]uint64 `json:"-"` // by DialErrorReasons
	BytesIn    uint64            `json:"-"` // client -> upstream, counted when a connection ends
	BytesOut   uint64            `json:"-"`
}

// Status returns the listed upstreams in configuration order.
func (s *Set) Status() []Status {
	s.mu.Lock()
	defer s.mu.Unlock()

	out := make([]Status, 0, len(s.nodes))

	for _, n := range s.nodes {
		st := Status{
			Address:           n.addr,
			Healthy:           n.usable(),
			Score:             n.score(),
			Tier:              n.tier,
			Sources:           slices.Clone(n.sources),
			ActiveConnections: n.Active(),
			TotalConnections:  n.total.Load(),
			LatencyMillis:     float64(n.latency.Microseconds()) / 1000,
			LastChange:        n.changed,
			DialErrors:        make(map[string]uint64, len(DialErrorReasons)),
			BytesIn:           n.bytesIn.Load(),
			BytesOut:          n.bytesOut.Load(),
		}

		if n.lastErr != nil {
			st.LastError = n.lastErr.Error()
		}

		for i, r := range DialErrorReasons {
			st.DialErrors[r] = n.dialErrors[i].Load()
		}

		out = append(out, st)
	}

	return out
}
