#!/usr/bin/env bash
# shellcheck disable=SC2016 # commands for inside containers are single-quoted on purpose
# test/e2e/coldboot.sh - a node that boots while every control plane is down
# serves the moment one returns (issue 18), under a real systemd as PID 1
# with the .deb installed and its socket enabled.
#
# The node: static endpoints 127.0.0.11:6443 ("a", comes back) and
# 127.0.0.21:6443 (stays dead: refuses), plus 192.0.2.12:6443 ("c", comes
# back) known only from the persisted cache (state_directory's
# endpoints.json, written before the first boot; no kubeconfig, so
# discovery stays off and the cache stands). The cache takes no loopback
# address (an API server never advertises one), so "c" has an address of
# TEST-NET-1 on the container's loopback interface, added at every boot. The shipped defaults otherwise:
# https checks (against the test CA), health_interval 2m, rise 2, fall 1.
# A kubelet stand-in (testdata/coldboot `poll`, enabled as kubelet.service,
# so the socket's Before=kubelet.service orders it) makes a new TLS
# connection to 127.0.0.1:7445 and a GET /version every 100 ms from boot,
# each attempt bounded by 5 s, and logs every attempt.
#
# Scenarios (E2E_COLDBOOT_BOOTS, default 10, and E2E_COLDBOOT_KUBE_BOOTS,
# default 3, runs each):
#   boot/static          power off, boot with nothing up; "a" starts
#   boot/cache           power off, boot with nothing up; "c" (cache only) starts
#   daemon               no reboot: the upstream is stopped, then the daemon
#                        is restarted (odd runs) or stopped and activated
#                        again by the next client connection (even runs);
#                        "a" or "c" starts
#   boot/kube-apiserver  power off, boot with nothing up; etcd, then a real
#                        kube-apiserver v1.36 starts at the address of "a"
# The first three use the stand-in API server (testdata/coldboot `serve`):
# it answers from the moment it accepts, and fails /readyz for its first
# half second. A real kube-apiserver accepts connections seconds before it
# answers them (it listens, then prepares, then serves); its runs time from
# its "Serving securely" line, and assert the proxy never leaves a client
# hanging meanwhile.
#
# Asserted per run: while nothing is up, the daemon is failing open (its
# StatusText); every attempt is closed or refused (never answered, never a
# timeout), within 1 s once the daemon runs (3 s while it starts, or while
# the upstream accepts but is silent); the daemon writes no more than its
# rate-limited lines to the journal. Once the upstream can answer, the first
# answer through the proxy comes within 1 s and no attempt begun after that
# fails; fail-open then ends. Prints median and worst per scenario
# (E2E-METRIC lines for run.sh).
#
# Usage: sudo test/e2e/coldboot.sh [SUITE]     (SUITE defaults to bookworm)
# Builds the packages itself unless E2E_ARTIFACTS names a directory that
# run.sh filled (see helpers.sh); kube-apiserver and etcd from
# hack/kube-bins/build.sh (cached) unless KUBE_BINS names their directory.
# Ends with "N passed, N failed".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=helpers.sh
source "$here/helpers.sh"
e2e_trap

suite=${1:-bookworm}
boots=${E2E_COLDBOOT_BOOTS:-10}
kube_boots=${E2E_COLDBOOT_KUBE_BOOTS:-3}
n=cold-$$
unit=extractedprism.service
a=127.0.0.11:6443    # static, comes back
c=192.0.2.12:6443    # known only from the cache, comes back
dead=127.0.0.21:6443 # static, stays dead
target_ms=1000       # the first answer after the upstream accepts (issue 18)
attempt_ms=1000      # bound on one client attempt while nothing is up
start_ms=3000        # the same for an attempt that waits for the daemon to start
silent_ms=3000       # ... and while the upstream accepts but does not answer yet (the
                     # proxy gives it 1 s, then tries the next upstream)
