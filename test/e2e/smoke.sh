#!/usr/bin/env bash
# test/e2e/smoke.sh - proves the e2e harness (lib.sh) works, without the real
# daemon: a throwaway stdlib-only socket-activated Type=notify program
# (testdata/sdsmoke) under a real systemd in systemd-nspawn.
#
# Usage: sudo test/e2e/smoke.sh [SUITE]      (SUITE defaults to bookworm)
# Needs: root, Go on the host; installs systemd-container, debootstrap, zstd.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
e2e_trap

suite=${1:-bookworm}
name=smoke-$$
port=7999

# Build the throwaway program in a module of its own, so the main module's
# go.mod (and its state) does not matter here.
e2e_tmpdir work
mkdir -p "$work/src" "$work/dist"
cp "$here/testdata/sdsmoke/main.go" "$work/src/"
printf 'module sdsmoke\n\ngo 1.22\n' >"$work/src/go.mod"
e2e_log "building sdsmoke"
(cd "$work/src" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' \
    -o "$work/dist/sdsmoke" .)
cp "$here/testdata/sdsmoke/sdsmoke.socket" "$here/testdata/sdsmoke/sdsmoke.service" "$work/dist/"

tarball=$(e2e_rootfs "$suite")
e2e_boot "$name" "$tarball" "$work/dist"

e2e_assert_match "container runs systemd as PID 1" '^systemd$' \
    "$(e2e_exec "$name" cat /proc/1/comm)"
e2e_assert_ok "/dist is bound read-only" \
    e2e_exec "$name" sh -c 'test -x /dist/sdsmoke && ! touch /dist/x 2>/dev/null'

e2e_exec "$name" install -m 0755 /dist/sdsmoke /usr/local/bin/sdsmoke
e2e_exec "$name" install -m 0644 /dist/sdsmoke.socket /dist/sdsmoke.service /etc/systemd/system/
e2e_exec "$name" systemctl daemon-reload
e2e_assert_ok "systemctl enable --now sdsmoke.socket" \
    e2e_exec "$name" systemctl enable --now sdsmoke.socket
e2e_assert_eq "socket is active (listening)" active "$(e2e_show "$name" sdsmoke.socket ActiveState)"
e2e_assert_eq "service not started before the first connection" inactive \
    "$(e2e_show "$name" sdsmoke.service ActiveState)"

# First connection: systemd starts the service, which answers.
reply=$(e2e_exec "$name" timeout 10 bash -c \
    "exec 3<>/dev/tcp/127.0.0.1/$port && IFS= read -r -t 5 line <&3 && printf '%s' \"\$line\"" 2>&1) ||
    true
e2e_assert_eq "first connection to 127.0.0.1:$port reads hello" hello "$reply"
e2e_assert_eq "service ActiveState after activation" active "$(e2e_show "$name" sdsmoke.service ActiveState)"
e2e_assert_eq "service SubState after activation" running "$(e2e_show "$name" sdsmoke.service SubState)"
e2e_assert_match "READY/STATUS arrived via sd_notify" '^serving on 127\.0\.0\.1:7999$' \
    "$(e2e_show "$name" sdsmoke.service StatusText)"

# Client loop helper, both ways: every attempt served on the live port...
e2e_client_loop "$name" "$port" 2 0.05 hello || true
e2e_assert_no_refused "client loop against the live socket"
# ...and the refusal counter really counts (nothing listens on 7998).
e2e_client_loop "$name" 7998 1 0.1 || true
if ((E2E_CLIENT_ATTEMPTS > 0 && E2E_CLIENT_REFUSED == E2E_CLIENT_ATTEMPTS)); then
    e2e_pass "client loop counts refusals on a closed port ($E2E_CLIENT_REFUSED/$E2E_CLIENT_ATTEMPTS)"
else
    e2e_fail "client loop on a closed port: attempts=$E2E_CLIENT_ATTEMPTS refused=$E2E_CLIENT_REFUSED failed=$E2E_CLIENT_FAILED"
fi

# The pattern later tests use: restart the service under a client loop that
# runs until stopped, seen connecting before and after each event.
oldpid=$(e2e_show "$name" sdsmoke.service MainPID)
e2e_client_start "$name" "$port" 60 0.02 hello
e2e_assert_ok "the client loop connects before the restart" e2e_client_await "$name" 3 30
e2e_exec "$name" systemctl restart sdsmoke.service
e2e_assert_ok "the client loop connects after the restart" \
    e2e_client_await "$name" $(($(e2e_client_ok "$name") + 3)) 30
# The next connect re-activates it (stderr: "can still be activated by" warning).
e2e_exec "$name" systemctl stop sdsmoke.service 2>/dev/null
e2e_assert_ok "the client loop connects after the stop" \
    e2e_client_await "$name" $(($(e2e_client_ok "$name") + 3)) 30
t0=$SECONDS
e2e_client_stop "$name" || true
e2e_assert_ok "e2e_client_stop ends the loop at once, not after its 60 s" test $((SECONDS - t0)) -lt 10
e2e_assert_no_refused "no refused connection while the service restarts and stops"
newpid=$(e2e_show "$name" sdsmoke.service MainPID)
if [[ $newpid != 0 && $newpid != "$oldpid" ]]; then
    e2e_pass "service was re-activated with a new MainPID ($oldpid -> $newpid)"
else
    e2e_fail "service MainPID: before $oldpid, after $newpid"
fi

# Absence probes: absent, present, and a probe that cannot run.
rc=0
e2e_absent "$name" test -e /nonexistent || rc=$?
e2e_assert_eq "e2e_absent: a missing file is absent" 0 "$rc"
rc=0
e2e_absent "$name" test -e /etc/hostname || rc=$?
e2e_assert_eq "e2e_absent: an existing file is present" 1 "$rc"

# Not through e2e_assert_ok: that runs its command in a subshell, and e2e_stop
# must update the harness state of this shell.
if e2e_stop "$name"; then
    e2e_pass "clean poweroff, cgroups and rootfs removed"
else
    e2e_fail "e2e_stop $name"
fi

# With the container gone nothing can be checked: neither says "absent".
rc=0
e2e_absent "$name" test -e /nonexistent 2>/dev/null || rc=$?
e2e_assert_eq "e2e_absent on a stopped container: the probe failed, not absent" 2 "$rc"
e2e_assert_match "e2e_probe on a stopped container says the probe failed" '^probe failed' \
    "$(e2e_probe "$name" find / -name nothing 2>/dev/null)"

e2e_summary
