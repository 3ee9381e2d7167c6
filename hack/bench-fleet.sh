#!/bin/bash
# What an idle fleet of extractedprism daemons costs a real kube-apiserver
# (test/fleet, docs/fleet.md). Builds what it needs: kube-apiserver + etcd
# (hack/kube-bins, cached), the daemon, the benchmark; runs it in a private
# network namespace (root, or unprivileged user namespaces); writes the
# report to bench/results/fleet.md (FLEET_OUT).
#
#   hack/bench-fleet.sh                    # the daemon of this checkout (make build)
#   FLEET_DAEMON=/path/extractedprism hack/bench-fleet.sh
#   FLEET_REV=<commit> hack/bench-fleet.sh # the daemon of another commit, built from
#                                          # `git archive <commit>` in a temporary directory
#
# The harness and its settings are always this checkout's. Other settings
# (environment): FLEET_NODES, FLEET_WINDOW, FLEET_BASELINE, FLEET_SETTLE,
# FLEET_RATES, FLEET_PHASES, FLEET_VARIANTS, FLEET_CENSUS, FLEET_CENSUS_NODES,
# FLEET_OUT; see docs/fleet.md. FLEET_BUDGET (seconds, default 3600) ends the
# run if it takes longer.
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"

log() { echo "bench-fleet: $*" >&2; }

TMP=$(mktemp -d /tmp/extractedprism-fleet.XXXXXX)
trap 'rm -rf "$TMP"' EXIT

if [ -n "${FLEET_REV:-}" ]; then
	if [ -n "${FLEET_DAEMON:-}" ]; then
		log "set FLEET_REV or FLEET_DAEMON, not both"
		exit 2
	fi
	rev=$(git rev-parse --verify "${FLEET_REV}^{commit}")
	log "building the daemon of $rev"
	mkdir "$TMP/src"
	git archive "$rev" | tar -x -C "$TMP/src"
	# Not a git checkout: name the build after the commit.
	make -C "$TMP/src" build VERSION="$(git describe --tags --always "$rev")" COMMIT="$rev" >&2
	FLEET_DAEMON=$TMP/src/bin/extractedprism
elif [ -z "${FLEET_DAEMON:-}" ]; then
	make build >&2
	FLEET_DAEMON=$ROOT/bin/extractedprism
fi
FLEET_DAEMON=$(cd "$(dirname "$FLEET_DAEMON")" && pwd)/$(basename "$FLEET_DAEMON")
export FLEET_DAEMON
"$FLEET_DAEMON" version >&2

KUBE_BINS=$(hack/kube-bins/build.sh | tail -1)
export KUBE_BINS

mkdir -p bin
go test -c -tags integration -o bin/fleet.test ./test/fleet

# Each daemon holds a few descriptors; the simulated nodes one or two each.
ulimit -n 65536 2>/dev/null || ulimit -n "$(ulimit -Hn)"

cd test/fleet
timeout --kill-after=30s "${FLEET_BUDGET:-3600}" ../../hack/netns-run.sh ../../bin/fleet.test \
	-test.run '^$' -test.bench '^BenchmarkFleet$' -test.benchtime 1x -test.timeout 0 -test.v
