//go:build integration

// Package integration runs extractedprism against real kube-apiservers and
// etcd (test/kubeharness) inside a private network namespace. Run it with
// `make test-integration`.
package integration

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest"
	"go.uber.org/zap/zaptest/observer"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/daemon"
	"github.com/lexfrei/extractedprism/pkg/upstream"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

type cluster struct {
	pki     *kubeharness.PKI
	etcd    *kubeharness.Etcd
	servers []*kubeharness.APIServer
	admin   *kubeharness.Client
}

func addr(ip string) string { return net.JoinHostPort(ip, "6443") }

// startCluster starts etcd and one apiserver per ip, and grants the node
// user the shipped host-mode Role unless rbac is false.
func startCluster(t testing.TB, opts kubeharness.APIServerOptions, rbac bool, ips ...string) *cluster {
	t.Helper()
	kubeharness.RequireNetns(t, ips...)

	c := &cluster{pki: kubeharness.NewPKI(t, t.TempDir(), kubeharness.DefaultSANs(ips...))}
	opts.PKI = c.pki
	c.etcd = kubeharness.StartEtcd(t, "")
	c.servers = kubeharness.StartAPIServers(t, c.etcd, opts, ips...)
	c.admin = c.pki.AdminClient(c.servers[0].URL())

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	if _, err := c.admin.WaitForKubernetesSlice(ctx, ips...); err != nil {
		t.Fatalf("the kubernetes slice never listed %v: %v", ips, err)
	}

	if rbac {
		manifest, err := os.ReadFile("../../packaging/kubernetes/rbac-host.yaml")
		if err != nil {
			t.Fatal(err)
		}

		if err := c.admin.Create(ctx, manifest); err != nil {
			t.Fatalf("applying the shipped RBAC: %v", err)
		}
	}

	return c
}

// kubeconfig writes the node user's kubeconfig. Its server is the first
// apiserver; the daemon ignores it and goes through itself.
func (c *cluster) kubeconfig(t testing.TB) string {
	t.Helper()

	path := filepath.Join(t.TempDir(), "kubeconfig")
	if err := c.pki.UserKubeconfig(path, c.servers[0].URL(), c.pki.Node, ""); err != nil {
		t.Fatal(err)
	}

	return path
}

type running struct {
	d      *daemon.Daemon
	logs   *observer.ObservedLogs
	states *notifier
	stop   func()
	// reload has the daemon reload a configuration edited from the one
	// it started with, and returns once it was applied.
	reload func(t *testing.T, edit func(*config.Config))
}

// notifier records what the daemon tells systemd (READY=, STATUS=).
type notifier struct {
	mu     sync.Mutex
	states []string
}

func (n *notifier) Notify(state string) {
	n.mu.Lock()
	defer n.mu.Unlock()

	n.states = append(n.states, state)
}

// status is the last STATUS= the daemon sent.
func (n *notifier) status() string {
	n.mu.Lock()
	defer n.mu.Unlock()

	for i := len(n.states) - 1; i >= 0; i-- {
		for line := range strings.SplitSeq(n.states[i], "\n") {
			if s, ok := strings.CutPrefix(line, "STATUS="); ok {
				return s
			}
		}
	}

	return ""
}

// startDaemon runs a daemon in-process with one static endpoint and fast
// health checks; edit adjusts the configuration.
func startDaemon(t *testing.T, static string, edit func(*config.Config)) *running {
	t.Helper()

	return startDefaultDaemon(t, static, func(cfg *config.Config) {
		cfg.HealthInterval = 300 * time.Millisecond
		cfg.HealthTimeout = 250 * time.Millisecond
		cfg.DrainTimeout = time.Second

		if edit != nil {
			edit(cfg)
		}
	})
}

