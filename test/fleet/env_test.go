//go:build integration

package fleet

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// apiIP is the one API server: all cost lands on it, and per-node costs
// scale to M API servers with the model in docs/fleet.md.
const apiIP = kubeharness.IPv4Addr1

// serverName is what the daemon checks the certificate against by default
// (tls_server_name).
const serverName = "kubernetes.default.svc"

// env is the cluster under measurement and what the probes need to reach it.
type env struct {
	s       settings
	pki     *kubeharness.PKI
	etcd    *kubeharness.Etcd
	api     *kubeharness.APIServer
	admin   *kubeharness.Client
	roots   *x509.CertPool
	certs   []kubeharness.CertPair // one client certificate per node
	work    string
	meter   *meter
	started time.Time
}

func startEnv(b *testing.B, s settings) *env {
	b.Helper()
	kubeharness.RequireNetns(b, apiIP)

	e := &env{s: s, work: b.TempDir(), started: time.Now()}

	e.pki = kubeharness.NewPKIWith(b, filepath.Join(e.work, "pki"), kubeharness.DefaultSANs(apiIP), kubeharness.PKIOptions{RSA: true})
	e.roots = x509.NewCertPool()
	e.roots.AppendCertsFromPEM(e.pki.CAPEM)
	e.certs = issueNodeCerts(b, e.pki, max(s.nodes, s.censusN))

	e.etcd = kubeharness.StartEtcd(b, "")
	e.startAPIServer(b, nil)

	return e
}

// issueNodeCerts makes one client certificate per node in the group the
// shipped RoleBinding names, as `kubeadm kubeconfig user --org
// extractedprism:nodes` does (RSA-2048 keys, so two at a time).
func issueNodeCerts(b *testing.B, p *kubeharness.PKI, n int) []kubeharness.CertPair {
	b.Helper()

	certs := make([]kubeharness.CertPair, n)

	err := inParallel(n, 2, func(i int) (err error) {
		certs[i], err = p.IssueClientCert(fmt.Sprintf("node-%d", i), fmt.Sprintf("extractedprism:node-%d", i), "extractedprism:nodes")

		return err
	})
	if err != nil {
		b.Fatal(err)
	}

	return certs
}

// startAPIServer starts the apiserver with extra flags, applies the shipped
// RBAC and points the meter at it. A running one must be stopped first.
func (e *env) startAPIServer(b *testing.B, extra []string) {
	b.Helper()

	e.api = kubeharness.StartAPIServer(b, e.etcd, apiIP, kubeharness.APIServerOptions{PKI: e.pki, ExtraArgs: extra})
	e.admin = e.pki.AdminClient(e.api.URL())

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	if _, err := e.admin.WaitForKubernetesSlice(ctx, apiIP); err != nil {
		b.Fatal(err)
	}

	manifest, err := os.ReadFile("../../packaging/kubernetes/rbac-host.yaml")
	if err != nil {
		b.Fatal(err)
	}

	if err := e.admin.Create(ctx, manifest); err != nil && !kubeharness.IsStatus(err, 409) {
		b.Fatalf("applying the shipped RBAC: %v", err)
	}

	e.meter = newMeter(b, map[string]int{"apiserver": e.api.PID(), "etcd": e.etcd.PID()})
}

// tlsConfig is how every reference client checks the API server: the CA and
// the daemon's default server name, nothing else.
func (e *env) tlsConfig() *tls.Config {
	return &tls.Config{RootCAs: e.roots, ServerName: serverName, MinVersion: tls.VersionTLS12}
}

// cert is node's client certificate. Simulated nodes beyond the daemons
// share them: the apiserver verifies each connection's certificate alike.
func (e *env) cert(node int) kubeharness.CertPair { return e.certs[node%len(e.certs)] }

func (e *env) clientCert(node int) (tls.Certificate, error) {
	c := e.cert(node)

	return tls.LoadX509KeyPair(c.CertFile, c.KeyFile)
}

func (e *env) apiAddr() string { return fmt.Sprintf("%s:%d", apiIP, kubeharness.DefaultAPIServerPort) }
