package main

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// target says where a client connects: the proxy's listener, or for
// "direct" the upstreams themselves, round-robin.
type target struct {
	fixed string
	ups   []string
	rr    atomic.Uint64
}

func (t *target) addr() string {
	if t.fixed != "" {
		return t.fixed
	}

	return t.ups[t.rr.Add(1)%uint64(len(t.ups))]
}

var request = bytes.Repeat([]byte("0123456789abcdef"), 4) // 64 B

// roundTrip sends the 64 B request and waits for its echo.
func roundTrip(c net.Conn, buf []byte) error {
	if _, err := c.Write(request); err != nil {
		return err
	}

	if _, err := io.ReadFull(c, buf[:len(request)]); err != nil {
		return err
	}

	if !bytes.Equal(buf[:len(request)], request) {
		return errMismatch
	}

	return nil
}

var errMismatch = errors.New("echo mismatch")

// oneShot is a whole short connection: connect, one round trip, close.
func oneShot(addr string, timeout time.Duration) error {
	c, err := net.DialTimeout("tcp", addr, timeout)
	if err != nil {
		return &dialError{err}
	}
	defer c.Close()

	_ = c.SetDeadline(time.Now().Add(timeout))

	var buf [64]byte

	return roundTrip(c, buf[:])
}

type dialError struct{ err error }

func (e *dialError) Error() string { return "dial: " + e.err.Error() }
func (e *dialError) Unwrap() error { return e.err }

func classify(err error) string {
	var de *dialError

	var ne net.Error

	switch {
	case err == nil:
		return ""
	case errors.As(err, &de) && errors.Is(err, syscall.ECONNREFUSED):
		return "dial refused"
	case errors.As(err, &de) && errors.As(err, &ne) && ne.Timeout():
		return "dial timeout"
	case errors.As(err, &de):
		return "dial other"
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
		return "closed before reply"
	case errors.Is(err, syscall.ECONNRESET), errors.Is(err, syscall.EPIPE):
		return "reset"
	case errors.As(err, &ne) && ne.Timeout():
		return "reply timeout"
	case errors.Is(err, errMismatch):
		return "mismatch"
	default:
		return "other"
	}
}

// bulk reads a single stream from one upstream for d and returns the bytes
// and the seconds they took.
func bulk(addr string, d time.Duration) (int64, float64, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return 0, 0, err
	}
	defer c.Close()

	var hdr [12]byte
	copy(hdr[:], bulkMagic)
	binary.BigEndian.PutUint64(hdr[4:], 1<<50)

	if _, err := c.Write(hdr[:]); err != nil {
		return 0, 0, err
	}

	buf := make([]byte, 256<<10)
	_ = c.SetReadDeadline(time.Now().Add(d + 5*time.Second))

	// Skip the first 50 ms (connection setup, first window).
	warm := time.Now().Add(50 * time.Millisecond)
	for time.Now().Before(warm) {
		if _, err := c.Read(buf); err != nil {
			return 0, 0, err
		}
	}

	start := time.Now()
	end := start.Add(d)

	var total int64

	for time.Now().Before(end) {
		n, err := c.Read(buf)
		total += int64(n)

		if err != nil {
			return 0, 0, err
		}
	}

	return total, time.Since(start).Seconds(), nil
}

// latency does round trips on one new connection: up to maxN or d, after
// warm ones, and returns each in microseconds.
func latency(addr string, warm, maxN int, d time.Duration) ([]float64, error) {
	c, err := net.DialTimeout("tcp", addr, 2*time.Second)
	if err != nil {
		return nil, err
	}
	defer c.Close()

	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetNoDelay(true)
	}

	_ = c.SetDeadline(time.Now().Add(d + 10*time.Second))

	var buf [64]byte

	for range warm {
		if err := roundTrip(c, buf[:]); err != nil {
			return nil, err
		}
	}

	samples := make([]float64, 0, maxN)
	end := time.Now().Add(d)

	for len(samples) < maxN && time.Now().Before(end) {
		t := time.Now()
		if err := roundTrip(c, buf[:]); err != nil {
			return nil, err
		}

		samples = append(samples, float64(time.Since(t).Nanoseconds())/1e3)
	}

	return samples, nil
}

func pct(sorted []float64, p float64) float64 {
	if len(sorted) == 0 {
		return 0
	}

	i := int(float64(len(sorted)-1) * p / 100)

	return sorted[i]
}

// connRate runs workers doing oneShot for d (and at most maxN in all) and
// returns the successful and failed connections and the seconds it took.
func connRate(t *target, workers int, d time.Duration, maxN int64) (ok, failed int64, secs float64) {
	var (
		okN, failN, budget atomic.Int64
		wg                 sync.WaitGroup
	)

	budget.Store(maxN)

	start := time.Now()
	end := start.Add(d)

	for range workers {
		wg.Go(func() {
			for time.Now().Before(end) && budget.Add(-1) >= 0 {
				if err := oneShot(t.addr(), 2*time.Second); err != nil {
					failN.Add(1)
				} else {
					okN.Add(1)
				}
			}
		})
	}

	wg.Wait()

	return okN.Load(), failN.Load(), time.Since(start).Seconds()
}

