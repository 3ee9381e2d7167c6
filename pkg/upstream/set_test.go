package upstream

import (
	"errors"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	clocktesting "k8s.io/utils/clock/testing"
)

var errCheck = errors.New("check failed")

// model is a Set on a fake clock, with a closer that records what the
// engine would have been told to close.
type model struct {
	*Set
	clk *clocktesting.FakeClock

	mu     sync.Mutex
	closed []closed
}

type closed struct {
	addr string
	why  Reason
}

func newModel(t *testing.T, r Rules, addrs ...string) *model {
	t.Helper()

	m := &model{clk: clocktesting.NewFakeClock(time.Unix(1e9, 0))}

	// No jitter: Rand 0.5 is a factor of exactly 1.
	set, err := New(Options{Clock: m.clk, Logger: zaptest.NewLogger(t), Rules: r, Rand: func() float64 { return 0.5 }}, endpoints(addrs...))
	if err != nil {
		t.Fatal(err)
	}

	m.Set = set
	set.SetCloser(func(n *Node, why Reason) int {
		m.mu.Lock()
		defer m.mu.Unlock()

		m.closed = append(m.closed, closed{n.Addr(), why})

		return 1
	})

	return m
}

func endpoints(addrs ...string) []Endpoint {
	out := make([]Endpoint, len(addrs))
	for i, a := range addrs {
		out[i] = Endpoint{Address: a, Sources: []string{"static"}}
	}

	return out
}

func (m *model) node(t *testing.T, addr string) *Node {
	t.Helper()

	for _, n := range m.Nodes() {
		if n.Addr() == addr {
			return n
		}
	}

	t.Fatalf("%s is not listed", addr)

	return nil
}

func (m *model) closes() []closed {
	m.mu.Lock()
	defer m.mu.Unlock()

	return slices.Clone(m.closed)
}

func (m *model) status(t *testing.T, addr string) Status {
	t.Helper()

	for _, s := range m.Status() {
		if s.Address == addr {
			return s
		}
	}

	t.Fatalf("%s is not listed", addr)

	return Status{}
}

const (
	a = "10.0.0.1:6443"
	b = "10.0.0.2:6443"
	c = "10.0.0.3:6443"
)

func TestReconcileKeepsStateAndRefusesEmpty(t *testing.T) {
	t.Parallel()

	m := newModel(t, Rules{Tiers: []time.Duration{}}, a, b)
	na := m.node(t, a)
	m.Record(na, Result{Err: errCheck})

	if err := m.Reconcile(endpoints(a, c)); err != nil {
		t.Fatal(err)
	}

	if m.node(t, a) != na || m.status(t, a).Healthy {
		t.Fatal("an upstream that stays lost its state")
	}

	// A new upstream is unproven: not used until its first check passes,
	// and due at once.
	if m.status(t, c).Healthy {
		t.Fatal("an upstream added while running is used before any check")
	}

	if due, _ := m.Due(); !slices.ContainsFunc(due, func(n *Node) bool { return n.Addr() == c }) {
		t.Fatal("a new upstream is not checked at once")
	}

	m.Record(m.node(t, c), Result{})

	if !m.status(t, c).Healthy {
		t.Fatal("one passing check does not bring a new upstream in")
	}

	if err := m.Reconcile(nil); !errors.Is(err, ErrEmptySet) {
		t.Fatalf("Reconcile(nil) = %v, want ErrEmptySet", err)
	}

	if len(m.Nodes()) != 2 {
		t.Fatal("an empty reconcile changed the set")
	}
}

func TestRemovedUpstreamDrainsThenCloses(t *testing.T) {
	t.Parallel()

	m := newModel(t, Rules{DrainTimeout: 5 * time.Second}, a, b)

	if err := m.Reconcile(endpoints(b)); err != nil {
		t.Fatal(err)
	}

	m.clk.Step(4 * time.Second)

	if got := m.closes(); len(got) != 0 {
		t.Fatalf("closed %v before the drain timeout", got)
	}

	m.clk.Step(time.Second)

	if got := m.closes(); !slices.Equal(got, []closed{{a, ReasonRemoved}}) {
		t.Fatalf("after the drain timeout closed %v, want a's connections", got)
	}
}

// An address that leaves and comes back within the drain timeout (an
// EndpointSlice that flaps) is listed again: its connections stay.
func TestReaddedUpstreamIsRevived(t *testing.T) {
	t.Parallel()

	m := newModel(t, Rules{DrainTimeout: 5 * time.Second}, a, b)
	na := m.node(t, a)
	na.Attach()

	if err := m.Reconcile(endpoints(b)); err != nil {
		t.Fatal(err)
	}

	m.clk.Step(time.Second)

	if err := m.Reconcile(endpoints(a, b)); err != nil {
		t.Fatal(err)
	}

	m.clk.Step(time.Minute)

	if got := m.closes(); len(got) != 0 {
		t.Fatalf("closed %v: the drain of a re-added upstream went on", got)
	}

	if n := m.node(t, a); n != na || n.Active() != 1 {
		t.Fatal("the re-added upstream is a new node: its connections are no longer counted")
	}
}
