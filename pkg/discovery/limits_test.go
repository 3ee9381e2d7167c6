package discovery

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"testing"

	discoveryv1 "k8s.io/api/discovery/v1"
	"k8s.io/utils/ptr"
)

// What no API server can be, and the proxy's own address, are dropped one
// by one; the rest of the slice is used.
func TestSliceDropsUnusableAddresses(t *testing.T) {
	t.Parallel()

	self := netip.MustParseAddrPort("10.0.0.9:6443")
	l := Limits{Self: func(ap netip.AddrPort) bool { return ap == self }}

	v4 := slice(discoveryv1.AddressTypeIPv4, https(6443), ep(nil, nil,
		"10.0.0.1", "0.0.0.0", "127.0.0.1", "127.1.2.3", "169.254.169.254", "224.0.0.1", "239.1.1.1",
		"255.255.255.255", "10.0.0.9", "10.0.0.2"))

	got, dropped, err := l.FromSlice(v4)
	if err != nil || !slices.Equal(got, []string{"10.0.0.1:6443", "10.0.0.2:6443"}) {
		t.Fatalf("IPv4: %v, %v; want 10.0.0.1 and 10.0.0.2", got, err)
	}

	if len(dropped) != 8 {
		t.Errorf("IPv4: dropped %d addresses, want 8: %v", len(dropped), dropped)
	}

	v6 := slice(discoveryv1.AddressTypeIPv6, https(6443), ep(nil, nil, "fd00::1", "::", "::1", "fe80::1", "ff02::1", "ff05::2"))

	got, dropped, err = l.FromSlice(v6)
	if err != nil || !slices.Equal(got, []string{"[fd00::1]:6443"}) || len(dropped) != 5 {
		t.Fatalf("IPv6: %v (dropped %v), %v; want only [fd00::1]:6443", got, dropped, err)
	}
}

// A slice of nothing but unusable addresses is no set at all: the watcher
// keeps the last one (an error, not an empty set).
func TestSliceOfOnlyUnusableAddressesIsBad(t *testing.T) {
	t.Parallel()

	s := slice(discoveryv1.AddressTypeIPv4, https(6443), ep(nil, nil, "127.0.0.1", "0.0.0.0"))

	if got, _, err := (Limits{}).FromSlice(s); !errors.Is(err, ErrBadSlice) {
		t.Fatalf("FromSlice = %v, %v; want ErrBadSlice", got, err)
	}
}

// IPv4-mapped IPv6 addresses are IPv4 addresses: in an IPv6 slice they
// are a family mismatch, as an IPv4 address would be (the Kubernetes API
// rejects both), never an IPv4 upstream smuggled in.
func TestSliceRejectsIPv4MappedIPv6(t *testing.T) {
	t.Parallel()

	s := slice(discoveryv1.AddressTypeIPv6, https(6443), ep(nil, nil, "fd00::1", "::ffff:10.0.0.1"))

	if got, _, err := (Limits{}).FromSlice(s); !errors.Is(err, ErrBadSlice) {
		t.Fatalf("FromSlice = %v, %v; want ErrBadSlice", got, err)
	}
}

// More usable addresses than Max: the slice is ignored (the last set
// stays), and the conversion stops counting at the cap instead of parsing
// the rest.
func TestSliceOverTheCap(t *testing.T) {
	t.Parallel()

	addrs := make([]string, 0, 100_000)
	for i := range 100_000 {
		addrs = append(addrs, fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255+1))
	}

	// Past the cap, garbage that would be a different error if it were read.
	addrs[1000] = "not-an-address"

	s := slice(discoveryv1.AddressTypeIPv4, https(6443), ep(nil, nil, addrs...))

	if got, _, err := (Limits{Max: 64}).FromSlice(s); !errors.Is(err, ErrTooMany) || !errors.Is(err, ErrBadSlice) {
		t.Fatalf("FromSlice = %d upstreams, %v; want ErrTooMany", len(got), err)
	}

	// Exactly at the cap, duplicates counted once: accepted.
	s = slice(discoveryv1.AddressTypeIPv4, https(6443), ep(nil, nil, addrs[:64]...), ep(nil, nil, addrs[:64]...))

	if got, _, err := (Limits{Max: 64}).FromSlice(s); err != nil || len(got) != 64 {
		t.Fatalf("FromSlice at the cap = %d upstreams, %v; want 64", len(got), err)
	}

	// The default cap applies when none is given.
	s = slice(discoveryv1.AddressTypeIPv4, https(6443), ep(ptr.To(true), nil, addrs[:DefaultMax+1]...))

	if _, _, err := (Limits{}).FromSlice(s); !errors.Is(err, ErrTooMany) {
		t.Fatalf("%d addresses with the default cap: %v, want ErrTooMany", DefaultMax+1, err)
	}
}

// The conversion of a slice at the cap is cheap; one far over it costs no
// more, because counting stops at the cap.
func BenchmarkFromSlice(b *testing.B) {
	for _, n := range []int{64, 30_000} {
		addrs := make([]string, n)
		for i := range addrs {
			addrs[i] = fmt.Sprintf("10.%d.%d.%d", i>>16, (i>>8)&255, i&255+1)
		}

		s := slice(discoveryv1.AddressTypeIPv4, https(6443), ep(nil, nil, addrs...))

		b.Run(fmt.Sprint(n), func(b *testing.B) {
			for b.Loop() {
				_, _, _ = (Limits{Max: 64}).FromSlice(s)
			}
		})
	}
}
