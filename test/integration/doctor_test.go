//go:build integration

package integration

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"io"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/pkg/doctor"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

func verdicts(results []doctor.Result) map[string]doctor.Verdict {
	out := map[string]doctor.Verdict{}
	for _, r := range results {
		out[r.Check] = r.Verdict
	}

	return out
}

func runDoctor(t *testing.T, c *cluster, r *running, kubeconfig string) map[string]doctor.Verdict {
	t.Helper()

	kubelet := filepath.Join(t.TempDir(), "kubelet.conf")
	if err := c.pki.UserKubeconfig(kubelet, "https://"+r.d.ProxyAddr().String(), c.pki.Node, ""); err != nil {
		t.Fatal(err)
	}

	cfg := config.Default()
	cfg.Endpoints = all[:2]
	cfg.Kubeconfig = kubeconfig
	cfg.HealthCAFile = c.pki.CACertFile

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()

	var out bytes.Buffer

	results := doctor.Run(ctx, &out, doctor.Options{Config: cfg, Proxy: r.d.ProxyAddr().String(), KubeletKubeconfig: kubelet})
	t.Logf("doctor:\n%s", out.String())

	return verdicts(results)
}

func TestDoctor(t *testing.T) {
	t.Run("healthy node", func(t *testing.T) {
		c := startCluster(t, kubeharness.APIServerOptions{}, true, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
		kc := c.kubeconfig(t)
		r := startDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = kc })

		got := runDoctor(t, c, r, kc)
		for check, v := range got {
			if v != doctor.OK {
				t.Errorf("%s: %s on a healthy node", check, v)
			}
		}

		if got["discovery credentials"] != doctor.OK || got["certificate covers 127.0.0.1"] != doctor.OK || got["kubelet kubeconfig"] != doctor.OK {
			t.Fatalf("checks missing: %v", got)
		}
	})

	t.Run("certificate without 127.0.0.1, no RBAC", func(t *testing.T) {
		pki := kubeharness.NewPKI(t, t.TempDir(), kubeharness.DefaultSANs(kubeharness.IPv4Addr1, kubeharness.IPv4Addr2))
		noLoopback, err := pki.IssueServingCert("no-loopback", kubeharness.SANs{
			IPs:      []string{kubeharness.IPv4Addr1, kubeharness.IPv4Addr2, "10.0.0.1"},
			DNSNames: []string{"kubernetes", "kubernetes.default", "kubernetes.default.svc"},
		})
		if err != nil {
			t.Fatal(err)
		}

		c := startClusterWithPKI(t, pki, kubeharness.APIServerOptions{Serving: &noLoopback}, kubeharness.IPv4Addr1, kubeharness.IPv4Addr2)
		kc := c.kubeconfig(t)
		r := startDaemon(t, all[0], func(cfg *config.Config) { cfg.Kubeconfig = kc })

		got := runDoctor(t, c, r, kc)
		if got["certificate covers 127.0.0.1"] != doctor.Fail {
			t.Errorf("a certificate without 127.0.0.1 was not caught: %v", got)
		}

		if got["certificate covers kubernetes.default.svc"] != doctor.OK {
			t.Errorf("the tls_server_name check: %v", got)
		}

		if got["discovery credentials"] != doctor.Fail {
			t.Errorf("missing RBAC was not caught: %v", got)
		}
	})
}

// startClusterWithPKI is startCluster with a PKI made by the caller, and
// without RBAC.
func startClusterWithPKI(t *testing.T, pki *kubeharness.PKI, opts kubeharness.APIServerOptions, ips ...string) *cluster {
	t.Helper()
	kubeharness.RequireNetns(t, ips...)

	c := &cluster{pki: pki}
	opts.PKI = pki
	c.etcd = kubeharness.StartEtcd(t, "")
	c.servers = kubeharness.StartAPIServers(t, c.etcd, opts, ips...)
	c.admin = pki.AdminClient(c.servers[0].URL())

	return c
}

