package upstream

import (
	"slices"
	"testing"
	"time"
)

// dueNow returns the addresses Due hands out at the model's current time.
func dueNow(m *model) []string {
	due, _ := m.Due()

	out := make([]string, 0, len(due))
	for _, n := range due {
		out = append(out, n.Addr())
	}

	return out
}

func TestCheckSchedule(t *testing.T) {
	t.Parallel()

	m := newModel(t, Rules{Fall: 1, Rise: 2, Interval: 2 * time.Minute, Retry: time.Second, RetryMax: time.Minute}, a, b)
	na := m.node(t, a)

	if got := dueNow(m); !slices.Equal(got, []string{a, b}) {
		t.Fatalf("at start due %v, want every upstream", got)
	}

	if got := dueNow(m); len(got) != 0 {
		t.Fatalf("checks in flight handed out again: %v", got)
	}

	m.Record(na, Result{})
	m.Record(m.node(t, b), Result{})

	// The first check is followed by one anywhere within the interval
	// (Rand 0.5: half of it), so a fleet started together spreads out.
	m.clk.Step(time.Minute - time.Millisecond)

	if got := dueNow(m); len(got) != 0 {
		t.Fatalf("due %v before the staggered second check", got)
	}

	m.clk.Step(time.Millisecond)

	if got := dueNow(m); !slices.Equal(got, []string{a, b}) {
		t.Fatalf("due %v at the staggered second check, want both", got)
	}

	m.Record(na, Result{})
	m.Record(m.node(t, b), Result{})

	// Well: every interval.
	m.clk.Step(2*time.Minute - time.Millisecond)

	if got := dueNow(m); len(got) != 0 {
		t.Fatalf("due %v before the interval", got)
	}

	m.clk.Step(time.Millisecond)

	if got := dueNow(m); !slices.Equal(got, []string{a, b}) {
		t.Fatalf("due %v after the interval, want both", got)
	}

	m.Record(m.node(t, b), Result{})

	if err := m.Reconcile(endpoints(a)); err != nil { // b's checks would interleave
		t.Fatal(err)
	}

	// Failing: retried after 1 s, then 2 s, 4 s ... up to RetryMax.
	for _, wait := range []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 8 * time.Second, 16 * time.Second, 32 * time.Second, time.Minute, time.Minute} {
		m.Record(na, Result{Err: errCheck})
		m.clk.Step(wait - time.Millisecond)

		if got := dueNow(m); len(got) != 0 {
			t.Fatalf("retried %v before %s", got, wait)
		}

		m.clk.Step(time.Millisecond)

		if got := dueNow(m); !slices.Equal(got, []string{a}) {
			t.Fatalf("due %v after %s, want a", got, wait)
		}
	}

	// Rising: confirmed after Retry, then the interval again.
	m.Record(na, Result{})
	m.clk.Step(time.Second)

	if got := dueNow(m); !slices.Equal(got, []string{a}) {
		t.Fatalf("a rising upstream is not confirmed after Retry: due %v", got)
	}

	m.Record(na, Result{})

	if !m.status(t, a).Healthy {
		t.Fatal("two passing checks did not bring a back")
	}

	// Evidence brings a check forward, to Retry after the last one at the
	// soonest, however often it comes.
	select {
	case <-m.Wake():
	default:
	}

	for range 100 {
		m.Report(na, EndedBeforeAnswer, errCheck)
	}

	select {
	case <-m.Wake():
	default:
		t.Fatal("evidence did not wake the prober")
	}

	m.clk.Step(time.Second - time.Millisecond)

	if got := dueNow(m); len(got) != 0 {
		t.Fatalf("evidence had %v checked sooner than Retry after its last check", got)
	}

	m.clk.Step(time.Millisecond)

	if got := dueNow(m); !slices.Equal(got, []string{a}) {
		t.Fatalf("due %v after evidence, want a once", got)
	}

	// A check handed back unrun counts for nothing and comes again later.
	m.Skip(na)

	if st := m.status(t, a); !st.Healthy || st.Score != 2 {
		t.Fatalf("a skipped check changed the state: %+v", st)
	}

	m.clk.Step(time.Second)

	if got := dueNow(m); !slices.Equal(got, []string{a}) {
		t.Fatalf("a skipped check is not retried: due %v", got)
	}
}
