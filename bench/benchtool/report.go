package main

import (
	"encoding/json"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// measurement is one proxy in one round.
type measurement struct {
	Proxy        string             `json:"proxy"`
	Round        int                `json:"round"`
	M            map[string]float64 `json:"metrics"`
	FailureKinds map[string]int64   `json:"failover_failure_kinds,omitempty"`
	Notes        []string           `json:"notes,omitempty"`
	Err          string             `json:"error,omitempty"`
}

func (m measurement) brief() string {
	if m.Err != "" {
		return "ERROR: " + m.Err
	}

	s := fmt.Sprintf("%.2f GB/s, p50 %.1f µs, p99 %.1f µs, %.0f conn/s, failover %.0f/%.0f failed",
		m.M["throughput_Bps"]/1e9, m.M["lat_p50_us"], m.M["lat_p99_us"], m.M["conn_rate_per_s"],
		m.M["failover_failed"], m.M["failover_total"])

	if v, ok := m.M["kib_per_idle_conn"]; ok {
		s += fmt.Sprintf(", %.1f KiB + %.2f fds per idle conn", v, m.M["fds_per_idle_conn"])
	}

	if v, ok := m.M["exec_first_byte_ms"]; ok {
		s += fmt.Sprintf(", first byte %.1f ms", v)
	}

	if len(m.Notes) > 0 {
		s += " [" + strings.Join(m.Notes, "; ") + "]"
	}

	return s
}

// ratioMetrics are compared with direct, round by round.
var ratioMetrics = []string{"throughput_Bps", "lat_p50_us", "lat_p99_us", "conn_rate_per_s"}

type summary struct {
	Proxy  string             `json:"proxy"`
	Rounds int                `json:"rounds"`
	Median map[string]float64 `json:"median"`
	Min    map[string]float64 `json:"min"`
	Max    map[string]float64 `json:"max"`
	// Ratio is the median over rounds of (this proxy / direct in the same round).
	Ratio        map[string]float64 `json:"ratio_to_direct,omitempty"`
	FailureKinds map[string]int64   `json:"failover_failure_kinds_all_rounds,omitempty"`
	Errors       []string           `json:"errors,omitempty"`
}

type report struct {
	Date        string            `json:"date"`
	Machine     machineInfo       `json:"machine"`
	Settings    map[string]any    `json:"settings"`
	RoundsRun   int               `json:"rounds_run"`
	DurationSec float64           `json:"duration_s"`
	Summary     []summary         `json:"summary"`
	NotMeasured map[string]string `json:"not_measured,omitempty"`
	Runs        []measurement     `json:"runs"`
	md          string
}

func buildReport(mi machineInfo, o options, defs []*proxyDef, runs []measurement, rounds int, dead map[string]string, took time.Duration) *report {
	r := &report{
		Date:        time.Now().UTC().Format(time.RFC3339),
		Machine:     mi,
		RoundsRun:   rounds,
		DurationSec: math.Round(took.Seconds()*10) / 10,
		Runs:        runs,
		NotMeasured: map[string]string{},
		Settings: map[string]any{
			"upstreams":                         3,
			"health_check":                      fmt.Sprintf("TCP connect every %s, timeout %s, fall %d, rise %d (nginx: passive max_fails=%d fail_timeout=%s)", checkInterval, checkTimeout, checkFall, checkRise, checkFall, checkInterval),
			"connect_timeout":                   connectTO,
			"balance":                           "least connections",
			"blocks_per_round":                  o.blocks,
			"bulk_s_per_block":                  o.bulkDur.Seconds(),
			"latency_max_round_trips_per_block": o.latMax,
			"latency_max_s_per_block":           o.latDur.Seconds(),
			"rate_workers":                      o.rateWorkers,
			"rate_s_per_block":                  o.rateDur.Seconds(),
			"idle_conns":                        o.idle,
			"failover_workers":                  o.foWorkers,
			"failover_period_ms":                o.foPeriod.Milliseconds(),
			"failover_pre_s":                    o.foPre.Seconds(),
			"failover_post_s":                   o.foPost.Seconds(),
		},
	}

	for k, v := range o.skip {
		r.NotMeasured[k] = v
	}

	for k, v := range dead {
		r.NotMeasured[k] = v
	}

	direct := map[int]map[string]float64{}

	for _, m := range runs {
		if m.Proxy == "direct" && m.Err == "" {
			direct[m.Round] = m.M
		}
	}

	for _, d := range defs {
		s := summary{Proxy: d.Name, Median: map[string]float64{}, Min: map[string]float64{}, Max: map[string]float64{},
			Ratio: map[string]float64{}, FailureKinds: map[string]int64{}}
		vals := map[string][]float64{}
		ratios := map[string][]float64{}

		for _, m := range runs {
			if m.Proxy != d.Name {
				continue
			}

			if m.Err != "" {
				s.Errors = append(s.Errors, fmt.Sprintf("round %d: %s", m.Round, m.Err))

				continue
			}

			s.Rounds++

			for k, v := range m.M {
				vals[k] = append(vals[k], v)
			}

			for k, v := range m.FailureKinds {
				s.FailureKinds[k] += v
			}

			if dm, ok := direct[m.Round]; ok {
				for _, k := range ratioMetrics {
					v, ok1 := m.M[k]
					b, ok2 := dm[k]

					if ok1 && ok2 && b > 0 {
						ratios[k] = append(ratios[k], v/b)
					}
				}
			}
		}

		for k, v := range vals {
			s.Median[k], s.Min[k], s.Max[k] = median(v), slices.Min(v), slices.Max(v)
		}

		for k, v := range ratios {
			s.Ratio[k] = median(v)
		}

		r.Summary = append(r.Summary, s)
	}

	r.md = r.markdown()

	return r
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return math.NaN()
	}

	s := slices.Clone(v)
	slices.Sort(s)

	if len(s)%2 == 1 {
		return s[len(s)/2]
	}

	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func (r *report) markdown() string {
	var b strings.Builder

	mi := r.Machine
	fmt.Fprintf(&b, "## Results\n\n")
	fmt.Fprintf(&b, "Run %s on %d × %s, %s, kernel %s, %s RAM; load average %s at the start, %s at the end. ",
		r.Date, mi.NProc, mi.CPUModel, mi.OS, mi.Kernel, mi.MemTotal, mi.LoadStart, mi.LoadEnd)
	fmt.Fprintf(&b, "%d rounds, proxies in rotating order; the whole run took %.0f s.\n\n", r.RoundsRun, r.DurationSec)

	for _, k := range slices.Sorted(maps.Keys(mi.Versions)) {
		fmt.Fprintf(&b, "- %s: `%s`\n", k, mi.Versions[k])
	}

	fmt.Fprintf(&b, "\nMedians over the rounds; (×) is the median of the per-round ratio to direct. Lower is better for latency, KiB, fds, times and failures.\n\n")

	b.WriteString("| proxy | throughput, 1 stream | 64 B p50 | 64 B p99 | new conn/s, 32 workers | KiB per idle conn | fds per idle conn | RSS, no clients | exec → first proxied byte | exec → READY=1 | failover: failed / conns (worst round) |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")

	for _, s := range r.Summary {
		if s.Rounds == 0 {
			fmt.Fprintf(&b, "| %s | not measured: %s |||||||||| \n", s.Proxy, strings.Join(s.Errors, "; "))

			continue
		}

		med, rat := s.Median, s.Ratio
		ratio := func(k string) string {
			if s.Proxy == "direct" {
				return ""
			}

			if v, ok := rat[k]; ok {
				return fmt.Sprintf(" (%.2f×)", v)
			}

			return ""
		}
		opt := func(k, f string, scale float64) string {
			if v, ok := med[k]; ok {
				return fmt.Sprintf(f, v*scale)
			}

			return "—"
		}

		fmt.Fprintf(&b, "| %s | %s%s | %s%s | %s%s | %s%s | %s | %s | %s | %s | %s | %s |\n",
			s.Proxy,
			opt("throughput_Bps", "%.2f GB/s", 1e-9), ratio("throughput_Bps"),
			opt("lat_p50_us", "%.1f µs", 1), ratio("lat_p50_us"),
			opt("lat_p99_us", "%.1f µs", 1), ratio("lat_p99_us"),
			opt("conn_rate_per_s", "%.0f", 1), ratio("conn_rate_per_s"),
			opt("kib_per_idle_conn", "%.1f", 1),
			opt("fds_per_idle_conn", "%.2f", 1),
			opt("base_rss_kib", "%.1f MiB", 1.0/1024),
			opt("exec_first_byte_ms", "%.1f ms", 1),
			opt("exec_ready_ms", "%.1f ms", 1),
			fmt.Sprintf("%.0f / %.0f (%.0f)", med["failover_failed"], med["failover_total"], s.Max["failover_failed"]),
		)
	}

	b.WriteString("\n### Details\n\n")
	fmt.Fprintf(&b, "| proxy | proxy CPU s per GB (bulk) | proxy CPU µs per conn (rate) | CPU %% with %[1]d idle conns | RSS with %[1]d idle conns | failover: slowest conn after kill | failover failure kinds (all rounds) | conn-rate failures |\n", r.Settings["idle_conns"])
	b.WriteString("|---|---|---|---|---|---|---|---|\n")

	for _, s := range r.Summary {
		if s.Rounds == 0 {
			continue
		}

		med := s.Median
		opt := func(k, f string, scale float64) string {
			if v, ok := med[k]; ok {
				return fmt.Sprintf(f, v*scale)
			}

			return "—"
		}

		kinds := []string{}
		for _, k := range slices.Sorted(maps.Keys(s.FailureKinds)) {
			kinds = append(kinds, fmt.Sprintf("%s: %d", k, s.FailureKinds[k]))
		}

		if len(kinds) == 0 {
			kinds = []string{"none"}
		}

		fmt.Fprintf(&b, "| %s | %s | %s | %s | %s | %s | %s | %s |\n", s.Proxy,
			opt("cpu_s_per_GB", "%.3f", 1), opt("cpu_us_per_conn", "%.1f", 1), opt("idle_cpu_pct", "%.1f %%", 1),
			opt("rss_with_idle_kib", "%.1f MiB", 1.0/1024), opt("failover_max_conn_ms", "%.1f ms", 1),
			strings.Join(kinds, ", "), opt("conn_rate_failed", "%.0f", 1))
	}

	for _, s := range r.Summary {
		if _, ok := s.Median["go_goroutines_per_idle_conn"]; !ok {
			continue
		}

		med := s.Median
		fmt.Fprintf(&b, "\n%s's Go runtime per idle connection (from its /metrics): %.2f goroutines, %.1f KiB goroutine stack, %.1f KiB heap in use, %.1f KiB obtained from the OS.\n",
			s.Proxy, med["go_goroutines_per_idle_conn"], med["go_stack_bytes_per_idle_conn"]/1024,
			med["go_heap_inuse_bytes_per_idle_conn"]/1024, med["go_sys_bytes_per_idle_conn"]/1024)
	}

	if len(r.NotMeasured) > 0 {
		b.WriteString("\nNot measured:\n\n")

		for _, k := range slices.Sorted(maps.Keys(r.NotMeasured)) {
			fmt.Fprintf(&b, "- %s: %s\n", k, r.NotMeasured[k])
		}
	}

	b.WriteString("\n### Every round\n\n")
	b.WriteString("| round | proxy | GB/s | p50 µs | p99 µs | conn/s | KiB/conn | fds/conn | first byte ms | READY ms | failover failed/conns | notes |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|\n")

	for _, m := range r.Runs {
		if m.Err != "" {
			fmt.Fprintf(&b, "| %d | %s | error: %s |||||||||| \n", m.Round, m.Proxy, strings.ReplaceAll(firstLine(m.Err), "|", "/"))

			continue
		}

		opt := func(k, f string, scale float64) string {
			if v, ok := m.M[k]; ok {
				return fmt.Sprintf(f, v*scale)
			}

			return "—"
		}

		fmt.Fprintf(&b, "| %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.0f/%.0f | %s |\n", m.Round, m.Proxy,
			opt("throughput_Bps", "%.2f", 1e-9), opt("lat_p50_us", "%.1f", 1), opt("lat_p99_us", "%.1f", 1),
			opt("conn_rate_per_s", "%.0f", 1), opt("kib_per_idle_conn", "%.1f", 1), opt("fds_per_idle_conn", "%.2f", 1),
			opt("exec_first_byte_ms", "%.1f", 1), opt("exec_ready_ms", "%.1f", 1),
			m.M["failover_failed"], m.M["failover_total"], strings.ReplaceAll(strings.Join(m.Notes, "; "), "|", "/"))
	}

	return b.String()
}

func firstLine(s string) string {
	l, _, _ := strings.Cut(s, "\n")

	return l
}

func (r *report) write(dir string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}

	j, err := json.MarshalIndent(sanitize(r), "", "  ")
	if err != nil {
		return err
	}

	if err := os.WriteFile(filepath.Join(dir, "latest.json"), append(j, '\n'), 0o644); err != nil {
		return err
	}

	if err := os.WriteFile(filepath.Join(dir, "latest.md"), []byte(r.md), 0o644); err != nil {
		return err
	}

	fmt.Print(r.md)

	return nil
}

// sanitize drops NaN and Inf, which JSON cannot hold.
func sanitize(r *report) *report {
	clean := func(m map[string]float64) {
		for k, v := range m {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				delete(m, k)
			}
		}
	}

	for _, s := range r.Summary {
		clean(s.Median)
		clean(s.Min)
		clean(s.Max)
		clean(s.Ratio)
	}

	for _, m := range r.Runs {
		clean(m.M)
	}

	return r
}
