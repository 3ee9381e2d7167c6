package kubeharness

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"
)

const (
	// DefaultAPIServerPort is used by every apiserver: the "kubernetes"
	// EndpointSlice carries a single port, written by whichever apiserver
	// reconciles last, so differing ports would make it flap.
	DefaultAPIServerPort = 6443

	defaultServiceCIDR = "10.0.0.0/24"
	defaultServiceIP   = "10.0.0.1"

	apiserverStartTimeout = 90 * time.Second
	// apiserverStopGrace covers a normal graceful exit (1-4 s) with room
	// for a loaded CI machine.
	apiserverStopGrace = 30 * time.Second
	readyzPollInterval = 100 * time.Millisecond
)

// APIServerOptions configure StartAPIServer. Only PKI is required.
type APIServerOptions struct {
	PKI *PKI
	// Serving overrides PKI.Serving, e.g. with a certificate lacking a SAN.
	Serving *CertPair
	// Port defaults to DefaultAPIServerPort.
	Port int
	// NoEndpointSliceWatchCache serves EndpointSlice watches straight from
	// etcd. Only then does Etcd.Compact make a watch from an older
	// resourceVersion fail with 410 Gone at once: the default watch cache
	// keeps serving compacted resourceVersions from memory (checked on
	// v1.36.3), until the apiserver restarts.
	NoEndpointSliceWatchCache bool
	// ExtraArgs are appended to the command line; later flags win.
	ExtraArgs []string
}

// APIServer is one kube-apiserver process bound to a single address.
type APIServer struct {
	IP   string
	Port int

	proc *process
	pki  *PKI
}

// StartAPIServer starts kube-apiserver on ip (bind and advertise address)
// against etcd and waits until /readyz answers "ok" and the "kubernetes"
// Service exists. It is stopped at the end of the test, before etcd.
//
// The process runs in its own UTS namespace with host name
// "kubeharness-<ip>", so each apiserver has its own identity lease.
func StartAPIServer(t testing.TB, etcd *Etcd, ip string, opts APIServerOptions) *APIServer {
	t.Helper()

	a, err := newAPIServer(BinDir(t), t.TempDir(), etcd, ip, opts)
	if err != nil {
		t.Fatalf("kubeharness: %v", err)
	}

	etcd.attach(t, a)
	a.proc.dumpLogOnFailure(t)
	// Stops this test's other apiservers too, concurrently; their own
	// cleanups then find nothing left to do.
	t.Cleanup(func() { etcd.cleanupAPIServersOf(t) })

	start := time.Now()
	if err := a.start(); err != nil {
		t.Fatalf("kubeharness: %v", err)
	}

	t.Logf("kubeharness: apiserver %s ready after %v", a.URL(), time.Since(start).Round(time.Millisecond))

	return a
}

// StartAPIServers starts one apiserver per ip and waits until all are ready.
// All but the first start concurrently, which is faster than one after
// another: most of the start-up is waiting on etcd and post-start hooks.
func StartAPIServers(t testing.TB, etcd *Etcd, opts APIServerOptions, ips ...string) []*APIServer {
	t.Helper()

	bin := BinDir(t)
	servers := make([]*APIServer, len(ips))

	for i, ip := range ips {
		a, err := newAPIServer(bin, t.TempDir(), etcd, ip, opts)
		if err != nil {
			t.Fatalf("kubeharness: %v", err)
		}

		servers[i] = a
		etcd.attach(t, a)
		a.proc.dumpLogOnFailure(t)
	}

	t.Cleanup(func() { etcd.cleanupAPIServersOf(t) })

	start := time.Now()

	// The first one alone: it creates the "kubernetes" Service, which the
	// others must not race for (see start).
	if err := startConcurrently(servers[:min(1, len(servers))]); err != nil {
		t.Fatalf("kubeharness: %v", err)
	}

	if err := startConcurrently(servers[min(1, len(servers)):]); err != nil {
		t.Fatalf("kubeharness: %v", err)
	}

	t.Logf("kubeharness: %d apiservers ready after %v", len(servers), time.Since(start).Round(time.Millisecond))

	return servers
}

