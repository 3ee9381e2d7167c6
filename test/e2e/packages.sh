#!/usr/bin/env bash
# shellcheck disable=SC2016 # commands for inside containers are single-quoted on purpose
# test/e2e/packages.sh - the .deb and the .rpm under a real systemd as PID 1
# (issue 5): install, traffic, an edited config.toml, upgrade to a newer build
# under a client connecting in a loop (no refused connection, the edit
# survives, the new binary runs), removal and purge leave nothing behind.
#
# Usage: sudo test/e2e/packages.sh [SUITE]     (SUITE defaults to bookworm)
# Builds the packages itself (versions 0.0.1 and 0.0.2, `make package`)
# unless E2E_ARTIFACTS names a directory that run.sh filled.
#
# The .rpm runs on the Debian rootfs too (there is no Fedora userland here):
# installed with the host's rpm into the extracted rootfs before boot,
# upgraded and erased with the rootfs's own rpm inside the running system,
# --nodeps throughout. See README.md for what that leaves unexercised.
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=helpers.sh
source "$here/helpers.sh"
e2e_trap

suite=${1:-bookworm}
unit=extractedprism.service
sock=extractedprism.socket
hsock=extractedprism-health.socket
llsock=extractedprism-link-local.socket llsvc=extractedprism-link-local.service

art=""
ep_artifacts art
ep_host_deps
deb_old=$(ep_pkg "$art" deb "$EP_OLD") deb_new=$(ep_pkg "$art" deb "$EP_NEW")
rpm_old=$(ep_pkg "$art" rpm "$EP_OLD") rpm_new=$(ep_pkg "$art" rpm "$EP_NEW")
marker="# e2e: edited by the admin $$"

# config NAME : the admin's configuration, with a marker line to find later.
config() {
    ep_config "$1" <<EOF
$marker
endpoints = ["127.0.0.11:6443"]
enable_discovery = false
health_check = "tcp"
health_interval = "1s"
health_timeout = "500ms"
EOF
}
state() { echo "$(e2e_show "$1" "$2" ActiveState)/$(e2e_show "$1" "$2" SubState)"; }
enabled() { e2e_exec "$1" systemctl is-enabled "$2" 2>/dev/null || true; }

# upgrade NAME DESC CMD... : run CMD inside NAME while a client connects in a
# loop (expecting upstream "a" on every connection); assert no connection was
# refused or failed, the service was restarted into the new version, and the
# edit of config.toml survived.
upgrade() {
    local name=$1 desc=$2 pid0 pid1 t0 ms served
    shift 2
    pid0=$(e2e_show "$name" "$unit" MainPID)
    # Until stopped (600 s at most): the loop covers the upgrade however
    # long the package manager takes, and must go on after it.
    e2e_client_start "$name" "$EP_PORT" 600 0.05 a
    e2e_client_await "$name" 3 30 || e2e_fail "$desc: the client loop made no connection before the upgrade"
    t0=$EPOCHREALTIME
    e2e_assert_ok "$desc" e2e_exec "$name" "$@"
    ms=$(awk -v a="$t0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.0f", (b-a)*1000}')
    e2e_log "$desc took $ms ms"
    served=$(e2e_client_ok "$name")
    if e2e_client_await "$name" $((served + 3)) 60; then
        e2e_pass "$desc: the client loop ran before, across and after the upgrade"
    else
        e2e_fail "$desc: the client loop did not go on after the upgrade"
    fi
    e2e_client_stop "$name" || true
    e2e_assert_no_refused "$desc: no refused or failed connection during the upgrade"
    ep_metric "upgrade_refused_${name%%-*}" "$E2E_CLIENT_REFUSED"
    ep_metric "upgrade_attempts_${name%%-*}" "$E2E_CLIENT_ATTEMPTS"
    ep_metric "upgrade_ms_${name%%-*}" "$ms"
    pid1=$(e2e_show "$name" "$unit" MainPID)
    e2e_assert_match "$desc: the running service was restarted (MainPID $pid0 -> $pid1)" '^[1-9][0-9]*$' "$pid1"
    [[ $pid1 != "$pid0" ]] || e2e_fail "$desc: MainPID unchanged ($pid0)"
    e2e_assert_match "$desc: the new binary is installed" "^extractedprism v$EP_NEW " \
        "$(e2e_exec "$name" extractedprism version)"
    e2e_assert_eq "$desc: the running daemon is the new version" "v$EP_NEW" "$(ep_running_version "$name")"
    e2e_assert_ok "$desc: the edit of config.toml survived" \
        e2e_exec "$name" grep -qxF "$marker" /etc/extractedprism/config.toml
}

