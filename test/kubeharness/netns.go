package kubeharness

import (
	"net"
	"testing"
)

// Addresses that hack/netns-run.sh puts on the loopback interface of the
// private network namespace. TEST-NET-2 (RFC 5737) and a ULA prefix: they are
// never routed anywhere, and kube-apiserver accepts them as endpoint addresses
// whereas it rejects 127.0.0.0/8.
const (
	IPv4Addr1 = "198.51.100.1"
	IPv4Addr2 = "198.51.100.2"
	IPv4Addr3 = "198.51.100.3"

	// The IPv6 addresses are added only when the kernel allows IPv6 in the
	// namespace; see RequireNetns.
	IPv6Addr1 = "fd00:198:51:100::1"
	IPv6Addr2 = "fd00:198:51:100::2"
	IPv6Addr3 = "fd00:198:51:100::3"
)

// RequireNetns fails the test unless every given address (IPv4Addr1 when none
// is given) is assigned to a local interface. It fails rather than skips: a
// silently skipped integration suite looks exactly like a passing one.
func RequireNetns(t testing.TB, addrs ...string) {
	t.Helper()

	if len(addrs) == 0 {
		addrs = []string{IPv4Addr1}
	}

	local, err := localAddrs()
	if err != nil {
		t.Fatalf("kubeharness: list local addresses: %v", err)
	}

	for _, a := range addrs {
		ip := net.ParseIP(a)
		if ip == nil {
			t.Fatalf("kubeharness: RequireNetns: %q is not an IP address", a)
		}

		if !local[ip.String()] {
			t.Fatalf("kubeharness: %s is not a local address; run the test binary inside the test "+
				"network namespace: go test -c -tags integration -o /tmp/x.test ./<pkg> && "+
				"hack/netns-run.sh /tmp/x.test -test.v", a)
		}
	}
}

func localAddrs() (map[string]bool, error) {
	addrs, err := net.InterfaceAddrs()
	if err != nil {
		return nil, err
	}

	local := make(map[string]bool, len(addrs))

	for _, a := range addrs {
		if n, ok := a.(*net.IPNet); ok {
			local[n.IP.String()] = true
		}
	}

	return local, nil
}