// idleConns opens n connections, trips round trips on each, and keeps them.
func idleConns(t *target, n, parallel, trips int) ([]net.Conn, int, error) {
	conns := make([]net.Conn, n)

	var (
		next, failed atomic.Int64
		wg           sync.WaitGroup
		firstErr     atomic.Value
	)

	for range parallel {
		wg.Go(func() {
			var buf [64]byte

			for {
				i := next.Add(1) - 1
				if i >= int64(n) {
					return
				}

				c, err := net.DialTimeout("tcp", t.addr(), 5*time.Second)
				if err == nil {
					_ = c.SetDeadline(time.Now().Add(5 * time.Second))
					for k := 0; k < trips && err == nil; k++ {
						err = roundTrip(c, buf[:])
					}
					_ = c.SetDeadline(time.Time{})
				}

				if err != nil {
					failed.Add(1)
					firstErr.CompareAndSwap(nil, err)

					if c != nil {
						_ = c.Close()
					}

					continue
				}

				conns[i] = c
			}
		})
	}

	wg.Wait()

	out := conns[:0]
	for _, c := range conns {
		if c != nil {
			out = append(out, c)
		}
	}

	var err error
	if e, ok := firstErr.Load().(error); ok {
		err = e
	}

	return out, int(failed.Load()), err
}

type failoverResult struct {
	Total       int64            `json:"total"`
	Failed      int64            `json:"failed"`
	FailedAfter int64            `json:"failed_after_kill"`
	Kinds       map[string]int64 `json:"failure_kinds,omitempty"`
	MaxMsAfter  float64          `json:"max_conn_ms_after_kill"`
	P99MsAfter  float64          `json:"p99_conn_ms_after_kill"`
}

// failover keeps a paced new-connection load (workers, one connection per
// period each) for pre, calls kill, and keeps it for post.
func failover(t *target, workers int, period, pre, post time.Duration, kill func()) failoverResult {
	var (
		mu    sync.Mutex
		res   = failoverResult{Kinds: map[string]int64{}}
		after []float64
		wg    sync.WaitGroup
	)

	start := time.Now()
	killAt := start.Add(pre)
	end := killAt.Add(post)

	for range workers {
		wg.Go(func() {
			tick := time.NewTicker(period)
			defer tick.Stop()

			for now := range tick.C {
				if !now.Before(end) {
					return
				}

				t0 := time.Now()
				err := oneShot(t.addr(), 3*time.Second)
				ms := float64(time.Since(t0).Microseconds()) / 1e3

				mu.Lock()
				res.Total++

				if err != nil {
					res.Failed++
					res.Kinds[classify(err)]++
				}

				if !t0.Before(killAt) {
					after = append(after, ms)
					if err != nil {
						res.FailedAfter++
					}
				}
				mu.Unlock()
			}
		})
	}

	time.Sleep(time.Until(killAt))
	kill()
	wg.Wait()

	slices.Sort(after)

	if len(after) > 0 {
		res.MaxMsAfter = after[len(after)-1]
		res.P99MsAfter = pct(after, 99)
	}

	return res
}

// waitDial waits until addr accepts and answers a round trip.
func waitDial(addr string, d time.Duration) error {
	end := time.Now().Add(d)

	for {
		err := oneShot(addr, 200*time.Millisecond)
		if err == nil {
			return nil
		}

		if time.Now().After(end) {
			return err
		}

		time.Sleep(5 * time.Millisecond)
	}
}

// notifyListener receives sd_notify datagrams on a unixgram socket.
type notifyListener struct {
	path  string
	conn  *net.UnixConn
	ready chan time.Time
}

func listenNotify(path string) (*notifyListener, error) {
	_ = os.Remove(path)

	c, err := net.ListenUnixgram("unixgram", &net.UnixAddr{Name: path, Net: "unixgram"})
	if err != nil {
		return nil, err
	}

	_ = os.Chmod(path, 0o666) // the proxy runs as nobody

	n := &notifyListener{path: path, conn: c, ready: make(chan time.Time, 16)}

	go func() {
		buf := make([]byte, 4096)

		for {
			k, err := c.Read(buf)
			if err != nil {
				return
			}

			now := time.Now()

			for _, line := range bytes.Split(buf[:k], []byte("\n")) {
				if string(line) == "READY=1" {
					select {
					case n.ready <- now:
					default:
					}
				}
			}
		}
	}()

	return n, nil
}

func (n *notifyListener) drain() {
	for {
		select {
		case <-n.ready:
		default:
			return
		}
	}
}

func (n *notifyListener) close() {
	_ = n.conn.Close()
	_ = os.Remove(n.path)
}