# gone NAME DESC : after removal, nothing runs and nothing listens.
gone() {
    local name=$1 desc=$2
    e2e_assert_eq "$desc: socket stopped" inactive "$(e2e_show "$name" "$sock" ActiveState)"
    e2e_assert_eq "$desc: health socket stopped" inactive "$(e2e_show "$name" "$hsock" ActiveState)"
    e2e_assert_eq "$desc: link-local socket stopped" inactive "$(e2e_show "$name" "$llsock" ActiveState)"
    e2e_assert_ok "$desc: 127.0.0.1:7446 refuses connections" ep_refused "$name" 7446
    e2e_assert_eq "$desc: service stopped" inactive "$(e2e_show "$name" "$unit" ActiveState)"
    e2e_assert_eq "$desc: no extractedprism process left" "" "$(ep_daemon_pids "$name")"
    e2e_assert_ok "$desc: 127.0.0.1:7445 refuses connections" ep_refused "$name"
    e2e_assert_absent "$desc: unit files gone" "$name" sh -c \
        'ls /usr/lib/systemd/system/extractedprism.* /lib/systemd/system/extractedprism.* 2>/dev/null | grep -q .'
    e2e_assert_absent "$desc: binary gone" "$name" test -e /usr/bin/extractedprism
}

# ===========================================================================
# .deb
# ===========================================================================
n=deb-$$
tarball=$(e2e_rootfs "$suite")
e2e_boot "$n" "$tarball" "$art"
ep_upstreams "$n" e2e-upstreams a=127.0.0.11:6443

e2e_assert_ok "deb: dpkg -i $deb_old" e2e_exec "$n" dpkg -i "/dist/$deb_old"
# Debian convention (dh_installsystemd): the postinst enables and starts the
# socket on first install; the service is started by the first connection.
e2e_assert_eq "deb: postinst enabled the socket" enabled "$(enabled "$n" "$sock")"
e2e_assert_eq "deb: postinst started the socket" active/listening "$(state "$n" "$sock")"
e2e_assert_eq "deb: postinst enabled the health socket (Also=)" enabled "$(enabled "$n" "$hsock")"
e2e_assert_eq "deb: postinst started the health socket" active/listening "$(state "$n" "$hsock")"
e2e_assert_eq "deb: postinst enabled the link-local socket (Also=)" enabled "$(enabled "$n" "$llsock")"
e2e_assert_eq "deb: postinst started the link-local socket" active/listening "$(state "$n" "$llsock")"
e2e_assert_eq "deb: the link-local address is off (its oneshot not enabled)" disabled "$(enabled "$n" "$llsvc")"
e2e_assert_eq "deb: service not started by the install" inactive "$(e2e_show "$n" "$unit" ActiveState)"
e2e_assert_ok "deb: systemctl enable --now $sock (idempotent)" e2e_exec "$n" systemctl enable --now "$sock"
config "$n"
e2e_assert_eq "deb: traffic flows (first connection activates the service)" a "$(ep_hello "$n")"
e2e_assert_eq "deb: service running" active/running "$(state "$n" "$unit")"
e2e_assert_eq "deb: running daemon is the old version" "v$EP_OLD" "$(ep_running_version "$n")"

upgrade "$n" "deb: dpkg -i $deb_new" sh -c "dpkg -i /dist/$deb_new </dev/null"
e2e_assert_match "deb: dpkg knows the new version" "^$EP_NEW-" \
    "$(e2e_exec "$n" dpkg-query -W -f '${Version}' extractedprism)"
e2e_assert_eq "deb: no .dpkg-dist/.dpkg-new config left by the upgrade" "" \
    "$(e2e_probe "$n" sh -c 'ls /etc/extractedprism/ | grep -v "^config.toml$"; true')"
e2e_assert_eq "deb: socket still enabled after the upgrade" enabled "$(enabled "$n" "$sock")"

# Upgrade restarts the service only if it was running.
e2e_exec "$n" systemctl stop "$unit" 2>/dev/null
e2e_assert_ok "deb: reinstall with the service stopped" e2e_exec "$n" sh -c "dpkg -i /dist/$deb_new </dev/null"
e2e_assert_eq "deb: a stopped service stays stopped across the upgrade" inactive \
    "$(e2e_show "$n" "$unit" ActiveState)"
