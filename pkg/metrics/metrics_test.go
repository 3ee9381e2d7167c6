package metrics

import (
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/lexfrei/extractedprism/pkg/balancer"
	"github.com/lexfrei/extractedprism/pkg/upstream"
	"github.com/lexfrei/extractedprism/pkg/version"
)

func snapshot() Snapshot {
	return Snapshot{
		Balancer: balancer.Stats{
			Accepted: 10, Rejected: 1, RetriedDials: 2,
			DialDuration: balancer.Histogram{Counts: make([]uint64, len(balancer.DialBuckets)+1), Sum: 0.01},
		},
		Upstreams: []upstream.Status{{
			Address: "10.0.0.1:6443", Healthy: true, Score: 1, Sources: []string{"static"}, LastChange: time.Now(),
			DialErrors: map[string]uint64{"refused": 3},
		}},
		Discovery: Discovery{State: "watching", Events: 4, Errors: map[string]uint64{"forbidden": 1}, LastSync: time.Now(), CacheAt: time.Now()},
		Reloads:   Reloads{OK: 1},
	}
}

// The exposition passes the same lint as `promtool check metrics`.
func TestMetricsLint(t *testing.T) {
	t.Parallel()

	reg := NewRegistry(snapshot, version.Get())

	problems, err := testutil.GatherAndLint(reg)
	if err != nil {
		t.Fatal(err)
	}

	for _, p := range problems {
		t.Errorf("%s: %s", p.Metric, p.Text)
	}

	count, err := testutil.GatherAndCount(reg, "extractedprism_upstream_dial_errors_total", "extractedprism_discovery_watch_state")
	if err != nil {
		t.Fatal(err)
	}

	// 4 reasons for the one upstream, 6 states: cardinality is fixed.
	if count != len(upstream.DialErrorReasons)+len(DiscoveryStates) {
		t.Fatalf("%d series, want %d", count, len(upstream.DialErrorReasons)+len(DiscoveryStates))
	}
}
