package fleet

import (
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func TestStatTicks(t *testing.T) {
	// A command name with spaces and a parenthesis; utime 1234, stime 56
	// are the 14th and 15th fields.
	line := "4242 (kube apiserver) x) S 1 4242 4242 0 -1 4194560 9 0 0 0 1234 56 0 0 20 0 12 0 100 0 0\n"

	got, err := statTicks(line)
	if err != nil || got != 1290 {
		t.Errorf("statTicks = %d, %v; want 1290", got, err)
	}

	for _, bad := range []string{"", "4242 (short) S 1 2", "4242 (x) S 1 2 3 4 5 6 7 8 9 10 u s"} {
		if _, err := statTicks(bad); err == nil {
			t.Errorf("statTicks(%q): no error", bad)
		}
	}
}

func TestSNMPPassiveOpens(t *testing.T) {
	raw := "Ip: Forwarding DefaultTTL\nIp: 1 64\n" +
		"Tcp: RtoAlgorithm RtoMin RtoMax MaxConn ActiveOpens PassiveOpens AttemptFails\n" +
		"Tcp: 1 200 120000 -1 17 421 0\nUdp: InDatagrams\nUdp: 3\n"

	if v, err := snmpPassiveOpens(raw); err != nil || v != 421 {
		t.Errorf("PassiveOpens = %v, %v; want 421", v, err)
	}

	if _, err := snmpPassiveOpens("Udp: InDatagrams\nUdp: 3\n"); err == nil {
		t.Error("no Tcp lines: no error")
	}
}

func TestFramedNet(t *testing.T) {
	f := framed{load: usage{"apiserver": 0.09}, before: usage{"apiserver": 0.01}, after: usage{"apiserver": 0.03}}

	if got := f.net("apiserver"); got < 0.0699 || got > 0.0701 {
		t.Errorf("net = %v, want 0.07 (the mean baseline subtracted)", got)
	}
}

func parseMetrics(t *testing.T, text string) metrics {
	t.Helper()

	p := expfmt.NewTextParser(model.UTF8Validation)

	m, err := p.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}

	return m
}

func TestTrafficMinus(t *testing.T) {
	const before = `# TYPE apiserver_request_total counter
apiserver_request_total{code="200",resource="",subresource="/readyz",verb="GET"} 10
apiserver_request_total{code="200",resource="leases",subresource="",verb="PUT"} 5
# TYPE apiserver_watch_events_total counter
apiserver_watch_events_total{group="discovery.k8s.io",resource="endpointslices",version="v1"} 2
# TYPE apiserver_longrunning_requests gauge
apiserver_longrunning_requests{resource="endpointslices",verb="WATCH",scope="namespace"} 3
`

	const after = `# TYPE apiserver_request_total counter
apiserver_request_total{code="200",resource="",subresource="/readyz",verb="GET"} 130
apiserver_request_total{code="200",resource="leases",subresource="",verb="PUT"} 5
apiserver_request_total{code="200",resource="endpointslices",subresource="",verb="WATCH"} 1
# TYPE apiserver_watch_events_total counter
apiserver_watch_events_total{group="discovery.k8s.io",resource="endpointslices",version="v1"} 12
apiserver_watch_events_total{group="",resource="pods",version="v1"} 99
# TYPE apiserver_longrunning_requests gauge
apiserver_longrunning_requests{resource="endpointslices",verb="WATCH",scope="namespace"} 100
apiserver_longrunning_requests{resource="pods",verb="WATCH",scope="cluster"} 7
`

	t0 := time.Now()
	old := trafficSnapshot{at: t0, m: parseMetrics(t, before), passiveOpens: 5}
	now := trafficSnapshot{at: t0.Add(time.Minute), m: parseMetrics(t, after), passiveOpens: 125}
	got := now.minus(old)

	want := map[string]float64{"GET /readyz 200": 120, "WATCH endpointslices 200": 1}
	if len(got.requests) != len(want) {
		t.Errorf("requests = %v, want %v (unchanged series dropped)", got.requests, want)
	}

	for k, v := range want {
		if got.requests[k] != v {
			t.Errorf("requests[%q] = %v, want %v", k, got.requests[k], v)
		}
	}

	if got.watchEvents != 10 || got.passiveOpens != 120 || got.watches != 100 || got.secs != 60 {
		t.Errorf("events %v, opens %v, watches %v, secs %v; want 10, 120, 100, 60", got.watchEvents, got.passiveOpens, got.watches, got.secs)
	}
}

func TestAuditKind(t *testing.T) {
	tests := []struct {
		name string
		ev   auditEvent
		want string
	}{
		{
			name: "a check",
			ev:   auditEvent{Verb: "get", RequestURI: "/readyz", UserAgent: "Go-http-client/1.1"},
			want: "GET /readyz? → 200 (anonymous, Go-http-client/1.1)",
		},
		{
			name: "a resumed watch: values that vary are dropped, the resource version bucketed",
			ev: auditEvent{Verb: "watch", UserAgent: "extractedprism/v1 (linux)",
				RequestURI: "/apis/discovery.k8s.io/v1/namespaces/default/endpointslices?allowWatchBookmarks=true&fieldSelector=metadata.name%3Dkubernetes&resourceVersion=302&timeoutSeconds=394&watch=true"},
			want: "WATCH /apis/discovery.k8s.io/v1/namespaces/default/endpointslices?allowWatchBookmarks=true&fieldSelector&resourceVersion=N&timeoutSeconds&watch=true → 200 (node cert, extractedprism/v1)",
		},
		{
			name: "a list from the start",
			ev:   auditEvent{Verb: "list", RequestURI: "/apis/x?resourceVersion=0&limit=500", UserAgent: "a"},
			want: "LIST /apis/x?limit&resourceVersion=0 → 200 (node cert, a)",
		},
	}

	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			tt.ev.ResponseStatus.Code = 200
			if tt.want != "" && !strings.Contains(tt.want, "node cert") {
				tt.ev.User.Username = "system:anonymous"
			} else {
				tt.ev.User.Username = "extractedprism:node-1"
			}

			if got := tt.ev.kind(); got != tt.want {
				t.Errorf("kind =\n%s\nwant\n%s", got, tt.want)
			}
		})
	}
}

