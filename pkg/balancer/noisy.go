package balancer

import (
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
)

// noisyEvery is how often a line any client can cause may be written.
const noisyEvery = time.Second

// noisy is a log line that a client, or every client at once, can cause:
// with every upstream refusing, one loop once wrote 229,417 lines in 10 s.
// It is written at most once per noisyEvery, saying how many were left
// out; the metrics count every one.
type noisy struct {
	next    atomic.Int64 // unix nanoseconds before which lines are only counted
	dropped atomic.Uint64
}

// note has l write the line unless one was written within noisyEvery.
func (q *noisy) note(l *loop, lvl zapcore.Level, msg string, fields ...zap.Field) {
	now := time.Now().UnixNano()

	next := q.next.Load()
	if now < next || !q.next.CompareAndSwap(next, now+int64(noisyEvery)) {
		q.dropped.Add(1)

		return
	}

	if n := q.dropped.Swap(0); n > 0 {
		fields = append(fields, zap.Uint64("similar_lines_left_out", n))
	}

	l.note(lvl, msg, fields...)
}
