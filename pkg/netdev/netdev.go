// Package netdev puts the link-local address that pods without host
// networking reach the proxy on onto the node: a dummy interface of its
// own with one /32 address, as NodeLocal DNSCache does for DNS. A pod's
// packets to it leave through the pod's default route and arrive at the
// node, which owns the address. Needs CAP_NET_ADMIN, and only that: the
// daemon itself never does this (it binds with IP_FREEBIND and does not
// care whether the address is there yet).
package netdev

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// DefaultInterface is the interface the address is put on.
const DefaultInterface = "extractedprism0"

// ErrNotOurs means an interface of that name exists but is not one this
// package makes (a dummy, or a bridge with no ports); it is left alone.
var ErrNotOurs = errors.New("interface exists and is not a dummy or a port-less bridge")

// Result says what Ensure found and did.
type Result struct {
	Kind    string // "dummy", or "bridge" where the kernel has no dummy driver
	Created bool   // the interface was made now
	Added   bool   // the address was added now
}

// Ensure makes interface name (a dummy) with addr/32 on it and brings it
// up. It is idempotent: what is there already is kept. Where the kernel
// has no dummy driver (some minimal VM kernels), an empty bridge stands in:
// an interface that is up, has no ports and answers for its addresses just
// the same.
func Ensure(name string, addr netip.Addr) (Result, error) {
	var res Result

	link, err := netlink.LinkByName(name)

	var notFound netlink.LinkNotFoundError

	switch {
	case errors.As(err, &notFound):
		if link, res.Kind, err = create(name); err != nil {
			return res, err
		}

		res.Created = true
	case err != nil:
		return res, fmt.Errorf("looking up %s: %w", name, err)
	default:
		if res.Kind, err = ours(link); err != nil {
			return res, err
		}
	}

	res.Added, err = ensureAddr(link, addr)
	if err != nil {
		return res, err
	}

	if err := netlink.LinkSetUp(link); err != nil {
		return res, fmt.Errorf("bringing %s up: %w", name, err)
	}

	return res, nil
}

// Remove deletes interface name, with its address; absent is fine.
func Remove(name string) (bool, error) {
	link, err := netlink.LinkByName(name)

	var notFound netlink.LinkNotFoundError
	if errors.As(err, &notFound) {
		return false, nil
	}

	if err != nil {
		return false, fmt.Errorf("looking up %s: %w", name, err)
	}

	if _, err := ours(link); err != nil {
		return false, err
	}

	if err := netlink.LinkDel(link); err != nil {
		return false, fmt.Errorf("deleting %s: %w", name, err)
	}

	return true, nil
}

func create(name string) (netlink.Link, string, error) {
	attrs := netlink.NewLinkAttrs()
	attrs.Name = name

	err := netlink.LinkAdd(&netlink.Dummy{LinkAttrs: attrs})
	kind := "dummy"

	if errors.Is(err, unix.EOPNOTSUPP) {
		// "Unknown device type": no dummy driver in this kernel.
		kind = "bridge"
		err = netlink.LinkAdd(&netlink.Bridge{LinkAttrs: attrs})
	}

	if err != nil {
		return nil, "", fmt.Errorf("creating %s (%s): %w", name, kind, err)
	}

	link, err := netlink.LinkByName(name)
	if err != nil {
		return nil, "", fmt.Errorf("looking up %s: %w", name, err)
	}

	return link, kind, nil
}

// ours reports the kind of an existing interface, if it is one Ensure
// could have made.
func ours(link netlink.Link) (string, error) {
	switch link.Type() {
	case "dummy":
		return "dummy", nil
	case "bridge":
		ports, err := netlink.LinkList()
		if err != nil {
			return "", fmt.Errorf("listing interfaces: %w", err)
		}

		for _, p := range ports {
			if p.Attrs().MasterIndex == link.Attrs().Index {
				return "", fmt.Errorf("%s: a bridge with ports: %w", link.Attrs().Name, ErrNotOurs)
			}
		}

		return "bridge", nil
	default:
		return "", fmt.Errorf("%s is a %s: %w", link.Attrs().Name, link.Type(), ErrNotOurs)
	}
}

// ensureAddr puts addr/32 on link unless it is there, and reports whether
// it added it. Scope host: the kernel never picks it as the source address
// of the node's own traffic elsewhere; packets to it from pods are still
// delivered, as to any local address.
func ensureAddr(link netlink.Link, addr netip.Addr) (bool, error) {
	have, err := netlink.AddrList(link, unix.AF_INET)
	if err != nil {
		return false, fmt.Errorf("listing the addresses of %s: %w", link.Attrs().Name, err)
	}

	for _, a := range have {
		if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == addr {
			return false, nil
		}
	}

	ipnet, err := netlink.ParseIPNet(addr.String() + "/32")
	if err != nil {
		return false, fmt.Errorf("address %s: %w", addr, err)
	}

	if err := netlink.AddrAdd(link, &netlink.Addr{IPNet: ipnet, Scope: unix.RT_SCOPE_HOST}); err != nil {
		return false, fmt.Errorf("adding %s to %s: %w", addr, link.Attrs().Name, err)
	}

	return true, nil
}
