// Package discovery keeps the upstream set current from the cluster: it
// watches the `kubernetes` EndpointSlice in `default`, which every API
// server keeps up to date with the live API servers, turns it into
// host:port upstreams, and persists the last set it saw.
package discovery

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strconv"

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

// FromSlice returns the upstreams of an EndpointSlice: every address of every
// endpoint that is ready (and not terminating, where that condition is
// present), on the port named "https", sorted and without duplicates.
func FromSlice(s *discoveryv1.EndpointSlice) ([]string, error) {
	if s == nil {
		return nil, fmt.Errorf("%w: nil", ErrBadSlice)
	}

	family, err := addressFamily(s.AddressType)
	if err != nil {
		return nil, err
	}

	port, err := httpsPort(s.Ports)
	if err != nil {
		return nil, err
	}

	var out []string

	for _, ep := range s.Endpoints {
		if !usable(ep.Conditions) {
			continue
		}

		for _, a := range ep.Addresses {
			ip, err := netip.ParseAddr(a)
			if err != nil || ip.Is4() != (family == discoveryv1.AddressTypeIPv4) || ip.Zone() != "" {
				return nil, fmt.Errorf("%w: address %q is not an %s address", ErrBadSlice, a, family)
			}

			out = append(out, net.JoinHostPort(ip.Unmap().String(), strconv.Itoa(port)))
		}
	}

	slices.Sort(out)

	return slices.Compact(out), nil
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
