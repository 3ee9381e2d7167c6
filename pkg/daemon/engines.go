package daemon

import (
	"context"
	"errors"
	"net"
	"sync"

	"github.com/lexfrei/extractedprism/pkg/balancer"
	"github.com/lexfrei/extractedprism/pkg/upstream"
)

// engines serves several listeners (loopback, and the link-local address
// for pods) with one relay engine each over one upstream model. A stopgap
// until the engine takes several listeners itself: each engine has its own
// loops and its own max_connections bound.
type engines struct {
	all  []*balancer.Balancer
	done chan struct{} // closed when any engine's accepting ended
	once sync.Once
}

func newEngines(all []*balancer.Balancer) *engines {
	e := &engines{all: all, done: make(chan struct{})}

	for _, b := range all {
		go func() {
			<-b.Done()
			e.once.Do(func() { close(e.done) })
		}()
	}

	return e
}

func (e *engines) Start() error {
	for _, b := range e.all {
		if err := b.Start(); err != nil {
			return err //nolint:wrapcheck // the engine names its address
		}
	}

	return nil
}

// Done is closed when any engine stopped accepting.
func (e *engines) Done() <-chan struct{} { return e.done }

func (e *engines) Err() error {
	var errs []error
	for _, b := range e.all {
		errs = append(errs, b.Err())
	}

	return errors.Join(errs...)
}

// Addr is the first listener's: loopback, where the node's own clients go.
func (e *engines) Addr() net.Addr { return e.all[0].Addr() }

// Addrs are every listener's.
func (e *engines) Addrs() []net.Addr {
	out := make([]net.Addr, len(e.all))
	for i, b := range e.all {
		out[i] = b.Addr()
	}

	return out
}

func (e *engines) Active() int {
	n := 0
	for _, b := range e.all {
		n += b.Active()
	}

	return n
}

// Shutdown stops every engine at once and returns the connections cut.
func (e *engines) Shutdown(ctx context.Context) int {
	cut := make([]int, len(e.all))

	var wg sync.WaitGroup
	for i, b := range e.all {
		wg.Go(func() { cut[i] = b.Shutdown(ctx) })
	}

	wg.Wait()

	n := 0
	for _, c := range cut {
		n += c
	}

	return n
}

func (e *engines) Alive() error {
	var errs []error
	for _, b := range e.all {
		errs = append(errs, b.Alive())
	}

	return errors.Join(errs...)
}

func (e *engines) Apply(s balancer.Settings) {
	for _, b := range e.all {
		b.Apply(s)
	}
}

// Stats adds the engines' counters up.
func (e *engines) Stats() balancer.Stats {
	var t balancer.Stats

	for _, b := range e.all {
		s := b.Stats()
		t.Accepted += s.Accepted
		t.Rejected += s.Rejected
		t.RetriedDials += s.RetriedDials
		t.ClosedRemoved += s.ClosedRemoved
		t.ClosedShutdown += s.ClosedShutdown
		t.ClosedFailed += s.ClosedFailed
		t.RacedDials += s.RacedDials
		t.Replayed += s.Replayed
		t.OverLimit += s.OverLimit
		t.DialDuration.Sum += s.DialDuration.Sum

		if t.DialDuration.Counts == nil {
			t.DialDuration.Counts = make([]uint64, len(s.DialDuration.Counts))
		}

		for i, c := range s.DialDuration.Counts {
			t.DialDuration.Counts[i] += c
		}
	}

	return t
}

// sharedUpstreams lets several engines use one model: the model has one
// closer, which closes the connections of every engine.
type sharedUpstreams struct {
	*upstream.Set

	mu      sync.Mutex
	closers []upstream.Closer
}

func (s *sharedUpstreams) SetCloser(c upstream.Closer) {
	s.mu.Lock()
	s.closers = append(s.closers, c)
	s.mu.Unlock()

	s.Set.SetCloser(s.closeAll)
}

func (s *sharedUpstreams) closeAll(n *upstream.Node, why upstream.Reason) int {
	s.mu.Lock()
	closers := append([]upstream.Closer(nil), s.closers...)
	s.mu.Unlock()

	total := 0
	for _, c := range closers {
		total += c(n, why)
	}

	return total
}
