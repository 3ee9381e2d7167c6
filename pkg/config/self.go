package config

import (
	"net"
	"net/netip"
	"strconv"
	"strings"
)

// PointsAt reports whether a connection to endpoint (host:port) would reach
// a listener bound to listen, so that the proxy would connect to itself.
//
// Only what is certain without the network is recognised: the listener's
// own address; with a wildcard listener, every loopback address (and, for
// "::", IPv4 ones too); the unspecified address, which Linux connects to
// loopback; and the names localhost and *.localhost, which always mean
// loopback (RFC 6761). Other host names are not resolved: validation must
// not depend on DNS, which at boot may be reachable only through this very
// proxy. Which addresses belong to this host's interfaces is not known
// here; the daemon checks those at run time.
func PointsAt(listen netip.AddrPort, endpoint string) bool {
	host, portText, err := net.SplitHostPort(endpoint)
	if err != nil {
		return false
	}

	if port, err := strconv.Atoi(portText); err != nil || port != int(listen.Port()) {
		return false
	}

	l := listen.Addr().Unmap()

	if isLocalhost(host) {
		return l.IsLoopback() || l.IsUnspecified()
	}

	ip, err := netip.ParseAddr(host)
	if err != nil {
		return false
	}

	return Reaches(l, ip)
}

// Reaches reports whether a connection to ip reaches a listener bound to
// the address l, by what the kernel does alone (see PointsAt).
func Reaches(l, ip netip.Addr) bool {
	l, ip = l.Unmap(), ip.Unmap()

	switch {
	case ip.Zone() != "":
		return false
	case ip == l:
		return true
	case l.IsUnspecified():
		if l.Is4() && !ip.Is4() {
			return false
		}

		return ip.IsLoopback() || ip.IsUnspecified()
	case ip.IsUnspecified():
		return ip.Is4() == l.Is4() && l == loopbackOf(l)
	default:
		return false
	}
}

func loopbackOf(a netip.Addr) netip.Addr {
	if a.Is4() {
		return netip.AddrFrom4([4]byte{127, 0, 0, 1})
	}

	return netip.IPv6Loopback()
}

func isLocalhost(host string) bool {
	h := strings.ToLower(strings.TrimSuffix(host, "."))

	return h == "localhost" || strings.HasSuffix(h, ".localhost")
}
