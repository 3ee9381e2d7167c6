#!/usr/bin/env bash
# Static checks of the systemd units: `systemd-analyze verify` must print
# nothing (it exits 0 on unknown keys and bad values, so any output is a
# failure), and the service's offline security exposure must stay at or
# below EXPOSURE_MAX (default 1.5).
#
# usage: hack/check-units.sh BINARY
set -euo pipefail

bin=${1:?usage: check-units.sh BINARY}
max=${EXPOSURE_MAX:-1.5}
here=$(cd "$(dirname "$0")/.." && pwd)

command -v systemd-analyze >/dev/null || { apt-get update -qq && apt-get install -y -qq systemd; }

# A root with systemd's own units, /bin/sh for ExecReload and our files.
root=$(mktemp -d)
trap 'rm -rf "$root"' EXIT
mkdir -p "$root/usr/bin" "$root/usr/lib/systemd"
cp -a /usr/lib/systemd/system "$root/usr/lib/systemd/"
ln -s usr/bin "$root/bin"
cp "$(readlink -f /bin/sh)" "$root/usr/bin/sh"
cp "$bin" "$root/usr/bin/extractedprism"
cp "$here"/systemd/*.socket "$here"/systemd/*.service "$root/usr/lib/systemd/system/"

passed=0 failed=0
check() { # name, output-of-command (empty = pass)
	if [ -z "$2" ]; then
		echo "PASS: $1"; passed=$((passed + 1))
	else
		printf 'FAIL: %s\n%s\n' "$1" "$2"; failed=$((failed + 1))
	fi
}

out=$(systemd-analyze verify --root="$root" extractedprism.socket extractedprism-health.socket extractedprism.service 2>&1 || echo "(exit $?)")
check "systemd-analyze verify is silent" "$out"

out=$(systemd-analyze verify --root="$root" extractedprism-link-local.socket extractedprism-link-local.service 2>&1 || echo "(exit $?)")
check "systemd-analyze verify is silent (link-local units)" "$out"

report=$(systemd-analyze security --offline=true --root="$root" extractedprism.service 2>&1 || true)
exposure=$(sed -n 's/.*Overall exposure level for extractedprism.service: \([0-9.]*\).*/\1/p' <<<"$report")
if [ -n "$exposure" ] && awk -v e="$exposure" -v m="$max" 'BEGIN { exit !(e <= m) }'; then
	check "security exposure $exposure <= $max" ""
else
	check "security exposure ${exposure:-?} <= $max" "$report"
fi

# The link-local oneshot has CAP_NET_ADMIN (1.3 with it).
llmax=${EXPOSURE_MAX_LINK_LOCAL:-1.5}
report=$(systemd-analyze security --offline=true --root="$root" extractedprism-link-local.service 2>&1 || true)
exposure=$(sed -n 's/.*Overall exposure level for extractedprism-link-local.service: \([0-9.]*\).*/\1/p' <<<"$report")
if [ -n "$exposure" ] && awk -v e="$exposure" -v m="$llmax" 'BEGIN { exit !(e <= m) }'; then
	check "link-local oneshot security exposure $exposure <= $llmax" ""
else
	check "link-local oneshot security exposure ${exposure:-?} <= $llmax" "$report"
fi

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