e2e_assert_eq "deb: the socket still activates it" a "$(ep_hello "$n")"
e2e_assert_ok "deb: the service made its state directory" e2e_exec "$n" test -d /var/lib/private/extractedprism

e2e_assert_ok "deb: apt-get remove extractedprism" e2e_exec "$n" env DEBIAN_FRONTEND=noninteractive \
    apt-get -y -q remove extractedprism
gone "$n" "deb: after remove"
# Debian: removal masks the units (so leftover enablement cannot start them)
# and keeps the conffile until purge.
e2e_assert_match "deb: after remove the socket is masked or gone" '^(masked|not-found)$' \
    "$(e2e_show "$n" "$sock" LoadState)"
e2e_assert_match "deb: after remove the service is masked or gone" '^(masked|not-found)$' \
    "$(e2e_show "$n" "$unit" LoadState)"
e2e_assert_ok "deb: the edited conffile stays until purge" \
    e2e_exec "$n" grep -qxF "$marker" /etc/extractedprism/config.toml

e2e_assert_ok "deb: dpkg -P extractedprism" e2e_exec "$n" dpkg -P extractedprism
e2e_assert_absent "deb: /etc/extractedprism gone after purge" "$n" test -e /etc/extractedprism
e2e_assert_absent "deb: /var/lib/extractedprism gone after purge" "$n" test -e /var/lib/extractedprism
e2e_assert_absent "deb: /var/lib/private/extractedprism gone after purge" \
    "$n" test -e /var/lib/private/extractedprism
e2e_assert_eq "deb: no unit, mask or symlink of ours left in /etc/systemd" "" \
    "$(e2e_probe "$n" find /etc/systemd -name 'extractedprism*')"
e2e_assert_eq "deb: no deb-systemd-helper state left" "" \
    "$(e2e_probe "$n" find /var/lib/systemd -name '*extractedprism*')"
e2e_assert_eq "deb: units unknown to systemd after purge" not-found/not-found \
    "$(e2e_show "$n" "$sock" LoadState)/$(e2e_show "$n" "$unit" LoadState)"
e2e_assert_absent "deb: dpkg no longer knows the package" "$n" sh -c \
    'dpkg-query -W -f "\${db:Status-Abbrev}" extractedprism 2>/dev/null | grep -q "^[ir]"'
gone "$n" "deb: after purge"
if e2e_stop "$n"; then e2e_pass "deb: clean poweroff"; else e2e_fail "deb: e2e_stop $n"; fi

# ===========================================================================
# .rpm
# ===========================================================================
n=rpm-$$
rpmdb=(--dbpath /var/lib/rpm) # explicit: Debian's rpm defaults to ~/.rpmdb
tarball=$(e2e_rootfs "$suite" rpm)
e2e_prepare "$n" "$tarball"
root=$(e2e_root "$n")
# Fedora's preset policy: nothing is enabled unless a preset says so. Here a
# preset (as a distribution or an image would ship) enables the socket.
mkdir -p "$root/etc/systemd/system-preset"
echo 'disable *' >"$root/etc/systemd/system-preset/99-default.preset"
echo 'enable extractedprism.socket' >"$root/etc/systemd/system-preset/50-extractedprism.preset"
# An initialised machine id: the rootfs ships an empty one, which makes every
# boot a "first boot" on which systemd applies all presets itself and would
# hide what the package's scriptlet did or did not do.
tr -d - </proc/sys/kernel/random/uuid >"$root/etc/machine-id"

# Installed from the host into the extracted rootfs, before boot (an image
# build); the scriptlets run chrooted, with no systemd running.
rpm --root "$root" "${rpmdb[@]}" --initdb
e2e_assert_ok "rpm: rpm --root ROOT -ivh --nodeps $rpm_old (before boot)" \
    rpm --root "$root" "${rpmdb[@]}" -ivh --nodeps "$art/$rpm_old"
e2e_boot "$n" "$tarball" "$art"
ep_upstreams "$n" e2e-upstreams a=127.0.0.11:6443
e2e_assert_eq "rpm: units installed" loaded/loaded \
    "$(e2e_show "$n" "$sock" LoadState)/$(e2e_show "$n" "$unit" LoadState)"
