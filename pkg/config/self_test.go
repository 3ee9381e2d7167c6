package config

import (
	"net/netip"
	"testing"
)

func TestPointsAt(t *testing.T) {
	t.Parallel()

	for _, tc := range []struct {
		listen, endpoint string
		want             bool
	}{
		{"127.0.0.1:7445", "127.0.0.1:7445", true},
		{"127.0.0.1:7445", "127.0.0.1:6443", false},
		{"127.0.0.1:7445", "127.0.0.2:7445", false}, // another loopback address: another socket
		{"127.0.0.1:7445", "0.0.0.0:7445", true},    // Linux connects 0.0.0.0 to 127.0.0.1
		{"127.0.0.1:7445", "[::ffff:127.0.0.1]:7445", true},
		{"127.0.0.1:7445", "[::1]:7445", false},
		{"127.0.0.1:7445", "[::]:7445", false},
		{"127.0.0.1:7445", "localhost:7445", true},
		{"127.0.0.1:7445", "LocalHost.:7445", true},
		{"127.0.0.1:7445", "api.localhost:7445", true},
		{"127.0.0.1:7445", "node1:7445", false}, // names are not resolved
		{"127.0.0.2:7445", "0.0.0.0:7445", false},
		{"[::1]:7445", "[::]:7445", true},
		{"[::1]:7445", "localhost:7445", true},
		{"[::1]:7445", "127.0.0.1:7445", false},
		{"0.0.0.0:7445", "127.0.0.9:7445", true},
		{"0.0.0.0:7445", "0.0.0.0:7445", true},
		{"0.0.0.0:7445", "[::1]:7445", false}, // an IPv4 wildcard takes no IPv6
		{"0.0.0.0:7445", "10.0.0.1:7445", false},
		{"[::]:7445", "[::1]:7445", true},
		{"[::]:7445", "127.0.0.1:7445", true}, // dual stack
		{"[::]:7445", "[fe80::1%eth0]:7445", false},
		{"10.0.0.5:7445", "10.0.0.5:7445", true},
		{"10.0.0.5:7445", "[::ffff:10.0.0.5]:7445", true},
		{"10.0.0.5:7445", "127.0.0.1:7445", false},
		{"127.0.0.1:7445", "garbage", false},
	} {
		if got := PointsAt(netip.MustParseAddrPort(tc.listen), tc.endpoint); got != tc.want {
			t.Errorf("PointsAt(%s, %s) = %v, want %v", tc.listen, tc.endpoint, got, tc.want)
		}
	}
}