func newAPIServer(bin, dir string, etcd *Etcd, ip string, opts APIServerOptions) (*APIServer, error) {
	if opts.PKI == nil {
		return nil, errors.New("StartAPIServer: APIServerOptions.PKI is required")
	}

	if net.ParseIP(ip) == nil {
		return nil, fmt.Errorf("StartAPIServer: %q is not an IP address", ip)
	}

	if opts.Port == 0 {
		opts.Port = DefaultAPIServerPort
	}

	a := &APIServer{IP: ip, Port: opts.Port, pki: opts.PKI}
	a.proc = &process{
		name:     "kube-apiserver " + ip,
		bin:      filepath.Join(bin, "kube-apiserver"),
		args:     apiserverArgs(etcd, ip, dir, opts),
		logPath:  filepath.Join(dir, "kube-apiserver.log"),
		hostname: "kubeharness-" + strings.ReplaceAll(ip, ":", "-"),
	}

	return a, nil
}

func apiserverArgs(etcd *Etcd, ip, dir string, opts APIServerOptions) []string {
	p := opts.PKI

	serving := p.Serving
	if opts.Serving != nil {
		serving = *opts.Serving
	}

	args := []string{
		"--etcd-servers=" + etcd.ClientURL,
		"--bind-address=" + ip,
		"--advertise-address=" + ip,
		"--secure-port=" + strconv.Itoa(opts.Port),
		"--tls-cert-file=" + serving.CertFile,
		"--tls-private-key-file=" + serving.KeyFile,
		"--client-ca-file=" + p.CACertFile,
		"--token-auth-file=" + p.TokenFile,
		"--service-account-issuer=https://kubernetes.default.svc",
		"--service-account-key-file=" + p.SAPublicKeyFile,
		"--service-account-signing-key-file=" + p.SAKeyFile,
		"--service-cluster-ip-range=" + defaultServiceCIDR,
		"--authorization-mode=RBAC",
		// The lease reconciler is what real multi-apiserver clusters use: each
		// apiserver keeps a TTL lease and the slice lists all live ones.
		"--endpoint-reconciler-type=lease",
		"--cert-dir=" + filepath.Join(dir, "certs"),
	}

	if opts.NoEndpointSliceWatchCache {
		args = append(args, "--watch-cache-sizes=endpointslices.discovery.k8s.io#0")
	}

	return append(args, opts.ExtraArgs...)
}

// URL is the apiserver's base URL, e.g. https://198.51.100.1:6443.
func (a *APIServer) URL() string {
	return "https://" + net.JoinHostPort(a.IP, strconv.Itoa(a.Port))
}

// Running reports whether the process is alive.
func (a *APIServer) Running() bool { return a.proc.running() }

// LogPath is the file the API server's output goes to.
func (a *APIServer) LogPath() string { return a.proc.logPath }

// PID is the kube-apiserver's process ID (0 before it started), e.g. to read
// its CPU time from /proc.
func (a *APIServer) PID() int { return a.proc.pid() }

// Terminate sends SIGTERM and returns at once. The apiserver drops out of the
// "kubernetes" EndpointSlice within ~0.1 s but exits only ~3 s later, so tests
// timing the removal should use this, then Wait.
func (a *APIServer) Terminate() error { return a.proc.signal(syscall.SIGTERM) }

// Wait waits up to timeout for the process to exit.
func (a *APIServer) Wait(timeout time.Duration) error { return a.proc.wait(timeout) }

// Stop shuts the apiserver down gracefully (SIGTERM) and waits for it to exit.
// Stopping a stopped apiserver is a no-op.
func (a *APIServer) Stop() error { return a.proc.stop(apiserverStopGrace) }

// Kill SIGKILLs the apiserver, like a crash: its lease stays in etcd and its
// address leaves the slice only after the lease expires (up to ~25 s).
func (a *APIServer) Kill() error { return a.proc.kill() }