# Like Fedora's %systemd_post, %post runs `systemctl preset` whether or not
# systemd runs, so a preset applies to an offline install (image builds,
# dnf --installroot): the package went in before this boot.
e2e_assert_eq "rpm: %post applied the preset in an offline install (socket enabled)" enabled "$(enabled "$n" "$sock")"
e2e_assert_eq "rpm: the preset of the socket enabled the health socket too (Also=)" enabled "$(enabled "$n" "$hsock")"
e2e_assert_ok "rpm: systemctl enable --now $sock" e2e_exec "$n" systemctl enable --now "$sock"
config "$n"
e2e_assert_eq "rpm: traffic flows" a "$(ep_hello "$n")"
e2e_assert_eq "rpm: running daemon is the old version" "v$EP_OLD" "$(ep_running_version "$n")"

upgrade "$n" "rpm: rpm -Uvh $rpm_new" rpm "${rpmdb[@]}" -Uvh --nodeps "/dist/$rpm_new"
e2e_assert_eq "rpm: rpm knows the new version" "$EP_NEW" \
    "$(e2e_exec "$n" rpm "${rpmdb[@]}" -q --qf '%{VERSION}' extractedprism)"
e2e_assert_eq "rpm: no .rpmnew/.rpmsave left by the upgrade (%config(noreplace))" "" \
    "$(e2e_probe "$n" sh -c 'ls /etc/extractedprism/ | grep -v "^config.toml$"; true')"
e2e_assert_eq "rpm: socket still enabled after the upgrade" enabled "$(enabled "$n" "$sock")"

e2e_exec "$n" systemctl stop "$unit" 2>/dev/null
e2e_assert_ok "rpm: reinstall with the service stopped" \
    e2e_exec "$n" rpm "${rpmdb[@]}" -Uvh --nodeps --replacepkgs "/dist/$rpm_new"
e2e_assert_eq "rpm: a stopped service stays stopped across the upgrade" inactive \
    "$(e2e_show "$n" "$unit" ActiveState)"
e2e_assert_eq "rpm: the socket still activates it" a "$(ep_hello "$n")"
e2e_assert_ok "rpm: the service made its state directory" e2e_exec "$n" test -d /var/lib/private/extractedprism

e2e_assert_ok "rpm: rpm -e extractedprism" e2e_exec "$n" rpm "${rpmdb[@]}" -e --nodeps extractedprism
gone "$n" "rpm: after erase"
e2e_assert_eq "rpm: units disabled (no symlink of ours in /etc/systemd)" "" \
    "$(e2e_probe "$n" find /etc/systemd -name 'extractedprism*')"
e2e_assert_absent "rpm: /var/lib/extractedprism gone after erase" "$n" test -e /var/lib/extractedprism
e2e_assert_absent "rpm: /var/lib/private/extractedprism gone after erase" \
    "$n" test -e /var/lib/private/extractedprism
e2e_assert_ok "rpm: the edited config is kept as config.toml.rpmsave" \
    e2e_exec "$n" grep -qxF "$marker" /etc/extractedprism/config.toml.rpmsave
e2e_assert_absent "rpm: config.toml itself is gone" "$n" test -e /etc/extractedprism/config.toml

# Installed on the running system, %post applies the presets.
e2e_assert_ok "rpm: rpm -ivh $rpm_new on the running system" \
    e2e_exec "$n" rpm "${rpmdb[@]}" -ivh --nodeps "/dist/$rpm_new"
e2e_assert_eq "rpm: %post applied the preset: socket enabled" enabled "$(enabled "$n" "$sock")"
e2e_assert_eq "rpm: %post applied the preset: health socket enabled (Also=)" enabled "$(enabled "$n" "$hsock")"
e2e_assert_eq "rpm: %post applied the preset: link-local socket enabled (Also=)" enabled "$(enabled "$n" "$llsock")"
e2e_assert_eq "rpm: the link-local address is off (its oneshot not enabled)" disabled "$(enabled "$n" "$llsvc")"
e2e_assert_eq "rpm: %post applied the preset: service not enabled (disable *)" disabled "$(enabled "$n" "$unit")"
e2e_assert_ok "rpm: rpm -e extractedprism again" e2e_exec "$n" rpm "${rpmdb[@]}" -e --nodeps extractedprism
e2e_assert_eq "rpm: no symlink of ours left in /etc/systemd" "" \
    "$(e2e_probe "$n" find /etc/systemd -name 'extractedprism*')"
gone "$n" "rpm: after the second erase"
if e2e_stop "$n"; then e2e_pass "rpm: clean poweroff"; else e2e_fail "rpm: e2e_stop $n"; fi

e2e_summary
