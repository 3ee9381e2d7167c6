package main

import (
	"fmt"
	"path/filepath"
	"slices"
	"syscall"
	"time"
)

// recoveryWait is how long a proxy needs to take a restarted upstream back:
// rise passing checks, one interval apart, with the ±20 % jitter, and a
// margin. nginx's passive fail_timeout is shorter.
const recoveryWait = 2600 * time.Millisecond

// subject is one proxy during one round.
type subject struct {
	d     *proxyDef
	proc  *child // nil for direct
	tgt   *target
	one   string // where single-connection tests go
	m     *measurement
	ok    bool
	bytes int64
	bsecs float64
	bcpu  int64
	lat   []float64
	rOK   int64
	rFail int64
	rsecs float64
	rcpu  int64
}

// round measures every proxy once. Each proxy is started afresh; the
// steady-state figures (throughput, latency, connection rate) are taken in
// blocks, the proxies taking turns block by block, so that load from
// elsewhere on the host falls on all of them alike. Memory and failover are
// per proxy, in turn.
func (h *harness) round(r int) []measurement {
	o := h.o
	n := len(h.defs)
	round := r + 1

	var subs []*subject

	defer func() {
		for _, s := range subs {
			if s.proc != nil {
				s.proc.stop(syscall.SIGTERM, 3*time.Second)
			}
		}

		h.restartUpstreams()
	}()

	// Start every proxy, in this round's order: exec -> first byte, READY.
	for i := range n {
		d := h.defs[(i+r)%n]
		if _, ok := h.dead[d.Name]; ok {
			continue
		}

		s := &subject{d: d, m: &measurement{Proxy: d.Name, Round: round, M: map[string]float64{}},
			tgt: &target{fixed: d.Listen, ups: h.ups}, one: d.Listen}
		if d.direct() {
			s.one = h.ups[0]
			s.ok = true
		} else {
			s.ok = h.start(s)
		}

		subs = append(subs, s)
	}

	live := slices.DeleteFunc(slices.Clone(subs), func(s *subject) bool { return !s.ok })

	// Warm up every path.
	for _, s := range live {
		for range 60 {
			_ = oneShot(s.tgt.addr(), time.Second)
		}
	}

	// Memory and descriptors per idle connection, one proxy at a time.
	for _, s := range live {
		if s.proc != nil && o.idle > 0 {
			h.idle(s.d, s.proc, s.tgt, s.m)
		}
	}

	// Steady state, block by block.
	for b := range o.blocks {
		for i := range live {
			s := live[(i+b)%len(live)]
			c0 := h.usage(s.proc).CPUTicks

			nb, secs, err := bulk(s.one, o.bulkDur)
			if err != nil {
				s.m.Notes = append(s.m.Notes, "bulk: "+err.Error())

				continue
			}

			s.bytes += nb
			s.bsecs += secs
			s.bcpu += h.usage(s.proc).CPUTicks - c0
		}
	}

	for b := range o.blocks {
		for i := range live {
			s := live[(i+b)%len(live)]

			lat, err := latency(s.one, 200, o.latMax, o.latDur)
			if err != nil {
				s.m.Notes = append(s.m.Notes, "latency: "+err.Error())

				continue
			}

			s.lat = append(s.lat, lat...)
		}
	}

	for b := range o.blocks {
		for i := range live {
			s := live[(i+b)%len(live)]
			c0 := h.usage(s.proc).CPUTicks

			okN, failN, secs := connRate(s.tgt, o.rateWorkers, o.rateDur, 2_000_000)
			s.rOK += okN
			s.rFail += failN
			s.rsecs += secs
			s.rcpu += h.usage(s.proc).CPUTicks - c0

			// Let the storm's sockets close before the next block.
			time.Sleep(100 * time.Millisecond)
		}
	}

	for _, s := range live {
		m := s.m.M
		if s.bsecs > 0 {
			m["throughput_Bps"] = float64(s.bytes) / s.bsecs

			if s.proc != nil && s.bytes > 0 {
				m["cpu_s_per_GB"] = float64(s.bcpu) / userHZ / (float64(s.bytes) / 1e9)
			}
		}

		if len(s.lat) > 0 {
			slices.Sort(s.lat)
			m["lat_p50_us"], m["lat_p99_us"], m["lat_samples"] = pct(s.lat, 50), pct(s.lat, 99), float64(len(s.lat))
		}

		if s.rsecs > 0 {
			m["conn_rate_per_s"] = float64(s.rOK) / s.rsecs
			m["conn_rate_failed"] = float64(s.rFail)

			if s.proc != nil && s.rOK > 0 {
				m["cpu_us_per_conn"] = float64(s.rcpu) / userHZ * 1e6 / float64(s.rOK)
			}
		}
	}

	// Failover, one proxy at a time: kill upstream 1 during a paced
	// new-connection load, then bring it back and let every proxy see it.
	time.Sleep(300 * time.Millisecond)

	for _, s := range live {
		if h.restartUpstreams() {
			time.Sleep(recoveryWait)
		}

		fo := failover(s.tgt, o.foWorkers, o.foPeriod, o.foPre, o.foPost, func() {
			h.upKids[0].stop(syscall.SIGKILL, time.Second)
		})
		m := s.m.M
		m["failover_total"] = float64(fo.Total)
		m["failover_failed"] = float64(fo.Failed)
		m["failover_failed_after_kill"] = float64(fo.FailedAfter)
		m["failover_max_conn_ms"] = fo.MaxMsAfter
		m["failover_p99_conn_ms"] = fo.P99MsAfter
		s.m.FailureKinds = fo.Kinds
	}

	out := make([]measurement, 0, len(subs))
	for _, s := range subs {
		out = append(out, *s.m)
	}

	return out
}

// start runs the proxy and measures exec -> first proxied byte and, for a
// proxy that speaks sd_notify, exec -> READY=1.
func (h *harness) start(s *subject) bool {
	d, m := s.d, s.m

	h.notify.drain()

	var env []string
	if d.notify {
		env = []string{"NOTIFY_SOCKET=" + h.notify.path}
	}

	var t0 time.Time

	c, err := h.procs.start(d.Name, d.argv, env, true, func() { t0 = time.Now() })
	if err != nil {
		m.Err = err.Error()
		h.dead[d.Name] = m.Err

		return false
	}

	s.proc = c

	for {
		if err := oneShot(d.Listen, 100*time.Millisecond); err == nil {
			m.M["exec_first_byte_ms"] = ms(time.Since(t0))

			break
		}

		if c.exited() || time.Since(t0) > 10*time.Second {
			m.Err = fmt.Sprintf("%s did not serve within 10 s (exited: %v); log:\n%s", d.Name, c.exited(),
				tailFile(filepath.Join(h.o.tmp, "logs", d.Name+".log"), 20))
			h.dead[d.Name] = "did not start: " + m.Err

			return false
		}

		time.Sleep(200 * time.Microsecond)
	}

	h.procs.adopt(c)

	if d.notify {
		select {
		case t := <-h.notify.ready:
			m.M["exec_ready_ms"] = ms(t.Sub(t0))
		case <-time.After(3 * time.Second):
			m.Notes = append(m.Notes, "no READY=1 within 3 s")
		}
	}

	return true
}
