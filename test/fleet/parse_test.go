package fleet

// The parts of the benchmark that read what the kernel and the apiserver
// write. They need no cluster, so they are not behind the integration tag
// and units_test.go checks them in every `go test ./...`.

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	dto "github.com/prometheus/client_model/go"
)

// usage is CPU time per wall-clock second (1 = one core), by process.
type usage map[string]float64

// framed is one measured window with the idle windows around it.
type framed struct {
	load, before, after usage
	secs                float64
}

// net is the window's CPU use above the mean of its baselines, in CPU
// seconds per second.
func (f framed) net(name string) float64 {
	return f.load[name] - (f.before[name]+f.after[name])/2
}

// statTicks is utime + stime (all threads) from the text of /proc/PID/stat,
// in clock ticks.
func statTicks(s string) (uint64, error) {
	// The fields after the command name, which is in parentheses and may
	// itself contain spaces and parentheses.
	i := strings.LastIndexByte(s, ')')
	if i < 0 || i+2 > len(s) {
		return 0, fmt.Errorf("/proc/PID/stat: no command name in %q", s)
	}

	f := strings.Fields(s[i+2:])
	if len(f) < 13 {
		return 0, fmt.Errorf("/proc/PID/stat: %d fields after the command name", len(f))
	}

	utime, err1 := strconv.ParseUint(f[11], 10, 64)
	stime, err2 := strconv.ParseUint(f[12], 10, 64)

	if err1 != nil || err2 != nil {
		return 0, fmt.Errorf("/proc/PID/stat: utime %q stime %q", f[11], f[12])
	}

	return utime + stime, nil
}

// metrics is one scrape of the apiserver's /metrics.
type metrics map[string]*dto.MetricFamily

// sum adds up the series of a counter or gauge whose labels include match.
func (m metrics) sum(name string, match map[string]string) float64 {
	total := 0.0

	for _, s := range m.series(name) {
		if s.matches(match) {
			total += s.value
		}
	}

	return total
}

type series struct {
	labels map[string]string
	value  float64
}

func (s series) matches(match map[string]string) bool {
	for k, v := range match {
		if s.labels[k] != v {
			return false
		}
	}

	return true
}

func (m metrics) series(name string) []series {
	f, ok := m[name]
	if !ok {
		return nil
	}

	var out []series

	for _, mt := range f.GetMetric() {
		s := series{labels: map[string]string{}}
		for _, l := range mt.GetLabel() {
			s.labels[l.GetName()] = l.GetValue()
		}

		switch {
		case mt.Counter != nil:
			s.value = mt.GetCounter().GetValue()
		case mt.Gauge != nil:
			s.value = mt.GetGauge().GetValue()
		default:
			continue
		}

		out = append(out, s)
	}

	return out
}

// traffic is what reached the apiserver, counted by the apiserver itself
// (apiserver_request_total, by verb, resource and code; a watch counts when
// it ends) and by the namespace's TCP stack.
type traffic struct {
	secs     float64
	requests map[string]float64
	// watchEvents are events sent on endpointslices watches (bookmarks
	// included).
	watchEvents float64
	// passiveOpens are TCP connections accepted in the namespace: by the
	// apiserver, and by the daemons' own proxies (discovery connects
	// through them).
	passiveOpens float64
	watches      float64 // endpointslices watches open at the end
	logLines     float64 // lines the apiserver wrote to its log
}

// noisyLog says when the apiserver wrote a log line per check or more in a
// fleet window: at 5,000 nodes that is a log flood.
func noisyLog(t traffic) error {
	if checks := t.requests["GET /readyz 200"]; checks >= 10 && t.logLines >= checks {
		return fmt.Errorf("the apiserver wrote %.0f log lines for %.0f checks", t.logLines, checks)
	}

	return nil
}

type trafficSnapshot struct {
	at           time.Time
	m            metrics
	passiveOpens float64
	logLines     float64
}

func (s trafficSnapshot) minus(old trafficSnapshot) traffic {
	t := traffic{
		secs:         s.at.Sub(old.at).Seconds(),
		requests:     map[string]float64{},
		passiveOpens: s.passiveOpens - old.passiveOpens,
		logLines:     s.logLines - old.logLines,
		watches:      s.m.sum("apiserver_longrunning_requests", map[string]string{"verb": "WATCH", "resource": "endpointslices"}),
	}

	key := func(x series) string {
		r := x.labels["resource"]

		switch sub := x.labels["subresource"]; {
		case r == "":
			r = sub // a path: /readyz, /openapi/v3
		case sub != "":
			r += "/" + sub
		}

		return fmt.Sprintf("%s %s %s", x.labels["verb"], r, x.labels["code"])
	}

	before := map[string]float64{}
	for _, x := range old.m.series("apiserver_request_total") {
		before[key(x)] += x.value
	}

	for _, x := range s.m.series("apiserver_request_total") {
		t.requests[key(x)] += x.value
	}

	for k, v := range t.requests {
		if d := v - before[k]; d > 0 {
			t.requests[k] = d
		} else {
			delete(t.requests, k)
		}
	}

	ev := func(m metrics) float64 {
		total := 0.0

		for _, x := range m.series("apiserver_watch_events_total") {
			if strings.Contains(x.labels["resource"]+x.labels["kind"], "ndpointSlice") ||
				strings.Contains(x.labels["resource"], "endpointslices") {
				total += x.value
			}
		}

		return total
	}
	t.watchEvents = ev(s.m) - ev(old.m)

	return t
}

