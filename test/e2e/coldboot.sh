#!/usr/bin/env bash
# shellcheck disable=SC2016 # commands for inside containers are single-quoted on purpose
# test/e2e/coldboot.sh - a node that boots while every control plane is down
# serves the moment one returns (issue 18), under a real systemd as PID 1
# with the .deb installed and its socket enabled.
#
# The node: static endpoints 127.0.0.11:6443 ("a", comes back) and
# 127.0.0.21:6443 (stays dead: refuses), plus 127.0.0.12:6443 ("c", comes
# back) known only from the persisted cache (state_directory's
# endpoints.json, written before boot; no kubeconfig, so discovery stays
# off and the cache stands). The shipped defaults otherwise: https checks
# (against the test CA), health_interval 2m, rise 2, fall 1.
# A kubelet stand-in (testdata/coldboot `poll`, enabled as kubelet.service,
# so the socket's Before=kubelet.service orders it) makes a new TLS
# connection to 127.0.0.1:7445 and a GET /version every 100 ms from boot,
# each attempt bounded by 5 s, and logs every attempt.
#
# Scenarios, each BOOTS times (E2E_COLDBOOT_BOOTS, default 10):
#   boot/static   power off, boot with nothing up; "a" starts
#   boot/cache    power off, boot with nothing up; "c" (cache only) starts
#   daemon        no reboot: the upstream is stopped, then the daemon is
#                 restarted (odd runs) or stopped and activated again by the
#                 next client connection (even runs); "a" or "c" starts
# The upstream is the stand-in API server (testdata/coldboot `serve`): it
# accepts, answers every request, and fails /readyz for its first second,
# as a kube-apiserver does while its post-start hooks run.
#
# Asserted per run: while nothing is up, the daemon is failing open (its
# StatusText), every attempt ends within 1 s, closed or refused (never an
# answer, never a timeout), and the daemon writes at most a bounded number
# of journal lines; once the upstream accepts, the first answer comes within
# 1 s and no attempt that starts after it accepts fails; fail-open ends.
# Prints median and worst per scenario (E2E-METRIC lines for run.sh).
#
# Why a stand-in and not a kube-apiserver: what is measured is the proxy,
# from the moment the upstream accepts. A kube-apiserver inside the
# container would add its 3-4 s start, ~300 MB, etcd and a 5-14 min build
# of test binaries to every `make test-e2e`, for the same moment (it too
# accepts before /readyz passes; this stand-in does the same).
#
# Usage: sudo test/e2e/coldboot.sh [SUITE]     (SUITE defaults to bookworm)
# Builds the packages itself unless E2E_ARTIFACTS names a directory that
# run.sh filled (see helpers.sh). Ends with "N passed, N failed".
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=helpers.sh
source "$here/helpers.sh"
e2e_trap

suite=${1:-bookworm}
boots=${E2E_COLDBOOT_BOOTS:-10}
n=cold-$$
unit=extractedprism.service
a=127.0.0.11:6443    # static, comes back
c=127.0.0.12:6443    # known only from the cache, comes back
dead=127.0.0.21:6443 # static, stays dead
target_ms=1000       # the first answer after the upstream accepts (issue 18)
attempt_ms=1000      # bound on one client attempt while nothing is up
start_ms=3000        # the same for an attempt that waits for the daemon to start
outage_attempts=20   # attempts made in each outage before an upstream starts (~2 s)
poll=/run/e2e-poll.log
[[ $boots =~ ^[1-9][0-9]?$ ]] || e2e_die "E2E_COLDBOOT_BOOTS must be 1..99"

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

e2e_boot "$n" "$tarball" "$art"
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

declare -A FIRST=() FAILOPEN=() WORST_ATTEMPT=() STEADY=()

