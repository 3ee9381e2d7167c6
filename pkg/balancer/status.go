package balancer

import (
	"errors"
	"fmt"
	"slices"
	"time"
)

// UpstreamStatus is the state of one upstream, as shown by /status.
type UpstreamStatus struct {
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
}

// Status returns the upstreams in configuration order.
func (b *Balancer) Status() []UpstreamStatus {
	b.mu.Lock()
	defer b.mu.Unlock()

	out := make([]UpstreamStatus, 0, len(b.nodes))

	for _, n := range b.nodes {
		s := UpstreamStatus{
			Address:           n.addr,
			Healthy:           n.usable(),
			Score:             n.score(),
			Tier:              int(n.tier),
			Sources:           slices.Clone(n.sources),
			ActiveConnections: n.active.Load(),
			TotalConnections:  n.total.Load(),
			LatencyMillis:     float64(n.latency.Microseconds()) / 1000,
			LastChange:        n.changed,
		}

		if n.lastErr != nil {
			s.LastError = n.lastErr.Error()
		}

		out = append(out, s)
	}

	return out
}

// Ready reports whether at least one upstream is usable.
func (b *Balancer) Ready() bool {
	b.mu.Lock()
	defer b.mu.Unlock()

	return slices.ContainsFunc(b.nodes, (*node).usable)
}

// ErrStalled means one of the balancer's own loops stopped making progress.
var ErrStalled = errors.New("stalled")

// Alive reports whether the balancer's own loops work: the accept loop is
// running and health-check rounds keep coming. It says nothing about the
// upstreams, so a watchdog built on it never restarts the proxy because an
// API server is down.
func (b *Balancer) Alive() error {
	select {
	case <-b.acc.done:
		return fmt.Errorf("accept loop: %w", ErrStalled)
	default:
	}

	for _, l := range b.loops {
		if l.failed.Load() {
			return fmt.Errorf("relay loop: %w", ErrStalled)
		}
	}

	b.mu.Lock()
	last := b.lastRound
	b.mu.Unlock()

	// A round is due every interval (±jitter) and lasts at most a timeout.
	s := b.settings.Load()
	limit := 3*s.HealthInterval + s.HealthTimeout
	if age := time.Since(last); age > limit {
		return fmt.Errorf("health checks: no round for %s: %w", age.Round(time.Millisecond), ErrStalled)
	}

	return nil
}