// snmpPassiveOpens finds Tcp PassiveOpens in the text of /proc/net/snmp: a
// line of names, then a line of values.
func snmpPassiveOpens(raw string) (float64, error) {
	var names []string

	for line := range strings.Lines(raw) {
		f := strings.Fields(line)
		if len(f) == 0 || f[0] != "Tcp:" {
			continue
		}

		if names == nil {
			names = f

			continue
		}

		if i := slices.Index(names, "PassiveOpens"); i > 0 && i < len(f) {
			return strconv.ParseFloat(f[i], 64)
		}
	}

	return 0, errors.New("no Tcp PassiveOpens in /proc/net/snmp")
}

// censusResult counts the daemons' requests by kind, from the audit log.
type censusResult struct {
	nodes  int
	window time.Duration // of the steady state
	// atStart is what the daemons sent until the fleet was up and settled,
	// steady what they sent in the window after it.
	atStart, steady map[string]int
	examples        map[string]string
	// watchLifetimes are the durations of the watches that ended in the
	// window.
	watchLifetimes []time.Duration
	passiveOpens   float64
}

type auditEvent struct {
	AuditID    string `json:"auditID"`
	Stage      string `json:"stage"`
	Verb       string `json:"verb"`
	RequestURI string `json:"requestURI"`
	UserAgent  string `json:"userAgent"`
	User       struct {
		Username string `json:"username"`
	} `json:"user"`
	ResponseStatus struct {
		Code int `json:"code"`
	} `json:"responseStatus"`
	Received time.Time `json:"requestReceivedTimestamp"`
	StageAt  time.Time `json:"stageTimestamp"`
}

// fromDaemon tells the daemons' requests from everyone else's: their checks
// are anonymous, their discovery uses the node certificates.
func (a auditEvent) fromDaemon() bool {
	return a.User.Username == "system:anonymous" || strings.HasPrefix(a.User.Username, "extractedprism:node-")
}

// kind names a request without its varying parts: the verb, the path, the
// names of its query parameters (with the values of those that change
// behaviour), the answer, and who asked.
func (a auditEvent) kind() string {
	u, err := url.Parse(a.RequestURI)
	if err != nil {
		return a.Verb + " " + a.RequestURI
	}

	q := u.Query()

	var params []string

	for _, k := range slices.Sorted(maps.Keys(q)) {
		switch k {
		case "watch", "sendInitialEvents", "allowWatchBookmarks", "resourceVersionMatch":
			params = append(params, k+"="+q.Get(k))
		case "resourceVersion":
			if q.Get(k) == "" || q.Get(k) == "0" {
				params = append(params, k+"="+q.Get(k))
			} else {
				params = append(params, k+"=N")
			}
		default:
			params = append(params, k)
		}
	}

	who := "anonymous"
	if a.User.Username != "system:anonymous" {
		who = "node cert"
	}

	agent, _, _ := strings.Cut(a.UserAgent, " ")

	return fmt.Sprintf("%s %s?%s → %d (%s, %s)", strings.ToUpper(a.Verb), u.Path, strings.Join(params, "&"), a.ResponseStatus.Code, who, agent)
}

// read counts each request once, at its first stage: a watch at
// ResponseStarted, anything else at ResponseComplete; a request received
// between since and from counts as start-up, one between from and to as
// steady.
func (r *censusResult) read(log string, since, from, to time.Time) error {
	f, err := os.Open(log)
	if err != nil {
		return err
	}
	defer f.Close()

	r.atStart, r.steady, r.examples = map[string]int{}, map[string]int{}, map[string]string{}
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)

	for sc.Scan() {
		var a auditEvent
		if err := json.Unmarshal(sc.Bytes(), &a); err != nil {
			return fmt.Errorf("audit log: %w", err)
		}

		if !a.fromDaemon() || a.Received.Before(since) || a.Received.After(to) {
			continue
		}

		// Watches the fleet's stop ended are not counted.
		if a.Stage == "ResponseComplete" && a.Verb == "watch" && !a.Received.Before(from) && !a.StageAt.After(to) {
			r.watchLifetimes = append(r.watchLifetimes, a.StageAt.Sub(a.Received))
		}

		if seen[a.AuditID] {
			continue
		}

		seen[a.AuditID] = true
		k := a.kind()

		if a.Received.Before(from) {
			r.atStart[k]++
		} else {
			r.steady[k]++
		}

		if _, ok := r.examples[k]; !ok {
			r.examples[k] = a.RequestURI
		}
	}

	sort.Slice(r.watchLifetimes, func(i, j int) bool { return r.watchLifetimes[i] < r.watchLifetimes[j] })

	return sc.Err()
}
