// Package discovery keeps the upstream set current from the cluster: it
// watches the `kubernetes` EndpointSlice in `default`, which every API
// server keeps up to date with the live API servers, turns it into
// host:port upstreams, and persists the last set it saw.
package discovery

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"

	discoveryv1 "k8s.io/api/discovery/v1"
)

// The slice the API servers publish about themselves.
const (
	Namespace = "default"
	SliceName = "kubernetes"
	PortName  = "https"
)

// ErrBadSlice marks a slice that cannot be turned into upstreams. Such a
// slice is ignored: it never replaces a good set.
var ErrBadSlice = errors.New("unusable EndpointSlice")

// FromSlice is Limits{}.FromSlice, without the dropped addresses.
func FromSlice(s *discoveryv1.EndpointSlice) ([]string, error) {
	out, _, err := Limits{}.FromSlice(s)

	return out, err
}

// FromSlice returns the upstreams of an EndpointSlice: every address of
// every endpoint that is ready (and not terminating, where that condition
// is present), on the port named "https", sorted and without duplicates.
//
// Addresses that fail Check are left out and returned as dropped. A slice
// whose addresses are not all of its address family (IPv4-mapped IPv6
// included: it is IPv4) is malformed and rejected whole, as is one with no
// usable address left or with more than Max: the caller keeps its last good
// set. Counting stops at Max + 1, so a huge slice costs no more than that.
func (l Limits) FromSlice(s *discoveryv1.EndpointSlice) (upstreams []string, dropped []error, err error) {
	if s == nil {
		return nil, nil, fmt.Errorf("%w: nil", ErrBadSlice)
	}

	family, err := addressFamily(s.AddressType)
	if err != nil {
		return nil, nil, err
	}

	port, err := httpsPort(s.Ports)
	if err != nil {
		return nil, nil, err
	}

	limit := l.max()
	seen := make(map[netip.AddrPort]struct{}, min(limit, 16))

	for _, ep := range s.Endpoints {
		if !usable(ep.Conditions) {
			continue
		}

		for _, a := range ep.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil || ip.Is4() != (family == discoveryv1.AddressTypeIPv4) || ip.Is4In6() || ip.Zone() != "" {
				return nil, nil, fmt.Errorf("%w: address %q is not an %s address", ErrBadSlice, a, family)
			}

			ap := netip.AddrPortFrom(ip, uint16(port)) //nolint:gosec // httpsPort checked the range
			if err := l.Check(ap); err != nil {
				dropped = append(dropped, err)

				continue
			}

			seen[ap] = struct{}{}
			if len(seen) > limit {
				return nil, dropped, fmt.Errorf("%w (more than %d)", ErrTooMany, limit)
			}
		}
	}

	if len(seen) == 0 && len(dropped) > 0 {
		return nil, dropped, fmt.Errorf("%w: no usable address (%d dropped)", ErrBadSlice, len(dropped))
	}

	out := make([]string, 0, len(seen))
	for ap := range seen {
		out = append(out, ap.String())
	}

	slices.Sort(out)

	return out, dropped, nil
}

func addressFamily(t discoveryv1.AddressType) (discoveryv1.AddressType, error) {
	switch t {
	case discoveryv1.AddressTypeIPv4, discoveryv1.AddressTypeIPv6:
		return t, nil
	default:
		return "", fmt.Errorf("%w: address type %q (want IPv4 or IPv6)", ErrBadSlice, t)
	}
}

func httpsPort(ports []discoveryv1.EndpointPort) (int, error) {
	for _, p := range ports {
		if p.Name != nil && *p.Name == PortName && p.Port != nil {
			if *p.Port < 1 || *p.Port > 65535 {
				return 0, fmt.Errorf("%w: port %q is %d", ErrBadSlice, PortName, *p.Port)
			}

			return int(*p.Port), nil
		}
	}

	return 0, fmt.Errorf("%w: no port named %q", ErrBadSlice, PortName)
}

// usable follows the API's rules: an absent ready condition means ready,
// and an endpoint that is terminating takes no new connections.
func usable(c discoveryv1.EndpointConditions) bool {
	if c.Ready != nil && !*c.Ready {
		return false
	}

	return c.Terminating == nil || !*c.Terminating
}