// sniRouter is a TLS-passthrough front end on loopback that routes by the
// server name in the ClientHello, as SNI-routing load balancers do: a name
// in routes goes to its backend, any other name, or none, to fallback. The
// bytes are passed on untouched; it never terminates TLS.
func sniRouter(t *testing.T, addr string, routes map[string]string, fallback string) string {
	t.Helper()

	ln, err := net.Listen("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}

	return serveConns(t, ln, func(c net.Conn) { routeByName(c, routes, fallback) })
}

// serveConns hands every connection ln accepts to handle, in its own
// goroutine, until the test ends; it returns ln's address.
func serveConns(t *testing.T, ln net.Listener, handle func(net.Conn)) string {
	t.Helper()

	t.Cleanup(func() { ln.Close() })

	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}

			go handle(c)
		}
	}()

	return ln.Addr().String()
}

var errPeeked = errors.New("peeked")

func routeByName(c net.Conn, routes map[string]string, fallback string) {
	defer c.Close()

	_ = c.SetDeadline(time.Now().Add(5 * time.Second))

	// Read the ClientHello through a TLS server that stops as soon as it
	// has parsed it; what it read is kept to be replayed.
	var (
		seen bytes.Buffer
		name string
	)

	_ = tls.Server(peekConn{r: io.TeeReader(c, &seen), Conn: c}, &tls.Config{
		GetConfigForClient: func(h *tls.ClientHelloInfo) (*tls.Config, error) {
			name = h.ServerName

			return nil, errPeeked
		},
	}).Handshake()

	backend, ok := routes[name]
	if !ok {
		backend = fallback
	}

	b, err := net.DialTimeout("tcp", backend, 2*time.Second)
	if err != nil {
		return
	}
	defer b.Close()

	_ = c.SetDeadline(time.Time{})

	if _, err := b.Write(seen.Bytes()); err != nil {
		return
	}

	go func() { _, _ = io.Copy(c, b); c.Close() }()

	_, _ = io.Copy(b, c)
}

// peekConn reads through r and discards writes (the alert the peeking
// server would send).
type peekConn struct {
	net.Conn
	r io.Reader
}

func (p peekConn) Read(b []byte) (int, error)  { return p.r.Read(b) }
func (p peekConn) Write(b []byte) (int, error) { return len(b), nil }

// otherTLS is the front end's default backend: a TLS server with a
// certificate for something else.
func otherTLS(t *testing.T, pki *kubeharness.PKI, addr string) string {
	t.Helper()

	pair, err := pki.IssueServingCert("ingress", kubeharness.SANs{DNSNames: []string{"*.apps.example"}})
	if err != nil {
		t.Fatal(err)
	}

	cert, err := tls.LoadX509KeyPair(pair.CertFile, pair.KeyFile)
	if err != nil {
		t.Fatal(err)
	}

	ln, err := tls.Listen("tcp", addr, &tls.Config{Certificates: []tls.Certificate{cert}, MinVersion: tls.VersionTLS12})
	if err != nil {
		t.Fatal(err)
	}

	return serveConns(t, ln, func(c net.Conn) {
		defer c.Close()
		_ = c.(*tls.Conn).Handshake()
		_, _ = io.Copy(io.Discard, c)
	})
}