func TestCensusRead(t *testing.T) {
	since := time.Date(2026, 1, 1, 10, 0, 0, 0, time.UTC)
	from, to := since.Add(time.Minute), since.Add(3*time.Minute)
	at := func(d time.Duration) string { return since.Add(d).Format(time.RFC3339Nano) }
	ev := func(id, stage, verb, uri, user string, recv, stage2 time.Duration) string {
		return `{"auditID":"` + id + `","stage":"` + stage + `","verb":"` + verb + `","requestURI":"` + uri +
			`","user":{"username":"` + user + `"},"userAgent":"ua","responseStatus":{"code":200},` +
			`"requestReceivedTimestamp":"` + at(recv) + `","stageTimestamp":"` + at(stage2) + `"}`
	}

	const node, anon = "extractedprism:node-0", "system:anonymous"

	lines := []string{
		ev("a", "ResponseComplete", "get", "/readyz", anon, -time.Second, -time.Second),               // before the fleet: the harness
		ev("b", "ResponseComplete", "get", "/readyz", anon, 10*time.Second, 10*time.Second),           // start-up
		ev("c", "ResponseStarted", "watch", "/w?watch=true", node, 20*time.Second, 20*time.Second),    // start-up watch
		ev("d", "ResponseComplete", "get", "/readyz", anon, 90*time.Second, 90*time.Second),           // steady
		ev("e", "ResponseComplete", "get", "/api/v1/pods", "admin", 90*time.Second, 90*time.Second),   // not a daemon
		ev("f", "ResponseStarted", "watch", "/w?watch=true", node, 100*time.Second, 100*time.Second),  // steady watch...
		ev("f", "ResponseComplete", "watch", "/w?watch=true", node, 100*time.Second, 160*time.Second), // ...counted once, lived 60 s
		ev("c", "ResponseComplete", "watch", "/w?watch=true", node, 20*time.Second, 170*time.Second),  // began before the window
		ev("g", "ResponseComplete", "get", "/readyz", anon, 4*time.Minute, 4*time.Minute),             // after the window
		ev("h", "ResponseStarted", "watch", "/w?watch=true", node, 150*time.Second, 150*time.Second),  // steady watch...
		ev("h", "ResponseComplete", "watch", "/w?watch=true", node, 150*time.Second, 200*time.Second), // ...ended by the fleet's stop
	}

	path := filepath.Join(t.TempDir(), "audit.log")
	if err := os.WriteFile(path, []byte(strings.Join(lines, "\n")+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}

	var r censusResult
	if err := r.read(path, since, from, to); err != nil {
		t.Fatal(err)
	}

	readyz := "GET /readyz? → 200 (anonymous, ua)"
	watch := "WATCH /w?watch=true → 200 (node cert, ua)"

	if r.atStart[readyz] != 1 || r.atStart[watch] != 1 || len(r.atStart) != 2 {
		t.Errorf("at start: %v; want one check and one watch", r.atStart)
	}

	if r.steady[readyz] != 1 || r.steady[watch] != 2 || len(r.steady) != 2 {
		t.Errorf("steady: %v; want one check and two watches", r.steady)
	}

	if !slices.Equal(r.watchLifetimes, []time.Duration{time.Minute}) {
		t.Errorf("watch lifetimes %v, want [1m0s]", r.watchLifetimes)
	}

	if r.examples[watch] != "/w?watch=true" {
		t.Errorf("example %q", r.examples[watch])
	}
}

func TestPick(t *testing.T) {
	items := []string{"a", "b", "c"}
	id := func(s string) string { return s }

	if got := pick(t, "X", items, id, []string{"c", "a", "c"}); !slices.Equal(got, []string{"c", "a", "c"}) {
		t.Errorf("pick = %v, want the names' order with repeats", got)
	}

	if got := named(items, id); !slices.Equal(got, items) {
		t.Errorf("named = %v", got)
	}
}

func TestInParallel(t *testing.T) {
	var calls [50]atomic.Int32

	errBoom := errors.New("boom")

	err := inParallel(len(calls), 4, func(i int) error {
		calls[i].Add(1)

		if i == 7 {
			return errBoom
		}

		return nil
	})

	if !errors.Is(err, errBoom) {
		t.Errorf("err = %v, want boom", err)
	}

	for i := range calls {
		if n := calls[i].Load(); n != 1 {
			t.Errorf("item %d done %d times", i, n)
		}
	}
}

func TestNoisyLog(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		name          string
		checks, lines float64
		noisy         bool
	}{
		{name: "quiet", checks: 500, lines: 12},
		{name: "a line a check", checks: 500, lines: 500, noisy: true},
		{name: "too few checks to tell", checks: 3, lines: 9},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()

			err := noisyLog(traffic{requests: map[string]float64{"GET /readyz 200": tc.checks}, logLines: tc.lines})
			if (err != nil) != tc.noisy {
				t.Fatalf("noisy = %v, want %v", err, tc.noisy)
			}
		})
	}
}
