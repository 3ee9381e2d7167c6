//go:build integration

package integration

import (
	"slices"
	"testing"
	"time"

	"github.com/lexfrei/extractedprism/pkg/config"
	"github.com/lexfrei/extractedprism/test/kubeharness"
)

// An IPv6-only control plane: the API servers publish an IPv6 slice, the
// daemon listens on ::1 and discovers them through itself, and HTTPS
// traffic reaches each of them through the proxy.
func TestIPv6Discovery(t *testing.T) {
	ips := []string{kubeharness.IPv6Addr1, kubeharness.IPv6Addr2, kubeharness.IPv6Addr3}
	// The service range must be of the family the API servers advertise.
	c := startCluster(t, kubeharness.APIServerOptions{ExtraArgs: []string{"--service-cluster-ip-range=fd00:10::/108"}}, true, ips...)

	s, err := c.admin.KubernetesEndpointSlice(t.Context())
	if err != nil {
		t.Fatal(err)
	}

	if s.AddressType != "IPv6" {
		t.Fatalf("the API servers published an %s slice, want IPv6", s.AddressType)
	}

	want := []string{addr(ips[0]), addr(ips[1]), addr(ips[2])} // [fd00:...]:6443, sorted
	r := startDaemon(t, want[0], func(cfg *config.Config) {
		cfg.Kubeconfig = c.kubeconfig(t)
		cfg.BindAddress = "::1"
	})

	eventually(t, 30*time.Second, "the three IPv6 API servers discovered", func() bool {
		return slices.Equal(r.addresses(), want)
	})

	if d := r.d.Status().Discovery; d != "watching (3 endpoints)" {
		t.Fatalf("discovery state %q", d)
	}

	if got := r.upstreams()[want[2]].Sources; !slices.Equal(got, []string{"discovery"}) {
		t.Fatalf("%s sources %v, want discovery", want[2], got)
	}

	client := c.httpsClient(t)
	proxy := r.d.ProxyAddr().String()

	for i := range 30 {
		if body, err := readyz(client, proxy); err != nil || body != "ok" {
			t.Fatalf("request %d through the proxy on %s: %q, %v", i, proxy, body, err)
		}
	}

	for _, a := range want {
		if n := r.upstreams()[a].TotalConnections; n == 0 {
			t.Errorf("%s received no connection", a)
		}
	}
}
