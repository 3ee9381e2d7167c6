//go:build integration

package fleet

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
)

func (e *env) scrape(ctx context.Context) (metrics, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()

	raw, err := e.admin.Do(ctx, http.MethodGet, "/metrics", "", nil)
	if err != nil {
		return nil, err
	}

	p := expfmt.NewTextParser(model.UTF8Validation)

	fams, err := p.TextToMetricFamilies(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("parse /metrics: %w", err)
	}

	return fams, nil
}

func (e *env) snapshot(ctx context.Context, tb testing.TB) trafficSnapshot {
	tb.Helper()

	m, err := e.scrape(ctx)
	if err != nil {
		tb.Fatalf("scraping the apiserver: %v", err)
	}

	return trafficSnapshot{at: time.Now(), m: m, passiveOpens: passiveOpens(tb), logLines: logLines(tb, e.api.LogPath())}
}

// logLines counts the lines of the apiserver's log: a check must not add one.
func logLines(tb testing.TB, path string) float64 {
	tb.Helper()

	raw, err := os.ReadFile(path)
	if err != nil {
		tb.Fatal(err)
	}

	return float64(bytes.Count(raw, []byte("\n")))
}

// passiveOpens reads Tcp PassiveOpens of this network namespace.
func passiveOpens(tb testing.TB) float64 {
	tb.Helper()

	raw, err := os.ReadFile("/proc/self/net/snmp")
	if err != nil {
		tb.Fatal(err)
	}

	v, err := snmpPassiveOpens(string(raw))
	if err != nil {
		tb.Fatal(err)
	}

	return v
}

// auditPolicy records every request's metadata (no bodies).
const auditPolicy = `apiVersion: audit.k8s.io/v1
kind: Policy
omitStages: ["RequestReceived"]
rules:
- level: Metadata
`

// census restarts the apiserver with an audit log, runs the default fleet
// and counts what it sends. Audit logging costs the apiserver CPU, which is
// why it is a phase of its own, after the CPU measurements.
func (e *env) census(ctx context.Context, b *testing.B) censusResult {
	b.Helper()

	r := censusResult{nodes: e.s.censusN, window: e.s.census}
	dir := b.TempDir()
	policy, log := filepath.Join(dir, "audit-policy.yaml"), filepath.Join(dir, "audit.log")

	if err := os.WriteFile(policy, []byte(auditPolicy), 0o600); err != nil {
		b.Fatal(err)
	}

	if err := e.api.Stop(); err != nil {
		b.Fatal(err)
	}

	e.startAPIServer(b, []string{"--audit-policy-file=" + policy, "--audit-log-path=" + log, "--audit-log-format=json"})

	b.Logf("census: %d daemons, default settings, audited for %v", r.nodes, r.window)

	// Until then, the apiserver's own start and the harness's readiness
	// polls are in the log.
	since := time.Now()
	fleet, err := e.startFleet(ctx, b, variants()[0], r.nodes)
	if err != nil {
		b.Fatal(err)
	}

	time.Sleep(e.s.settle)

	from := time.Now()
	p0 := passiveOpens(b)

	select {
	case <-ctx.Done():
	case <-time.After(r.window):
	}

	to := time.Now()
	r.window = to.Sub(from)
	r.passiveOpens = passiveOpens(b) - p0

	stopFleet(b, fleet)

	if err := r.read(log, since, from, to); err != nil {
		b.Fatal(err)
	}

	return r
}
