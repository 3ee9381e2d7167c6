package upstream

import (
	"errors"
	"slices"
	"testing"
	"time"
)

// step is one event of a state-machine test and what must hold after it.
type step struct {
	do      func(m *model, t *testing.T)
	healthy map[string]bool // usable, by address
	open    bool            // fail-open
	closed  []closed        // every close asked for so far
}

// pass and fail record a check a moment after the step before.
func pass(addr string) func(*model, *testing.T) {
	return func(m *model, t *testing.T) {
		m.clk.Step(time.Millisecond)
		m.Record(m.node(t, addr), Result{Latency: time.Millisecond})
	}
}

func fail(addr string) func(*model, *testing.T) {
	return func(m *model, t *testing.T) {
		m.clk.Step(time.Millisecond)
		m.Record(m.node(t, addr), Result{Err: errCheck})
	}
}

// gone records a check refused: nothing listens at addr.
func gone(addr string) func(*model, *testing.T) {
	return func(m *model, t *testing.T) {
		m.clk.Step(time.Millisecond)
		m.Record(m.node(t, addr), Result{Err: errCheck, Gone: true})
	}
}

func report(addr string, e Evidence) func(*model, *testing.T) {
	return func(m *model, t *testing.T) { m.Report(m.node(t, addr), e, errCheck) }
}

func TestHealthTransitions(t *testing.T) {
	t.Parallel()

	up := func(addrs ...string) map[string]bool {
		out := map[string]bool{a: false, b: false}
		for _, x := range addrs {
			out[x] = true
		}

		return out
	}

	for _, tc := range []struct {
		name  string
		rules Rules
		steps []step
	}{
		{"fall and rise", Rules{Fall: 2, Rise: 2, ResetOnFailure: true}, []step{
			{do: fail(a), healthy: up(a, b)}, // suspect: one failure of two
			{do: pass(b), healthy: up(a, b)}, // asked at once: b is fine
			{do: fail(a), healthy: up(b), closed: []closed{{a, ReasonFailed}}},
			{do: pass(a), healthy: up(b), closed: []closed{{a, ReasonFailed}}}, // rising
			{do: pass(a), healthy: up(a, b), closed: []closed{{a, ReasonFailed}}},
		}},
		{"no single failed check resets", Rules{Fall: 1, Rise: 1, ResetOnFailure: true}, []step{
			{do: fail(a), healthy: up(b)},
			{do: pass(b), healthy: up(b)},
			{do: fail(a), healthy: up(b), closed: []closed{{a, ReasonFailed}}},
			{do: fail(a), healthy: up(b), closed: []closed{{a, ReasonFailed}}}, // once per failure
			{do: pass(a), healthy: up(a, b), closed: []closed{{a, ReasonFailed}}},
		}},
		{"all fail together: fail open, no reset", Rules{Fall: 1, Rise: 1, ResetOnFailure: true}, []step{
			{do: fail(a), healthy: up(b)},
			{do: fail(b), healthy: up(), open: true},
			{do: fail(a), healthy: up(), open: true},
			{do: fail(b), healthy: up(), open: true},
			{do: fail(a), healthy: up(), open: true},
			// One returns: fail-open ends; the other, failing again while
			// one is usable, has its clients reset.
			{do: pass(b), healthy: up(b)},
			{do: fail(a), healthy: up(b), closed: []closed{{a, ReasonFailed}}},
		}},
		{"all fail, then all return: nobody reset", Rules{Fall: 1, Rise: 1, ResetOnFailure: true}, []step{
			{do: fail(a), healthy: up(b)},
			{do: fail(b), healthy: up(), open: true},
			{do: fail(a), healthy: up(), open: true},
			{do: fail(b), healthy: up(), open: true},
			{do: pass(b), healthy: up(b)},
			{do: pass(a), healthy: up(a, b)},
		}},
		{"gone: reset even when all fail", Rules{Fall: 1, Rise: 1, ResetOnFailure: true}, []step{
			{do: fail(b), healthy: up(a)},
			{do: gone(a), healthy: up(), open: true}, // a single failed check resets nothing
			{do: gone(a), healthy: up(), open: true, closed: []closed{{a, ReasonFailed}}},
		}},
		{"no reset without reset_on_failure", Rules{Fall: 1, Rise: 1}, []step{
			{do: fail(a), healthy: up(b)},
			{do: pass(b), healthy: up(b)},
			{do: fail(a), healthy: up(b)},
		}},
		{"no reset unless another passed since the failure began", Rules{Fall: 1, Rise: 1, ResetOnFailure: true}, []step{
			{do: pass(b), healthy: up(a, b)},
			{do: fail(a), healthy: up(b)},
			{do: fail(a), healthy: up(b)}, // b's last pass is older than a's failure
			{do: pass(b), healthy: up(b)},
			{do: fail(a), healthy: up(b), closed: []closed{{a, ReasonFailed}}},
		}},
		{"strong evidence suspends until a passing check", Rules{Fall: 1, Rise: 1, ResetOnFailure: true}, []step{
			{do: report(a, DialRefused), healthy: up(b)},
			{do: pass(a), healthy: up(a, b)},
			{do: report(a, EndedUnasked), healthy: up(b)},
			{do: report(b, LostRace), healthy: up(), open: true},
			{do: pass(b), healthy: up(b)},
		}},
		{"weak evidence takes nothing out", Rules{Fall: 1, Rise: 1, ResetOnFailure: true}, []step{
			{do: report(a, EndedBeforeAnswer), healthy: up(a, b)},
			{do: report(a, NoAnswer), healthy: up(a, b)},
			{do: report(b, NoAnswer), healthy: up(a, b)},
			{do: report(a, Answered), healthy: up(a, b)},
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			tc.rules.Interval = time.Minute
			m := newModel(t, tc.rules, a, b)

			for i, st := range tc.steps {
				st.do(m, t)

				for addr, want := range st.healthy {
					if got := m.status(t, addr).Healthy; got != want {
						t.Fatalf("step %d: %s healthy=%v, want %v", i, addr, got, want)
					}
				}

				if m.FailOpen() != st.open {
					t.Fatalf("step %d: fail-open=%v, want %v", i, m.FailOpen(), st.open)
				}

				if got := m.closes(); !slices.Equal(got, st.closed) {
					t.Fatalf("step %d: closes %v, want %v", i, got, st.closed)
				}
			}
		})
	}
}

