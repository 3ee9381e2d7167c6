//go:build integration

package integration

import (
	"bytes"
	"context"
	"path/filepath"
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