// Pause SIGSTOPs the apiserver: a hung API server, which still accepts TCP
// connections (the kernel completes the handshake) and answers nothing.
func (a *APIServer) Pause() error { return a.proc.pause() }

// Resume SIGCONTs a paused apiserver.
func (a *APIServer) Resume() error { return a.proc.resume() }

// Restart stops the apiserver if it is running and starts it again with the
// same flags, waiting for /readyz.
func (a *APIServer) Restart() error {
	if err := a.Stop(); err != nil {
		return err
	}

	return a.start()
}

func (a *APIServer) start() error {
	if err := a.proc.start(); err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), apiserverStartTimeout)
	defer cancel()

	client := readyzClient(a.pki)
	for _, probe := range []func(context.Context) (bool, string, error){
		a.probe(client, "/readyz", ""),
		// The first apiserver creates the "kubernetes" Service shortly after
		// /readyz. An apiserver starting before it exists races to create it;
		// the loser skips publishing its endpoints until its next 10 s
		// reconcile, which made slice assertions flaky.
		a.probe(client, "/api/v1/namespaces/default/services/kubernetes", a.pki.Admin.Token),
	} {
		if err := waitReady(ctx, a.proc, readyzPollInterval, probe); err != nil {
			return fmt.Errorf("apiserver %s: %w\n%s", a.URL(), err, a.proc.logTail(logTailLines))
		}
	}

	return nil
}

// probe succeeds on a 200 answer for path; for /readyz the body must also be
// "ok".
func (a *APIServer) probe(client *http.Client, path, token string) func(context.Context) (bool, string, error) {
	return func(ctx context.Context) (bool, string, error) {
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, a.URL()+path, nil)
		if err != nil {
			return false, "", fmt.Errorf("build %s request: %w", path, err)
		}

		if token != "" {
			req.Header.Set("Authorization", "Bearer "+token)
		}

		resp, err := client.Do(req)
		if err != nil {
			return false, err.Error(), nil
		}
		defer resp.Body.Close()

		body, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		ok := resp.StatusCode == http.StatusOK && (path != "/readyz" || string(body) == "ok")

		return ok, path + ": " + resp.Status + ": " + string(body), nil
	}
}

// readyzClient verifies the serving certificate against the CA but not the
// host name: readiness must not depend on the SANs, since some tests start
// apiservers with deliberately incomplete certificates.
func readyzClient(p *PKI) *http.Client {
	roots := x509.NewCertPool()
	roots.AddCert(p.ca)

	return &http.Client{
		Timeout: 2 * time.Second,
		Transport: &http.Transport{TLSClientConfig: &tls.Config{
			MinVersion:         tls.VersionTLS12,
			InsecureSkipVerify: true, //nolint:gosec // the chain is verified below, only the name is not
			VerifyConnection:   verifyChainOnly(roots),
		}},
	}
}

func verifyChainOnly(roots *x509.CertPool) func(tls.ConnectionState) error {
	return func(cs tls.ConnectionState) error {
		if len(cs.PeerCertificates) == 0 {
			return errors.New("no server certificate")
		}

		inter := x509.NewCertPool()
		for _, c := range cs.PeerCertificates[1:] {
			inter.AddCert(c)
		}

		_, err := cs.PeerCertificates[0].Verify(x509.VerifyOptions{Roots: roots, Intermediates: inter})
		if err != nil {
			return fmt.Errorf("verify apiserver certificate: %w", err)
		}

		return nil
	}
}

func startConcurrently(servers []*APIServer) error {
	errs := make([]error, len(servers))

	var wg sync.WaitGroup
	for i, a := range servers {
		wg.Go(func() { errs[i] = a.start() })
	}

	wg.Wait()

	return errors.Join(errs...)
}

// stopAll stops the apiservers concurrently: each graceful stop takes ~3 s.
func stopAll(servers []*APIServer) error {
	errs := make([]error, len(servers))

	var wg sync.WaitGroup

	for i, a := range servers {
		wg.Go(func() { errs[i] = a.Stop() })
	}

	wg.Wait()

	return errors.Join(errs...)
}