outage_attempts=15   # attempts made in each outage before an upstream starts (~1.5 s)
poll=/run/e2e-poll.log
[[ $boots =~ ^[1-9][0-9]?$ ]] || e2e_die "E2E_COLDBOOT_BOOTS must be 1..99"
[[ $kube_boots =~ ^[0-9]$ ]] || e2e_die "E2E_COLDBOOT_KUBE_BOOTS must be 0..9"

art=""
ep_artifacts art
deb=$(ep_pkg "$art" deb "$EP_NEW")

# The stand-in (stdlib only, its own module) and its certificates.
tool=""
e2e_tmpdir tool
mkdir "$tool/src" "$tool/pki"
cp "$here/testdata/coldboot/main.go" "$tool/src/"
printf 'module coldboot\n\ngo 1.22\n' >"$tool/src/go.mod"
e2e_log "building the coldboot stand-in"
(cd "$tool/src" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' \
    -o "$tool/coldboot" .)
"$tool/coldboot" pki "$tool/pki" kubernetes.default.svc kubernetes "${a%:*}" "${c%:*}"

# A real kube-apiserver and etcd (hack/kube-bins: cached; `make test` has
# built them for test-integration already, else this builds them, 5-14 min).
kube_bins=${KUBE_BINS:-}
if [[ -z $kube_bins ]] && ((kube_boots > 0)); then
    kube_bins=$("$EP_REPO/hack/kube-bins/build.sh" | tail -n 1) || e2e_die "hack/kube-bins/build.sh failed"
fi
[[ $kube_boots == 0 || (-x $kube_bins/kube-apiserver && -x $kube_bins/etcd) ]] ||
    e2e_die "no kube-apiserver and etcd in '$kube_bins'"

# ---------------------------------------------------------------------------
# Setup: the rootfs gets the stand-in and the cache file before the first
# boot; the first boot installs the package and enables the kubelet stand-in.
# ---------------------------------------------------------------------------
tarball=$(e2e_rootfs "$suite")
e2e_prepare "$n" "$tarball"
root=$(e2e_root "$n")
install -m 0755 "$tool/coldboot" "$root/usr/local/bin/e2e-coldboot"
install -d -m 0755 "$root/etc/e2e-coldboot"
install -m 0644 "$tool/pki/ca.crt" "$tool/pki/server.crt" "$root/etc/e2e-coldboot/"
install -m 0600 "$tool/pki/server.key" "$root/etc/e2e-coldboot/"
((kube_boots == 0)) || install -m 0755 "$kube_bins/kube-apiserver" "$kube_bins/etcd" "$root/usr/local/bin/"
cat >"$root/etc/systemd/system/kubelet.service" <<EOF
[Unit]
Description=e2e kubelet stand-in: a new TLS connection to 127.0.0.1:7445 every 100 ms from boot
[Service]
ExecStart=/usr/local/bin/e2e-coldboot poll -ca /etc/e2e-coldboot/ca.crt -out $poll -interval 100ms -timeout 5s -for 15m
[Install]
WantedBy=multi-user.target
EOF
# The cache the last run left (format: pkg/discovery/cache.go), in the
# dynamic user's state directory, which systemd hands over to it at start.
install -d -m 0700 "$root/var/lib/private" "$root/var/lib/private/extractedprism"
printf '{"version": 1, "endpoints": [{"address": "%s", "last_seen": "%s"}]}\n' \
    "$c" "$(date -u +%Y-%m-%dT%H:%M:%SZ)" >"$root/var/lib/private/extractedprism/endpoints.json"

# boot_and_address : (re)boot the container and give its loopback interface
# the address of "c", from the host (the rootfs has no iproute2): every
# boot has a new network namespace. Until then, dials to it find no route.
boot_and_address() {
    local rc=0
    if [[ -n ${E2E_LEADER[$n]:-} ]]; then
        e2e_reboot "$n" "$art" || rc=1
    else
        e2e_boot "$n" "$tarball" "$art" || rc=1
    fi
    [[ -n ${E2E_LEADER[$n]:-} ]] || return 1
    nsenter -t "${E2E_LEADER[$n]}" -n ip address add "${c%:*}/32" dev lo || rc=1
    return "$rc"
}

boot_and_address || e2e_die "first boot"
e2e_assert_ok "dpkg -i $deb" e2e_exec "$n" dpkg -i "/dist/$deb"
ep_config "$n" <<EOF
# written by test/e2e/coldboot.sh: the shipped defaults, but for these
endpoints = ["$a", "$dead"]
health_ca_file = "/etc/e2e-coldboot/ca.crt"
EOF
e2e_assert_eq "the package enabled the socket" enabled "$(e2e_exec "$n" systemctl is-enabled extractedprism.socket)"
e2e_assert_ok "the kubelet stand-in is enabled" e2e_exec "$n" systemctl enable kubelet.service

# ---------------------------------------------------------------------------
# One run: the outage, the return, the numbers
# ---------------------------------------------------------------------------
show() { e2e_show "$n" "$unit" "$1"; }
failing_open() { [[ $(show StatusText) == *"FAILING OPEN"* ]]; }
not_failing_open() { [[ $(show StatusText) =~ ^[1-9][0-9]*/3\ upstreams\ healthy && $(show StatusText) != *"FAILING OPEN"* ]]; }
# attempts_since NS MIN : the kubelet stand-in logged MIN attempts begun at or after NS.
attempts_since() {
    (($(e2e_exec "$n" awk -v s="$1" '$1 >= s' "$poll" 2>/dev/null | wc -l) >= $2))
}
answered_after() { e2e_exec "$n" awk -v s="$1" '$2 >= s && $3 == "ok" {f=1} END {exit !f}' "$poll"; }
now_ns() { e2e_exec "$n" date +%s%N; }
le() { awk -v x="$1" -v b="$2" 'BEGIN { exit !(x <= b) }'; } # le X BOUND : X <= BOUND

declare -A FIRST=() FAILOPEN=() WORST_ATTEMPT=() STEADY=() SILENT=() RUNS=()

# outage LABEL SINCE_NS ATTEMPTS : with nothing up since SINCE_NS (0: since
# boot), wait until the kubelet stand-in made ATTEMPTS attempts; the daemon
# must be failing open by then.
outage() {
    local label=$1 since=$2 want=$3
    e2e_wait_until $((want / 5 + 10)) attempts_since "$since" "$want" ||
        e2e_fail "$label: the kubelet stand-in made fewer than $want attempts in $((want / 5 + 10)) s"
    if e2e_wait_until 5 failing_open; then
        e2e_pass "$label: with nothing up the daemon is failing open (StatusText)"
    else
        e2e_fail "$label: not failing open $want attempts into the outage: '$(show StatusText)'"
    fi
}

# standin LABEL UP : start stand-in UP (a or c); prints when it accepted (ns).
standin() {
    local up=$2 addr stamp=/run/e2e-accept-$2
    addr=$([[ $up == a ]] && echo "$a" || echo "$c")
    e2e_exec "$n" rm -f "$stamp"
    e2e_exec "$n" systemd-run --quiet --unit="e2e-api-$up" /usr/local/bin/e2e-coldboot serve \
        -name "$up" -listen "$addr" -dir /etc/e2e-coldboot -stamp "$stamp" -ready-after 500ms ||
        e2e_die "$1: could not start upstream $up"
    e2e_wait_until 10 e2e_exec "$n" test -s "$stamp" || e2e_die "$1: upstream $up did not start"
    e2e_exec "$n" cat "$stamp"
}

# measure LABEL SCENARIO UP SINCE ACCEPT SERVE WANT : once the upstream
# accepts connections (ACCEPT, ns) and answers them (SERVE: the same for the
# stand-in; later for a kube-apiserver), wait for the first answer and the
# end of fail-open, then check the run and record its numbers. UP is the
# name the answers must carry (the stand-in's; "-" for a kube-apiserver).
measure() {
    local label=$1 sc=$2 up=$3 since=$4 acc=$5 srv=$6 want=$7 line jr kv quiet
    local -A m=()
    e2e_wait_until 10 answered_after "$srv" || true
    e2e_wait_until 30 not_failing_open || true

    # The journal of the run (the daemon's lines and systemd's about it):
    # when the daemon was ready (systemd's "Started" line), how many lines
    # in the outage, how many from half a second after it was ready and
    # failing open (steady), and when fail-open ended (ms after SERVE).
    jr=$(e2e_journal "$n" -u "$unit" -o short-unix)
    line=$(awk -v s="$since" -v acc="$acc" -v srv="$srv" '
        { t = $1 * 1e9 }
        t < s { next }
        t >= acc {
            if (!ended && /fail-open ended/) ended = sprintf("%.0f", (t - srv) / 1e6)
            next
        }
        { at[++lines] = t }
        / Started extractedprism\.service/ { ready = t }
        /no upstream passes its checks: failing open/ { opened = t }
        END {
            # The lines of the start come within milliseconds of READY=1, in
            # either order with it: half a second later they are all in.
            from = (ready > opened ? ready : opened) + 5e8
            for (i = 1; i <= lines; i++) if (opened && at[i] > from) steady++
            printf "ready=%.0f journal=%d steady=%d steady_s=%.1f ended=%s\n", ready, lines, steady,
                (opened ? (acc - from) / 1e9 : 0), (ended == "" ? "none" : ended)
        }' <<<"$jr")
    for kv in $line; do m[${kv%%=*}]=${kv#*=}; done

    # The attempts: the outage (ended before the upstream accepted; those
    # begun before the daemon was ready waited for its start in the
    # socket's backlog), the silent phase (accepted, not answered yet: a
    # kube-apiserver starting), and those begun once it answers.
    line=$(e2e_exec "$n" awk -v s="$since" -v acc="$acc" -v srv="$srv" -v ready="${m[ready]}" -v up="$up" '
        $1 < s { next }
        $2 < acc {
            w++; d = ($2 - $1) / 1e6
            if ($1 < ready) { if (d > smax) smax = d } else if (d > wmax) wmax = d
            if ($3 == "closed" || $3 == "refused") { wk[$3]++; if (!seen) seen = $4 } else { bad++; if (!why) why = $3 ":" $4 }
            next
        }
        $1 < srv && $3 != "ok" {
            q++; d = ($2 - $1) / 1e6; if (d > qmax) qmax = d
            if ($3 != "closed" && $3 != "refused") { bad++; if (!why) why = $3 ":" $4 }
            next
        }
        $1 >= srv && $3 != "ok" { after++; if (!awhy) awhy = $3 ":" $4 }
        $3 == "ok" && !first { first = sprintf("%.1f", ($2 - srv) / 1e6) }
        $3 == "ok" && $4 !~ (":" up "$") { wrong++; if (!awhy) awhy = $4 }
        END {
            printf "outage=%d closed=%d refused=%d bad=%d start_max_ms=%.1f max_ms=%.1f silent=%d silent_max_ms=%.1f first_ms=%s after_failed=%d wrong=%d why=%s awhy=%s seen=%s\n",
                w, wk["closed"], wk["refused"], bad, smax, wmax, q, qmax, (first == "" ? "none" : first),
                after, wrong, (why == "" ? "-" : why), (awhy == "" ? "-" : awhy), (seen == "" ? "-" : seen)
        }' "$poll")
    for kv in $line; do m[${kv%%=*}]=${kv#*=}; done
    e2e_log "$label: $line journal=${m[journal]} steady=${m[steady]}/${m[steady_s]}s ended=${m[ended]}"

    # While nothing was up. After a boot none may be refused: the socket
    # holds 127.0.0.1:7445 before kubelet starts.
    if [[ $since == 0 ]]; then
        e2e_assert_eq "$label: no attempt refused since boot, the first waited for the daemon's start" \
            "0 yes" "${m[refused]} $(le 0.1 "${m[start_max_ms]}" && echo yes || echo "no (${m[start_max_ms]} ms)")"
    fi
    if ((m[ready] > 0 && m[outage] >= want && m[bad] == 0)) &&
        le "${m[start_max_ms]}" "$start_ms" && le "${m[max_ms]}" "$attempt_ms" && le "${m[silent_max_ms]}" "$silent_ms"; then
        e2e_pass "$label: while nothing is up, ${m[outage]} attempts each closed (${m[closed]}) or refused (${m[refused]}): within ${m[max_ms]} ms once the daemon was ready (bound $attempt_ms), ${m[start_max_ms]} ms while it started (bound $start_ms); ${m[silent]} more while the upstream accepted but did not answer, within ${m[silent_max_ms]} ms (bound $silent_ms)"
    else
        e2e_fail "$label: while nothing is up: ${m[outage]} attempts (want >= $want), ${m[bad]} neither closed nor refused (first: ${m[why]}), longest ${m[max_ms]} ms once ready (bound $attempt_ms), ${m[start_max_ms]} ms while starting (bound $start_ms), ${m[silent_max_ms]} ms while the upstream was silent (bound $silent_ms); ready at ${m[ready]}"
    fi
    # The journal meanwhile: once ready and failing open, only the
    # rate-limited lines that clients cause, "dial failed" and "closing
    # client", each at most once a second (pkg/balancer/noisy.go); 2 more
    # for anything else.
    quiet=$((2 * (${m[steady_s]%.*} + 1) + 2))
    if ((m[steady] <= quiet)); then
        e2e_pass "$label: the journal stays quiet: ${m[steady]} lines in the ${m[steady_s]} s spent failing open (${m[journal]} in the whole outage, start included)"
    else
        e2e_fail "$label: ${m[steady]} journal lines in the ${m[steady_s]} s spent failing open (bound $quiet):"
        awk -v s="$since" '$1 * 1e9 >= s && k++ < 40' <<<"$jr"
    fi

    # Once it answers.
    if [[ ${m[first_ms]} != none ]] && le "${m[first_ms]}" "$target_ms"; then
        e2e_pass "$label: first answer through the proxy ${m[first_ms]} ms after the upstream could answer (target $target_ms)"
    else
        e2e_fail "$label: first answer through the proxy ${m[first_ms]} ms after the upstream could answer (target $target_ms)"
    fi
    e2e_assert_eq "$label: no attempt begun after that failed, all answered by the upstream that returned" "0/0/-" \
        "${m[after_failed]}/${m[wrong]}/${m[awhy]}"

    # Fail-open ends when the upstream passes health_rise checks.
    if [[ ${m[ended]} != none ]] && not_failing_open; then
        e2e_pass "$label: fail-open ended ${m[ended]} ms after the upstream could answer ($(show StatusText | cut -d';' -f1))"
    else
        e2e_fail "$label: fail-open did not end within 30 s: '$(show StatusText)'"
    fi

    RUNS[$sc]=$((${RUNS[$sc]:-0} + 1))
    FIRST[$sc]+=" ${m[first_ms]}"
    FAILOPEN[$sc]+=" ${m[ended]}"
    WORST_ATTEMPT[$sc]+=" ${m[max_ms]}"
    STEADY[$sc]+=" ${m[steady]}/${m[steady_s]}s"
    SILENT[$sc]+=" $(awk -v a="$acc" -v b="$srv" 'BEGIN { printf "%.0f", (b - a) / 1e6 }')"
}

# run LABEL SCENARIO UP SINCE_NS [ATTEMPTS] : an outage of ATTEMPTS attempts
# (default outage_attempts) since SINCE_NS, then stand-in UP returns.
run() {
    local t0=$SECONDS want=${5:-$outage_attempts} acc
    outage "$1" "$4" "$want"
    acc=$(standin "$1" "$3")
    measure "$1" "$2" "$3" "$4" "$acc" "$acc" "$want"
    e2e_log "$1: $((SECONDS - t0)) s"
}

# ---------------------------------------------------------------------------
# Boots with every control plane down
# ---------------------------------------------------------------------------
for ((i = 1; i <= 2 * boots; i++)); do
    up=$( ((i % 2)) && echo a || echo c)
    sc=$([[ $up == a ]] && echo boot/static || echo boot/cache)
    boot_and_address || e2e_fail "boot $i: power off and boot"
    run "boot $i ($sc)" "$sc" "$up" 0
    if ((i == 1)); then
        e2e_assert_eq "boot 1: the socket is active" active "$(e2e_show "$n" extractedprism.socket ActiveState)"
        e2e_assert_ok "boot 1: the cache file was loaded" \
            eval 'e2e_journal "$n" -u "$unit" | grep "loaded cached upstreams" | grep -q "${c}"'
    fi
done

# ---------------------------------------------------------------------------
# The daemon (re)started during an outage, no reboot
# ---------------------------------------------------------------------------
last=c # the upstream of the last boot
for ((i = 1; i <= boots; i++)); do
    up=$( ((i % 2)) && echo a || echo c)
    e2e_exec "$n" systemctl stop "e2e-api-$last" 2>/dev/null || true
    since=$(now_ns)
    if ((i % 2)); then
        how=restarted
        e2e_exec "$n" systemctl restart "$unit"
    else
        how="stopped, then activated by the next connection"
        e2e_exec "$n" systemctl stop "$unit"
    fi
    # The first outage is longer, for the journal's rate: ~10 s.
    run "daemon $i ($how; $up)" daemon "$up" "$since" $((i == 1 ? 100 : outage_attempts))
    last=$up
done

# ---------------------------------------------------------------------------
# Boots with every control plane down, then a real kube-apiserver returns
# ---------------------------------------------------------------------------
# The kube-apiserver takes the address of "a" (static). Its etcd starts
# first, so what is timed is the API server's own start. It accepts
# connections seconds before it answers them: the moment it can answer is
# its own "Serving securely on" line (klog's time, written just before it
# begins to serve).
kube_flags=(--etcd-servers=http://127.0.0.1:2379 --bind-address="${a%:*}" --secure-port="${a##*:}"
    --advertise-address=192.0.2.11 --endpoint-reconciler-type=none
    --tls-cert-file=/etc/e2e-coldboot/server.crt --tls-private-key-file=/etc/e2e-coldboot/server.key
    --client-ca-file=/etc/e2e-coldboot/ca.crt --service-account-issuer=https://kubernetes.default.svc
    --service-account-key-file=/etc/e2e-coldboot/server.key
    --service-account-signing-key-file=/etc/e2e-coldboot/server.key
    --service-cluster-ip-range=10.96.0.0/24 --authorization-mode=RBAC --cert-dir=/var/lib/e2e-kube-apiserver)
etcd_flags=(--name=e1 --data-dir=/var/lib/e2e-etcd --unsafe-no-fsync
    --listen-client-urls=http://127.0.0.1:2379 --advertise-client-urls=http://127.0.0.1:2379
    --listen-peer-urls=http://127.0.0.1:2380 --initial-advertise-peer-urls=http://127.0.0.1:2380
    --initial-cluster=e1=http://127.0.0.1:2380)
# serving_ns : when the kube-apiserver said it serves (klog's local time,
# in the container's time zone), in ns; empty before.
serving_ns() {
    local l
    l=$(e2e_journal "$n" -u e2e-kube-apiserver -o cat | awk '/Serving securely on/ && !f++ { print $1, $2 }')
    [[ $l =~ ^I([0-9]{2})([0-9]{2})\ ([0-9:.]+)$ ]] || return 1
    e2e_exec "$n" date -d "$(date +%Y)-${BASH_REMATCH[1]}-${BASH_REMATCH[2]} ${BASH_REMATCH[3]}" +%s%N
}
for ((i = 1; i <= kube_boots; i++)); do
    label="boot $i (boot/kube-apiserver)"
    t0=$SECONDS
    boot_and_address || e2e_fail "$label: power off and boot"
    outage "$label" 0 "$outage_attempts"
    e2e_exec "$n" systemd-run --quiet --unit=e2e-etcd /usr/local/bin/etcd "${etcd_flags[@]}"
    e2e_wait_until 30 e2e_exec "$n" bash -c 'exec 3<>/dev/tcp/127.0.0.1/2379' || e2e_fail "$label: etcd did not start"
    e2e_exec "$n" systemd-run --quiet --unit=e2e-kube-apiserver -p TimeoutStopSec=20s \
        /usr/local/bin/kube-apiserver "${kube_flags[@]}"
    # When it accepts: the first connect that succeeds, tried every 5 ms.
    acc=$(e2e_exec "$n" timeout 60 bash -c 'until { exec 3<>"/dev/tcp/${1%:*}/${1##*:}"; } 2>/dev/null; do
        sleep 0.005; done; echo "$((${EPOCHREALTIME/./} * 1000))"' _ "$a") || acc=""
    srv=""
    e2e_wait_until 60 serving_ns || true
    srv=$(serving_ns) || srv=""
    if [[ $acc =~ ^[0-9]+$ && $srv =~ ^[0-9]+$ ]]; then
        e2e_log "$label: kube-apiserver accepting, then serving $(( (srv - acc) / 1000000 )) ms later"
        measure "$label" boot/kube-apiserver - 0 "$acc" "$srv" "$outage_attempts"
    else
        e2e_fail "$label: the kube-apiserver did not come up (accepting '$acc', serving '$srv')"
        e2e_journal "$n" -u e2e-kube-apiserver -n 20 || true
    fi
    # The API server first: stopped after etcd it hangs (notes/kube-apiserver.md).
    e2e_exec "$n" systemctl stop e2e-kube-apiserver || true
    e2e_exec "$n" systemctl stop e2e-etcd || true
    e2e_log "$label: $((SECONDS - t0)) s"
done

# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------
# stats "V1 V2 ..." : "median/worst" (median of an even count: the mean of
# the middle two); "none" counts as worst.
stats() {
    tr ' ' '\n' <<<"$1" | awk 'NF {
            v[++k] = ($1 == "none" ? 1e9 : $1)
        }
        END {
            if (!k) { print "-"; exit }
            for (i = 1; i <= k; i++) for (j = i + 1; j <= k; j++) if (v[j] < v[i]) { t = v[i]; v[i] = v[j]; v[j] = t }
            med = (k % 2) ? v[(k + 1) / 2] : (v[k / 2] + v[k / 2 + 1]) / 2
            printf "%.1f/%s\n", med, (v[k] == 1e9 ? "none" : sprintf("%.1f", v[k]))
        }'
}
for sc in boot/static boot/cache daemon boot/kube-apiserver; do
    [[ -n ${RUNS[$sc]:-} ]] || continue
    key=${sc//[\/-]/_}
    ep_metric "coldboot_${key}_first_answer_ms" "$(stats "${FIRST[$sc]}")"
    ep_metric "coldboot_${key}_fail_open_ended_ms" "$(stats "${FAILOPEN[$sc]}")"
    ep_metric "coldboot_${key}_outage_attempt_ms" "$(stats "${WORST_ATTEMPT[$sc]}")"
    echo "measured $sc (${RUNS[$sc]} runs): upstream answering -> first answer through the proxy," \
        "median/worst $(stats "${FIRST[$sc]}") ms [${FIRST[$sc]# }]; -> fail-open ended $(stats "${FAILOPEN[$sc]}") ms;" \
        "longest attempt while down $(stats "${WORST_ATTEMPT[$sc]}") ms; journal lines while failing open:${STEADY[$sc]};" \
        "accepting -> answering:${SILENT[$sc]} ms"
done

if e2e_stop "$n"; then
    e2e_pass "clean poweroff"
else
    e2e_fail "e2e_stop $n"
fi
e2e_summary
