package daemon

import (
	"context"
	"errors"
	"net"
	"reflect"
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
		addStats(&t, b.Stats())
	}

	return t
}

// addStats adds s to t field by field, so a counter added to Stats is
// summed without a change here (TestAddStatsCoversEveryField).
func addStats(t *balancer.Stats, s balancer.Stats) {
	tv, sv := reflect.ValueOf(t).Elem(), reflect.ValueOf(s)

	for i := range tv.NumField() {
		switch f := tv.Field(i); f.Kind() {
		case reflect.Uint64:
			f.SetUint(f.Uint() + sv.Field(i).Uint())
		default:
			addHistogram(f.Addr().Interface().(*balancer.Histogram), sv.Field(i).Interface().(balancer.Histogram)) //nolint:forcetypeassert // the test checks every field
		}
	}
}

func addHistogram(t *balancer.Histogram, s balancer.Histogram) {
	t.Sum += s.Sum

	if t.Counts == nil {
		t.Counts = make([]uint64, len(s.Counts))
	}

	for i, c := range s.Counts {
		t.Counts[i] += c
	}
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