// startDefaultDaemon runs a daemon in-process with the shipped defaults,
// apart from kernel-chosen ports, a private state directory and one static
// endpoint; edit adjusts the configuration.
func startDefaultDaemon(t *testing.T, static string, edit func(*config.Config)) *running {
	t.Helper()

	cfg := config.Default()
	cfg.Endpoints = []string{static}
	cfg.BindPort = 0
	cfg.HealthPort = 0
	cfg.StateDirectory = t.TempDir()

	if edit != nil {
		edit(&cfg)
	}

	core, logs := observer.New(zap.DebugLevel)
	log := zap.New(zapcore.NewTee(zaptest.NewLogger(t).Core(), core))
	states := &notifier{}

	var next atomic.Pointer[config.Config]

	reloads := make(chan os.Signal, 1)

	d, err := daemon.New(daemon.Options{
		Config: cfg, Logger: log, Notifier: states,
		Reload: func() (config.Config, error) { return *next.Load(), nil }, Reloads: reloads,
	})
	if err != nil {
		t.Fatal(err)
	}

	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)

	go func() { done <- d.Run(ctx) }()

	r := &running{d: d, logs: logs, states: states}
	r.reload = func(t *testing.T, edit func(*config.Config)) {
		t.Helper()

		c := cfg
		edit(&c)
		next.Store(&c)

		done := logs.FilterMessage("configuration reloaded").Len()
		reloads <- syscall.SIGHUP

		eventually(t, 5*time.Second, "the reload applied", func() bool { return logs.FilterMessage("configuration reloaded").Len() > done })
	}
	stopped := false
	r.stop = func() {
		if stopped {
			return
		}

		stopped = true
		cancel()

		if err := <-done; err != nil {
			t.Errorf("daemon: %v", err)
		}
	}
	t.Cleanup(r.stop)

	return r
}

func (r *running) upstreams() map[string]upstream.Status {
	out := map[string]upstream.Status{}
	for _, u := range r.d.Status().Upstreams {
		out[u.Address] = u
	}

	return out
}

func (r *running) addresses() []string {
	var out []string
	for a := range r.upstreams() {
		out = append(out, a)
	}

	slices.Sort(out)

	return out
}

// eventually polls cond: the state it watches is changed by real API
// servers and timers in other processes, with no event to wait on.
func eventually(t *testing.T, within time.Duration, what string, cond func() bool) {
	t.Helper()

	ctx, cancel := context.WithTimeout(context.Background(), within)
	defer cancel()

	if err := kubeharness.Poll(ctx, 50*time.Millisecond, func(context.Context) (bool, string, error) { return cond(), "", nil }); err != nil {
		t.Fatalf("%s: not within %s", what, within)
	}
}

// httpsClient talks TLS to the API servers through the proxy, checking their
// certificate like kubelet would with tls-server-name.
func (c *cluster) httpsClient(t *testing.T) *http.Client {
	t.Helper()

	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(c.pki.CAPEM) {
		t.Fatal("bad CA")
	}

	return &http.Client{
		Timeout: 10 * time.Second,
		Transport: &http.Transport{
			TLSClientConfig:   &tls.Config{RootCAs: pool, ServerName: "kubernetes.default.svc", MinVersion: tls.VersionTLS12},
			DisableKeepAlives: true, // a new connection, so a new pick, per request
		},
	}
}

func readyz(client *http.Client, proxy string) (string, error) {
	resp, err := client.Get("https://" + proxy + "/readyz")
	if err != nil {
		return "", err
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)

	return strings.TrimSpace(string(body)), err
}

func logged(logs *observer.ObservedLogs, msg string) bool {
	return logs.FilterMessageSnippet(msg).Len() > 0
}

func zapInt(key string, v int) zap.Field { return zap.Int(key, v) }

// metric scrapes the daemon's /metrics, as an operator would, and returns
// the value of an unlabelled series.
func (r *running) metric(t *testing.T, name string) float64 {
	t.Helper()

	resp, err := http.Get("http://" + r.d.HealthAddr().String() + "/metrics") //nolint:noctx // test
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()

	body, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}

	for line := range strings.SplitSeq(string(body), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			f, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("%s: %v", line, err)
			}

			return f
		}
	}

	t.Fatalf("/metrics has no %s", name)

	return 0
}