// TestDoctorSNI: one upstream is a real API server, the other the same API
// server behind an SNI-routing front end that knows only "kubernetes" and
// "kubernetes.default.svc". A kubelet pointed at https://127.0.0.1:7445
// without tls-server-name sends no SNI, lands on the front end's default
// backend and fails; doctor says so per upstream and what to set.
func TestDoctorSNI(t *testing.T) {
	c := startCluster(t, kubeharness.APIServerOptions{}, false, kubeharness.IPv4Addr1)
	direct := addr(kubeharness.IPv4Addr1)
	other := otherTLS(t, c.pki, "127.0.9.2:0")
	router := sniRouter(t, "127.0.9.1:0", map[string]string{"kubernetes": direct, "kubernetes.default.svc": direct}, other)

	pool := x509.NewCertPool()
	pool.AppendCertsFromPEM(c.pki.CAPEM)

	run := func(tlsServerName string) map[string]doctor.Result {
		t.Helper()

		kubelet := filepath.Join(t.TempDir(), "kubelet.conf")
		if err := c.pki.UserKubeconfig(kubelet, "https://127.0.0.1:7445", c.pki.Node, tlsServerName); err != nil {
			t.Fatal(err)
		}

		cfg := config.Default()
		cfg.Endpoints = []string{router, direct}
		cfg.EnableDiscovery = false

		var out bytes.Buffer

		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()

		results := doctor.Run(ctx, &out, doctor.Options{Config: cfg, Proxy: "127.0.9.3:7445", KubeletKubeconfig: kubelet, RootCAs: pool})
		t.Logf("doctor, kubelet tls-server-name %q:\n%s", tlsServerName, out.String())

		byCheck := map[string]doctor.Result{}
		for _, r := range results {
			byCheck[r.Check] = r
		}

		return byCheck
	}

	got := run("")
	viaRouter, viaDirect := got["SNI "+router], got["SNI "+direct]

	if viaDirect.Verdict != doctor.OK {
		t.Errorf("the API server itself: %s %s", viaDirect.Verdict, viaDirect.Detail)
	}

	if viaRouter.Verdict != doctor.Fail {
		t.Fatalf("the trap was not caught: %s %s", viaRouter.Verdict, viaRouter.Detail)
	}

	for _, want := range []string{
		"kubelet (sends (no SNI), checks 127.0.0.1): certificate",
		"certificate covers: *.apps.example",
		"discovery (sends kubernetes.default.svc, checks kubernetes.default.svc): ok",
	} {
		if !containsLoosely(viaRouter.Detail, want) {
			t.Errorf("detail lacks %q:\n%s", want, viaRouter.Detail)
		}
	}

	// Which SNI reached which certificate: the routed names the API
	// server's, the others the default backend's.
	apiserverCert, otherCert := certLine(t, viaRouter.Detail, "kubernetes"), certLine(t, viaRouter.Detail, "(no SNI)")
	if apiserverCert == otherCert || certLine(t, viaRouter.Detail, "localhost") != otherCert ||
		certLine(t, viaDirect.Detail, "(no SNI)") != apiserverCert {
		t.Errorf("certificates by SNI: kubernetes %s, none %s\nrouter:\n%s\ndirect:\n%s", apiserverCert, otherCert, viaRouter.Detail, viaDirect.Detail)
	}

	if !strings.Contains(viaRouter.Fix, `"kubernetes.default.svc"`) || !strings.Contains(viaRouter.Fix, "tls-server-name in") {
		t.Errorf("fix: %q", viaRouter.Fix)
	}

	// With the server name set as doctor says, both upstreams are fine.
	got = run("kubernetes.default.svc")
	if r := got["SNI "+router]; r.Verdict != doctor.OK {
		t.Errorf("with tls-server-name set: %s %s", r.Verdict, r.Detail)
	}
}

// certLine returns the certificate id an SNI reached, from doctor's detail.
func certLine(t *testing.T, detail, sni string) string {
	t.Helper()

	for _, line := range strings.Split(detail, "\n") {
		if rest, ok := strings.CutPrefix(strings.TrimSpace(line), sni+" -> certificate "); ok {
			return strings.Fields(rest)[0]
		}
	}

	t.Fatalf("no %q line in:\n%s", sni, detail)

	return ""
}

// containsLoosely: want's parts around "certificate " + an id.
func containsLoosely(detail, want string) bool {
	before, after, found := strings.Cut(want, "certificate ")
	if !found {
		return strings.Contains(detail, want)
	}

	for _, line := range strings.Split(detail, "\n") {
		line = strings.TrimSpace(line)
		if i := strings.Index(line, before+"certificate "); i >= 0 && strings.Contains(line[i:], strings.TrimSpace(after)) {
			return true
		}
	}

	return false
}
