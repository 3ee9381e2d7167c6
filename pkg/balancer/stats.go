package balancer

import (
	"context"
	"errors"
	"net"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// Counters the balancer keeps for metrics. They are plain atomics, read by
// Stats; the metrics package turns them into Prometheus series, so the data
// path does not depend on a metrics library.
type counters struct {
	accepted       atomic.Uint64
	rejected       atomic.Uint64 // closed: no upstream could take it
	retried        atomic.Uint64 // dials after a failed dial
	closedRemoved  atomic.Uint64 // cut after their upstream left the set
	closedShutdown atomic.Uint64 // cut after the drain timeout on shutdown
	closedFailed   atomic.Uint64 // cut because their upstream failed its checks
	raced          atomic.Uint64 // dials started while another was still pending
	replayed       atomic.Uint64 // connections moved to another upstream before its first answer
	overLimit      atomic.Uint64 // reset: max_connections were open
	unanswered     atomic.Uint64 // established connections whose upstream went silent (asked)
	dials          histogram
}

// DialBuckets are the dial-duration histogram's upper bounds, in seconds.
var DialBuckets = [...]float64{0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5}

// histogram is a fixed-bucket histogram of durations, safe for concurrent use.
type histogram struct {
	counts [len(DialBuckets) + 1]atomic.Uint64 // the last is +Inf
	sumNs  atomic.Int64
}

func (h *histogram) observe(d time.Duration) {
	s := d.Seconds()
	i := 0

	for i < len(DialBuckets) && s > DialBuckets[i] {
		i++
	}

	h.counts[i].Add(1)
	h.sumNs.Add(int64(d))
}

// Histogram is a snapshot: Counts[i] observations fell at or under
// DialBuckets[i] and above the previous bound; the last is over all of them.
type Histogram struct {
	Counts []uint64
	Sum    float64 // seconds
}

func (h *histogram) snapshot() Histogram {
	out := Histogram{Counts: make([]uint64, len(h.counts)), Sum: time.Duration(h.sumNs.Load()).Seconds()}
	for i := range h.counts {
		out.Counts[i] = h.counts[i].Load()
	}

	return out
}

// dialEvidence classifies a failed dial for the model's counters.
func dialEvidence(err error) upstream.Evidence {
	var ne net.Error

	switch {
	case errors.Is(err, syscall.ECONNREFUSED), errors.Is(err, syscall.ECONNRESET):
		return upstream.DialRefused
	case errors.Is(err, context.DeadlineExceeded), errors.As(err, &ne) && ne.Timeout():
		return upstream.DialTimeout
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return upstream.DialUnreachable
	default:
		return upstream.DialFailed
	}
}

// Stats is a snapshot of the balancer for metrics.
type Stats struct {
	Accepted       uint64
	Rejected       uint64
	RetriedDials   uint64
	ClosedRemoved  uint64
	ClosedShutdown uint64
	ClosedFailed   uint64
	RacedDials     uint64
	Replayed       uint64
	OverLimit      uint64
	Unanswered     uint64
	DialDuration   Histogram
}

// Stats returns the balancer's counters; the upstreams' are the model's.
func (b *Balancer) Stats() Stats {
	return Stats{
		Accepted:       b.stats.accepted.Load(),
		Rejected:       b.stats.rejected.Load(),
		RetriedDials:   b.stats.retried.Load(),
		ClosedRemoved:  b.stats.closedRemoved.Load(),
		ClosedShutdown: b.stats.closedShutdown.Load(),
		ClosedFailed:   b.stats.closedFailed.Load(),
		RacedDials:     b.stats.raced.Load(),
		Replayed:       b.stats.replayed.Load(),
		OverLimit:      b.stats.overLimit.Load(),
		Unanswered:     b.stats.unanswered.Load(),
		DialDuration:   b.stats.dials.snapshot(),
	}
}