# run LABEL SCENARIO UP SINCE_NS [ATTEMPTS] : with nothing up since SINCE_NS
# (0: since boot), wait for the outage (ATTEMPTS attempts, default
# outage_attempts; failing open), start
# upstream UP (a or c), wait for the first answer and the end of fail-open,
# then check and record the numbers.
run() {
    local label=$1 sc=$2 up=$3 since=$4 want=${5:-$outage_attempts} t0=$SECONDS addr stamp accept line jr kv
    local -A m=()
    addr=$([[ $up == a ]] && echo "$a" || echo "$c")
    stamp=/run/e2e-accept-$up

    e2e_wait_until $((want / 5 + 10)) attempts_since "$since" "$want" ||
        e2e_fail "$label: the kubelet stand-in made fewer than $want attempts in $((want / 5 + 10)) s"
    if e2e_wait_until 5 failing_open; then
        e2e_pass "$label: with nothing up the daemon is failing open (StatusText)"
    else
        e2e_fail "$label: not failing open $want attempts into the outage: '$(show StatusText)'"
    fi

    e2e_exec "$n" rm -f "$stamp"
    e2e_exec "$n" systemd-run --quiet --unit="e2e-api-$up" /usr/local/bin/e2e-coldboot serve \
        -name "$up" -listen "$addr" -dir /etc/e2e-coldboot -stamp "$stamp" -ready-after 1s ||
        e2e_die "could not start upstream $up"
    e2e_wait_until 10 e2e_exec "$n" test -s "$stamp" || e2e_die "upstream $up did not start"
    accept=$(e2e_exec "$n" cat "$stamp")
    e2e_wait_until 10 answered_after "$accept" || true
    e2e_wait_until 20 not_failing_open || true

    # The journal of the run (the daemon's lines and systemd's about it):
    # when the daemon was ready (systemd's "Started" line), how many lines
    # in the outage, how many from half a second after it was ready and
    # failing open (steady),
    # and when fail-open ended (ms after the upstream accepted).
    jr=$(e2e_journal "$n" -u "$unit" -o short-unix)
    line=$(awk -v s="$since" -v acc="$accept" '
        { t = $1 * 1e9 }
        t < s { next }
        t >= acc {
            if (!ended && /fail-open ended/) ended = sprintf("%.0f", (t - acc) / 1e6)
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

    # The attempts: those ended before the upstream accepted (the outage;
    # those begun before the daemon was ready waited for its start in the
    # socket's backlog), those begun after, those across the moment.
    line=$(e2e_exec "$n" awk -v s="$since" -v acc="$accept" -v ready="${m[ready]}" -v up="$up" '
        $1 < s { next }
        $2 < acc {
            w++; d = ($2 - $1) / 1e6
            if ($1 < ready) { if (d > smax) smax = d } else if (d > wmax) wmax = d
            if ($3 == "closed" || $3 == "refused") { wk[$3]++; if (!seen) seen = $4 } else { bad++; if (!why) why = $3 ":" $4 }
            next
        }
        $1 >= acc && $3 != "ok" { after++; if (!awhy) awhy = $3 ":" $4 }
        $3 == "ok" && !first { first = sprintf("%.1f", ($2 - acc) / 1e6) }
        $3 == "ok" && $4 != "200:" up { wrong++ }
        END {
            printf "outage=%d closed=%d refused=%d bad=%d start_max_ms=%.1f max_ms=%.1f first_ms=%s after_failed=%d wrong=%d why=%s awhy=%s seen=%s\n",
                w, wk["closed"], wk["refused"], bad, smax, wmax, (first == "" ? "none" : first),
                after, wrong, (why == "" ? "-" : why), (awhy == "" ? "-" : awhy), (seen == "" ? "-" : seen)
        }' "$poll")
    for kv in $line; do m[${kv%%=*}]=${kv#*=}; done
    e2e_log "$label: $line journal=${m[journal]} steady=${m[steady]}/${m[steady_s]}s ended=${m[ended]} ($((SECONDS - t0)) s)"

    # While nothing was up. After a boot none may be refused: the socket
    # holds 127.0.0.1:7445 before kubelet starts.
    if [[ $since == 0 ]]; then
        e2e_assert_eq "$label: no attempt refused since boot, the first waited for the daemon's start" \
            "0 yes" "${m[refused]} $(le 0.1 "${m[start_max_ms]}" && echo yes || echo "no (${m[start_max_ms]} ms)")"
    fi
    if ((m[ready] > 0 && m[outage] >= want && m[bad] == 0)) &&
        le "${m[start_max_ms]}" "$start_ms" && le "${m[max_ms]}" "$attempt_ms"; then
        e2e_pass "$label: while nothing is up, ${m[outage]} attempts each closed (${m[closed]}) or refused (${m[refused]}): within ${m[max_ms]} ms once the daemon was ready (bound $attempt_ms), ${m[start_max_ms]} ms while it started (bound $start_ms)"
    else
        e2e_fail "$label: while nothing is up: ${m[outage]} attempts (want >= $want), ${m[bad]} neither closed nor refused (first: ${m[why]}), longest ${m[max_ms]} ms once ready (bound $attempt_ms), ${m[start_max_ms]} ms while starting (bound $start_ms); ready at ${m[ready]}"
    fi
    # The journal meanwhile: once ready and failing open, only the rate-limited lines
    # that clients cause, "dial failed" and "closing client", each at most
    # once a second (pkg/balancer/noisy.go); 2 more for anything else.
    local quiet=$((2 * (${m[steady_s]%.*} + 1) + 2))
    if ((m[steady] <= quiet)); then
        e2e_pass "$label: the journal stays quiet: ${m[steady]} lines in the ${m[steady_s]} s spent failing open (${m[journal]} in the whole outage, start included)"
    else
        e2e_fail "$label: ${m[steady]} journal lines in the ${m[steady_s]} s spent failing open (bound $quiet):"
        awk -v s="$since" '$1 * 1e9 >= s' <<<"$jr" | head -n 40
    fi
    STEADY[$sc]+=" ${m[steady]}/${m[steady_s]}s"

    # Once it accepts.
    if [[ ${m[first_ms]} != none ]] && le "${m[first_ms]}" "$target_ms"; then
        e2e_pass "$label: first answer ${m[first_ms]} ms after $up accepted (target $target_ms)"
    else
        e2e_fail "$label: first answer ${m[first_ms]} ms after $up accepted (target $target_ms)"
    fi
    FIRST[$sc]+=" ${m[first_ms]}"
    WORST_ATTEMPT[$sc]+=" ${m[max_ms]}"
    e2e_assert_eq "$label: no attempt begun after $up accepted failed, all answered by $up" "0/0/-" \
        "${m[after_failed]}/${m[wrong]}/${m[awhy]}"

    # Fail-open ends when the upstream passes health_rise checks.
    if [[ ${m[ended]} != none ]] && not_failing_open; then
        e2e_pass "$label: fail-open ended ${m[ended]} ms after $up accepted ($(show StatusText | cut -d';' -f1))"
    else
        e2e_fail "$label: fail-open did not end within 20 s of $up accepting: '$(show StatusText)'"
    fi
    FAILOPEN[$sc]+=" ${m[ended]}"
}

# ---------------------------------------------------------------------------
# Boots with every control plane down
# ---------------------------------------------------------------------------
for ((i = 1; i <= 2 * boots; i++)); do
    up=$( ((i % 2)) && echo a || echo c)
    sc=$([[ $up == a ]] && echo boot/static || echo boot/cache)
    e2e_reboot "$n" "$art" || e2e_fail "boot $i: power off and boot"
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
for sc in boot/static boot/cache daemon; do
    key=${sc/\//_}
    ep_metric "coldboot_${key}_first_answer_ms" "$(stats "${FIRST[$sc]:-}")"
    ep_metric "coldboot_${key}_fail_open_ended_ms" "$(stats "${FAILOPEN[$sc]:-}")"
    ep_metric "coldboot_${key}_outage_attempt_ms" "$(stats "${WORST_ATTEMPT[$sc]:-}")"
    echo "measured $sc ($boots runs): accept -> first answer median/worst $(stats "${FIRST[$sc]:-}") ms" \
        "[${FIRST[$sc]# }]; accept -> fail-open ended $(stats "${FAILOPEN[$sc]:-}") ms;" \
        "longest attempt while down $(stats "${WORST_ATTEMPT[$sc]:-}") ms; journal lines while failing open:${STEADY[$sc]:-}"
done

if e2e_stop "$n"; then
    e2e_pass "clean poweroff"
else
    e2e_fail "e2e_stop $n"
fi
e2e_summary
