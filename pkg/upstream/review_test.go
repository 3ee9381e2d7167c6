package upstream

// Found by an adversarial review; each test here failed before its fix.

import (
	"testing"
	"time"
)

// daemonRules are the rules the daemon runs with by default
// (config.Default, daemon.checkRetry/checkRetryMax).
var daemonRules = Rules{Fall: 1, Rise: 2, ResetOnFailure: true, Interval: 2 * time.Minute, Retry: time.Second, RetryMax: 30 * time.Second}

// checkEvery steps the model's clock by tick for span, and at each step
// records a check result (from result) for every upstream Due hands out,
// then calls after for it. It returns how many checks each upstream got.
func checkEvery(m *model, tick, span time.Duration, result func(n *Node) Result, after func(n *Node)) map[string]int {
	got := map[string]int{}

	for elapsed := time.Duration(0); elapsed < span; elapsed += tick {
		due, _ := m.Due()
		for _, n := range due {
			got[n.Addr()]++
			m.Record(n, result(n))

			if after != nil {
				after(n)
			}
		}

		m.clk.Step(tick)
	}

	return got
}

// Every upstream starts failing its checks at the same moment (the check
// CA is rotated, etcd stalls): the rule (resetDue, docs/engine.md 13) is
// that nobody's clients are reset then. But the upstreams are checked at
// different phases of the interval, and one that failed is retried after
// Retry (1 s) while the others are only checked at their next interval
// (up to 2 min later): the first one fails twice while the others still
// count as usable, and its clients are cut. With N upstreams, N-1 of them
// have their clients reset onto the last one.
func TestReviewAllFailTogetherAtDifferentPhasesResetsNobody(t *testing.T) {
	t.Parallel()

	m := newModel(t, daemonRules, a, b)
	na, nb := m.node(t, a), m.node(t, b)

	// Start: both checked; a passes now, b 30 s later (jitter, a retry,
	// a reload: anything puts two upstreams at different phases).
	if got := dueNow(m); len(got) != 2 {
		t.Fatalf("due at start: %v", got)
	}

	m.Record(na, Result{Latency: time.Millisecond})
	m.clk.Step(30 * time.Second)
	m.Record(nb, Result{Latency: time.Millisecond})

	// From here on every check fails: all fail together.
	checkEvery(m, 100*time.Millisecond, 3*time.Minute,
		func(*Node) Result { return Result{Err: errCheck} }, nil)

	if !m.FailOpen() {
		t.Fatal("both upstreams fail their checks but the set is not failing open")
	}

	if c := m.closes(); len(c) != 0 {
		t.Fatalf("every upstream failed its checks together, yet clients were reset: %v", c)
	}
}

// A failing upstream is retried from Retry, backing off to RetryMax "so a
// fleet that sees the same failure does not hammer a recovering API
// server" (Set.failed). But every failed dial to it is strong evidence,
// and Report calls soon(), which brings the next check forward to Retry
// after the last one whatever the backoff: while clients keep dialing it
// (always, when every upstream is down and the set fails open) it is
// checked every Retry (1 s) for as long as the outage lasts. A fleet of
// 5,000 nodes then checks each recovering API server 5,000 times a second
// instead of 5,000/30.
func TestReviewEvidenceDoesNotDefeatTheRetryBackoff(t *testing.T) {
	t.Parallel()

	m := newModel(t, daemonRules, a, b)

	// Every check fails, and after each, a client that was sent there
	// (fail-open: Pick returns failing upstreams) is refused.
	got := checkEvery(m, 100*time.Millisecond, 5*time.Minute,
		func(*Node) Result { return Result{Err: errCheck} },
		func(n *Node) {
			if _, err := m.Pick(nil); err != nil {
				t.Fatalf("fail-open Pick: %v", err)
			}

			m.Report(n, DialRefused, errCheck)
		})

	// Backing off 1, 2, 4, 8, 16, then every 30 s: 14 checks in 5 min.
	for _, addr := range []string{a, b} {
		if got[addr] > 20 {
			t.Errorf("%s: %d checks in 5 min of outage, want the backoff's ~14", addr, got[addr])
		}
	}
}

// No client steers health, but any local client steers the check rate: an
// upstream that passes every check is checked every Retry (1 s) instead of
// every Interval (2 min) while clients keep producing weak evidence
// (garbage it hangs up on, a first request it does not answer within the
// 1 s answer timeout). The latter happens to every node at once when the
// API servers are slow to handshake under load: the fleet then adds 120x
// the check load (HTTPS: a TLS handshake each) to an overloaded API
// server. Weak evidence about an upstream that just passed a check should
// back off like a failing one does.
func TestReviewWeakEvidenceDoesNotMultiplyChecks(t *testing.T) {
	t.Parallel()

	m := newModel(t, daemonRules, a)

	got := checkEvery(m, 100*time.Millisecond, 10*time.Minute,
		func(*Node) Result { return Result{Latency: time.Millisecond} },
		func(n *Node) { m.Report(n, NoAnswer, errCheck) })

	// Undisturbed: 6 checks in 10 min. Backing off as a failure does: ~25.
	if got[a] > 30 {
		t.Fatalf("a healthy upstream was checked %d times in 10 min because of client-caused weak evidence", got[a])
	}
}

// With every upstream suspended (the node's own network blipped: every
// upstream had a dial time out), Pick hands every new connection to the
// same upstream: the lastResort branch neither moves the cursor nor looks
// at active connections, unlike the usable and the failing branches. All
// of a node's reconnecting clients pile onto one API server until a check
// passes.
func TestReviewAllSuspendedPickSpreads(t *testing.T) {
	t.Parallel()

	m := newModel(t, daemonRules, a, b, c)

	for _, addr := range []string{a, b, c} {
		m.Report(m.node(t, addr), DialTimeout, errCheck)
	}

	if !m.FailOpen() {
		t.Fatal("every upstream suspended, yet not failing open")
	}

	picked := map[string]int{}

	for range 9 {
		n, err := m.Pick(nil)
		if err != nil {
			t.Fatal(err)
		}

		n.Attach()
		picked[n.Addr()]++
	}

	if len(picked) != 3 {
		t.Fatalf("9 connections with every upstream suspended went to %v, want spread over all 3", picked)
	}
}
