package discovery

import (
	"errors"
	"fmt"
	"net/netip"
)

// DefaultMax is the default cap on the discovered set (max_discovered).
const DefaultMax = 64

// ErrTooMany marks a slice (or cache) with more usable upstreams than the
// cap. It wraps ErrBadSlice: such a slice is ignored, never truncated, so
// that whatever made it cannot choose which API servers are kept.
var ErrTooMany = fmt.Errorf("%w: more upstreams than max_discovered", ErrBadSlice)

// ErrUnusable marks an address that cannot be an API server upstream.
var ErrUnusable = errors.New("not an API server address")

// Limits bound what the cluster, through the EndpointSlice, and the cache
// file may put into the upstream set.
type Limits struct {
	// Max is the most upstreams taken; 0 means DefaultMax.
	Max int
	// Self reports the proxy's own listening addresses, which are dropped:
	// the proxy would connect to itself. Nil drops none.
	Self func(netip.AddrPort) bool
}

func (l Limits) max() int {
	if l.Max <= 0 {
		return DefaultMax
	}

	return l.Max
}

// Check returns why ap cannot be an upstream (wrapping ErrUnusable), or nil:
// the unspecified address, loopback (an API server never publishes it: the
// API rejects it), link-local (169.254.169.254 is a cloud metadata service),
// multicast, broadcast, a zone, port 0, or the proxy's own address.
func (l Limits) Check(ap netip.AddrPort) error {
	ip := ap.Addr()

	var why string

	switch {
	case !ip.IsValid():
		why = "invalid"
	case ip.Zone() != "":
		why = "has a zone"
	case ap.Port() == 0:
		why = "port 0"
	case ip.IsUnspecified():
		why = "unspecified"
	case ip.IsLoopback():
		why = "loopback"
	case ip.IsLinkLocalUnicast():
		why = "link-local"
	case ip.IsMulticast():
		why = "multicast"
	case ip == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "broadcast"
	case l.Self != nil && l.Self(ap):
		why = "this proxy's own listener"
	default:
		return nil
	}

	return fmt.Errorf("%w: %s is %s", ErrUnusable, ap, why)
}
