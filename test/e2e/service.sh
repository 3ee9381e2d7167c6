#!/usr/bin/env bash
# shellcheck disable=SC2016 # commands for inside containers are single-quoted on purpose
# test/e2e/service.sh - the daemon and its units under a real systemd as PID 1
# (issue 3), installed from the .deb: socket activation, READY/STATUS,
# reload (applied live, rejected when invalid, open connections kept), the
# watchdog, and a restart under steady connection attempts. Prints the
# measured exec -> READY=1 and connect -> first byte after a cold start.
#
# Usage: sudo test/e2e/service.sh [SUITE]      (SUITE defaults to bookworm)
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
n=svc-$$
unit=extractedprism.service
sock=extractedprism.socket
hsock=extractedprism-health.socket

art=""
ep_artifacts art
deb=$(ep_pkg "$art" deb "$EP_NEW")
tarball=$(e2e_rootfs "$suite")
e2e_boot "$n" "$tarball" "$art"

# Four stand-in API servers on their own loopback addresses.
ep_upstreams "$n" e2e-upstreams a=127.0.0.11:6443 b=127.0.0.12:6443 c=127.0.0.13:6443 d=127.0.0.14:6443

show() { e2e_show "$n" "$1" "$2"; }
status_text() { show "$unit" StatusText; }
status_matches() { [[ $(status_text) =~ $1 ]]; }
# config ENDPOINTS [EXTRA_TOML] : the test configuration with these endpoints.
config() {
    ep_config "$n" <<EOF
# written by test/e2e/service.sh
endpoints = [$1]
enable_discovery = false
health_check = "tcp"
health_interval = "1s"
health_timeout = "500ms"
drain_timeout = "2s"
${2:-}
EOF
}
q() { printf '"%s",' "$@" | sed 's/,$//'; } # q a b -> "a","b"
addr() { echo "127.0.0.$((11 + $(printf '%d' "'$1") - 97)):6443"; } # a -> 127.0.0.11:6443

# ---------------------------------------------------------------------------
# Install and socket activation
# ---------------------------------------------------------------------------
e2e_assert_ok "dpkg -i $deb" e2e_exec "$n" dpkg -i "/dist/$deb"
e2e_assert_eq "postinst enabled the health socket too (Also=)" enabled \
    "$(e2e_exec "$n" systemctl is-enabled "$hsock" 2>&1)"
config "$(q "$(addr a)" "$(addr b)")"
e2e_assert_ok "systemctl enable --now $sock" e2e_exec "$n" systemctl enable --now "$sock"
e2e_assert_eq "socket is listening" active/listening "$(show "$sock" ActiveState)/$(show "$sock" SubState)"
e2e_assert_eq "service not running before the first connection" inactive "$(show "$unit" ActiveState)"
e2e_assert_eq "no extractedprism process before the first connection" "" "$(ep_daemon_pids "$n")"

# cold_start LABEL : with the service stopped, time one connection from
# connect() to the first byte, then exec -> READY=1 from systemd's own
# timestamps: ExecMainStartTimestamp is taken when PID 1 forks the service
# (before the sandbox is set up and the binary exec'd), ActiveEnterTimestamp
# when it processes READY=1.
cold_start() {
    local out line t1 t2 fork ready
    out=$(e2e_exec "$n" timeout 15 bash -c '
        t0=$EPOCHREALTIME
        exec 3<>/dev/tcp/127.0.0.1/7445 || exit 1
        t1=$EPOCHREALTIME
        IFS= read -r -t 10 line <&3 || exit 1
        t2=$EPOCHREALTIME
        echo "$line ${t1/./} ${t2/./}"' 2>&1) || out="error: $out"
    read -r line t1 t2 <<<"$out"
    fork=$(show "$unit" ExecMainStartTimestampMonotonic)
    ready=$(show "$unit" ActiveEnterTimestampMonotonic)
    e2e_assert_match "$1: first connection is served by an upstream" '^[ab]$' "$line"
    if [[ $t1 =~ ^[0-9]+$ && $t2 =~ ^[0-9]+$ && $fork =~ ^[1-9][0-9]*$ && $ready =~ ^[1-9][0-9]*$ ]]; then
        COLD_CONNECT_MS+=("$(ep_ms "$t1" "$t2")")
        COLD_READY_MS+=("$(ep_ms "$fork" "$ready")")
        e2e_log "$1: connect -> first byte ${COLD_CONNECT_MS[-1]} ms; fork -> READY=1 ${COLD_READY_MS[-1]} ms"
    else
        e2e_fail "$1: no timings (client '$out', fork '$fork', ready '$ready')"
    fi
}
COLD_CONNECT_MS=() COLD_READY_MS=()

cold_start "cold start 1"
e2e_assert_eq "the first connection started the service" active/running \
    "$(show "$unit" ActiveState)/$(show "$unit" SubState)"
pid1=$(show "$unit" MainPID)
e2e_assert_match "service has a MainPID" '^[1-9][0-9]*$' "$pid1"
e2e_assert_eventually "StatusText says 2/2 upstreams healthy" 10 status_matches '^2/2 upstreams healthy; discovery: off$'
e2e_log "StatusText: $(status_text)"
e2e_assert_eq "bytes flow both ways through the proxy" "hello-1" "$(ep_roundtrip "$n" hello-1 | cut -d' ' -f2)"
e2e_assert_eq "connections are spread over both upstreams" "a b" "$(ep_names "$n" 6)"
e2e_assert_match "the daemon runs as a dynamic user, not root" '^[1-9][0-9]*$' \
    "$(e2e_exec "$n" stat -c %u "/proc/$pid1")"

# health_get : GET /healthz on 127.0.0.1:7446; prints the first line and
# the body's last line (or the first line a non-HTTP listener writes).
health_get() {
    e2e_exec "$n" timeout 5 bash -c '
        exec 3<>/dev/tcp/127.0.0.1/7446 || exit 1
        printf "GET /healthz HTTP/1.0\r\nHost: x\r\n\r\n" >&3
        IFS= read -r -t 3 first <&3 || exit 1
        last=$first
        while IFS= read -r -t 3 line <&3; do last=$line; done
        printf "%s|%s\n" "${first%$'"'"'\r'"'"'}" "${last%$'"'"'\r'"'"'}"' 2>&1
}
e2e_assert_eq "the health socket is held by systemd and in use" active/running "$(show "$hsock" ActiveState)/$(show "$hsock" SubState)"
e2e_assert_eq "/healthz answers on the inherited health socket" "HTTP/1.0 200 OK|ok" "$(health_get)"
e2e_assert_eq "MemoryMax= bounds the service (512M)" 536870912 "$(show "$unit" MemoryMax)"
e2e_assert_eq "TasksMax= bounds the service" 1024 "$(show "$unit" TasksMax)"
threads=$(e2e_exec "$n" sed -n 's/^Threads:[[:space:]]*//p' "/proc/$pid1/status")
e2e_assert_match "the daemon's threads are far below TasksMax" '^[0-9]{1,2}$' "$threads"
ep_metric daemon_threads "$threads"

# Two more cold starts for the numbers: stop the service, keep the socket.
for i in 2 3; do
    e2e_exec "$n" systemctl stop "$unit" 2>/dev/null
    e2e_wait_until 10 eval '[[ $(show "$unit" ActiveState) == inactive ]]' || true
    cold_start "cold start $i"
done

# ---------------------------------------------------------------------------
# Reload: a new endpoint list, applied live, open connections kept
# ---------------------------------------------------------------------------
# held K : a connection kept open across the reload by a transient unit. It
# writes the upstream's name to /run/e2e/held-K.name, waits for
# /run/e2e/held-K.go, then sends a line and writes the echo (or why it got
# none) to /run/e2e/held-K.result. Bounded: 120 s.
e2e_exec "$n" mkdir -p /run/e2e
# Through a file: systemd expands $VARs in a transient unit's command line.
e2e_exec "$n" sh -c 'cat >/run/e2e/held.sh' <<'EOF'
k=$1 d=/run/e2e
exec 3<>/dev/tcp/127.0.0.1/7445 || { echo connect-failed >$d/held-$k.name; exit 1; }
IFS= read -r -t 10 name <&3 || name=no-name
echo "$name" >$d/held-$k.name
for ((i = 0; i < 1200; i++)); do [[ -e $d/held-$k.go ]] && break; sleep 0.1; done
printf 'still-here-%s\n' "$k" >&3 2>/dev/null || { echo write-failed >$d/held-$k.result; exit 0; }
if IFS= read -r -t 5 reply <&3; then echo "$reply" >$d/held-$k.result
else echo closed-or-silent >$d/held-$k.result; fi
EOF
held() { e2e_exec "$n" systemd-run --quiet --unit="e2e-held-$1" /bin/bash /run/e2e/held.sh "$1"; }
held_file() { e2e_exec "$n" cat "/run/e2e/held-$1.$2" 2>/dev/null; }

held 1
e2e_wait_until 10 held_file 1 name || true
held 2
e2e_wait_until 10 held_file 2 name || true
x=$(held_file 1 name) y=$(held_file 2 name)
e2e_assert_match "held connection 1 reached an upstream" '^[ab]$' "$x"
e2e_assert_match "held connection 2 reached the other one (least connections)" "^[ab]$" "$y"
[[ $x != "$y" ]] || e2e_fail "both held connections went to '$x'"
[[ $x =~ ^[ab]$ ]] || x=a
[[ $y =~ ^[ab]$ && $y != "$x" ]] || y=$([[ $x == a ]] && echo b || echo a)

# New list: keep X (held 1 stays on it), drop Y (held 2's upstream), add c, d.
pid=$(show "$unit" MainPID)
config "$(q "$(addr "$x")" "$(addr c)" "$(addr d)")"
t0=$EPOCHREALTIME
e2e_assert_ok "systemctl reload $unit" e2e_exec "$n" systemctl reload "$unit"
e2e_assert_eventually "StatusText after the reload: 3/3 upstreams healthy" 10 \
    status_matches '^3/3 upstreams healthy; discovery: off$'
e2e_log "reload applied (StatusText) $(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", (b-a)*1000}') ms after systemctl reload"
e2e_assert_eq "reload kept the process (MainPID)" "$pid" "$(show "$unit" MainPID)"
e2e_assert_eq "service is running after the reload" active/running "$(show "$unit" ActiveState)/$(show "$unit" SubState)"
# X still holds connection 1, so least-connections prefers c and d; X may
# still get one now and then, Y never.
e2e_assert_match "new connections reach the new upstreams c and d, never the removed $y" \
    "^($x )?c d$" "$(ep_names "$n" 8)"
e2e_assert_ok "the journal names the reload" eval 'e2e_journal "$n" -u "$unit" | grep -q "configuration reloaded"'
# Wait past drain_timeout (2 s), then talk through the held connections.
e2e_sleep 3
e2e_exec "$n" touch /run/e2e/held-1.go /run/e2e/held-2.go
e2e_wait_until 10 held_file 1 result || true
e2e_wait_until 10 held_file 2 result || true
e2e_assert_eq "connection open across the reload (upstream $x, kept) still echoes" still-here-1 "$(held_file 1 result)"
# Documented (README, Discovery/Removals): a removed upstream's connections
# may finish for drain_timeout and are then closed.
e2e_assert_eq "connection to the removed upstream $y is closed after drain_timeout" closed-or-silent \
    "$(held_file 2 result)"

# ---------------------------------------------------------------------------
# Reload with an invalid configuration: rejected, the old one stays
# ---------------------------------------------------------------------------
config "$(q "$(addr c)")" 'dial_timeout = "banana"'
e2e_assert_ok "systemctl reload with an invalid config" e2e_exec "$n" systemctl reload "$unit"
e2e_assert_eventually "StatusText says the reload was rejected" 10 status_matches 'reload rejected'
e2e_log "StatusText: $(status_text)"
e2e_assert_match "StatusText still shows the running configuration's 3 upstreams" '^3/3 upstreams healthy' "$(status_text)"
e2e_assert_eq "rejected reload kept the process" "$pid" "$(show "$unit" MainPID)"
e2e_assert_eq "service still running" active/running "$(show "$unit" ActiveState)/$(show "$unit" SubState)"
# The rejected file lists only c: reaching d proves the old list is in force.
e2e_assert_match "connections still go to the old configuration's upstreams" \
    "^($x )?c d$" "$(ep_names "$n" 9)"
e2e_assert_ok "the journal names file:line: key of the error" \
    eval 'e2e_journal "$n" -u "$unit" | grep -q "config.toml:[0-9]*: dial_timeout"'

# A valid configuration again (one upstream, so the client loops below can
# expect its name on every connection); the rejection note goes away. It
# also moves bind_port, which cannot change live: the reload names it as
# needing a restart, and after the restart the socket unit's address wins.
config "$(q "$(addr c)")" 'bind_port = 7999'
e2e_exec "$n" systemctl reload "$unit"
e2e_assert_eventually "a valid reload clears the rejection: 1/1 upstreams healthy" 10 \
    status_matches '^1/1 upstreams healthy; discovery: off$'
e2e_assert_ok "the journal names bind_port as needing a restart" \
    eval 'e2e_journal "$n" -u "$unit" | grep "only after a restart" | grep -q bind_port'
e2e_exec "$n" systemctl restart "$unit"
e2e_assert_eq "after a restart the socket unit's 127.0.0.1:7445 still serves" c "$(ep_hello "$n")"
e2e_assert_ok "127.0.0.1:7999 (the configured port) is not bound" ep_refused "$n" 7999
e2e_assert_ok "the journal says the inherited socket wins" \
    eval 'e2e_journal "$n" -u "$unit" | grep -q "the socket unit wins"'

# ---------------------------------------------------------------------------
# Restart under steady connection attempts
# ---------------------------------------------------------------------------
# The loop runs until stopped (300 s at most); each step waits for the
# loop's connections to go on after it, so the load covers every restart
# however long it takes.
pid=$(show "$unit" MainPID)
e2e_client_start "$n" "$EP_PORT" 300 0.05 c
covered=1
# after STEP : three more connections served after STEP, the loop still running.
after() {
    local served
    served=$(e2e_client_ok "$n")
    e2e_client_await "$n" $((served + 3)) 60 || { covered=0; e2e_fail "the client loop did not go on after $1"; }
}
e2e_client_await "$n" 3 30 || { covered=0; e2e_fail "the client loop made no connection before the restarts"; }
t0=$EPOCHREALTIME
e2e_exec "$n" systemctl restart "$unit"
restart_ms=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", (b-a)*1000}')
after "the first restart"
e2e_exec "$n" systemctl restart "$unit"
after "the second restart"
e2e_exec "$n" systemctl stop "$unit" 2>/dev/null # the next connection activates it again
after "the stop"
e2e_client_stop "$n" || true
((covered)) && e2e_pass "the client loop ran before, across and after 2 restarts and a stop"
e2e_assert_no_refused "no refused or failed connection across 2 restarts and a stop"
ep_metric restart_refused "$E2E_CLIENT_REFUSED"
ep_metric restart_attempts "$E2E_CLIENT_ATTEMPTS"
e2e_log "systemctl restart took ${restart_ms} ms"
e2e_assert_match "service runs again with a new MainPID" "^[1-9][0-9]*$" "$(show "$unit" MainPID)"
[[ $(show "$unit" MainPID) != "$pid" ]] || e2e_fail "MainPID did not change across the restarts"

# ---------------------------------------------------------------------------
# The health port taken by another process: the daemon proxies anyway
# ---------------------------------------------------------------------------
# An unprivileged process takes 127.0.0.1:7446 while the health socket is
# down (the upstream stand-in, answering its name): the socket cannot bind,
# the service starts without it, proxies, says so in STATUS=, and serves
# /healthz itself once the port is free.
e2e_exec "$n" systemctl stop "$unit" "$hsock"
e2e_exec "$n" systemd-run --quiet --unit=e2e-squatter -p DynamicUser=yes /usr/local/bin/e2e-upstream squatter=127.0.0.1:7446
e2e_wait_until 10 eval '[[ $(health_get) == squatter* ]]' || true
e2e_assert_match "the squatter holds 127.0.0.1:7446" '^squatter' "$(health_get)"
e2e_exec "$n" systemctl start "$unit" 2>/dev/null || true
e2e_assert_eq "the service runs with the health port taken" active/running "$(show "$unit" ActiveState)/$(show "$unit" SubState)"
e2e_assert_eq "the health socket failed to bind" failed "$(show "$hsock" ActiveState)"
e2e_assert_eq "the proxy serves with the health port taken" c "$(ep_hello "$n")"
e2e_assert_eventually "StatusText says the health server is not listening" 10 \
    status_matches 'health server not listening: .*address already in use'
e2e_log "StatusText: $(status_text)"
e2e_exec "$n" systemctl stop e2e-squatter
t0=$SECONDS
e2e_assert_eventually "the daemon serves /healthz itself once the port is free" 40 \
    eval '[[ $(health_get) == "HTTP/1.0 200 OK|ok" ]]'
e2e_log "health port bound by the daemon ~$((SECONDS - t0)) s after the squatter left"
e2e_assert_eventually "StatusText no longer mentions the health server" 5 eval '! status_matches "health server"'
# Back to the packaged state: the health socket held by systemd.
e2e_exec "$n" systemctl stop "$unit"
e2e_exec "$n" systemctl reset-failed "$hsock"
e2e_exec "$n" systemctl start "$hsock"
e2e_assert_eq "the health socket binds again once the daemon let go" active/listening \
    "$(show "$hsock" ActiveState)/$(show "$hsock" SubState)"
e2e_assert_eq "and the next connection starts the service with it" c "$(ep_hello "$n")"

# ---------------------------------------------------------------------------
# Watchdog: a stopped daemon is restarted
# ---------------------------------------------------------------------------
e2e_exec "$n" mkdir -p "/etc/systemd/system/$unit.d"
printf '[Service]\nWatchdogSec=2s\n' | e2e_exec "$n" sh -c "cat >/etc/systemd/system/$unit.d/e2e-watchdog.conf"
e2e_exec "$n" systemctl daemon-reload
e2e_exec "$n" systemctl restart "$unit"
e2e_assert_eq "drop-in sets WatchdogSec=2s" 2s "$(show "$unit" WatchdogUSec)"
e2e_assert_eventually "service is up again" 10 eval '[[ $(show "$unit" SubState) == running ]]'
# Pinging works: 4 s (two watchdog periods) without a restart.
r0=$(show "$unit" NRestarts) pid=$(show "$unit" MainPID)
e2e_sleep 4
e2e_assert_eq "a live daemon keeps the watchdog happy (no restart in 4 s)" "$r0/$pid" \
    "$(show "$unit" NRestarts)/$(show "$unit" MainPID)"

e2e_client_start "$n" "$EP_PORT" 300 0.05
covered=1
e2e_client_await "$n" 3 30 || { covered=0; e2e_fail "the client loop made no connection before SIGSTOP"; }
e2e_exec "$n" bash -c 'kill -STOP "$1"' _ "$pid" # bash builtin: no procps here
t0=$SECONDS
if e2e_wait_until 15 eval '(( $(show "$unit" NRestarts) > r0 ))'; then
    e2e_pass "watchdog restarted the SIGSTOPped daemon (NRestarts $r0 -> $(show "$unit" NRestarts), ~$((SECONDS - t0)) s)"
else
    e2e_fail "no restart within 15 s of SIGSTOP (NRestarts $(show "$unit" NRestarts))"
fi
e2e_assert_eventually "service running again with a new MainPID" 10 \
    eval '[[ $(show "$unit" SubState) == running && $(show "$unit" MainPID) != "$pid" ]]'
e2e_assert_eventually "the stopped process is gone" 10 e2e_absent "$n" test -e "/proc/$pid"
wd_journal=$(e2e_journal "$n" -u "$unit")
e2e_assert_match "journal: watchdog timeout" 'Watchdog timeout' "$wd_journal"
e2e_assert_match "journal: failed with result 'watchdog'" "Failed with result 'watchdog'" "$wd_journal"
after "the watchdog restart"
e2e_client_stop "$n" || true
((covered)) && e2e_pass "the client loop ran before, across and after the watchdog restart"
# Connections made while the daemon was stopped wait in the socket's backlog
# (this loop only connects, it reads nothing); none may be refused.
if ((E2E_CLIENT_ATTEMPTS > 0 && E2E_CLIENT_REFUSED == 0)); then
    e2e_pass "no refused connection while the watchdog restarted the daemon ($E2E_CLIENT_OK/$E2E_CLIENT_ATTEMPTS ok)"
else
    e2e_fail "connections during the watchdog restart: attempts=$E2E_CLIENT_ATTEMPTS refused=$E2E_CLIENT_REFUSED failed=$E2E_CLIENT_FAILED ($E2E_CLIENT_FIRST_ERROR)"
fi
ep_metric watchdog_refused "$E2E_CLIENT_REFUSED"
e2e_assert_eq "traffic flows after the watchdog restart" c "$(ep_hello "$n")"

# ---------------------------------------------------------------------------
# An invalid configuration at start: why, in STATUS=; restarts spaced out
# ---------------------------------------------------------------------------
e2e_exec "$n" rm -f "/etc/systemd/system/$unit.d/e2e-watchdog.conf"
e2e_exec "$n" systemctl daemon-reload
config "$(q "$(addr c)")" 'dial_timeout = "banana"'
e2e_exec "$n" systemctl restart --no-block "$unit"
e2e_assert_eventually "StatusText names the error of the failed start" 15 \
    status_matches '^start failed \(1 in a row\), exiting in 1s: /etc/extractedprism/config.toml:[0-9]+: dial_timeout'
e2e_log "StatusText: $(status_text)"
e2e_assert_eventually "each failed start in a row waits longer: 3rd waits 4 s" 20 \
    status_matches '^start failed \(3 in a row\), exiting in 4s'
r0=$(show "$unit" NRestarts) t0=$SECONDS
e2e_sleep 8
r1=$(show "$unit" NRestarts)
if ((r1 - r0 <= 2)); then
    e2e_pass "restarts spaced out: NRestarts $r0 -> $r1 in $((SECONDS - t0)) s (RestartSec=1s alone: ~7)"
else
    e2e_fail "restarts not spaced out: NRestarts $r0 -> $r1 in $((SECONDS - t0)) s"
fi
ep_metric config_error_restarts_in_8s "$((r1 - r0))"
config "$(q "$(addr c)")"
e2e_exec "$n" systemctl restart --no-block "$unit" # SIGTERM ends the wait
e2e_assert_eventually "a fixed configuration starts at once" 15 status_matches '^1/1 upstreams healthy'
e2e_assert_ok "a successful start clears the count" \
    eval '! e2e_exec "$n" test -e /var/lib/private/extractedprism/start-failures'
e2e_assert_eq "traffic flows after the failed starts" c "$(ep_hello "$n")"

# ---------------------------------------------------------------------------
# The link-local address for pods (issue 17): off by default, one switch
# ---------------------------------------------------------------------------
ll=extractedprism-link-local.socket lls=extractedprism-link-local.service
ll_hello() { # the first line through 169.254.7.45:PORT
    e2e_exec "$n" timeout 10 bash -c \
        'exec 3<>"/dev/tcp/169.254.7.45/$1" && IFS= read -r -t 8 line <&3 && printf "%s\n" "$line"' _ "$1" 2>&1
}
e2e_assert_match "link-local socket enabled with the proxy's" '^active/(listening|running)$' \
    "$(show "$ll" ActiveState)/$(show "$ll" SubState)"
e2e_assert_ok "the daemon was handed it" \
    eval 'e2e_journal "$n" -u "$unit" | grep "\"link_local\": \"169.254.7.45:7445\"" >/dev/null'
e2e_assert_eq "the address is off by default" inactive "$(show "$lls" ActiveState)"
e2e_assert_fails "no extractedprism0 interface by default" e2e_exec "$n" test -e /sys/class/net/extractedprism0
e2e_assert_match "nothing answers at 169.254.7.45:7445 while off" 'unreachable' "$(ll_hello 7445)"
pid=$(show "$unit" MainPID)
e2e_client_start "$n" "$EP_PORT" 300 0.05 c
e2e_assert_ok "systemctl enable --now $lls" e2e_exec "$n" systemctl enable --now "$lls"
e2e_assert_ok "the address is on extractedprism0" e2e_exec "$n" test -e /sys/class/net/extractedprism0
e2e_assert_eq "the oneshot's only capability is CAP_NET_ADMIN" cap_net_admin "$(show "$lls" CapabilityBoundingSet)"
e2e_assert_eq "served through 169.254.7.45:7445 at once" c "$(ll_hello 7445)"
e2e_assert_match "health is not on the link-local address" 'Connection refused' "$(ll_hello 7446)"
e2e_assert_eq "switched on without a restart (MainPID)" "$pid" "$(show "$unit" MainPID)"
e2e_assert_ok "systemctl disable --now $lls" e2e_exec "$n" systemctl disable --now "$lls"
e2e_client_stop "$n" || true
e2e_assert_no_refused "no refused or failed connection on 127.0.0.1 while it was switched on and off"
e2e_assert_fails "switched off: the interface is gone" e2e_exec "$n" test -e /sys/class/net/extractedprism0
e2e_assert_match "nothing answers at 169.254.7.45:7445 again" 'unreachable' "$(ll_hello 7445)"

# ---------------------------------------------------------------------------
# Numbers
# ---------------------------------------------------------------------------
ep_metric cold_fork_to_ready_ms "$(
    IFS=/
    echo "${COLD_READY_MS[*]}"
)"
ep_metric cold_connect_to_first_byte_ms "$(
    IFS=/
    echo "${COLD_CONNECT_MS[*]}"
)"
ep_metric restart_ms "$restart_ms"
echo "measured: fork->READY=1 ${COLD_READY_MS[*]} ms; connect->first byte after a cold start ${COLD_CONNECT_MS[*]} ms (3 cold starts)"

if e2e_stop "$n"; then
    e2e_pass "clean poweroff"
else
    e2e_fail "e2e_stop $n"
fi
e2e_summary
