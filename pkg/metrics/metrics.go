// Package metrics exposes the daemon's state to Prometheus. Everything is
// read from snapshots at scrape time, so the data path only keeps plain
// counters and never waits on a metrics library. Label values are bounded by
// the number of upstreams and fixed sets of reasons and states.
package metrics

import (
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/lexfrei/extractedprism/pkg/balancer"
	"github.com/lexfrei/extractedprism/pkg/upstream"
	"github.com/lexfrei/extractedprism/pkg/version"
)

// Snapshot is everything a scrape reports.
type Snapshot struct {
	Balancer  balancer.Stats
	Upstreams []upstream.Status
	FailOpen  bool
	Discovery Discovery
	Reloads   Reloads
}

// Discovery is the discovery part of a snapshot.
type Discovery struct {
	State    string            // one of DiscoveryStates
	Events   uint64            // slice events seen
	Lists    uint64            // full fetches of the state: the first and each relist
	Errors   map[string]uint64 // by reason
	LastSync time.Time         // zero if never
	CacheAt  time.Time         // when the cache was last written or loaded; zero if never
}

// Reloads counts configuration reloads.
type Reloads struct{ OK, Failed uint64 }

// DiscoveryStates are the values of the watch-state gauge.
var DiscoveryStates = []string{"off", "connecting", "watching", "unreachable", "forbidden", "unauthorized"}

const ns = "extractedprism"

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc(ns+"_"+name, help, labels, nil)
}

var (
	upHealthy    = desc("upstream_healthy", "Whether the upstream takes new connections (1) or not (0).", "upstream")
	upScore      = desc("upstream_score", "Health score of the upstream; usable at 0 and above.", "upstream")
	upTier       = desc("upstream_tier", "Latency tier of the upstream; lower tiers are preferred.", "upstream")
	upLatency    = desc("upstream_check_latency_seconds", "Duration of the upstream's last health check.", "upstream")
	upActive     = desc("upstream_active_connections", "Client connections currently proxied to the upstream.", "upstream")
	upConns      = desc("upstream_connections_total", "Client connections proxied to the upstream.", "upstream")
	upDialErrors = desc("upstream_dial_errors_total", "Failed dials to the upstream, by reason.", "upstream", "reason")
	upSent       = desc("upstream_sent_bytes_total", "Bytes sent from clients to the upstream, counted when a connection ends.", "upstream")
	upReceived   = desc("upstream_received_bytes_total", "Bytes received from the upstream for clients, counted when a connection ends.", "upstream")
	upChanged    = desc("upstream_last_change_timestamp_seconds", "When the upstream last changed between usable and not.", "upstream")
	upInfo       = desc("upstream_info", "Where the upstream comes from: static, discovery, cache.", "upstream", "sources")

	failOpen     = desc("fail_open", "1 while no upstream passes its checks and connections go to any that accepts them.")
	accepted     = desc("connections_accepted_total", "Client connections accepted.")
	rejected     = desc("connections_rejected_total", "Client connections closed because no upstream could take them.")
	overLimit    = desc("connections_over_limit_total", "Client connections reset at once because max_connections were open.")
	closed       = desc("connections_closed_total", "Client connections closed by the proxy, by reason.", "reason")
	retries      = desc("dial_retries_total", "Dials to another upstream after a failed dial for the same client.")
	races        = desc("dial_races_total", "Dials to another upstream started because a dial had not connected within the head start.")
	unanswered   = desc("connections_unanswered_total", "Established client connections whose upstream did not answer the client's bytes within the answer timeout: each had that upstream checked soon.")
	replays      = desc("connections_replayed_total", "Client connections moved to another upstream, their first bytes replayed, because theirs ended before answering.")
	dialDuration = desc("dial_duration_seconds", "Duration of dials to upstreams, failed ones included.")

	discState    = desc("discovery_watch_state", "The discovery watch's state (1 for the current one).", "state")
	discEvents   = desc("discovery_events_total", "EndpointSlice events seen by discovery.")
	discLists    = desc("discovery_lists_total", "Full fetches of the EndpointSlice: the first, and each relist after a watch could not resume (410 Gone).")
	discErrors   = desc("discovery_errors_total", "Failed lists and watches, by reason.", "reason")
	discLastSync = desc("discovery_last_sync_timestamp_seconds", "When discovery last heard from the API.")
	cacheAge     = desc("discovery_cache_age_seconds", "Seconds since the upstream cache was last confirmed.")
	reloads      = desc("config_reloads_total", "Configuration reloads, by result.", "result")
	buildInfo    = desc("build_info", "Build information; always 1.", "version", "commit", "goversion")
)

