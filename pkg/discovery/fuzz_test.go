package discovery

import (
	"encoding/json"
	"errors"
	"net"
	"net/netip"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// Whatever a slice holds, the conversion never panics and either rejects it
// as ErrBadSlice or returns valid, sorted, unique host:port upstreams, no
// more than the cap, each one an address an API server can have.
func FuzzFromSlice(f *testing.F) {
	for _, seed := range []string{
		`{"addressType":"IPv4","ports":[{"name":"https","port":6443}],"endpoints":[{"addresses":["10.0.0.1"],"conditions":{"ready":true}}]}`,
		`{"addressType":"IPv6","ports":[{"name":"https","port":443}],"endpoints":[{"addresses":["fd00::1","fd00::1"]}]}`,
		`{"addressType":"IPv4","ports":[{"name":"https","port":70000}],"endpoints":[{"addresses":["10.0.0.1"]}]}`,
		`{"addressType":"FQDN","ports":[{"name":"https","port":6443}],"endpoints":[{"addresses":["a.example"]}]}`,
		`{"addressType":"IPv4","endpoints":[{"addresses":["::ffff:10.0.0.1"],"conditions":{"terminating":true}}]}`,
		`{}`,
		`{"addressType":"IPv4","ports":[{"name":"https","port":6443}],"endpoints":[{"addresses":["127.0.0.1","169.254.169.254","224.0.0.1","10.0.0.2"]}]}`,
		`{"addressType":"IPv6","ports":[{"name":"https","port":6443}],"endpoints":[{"addresses":["::ffff:10.0.0.1","fe80::1","::"]}]}`,
	} {
		f.Add([]byte(seed))
	}

	f.Fuzz(func(t *testing.T, data []byte) {
		var s discoveryv1.EndpointSlice
		if json.Unmarshal(data, &s) != nil {
			return
		}

		got, err := FromSlice(&s)
		if len(got) > DefaultMax {
			t.Fatalf("%d upstreams, more than the cap %d", len(got), DefaultMax)
		}

		if err != nil {
			if !errors.Is(err, ErrBadSlice) {
				t.Fatalf("error without ErrBadSlice: %v", err)
			}

			return
		}

		for i, a := range got {
			host, port, err := net.SplitHostPort(a)
			if err != nil || net.ParseIP(host) == nil || port == "" || port == "0" {
				t.Fatalf("invalid upstream %q", a)
			}

			if i > 0 && got[i-1] >= a {
				t.Fatalf("not sorted and unique: %v", got)
			}

			if err := (Limits{}).Check(netip.MustParseAddrPort(a)); err != nil {
				t.Fatalf("unusable upstream: %v", err)
			}
		}
	})
}
