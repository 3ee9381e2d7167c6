#!/bin/bash
# Runs a command inside a private network namespace whose loopback interface
# also carries the test addresses used by test/kubeharness:
#   198.51.100.1-3/32          (TEST-NET-2, RFC 5737)
#   fd00:198:51:100::1-3/128   (ULA; only when IPv6 works in the namespace)
#
# kube-apiserver refuses to publish 127.0.0.0/8 in the "kubernetes"
# EndpointSlice, so each test apiserver binds one of these instead. Nothing
# in the namespace can reach the outside world: build test binaries first.
#
# usage: hack/netns-run.sh <command> [args...]
#   go test -c -tags integration -o /tmp/kh.test ./test/kubeharness
#   KUBE_BINS=$(hack/kube-bins/build.sh | tail -1) hack/netns-run.sh /tmp/kh.test -test.v
#
# As root this uses `unshare --net`; otherwise it also creates a user
# namespace (`unshare --map-root-user`), which works where unprivileged user
# namespaces are enabled.
set -euo pipefail

if [ $# -eq 0 ]; then
	echo "usage: $0 <command> [args...]" >&2
	exit 2
fi

for tool in unshare ip; do
	if ! command -v "$tool" >/dev/null; then
		echo "netns-run: '$tool' not found (install util-linux and iproute2)" >&2
		exit 1
	fi
done

# First pass: re-exec this script inside the new namespace. The marker is
# unset again below, so the command (or a nested call) does not inherit it.
if [ "${EXTRACTEDPRISM_NETNS_INNER:-}" != 1 ]; then
	flags=(--net)
	if [ "$(id -u)" -ne 0 ]; then
		flags+=(--map-root-user)
	fi
	exec unshare "${flags[@]}" env EXTRACTEDPRISM_NETNS_INNER=1 "$0" "$@"
fi
unset EXTRACTEDPRISM_NETNS_INNER

ip link set lo up
for i in 1 2 3; do
	ip addr add "198.51.100.$i/32" dev lo
done

# IPv6 may be disabled for new namespaces (net.ipv6.conf.default.disable_ipv6)
# or absent from the kernel; IPv4 tests must still run then.
if [ -e /proc/sys/net/ipv6/conf/lo/disable_ipv6 ]; then
	echo 0 >/proc/sys/net/ipv6/conf/lo/disable_ipv6 2>/dev/null || true
fi
for i in 1 2 3; do
	# nodad: the address is usable at once instead of after duplicate detection.
	if ! ip -6 addr add "fd00:198:51:100::$i/128" dev lo nodad 2>/dev/null; then
		echo "netns-run: IPv6 unavailable in the namespace; only IPv4 test addresses are set" >&2
		break
	fi
done

exec "$@"