// collector turns a snapshot into metrics at scrape time.
type collector struct {
	snapshot func() Snapshot
	info     version.Info
	now      func() time.Time
}

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{
		upHealthy, upScore, upTier, upLatency, upActive, upConns, upDialErrors, upSent, upReceived, upChanged, upInfo,
		failOpen, accepted, rejected, overLimit, closed, retries, races, replays, unanswered, dialDuration, discState, discEvents, discLists, discErrors, discLastSync, cacheAge, reloads, buildInfo,
	} {
		ch <- d
	}
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	s := c.snapshot()
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}

	for _, u := range s.Upstreams {
		gauge(upHealthy, boolf(u.Healthy), u.Address)
		gauge(upScore, u.Score, u.Address)
		gauge(upTier, float64(u.Tier), u.Address)
		gauge(upLatency, u.LatencyMillis/1000, u.Address)
		gauge(upActive, float64(u.ActiveConnections), u.Address)
		counter(upConns, u.TotalConnections, u.Address)

		for _, r := range upstream.DialErrorReasons {
			counter(upDialErrors, u.DialErrors[r], u.Address, r)
		}

		counter(upSent, u.BytesIn, u.Address)
		counter(upReceived, u.BytesOut, u.Address)
		gauge(upChanged, unix(u.LastChange), u.Address)
		gauge(upInfo, 1, u.Address, strings.Join(u.Sources, ","))
	}

	gauge(failOpen, boolf(s.FailOpen))

	b := s.Balancer
	counter(accepted, b.Accepted)
	counter(rejected, b.Rejected)
	counter(overLimit, b.OverLimit)
	counter(closed, b.ClosedRemoved, "upstream_removed")
	counter(closed, b.ClosedShutdown, "shutdown")
	counter(closed, b.ClosedFailed, "upstream_failed")
	counter(retries, b.RetriedDials)
	counter(races, b.RacedDials)
	counter(replays, b.Replayed)
	counter(unanswered, b.Unanswered)
	ch <- dialHistogram(b.DialDuration)

	c.collectDiscovery(s.Discovery, gauge, counter)

	counter(reloads, s.Reloads.OK, "ok")
	counter(reloads, s.Reloads.Failed, "failed")
	gauge(buildInfo, 1, c.info.Version, c.info.Commit, c.info.GoVersion)
}

func (c collector) collectDiscovery(d Discovery, gauge func(*prometheus.Desc, float64, ...string), counter func(*prometheus.Desc, uint64, ...string)) {
	for _, st := range DiscoveryStates {
		gauge(discState, boolf(st == d.State), st)
	}

	counter(discEvents, d.Events)
	counter(discLists, d.Lists)

	for _, r := range DiscoveryStates[3:] { // the failure states are the reasons
		counter(discErrors, d.Errors[r], r)
	}

	if !d.LastSync.IsZero() {
		gauge(discLastSync, unix(d.LastSync))
	}

	if !d.CacheAt.IsZero() {
		gauge(cacheAge, c.now().Sub(d.CacheAt).Seconds())
	}
}

func dialHistogram(h balancer.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(balancer.DialBuckets))

	var cumulative uint64

	for i, bound := range balancer.DialBuckets {
		cumulative += h.Counts[i]
		buckets[bound] = cumulative
	}

	total := cumulative + h.Counts[len(h.Counts)-1]

	return prometheus.MustNewConstHistogram(dialDuration, total, h.Sum, buckets)
}

func boolf(b bool) float64 {
	if b {
		return 1
	}

	return 0
}

func unix(t time.Time) float64 {
	if t.IsZero() {
		return 0
	}

	return float64(t.UnixNano()) / 1e9
}

// NewRegistry returns a registry with the daemon's collector and the Go and
// process collectors.
func NewRegistry(snapshot func() Snapshot, info version.Info) *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(
		collector{snapshot: snapshot, info: info, now: time.Now},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	)

	return reg
}

// Handler serves the registry in the Prometheus exposition format.
func Handler(reg *prometheus.Registry) http.Handler {
	return promhttp.HandlerFor(reg, promhttp.HandlerOpts{Registry: reg})
}