func TestPick(t *testing.T) {
	t.Parallel()

	m := newModel(t, Rules{Fall: 1, Rise: 1, Interval: time.Minute}, a, b, c)
	na, nb, nc := m.node(t, a), m.node(t, b), m.node(t, c)

	pick := func(tried ...*Node) *Node {
		t.Helper()

		n, err := m.Pick(tried)
		if err != nil {
			t.Fatal(err)
		}

		return n
	}

	// Least connections.
	na.Attach()
	nb.Attach()

	if n := pick(); n != nc {
		t.Fatalf("picked %s, want the one without connections", n.Addr())
	}

	// Ties in round-robin order.
	nc.Attach()

	if first, second := pick(), pick(); first == second {
		t.Fatalf("picked %s twice among equals", first.Addr())
	}

	// A faster tier wins over fewer connections. One slow check does not
	// move an upstream to a slower tier; two in a row do.
	m.Record(nb, Result{Latency: 50 * time.Millisecond})
	m.Record(nc, Result{Latency: 50 * time.Millisecond})

	if st := m.status(t, b); st.Tier != 0 {
		t.Fatalf("one slow check moved b to tier %d", st.Tier)
	}

	m.Record(nb, Result{Latency: 50 * time.Millisecond})
	m.Record(nc, Result{Latency: 50 * time.Millisecond})
	na.Attach()
	m.Record(na, Result{Latency: time.Millisecond})

	if n := pick(); n != na {
		t.Fatalf("picked %s, want the fastest tier", n.Addr())
	}

	// What the client tried is skipped; suspended ones are a last resort,
	// failing ones the very last.
	m.Report(nb, DialRefused, errCheck)
	m.Record(nc, Result{Err: errCheck})

	tried := []*Node{na}

	for _, want := range []*Node{nb, nc} {
		if n := pick(tried...); n != want {
			t.Fatalf("picked %s, want %s", n.Addr(), want.Addr())
		}

		tried = append(tried, want)
	}

	if _, err := m.Pick(tried); !errors.Is(err, ErrNoUpstreams) {
		t.Fatalf("Pick with everything tried = %v, want ErrNoUpstreams", err)
	}
}

func TestTierOf(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		latency time.Duration
		want    int
	}{
		{0, 0},
		{9 * time.Millisecond, 0},
		{10 * time.Millisecond, 1},
		{99 * time.Millisecond, 1},
		{100 * time.Millisecond, 2},
		{time.Second, 3},
		{time.Minute, 3},
	} {
		if got := tierOf(DefaultTiers, tc.latency); got != tc.want {
			t.Errorf("tierOf(%s) = %d, want %d", tc.latency, got, tc.want)
		}
	}

	if got := tierOf(nil, time.Minute); got != 0 {
		t.Errorf("with no bounds every upstream is in tier 0, with new ones; got %d", got)
	}
}

func BenchmarkPick(b *testing.B) {
	set, err := New(Options{}, endpoints("10.0.0.1:6443", "10.0.0.2:6443", "10.0.0.3:6443"))
	if err != nil {
		b.Fatal(err)
	}

	b.ReportAllocs()

	for b.Loop() {
		if _, err := set.Pick(nil); err != nil {
			b.Fatal(err)
		}
	}
}

// An upstream added while every upstream fails has passed no check: it
// does not end fail-open (it was said to, and fail-open was then logged
// again when its first check failed).
func TestNewcomerDoesNotEndFailOpen(t *testing.T) {
	t.Parallel()

	m := newModel(t, Rules{Fall: 1, Rise: 1, Interval: time.Minute}, a, b)
	fail(a)(m, t)
	fail(b)(m, t)

	if err := m.Reconcile(endpoints(a, b, c)); err != nil {
		t.Fatal(err)
	}

	if !m.FailOpen() {
		t.Fatal("an unchecked newcomer ended fail-open")
	}

	pass(c)(m, t)

	if m.FailOpen() {
		t.Fatal("a passing newcomer did not end fail-open")
	}
}
