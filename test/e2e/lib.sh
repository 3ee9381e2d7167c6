# shellcheck shell=bash
#
# test/e2e/lib.sh - end-to-end test harness: boot a real systemd as PID 1 in
# systemd-nspawn and drive it from the host.
#
# Source it from a bash script that runs as root:
#
#   set -euo pipefail
#   source "$(dirname "$0")/lib.sh"
#   e2e_trap                                   # clean up on any exit
#   tarball=$(e2e_rootfs bookworm)             # cached Debian rootfs
#   e2e_boot c1 "$tarball" "$distdir"          # DISTDIR is bound read-only at /dist
#   e2e_exec c1 systemctl enable --now foo.socket
#   e2e_assert_eq "foo.socket is active" active "$(e2e_show c1 foo.socket ActiveState)"
#   e2e_stop c1
#   e2e_summary                                # prints "N passed, N failed"
#
# Works on hosts whose PID 1 is not systemd (cgroup v1 + "unified" cgroup2
# hybrid, no delegation), see README.md. Every wait is bounded in time; every
# process the library starts is stopped by e2e_stop or by the EXIT trap.
#
# Tunables (environment):
#   E2E_CACHE          rootfs tarball cache   (default: $HOME/.cache/extractedprism/e2e)
#   E2E_WORKDIR        where fresh rootfs copies are extracted (default: /dev/shm if
#                      it is a tmpfs with >= 2 GiB free, else /var/tmp; on this
#                      machine extraction takes ~0.5 s on tmpfs, 3-10 s on disk)
#   E2E_MIRROR         Debian mirror for debootstrap (default: http://deb.debian.org/debian)
#   E2E_REBUILD=1      rebuild the rootfs tarball even if cached
#   E2E_BOOT_TIMEOUT   seconds to reach running/degraded (default: 60)
#   E2E_STOP_TIMEOUT   seconds for a clean poweroff before SIGKILL (default: 20)
#   E2E_KEEP=1         keep the extracted rootfs after e2e_stop (for debugging)
#   E2E_JOURNAL_ON_FAIL=N  on a failing exit, print the last N journal lines of
#                      every running container (default: 80, 0 disables)

# Packages every rootfs gets. procps is deliberately NOT included: a unit that
# needs /bin/kill, ps or pgrep must say so (pass procps to e2e_rootfs) or use
# `/bin/sh -c 'kill -HUP $$MAINPID'`. Tests inside use bash /dev/tcp, /proc, stat.
E2E_BASE_PACKAGES=(systemd systemd-sysv dbus ca-certificates)
# Bump when the way a rootfs is built changes, so cached tarballs are rebuilt.
E2E_ROOTFS_RECIPE=1

E2E_PASSED=0
E2E_FAILED=0
E2E_SUMMARY_PRINTED=0
E2E_START_TIME=${EPOCHREALTIME:-}
E2E_TRAP_INSTALLED=0
E2E_SLEEP_PID=""
declare -a E2E_DEFERRED=()
declare -a E2E_CONTAINERS=()
declare -A E2E_ROOT=() E2E_STATE=() E2E_NSPAWN_PID=() E2E_LEADER=() E2E_CGROUPS=()
declare -A E2E_CLIENT_PID=() E2E_CLIENT_OUT=() E2E_CLIENT_DEADLINE=() E2E_CLIENT_CTL=()

# The script's own stdout/stderr, restored by the EXIT trap (the shell may die
# inside a `>/dev/null 2>&1` block and the summary must still be seen). Closed
# in long-lived children, so an orphan never holds a CI log pipe open.
exec {E2E_STDOUT}>&1 {E2E_STDERR}>&2

# PATH and environment for commands run inside a container (nsenter would
# otherwise leak the host environment: GOFLAGS, HOME, TMPDIR...).
E2E_INNER_ENV=(env -i
    PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin
    HOME=/root LANG=C.UTF-8 TERM=dumb SYSTEMD_PAGER= SYSTEMD_COLORS=0)

e2e_log() { printf 'e2e: %s\n' "$*" >&2; }
e2e_die() {
    e2e_log "ERROR: $*"
    exit 1
}

# ---------------------------------------------------------------------------
# Host prerequisites
# ---------------------------------------------------------------------------

# e2e_host_deps: install what the harness needs on the host (Debian/Ubuntu).
e2e_host_deps() {
    [[ $EUID -eq 0 ]] || e2e_die "must run as root (systemd-nspawn, cgroups, debootstrap)"
    local -a missing=()
    command -v systemd-nspawn >/dev/null || missing+=(systemd-container)
    command -v debootstrap >/dev/null || missing+=(debootstrap)
    command -v zstd >/dev/null || missing+=(zstd)
    command -v nsenter >/dev/null || missing+=(util-linux)
    command -v flock >/dev/null || missing+=(util-linux)
    [[ -e /usr/share/keyrings/debian-archive-keyring.gpg ]] || missing+=(debian-archive-keyring)
    ((${#missing[@]} == 0)) && return 0
    command -v apt-get >/dev/null || e2e_die "missing ${missing[*]} and no apt-get to install them"
    e2e_log "installing host prerequisites: ${missing[*]}"
    local -a apt=(apt-get -y -q -o Dpkg::Use-Pty=0 install --no-install-recommends)
    if ! DEBIAN_FRONTEND=noninteractive timeout 600 "${apt[@]}" "${missing[@]}" >&2; then
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get -q update >&2 ||
            e2e_die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive timeout 600 "${apt[@]}" "${missing[@]}" >&2 ||
            e2e_die "apt-get install ${missing[*]} failed"
    fi
}

# ---------------------------------------------------------------------------
# Rootfs cache
# ---------------------------------------------------------------------------

# e2e_rootfs SUITE [EXTRA_PACKAGE...]
# Builds a minbase Debian rootfs with systemd once, caches it as a zstd tarball
# keyed by suite, architecture, package list and recipe version, and prints the
# tarball path on stdout (everything else goes to stderr).
e2e_rootfs() {
    local suite=${1:?usage: e2e_rootfs SUITE [EXTRA_PACKAGE...]}
    shift
    e2e_host_deps
    local cache=${E2E_CACHE:-$HOME/.cache/extractedprism/e2e}
    local mirror=${E2E_MIRROR:-http://deb.debian.org/debian}
    local arch pkgs key tarball
    arch=$(dpkg --print-architecture 2>/dev/null || uname -m)
    pkgs=$(printf '%s\n' "${E2E_BASE_PACKAGES[@]}" "$@" | sort -u | paste -sd, -)
    key=$(printf 'recipe=%s suite=%s arch=%s pkgs=%s' "$E2E_ROOTFS_RECIPE" "$suite" "$arch" "$pkgs" |
        sha256sum | cut -c1-12)
    tarball="$cache/rootfs-$suite-$arch-$key.tar.zst"
    mkdir -p "$cache" || return 1

    # One builder per key at a time; others wait (bounded) and reuse its result.
    local lockfd
    exec {lockfd}>"$tarball.lock" || return 1
    if ! flock -w 900 "$lockfd"; then
        exec {lockfd}>&-
        e2e_log "timed out waiting for another build of $tarball"
        return 1
    fi
    if [[ -s $tarball && ${E2E_REBUILD:-0} != 1 ]]; then
        exec {lockfd}>&-
        e2e_log "rootfs cached: $tarball"
        printf '%s\n' "$tarball"
        return 0
    fi

    # Build on tmpfs when there is one (dpkg fsyncs a lot); only the finished
    # tarball goes to the cache, renamed into place atomically.
    local build rc=0 t0=$SECONDS log="$cache/build-$suite-$arch-$key.log"
    build=$(mktemp -d "$(_e2e_workdir)/extractedprism-e2e.$BASHPID.rootfs.XXXXXX") || {
        exec {lockfd}>&-
        return 1
    }
    e2e_log "building rootfs $suite ($pkgs) from $mirror in $build; log: $log"
    if timeout 900 debootstrap --variant=minbase --components=main --include="$pkgs" \
        "$suite" "$build/root" "$mirror" >"$log" 2>&1; then
        # Smaller image: no package caches, no fixed machine id (an empty
        # /etc/machine-id makes systemd use a fresh transient id per boot).
        rm -rf "$build"/root/var/cache/apt/archives/*.deb "$build"/root/var/lib/apt/lists/* \
            "$build"/root/var/log/*.log
        : >"$build/root/etc/machine-id"
        printf '%s\n' "$pkgs" >"$build/root/etc/extractedprism-e2e-rootfs"
        tar --numeric-owner --xattrs --xattrs-include='*' --acls -C "$build/root" -cf - . |
            zstd -q -T0 -6 -o "$tarball.tmp" || rc=$?
        if ((rc == 0)); then
            mv -f "$tarball.tmp" "$tarball" || rc=1
        fi
    else
        rc=$?
        e2e_log "debootstrap failed (rc=$rc); last lines of $log:"
        tail -n 20 "$log" >&2 || true
    fi
    rm -rf --one-file-system "$build" "$tarball.tmp"
    ((rc == 0)) && rm -f "$log"
    exec {lockfd}>&-
    ((rc == 0)) || return "$rc"
    e2e_log "rootfs built in $((SECONDS - t0))s: $tarball ($(du -h "$tarball" | cut -f1))"
    printf '%s\n' "$tarball"
}

# ---------------------------------------------------------------------------
# Containers
# ---------------------------------------------------------------------------

_e2e_fstype() { stat -f -c %T "$1" 2>/dev/null; }

_e2e_workdir() {
    if [[ -n ${E2E_WORKDIR:-} ]]; then
        echo "$E2E_WORKDIR"
    elif [[ $(_e2e_fstype /dev/shm) == tmpfs ]] &&
        (($(df -P -k /dev/shm 2>/dev/null | awk 'NR==2{print $4}') >= 2 * 1024 * 1024)); then
        echo /dev/shm
    else
        echo /var/tmp
    fi
}

# Cgroup directories to create for one container. Hybrid v1 (named "systemd"
# hierarchy) and/or cgroup2 ("unified" or at the top).
_e2e_cgroup_roots() {
    if [[ $(_e2e_fstype /sys/fs/cgroup) == cgroup2fs ]]; then
        echo /sys/fs/cgroup
        return
    fi
    [[ $(_e2e_fstype /sys/fs/cgroup/systemd) == cgroupfs ]] && echo /sys/fs/cgroup/systemd
    [[ $(_e2e_fstype /sys/fs/cgroup/unified) == cgroup2fs ]] && echo /sys/fs/cgroup/unified
    return 0
}

# Child of PPID whose comm is systemd (nspawn forks the container's PID 1 as its
# direct child). Pure /proc, no procps needed on the host.
# NB: `read <file`, never `$(<file)`: under set -e a failing `$(<file)` exits
# the shell even inside `|| ...` (bash 5.2).
_e2e_find_leader() {
    local ppid=$1 stat f rest comm
    for f in /proc/[0-9]*/stat; do
        { read -r stat <"$f"; } 2>/dev/null || continue
        rest=${stat##*) }
        set -- $rest
        [[ ${2:-} == "$ppid" ]] || continue
        { read -r comm <"${f%/stat}/comm"; } 2>/dev/null || continue
        if [[ $comm == systemd ]]; then
            f=${f#/proc/}
            echo "${f%/stat}"
            return 0
        fi
    done
    return 1
}

_e2e_alive() { # true while PID exists and is not a zombie
    local s
    { read -r s <"/proc/$1/stat"; } 2>/dev/null || return 1
    s=${s##*) }
    [[ ${s:0:1} != Z ]]
}

# Host processes started by `nsenter -t LEADER` (ours: e2e_exec, client loops).
_e2e_nsenter_pids() {
    local leader=$1 f p comm
    local -a args
    for f in /proc/[0-9]*/comm; do
        { read -r comm <"$f"; } 2>/dev/null || continue
        [[ $comm == nsenter ]] || continue
        p=${f#/proc/}
        p=${p%/comm}
        { mapfile -d '' -t args <"/proc/$p/cmdline"; } 2>/dev/null || continue
        [[ ${args[1]:-} == -t && ${args[2]:-} == "$leader" ]] && echo "$p"
    done
    return 0
}

# _e2e_signal_tree SIG inside|all PID... : signal the process trees under PID
# (one /proc snapshot), then SIGCONT them so stopped ones can act on it.
# "inside" signals only what runs inside a container (below an nsenter), never
# nsenter or its ancestors: nsenter must live to reap its child, or the child
# becomes a zombie of the HOST's PID 1 that the container's shutdown waits
# ~10 s for. "all" signals every process in the trees.
_e2e_signal_tree() {
    local - # best effort: no errexit in here, whatever the caller set
    set +e
    local sig=$1 mode=$2 f st rest p i comm
    shift 2
    local -A kids=() isns=()
    for f in /proc/[0-9]*/stat; do
        { read -r st <"$f"; } 2>/dev/null || continue
        p=${f#/proc/}
        p=${p%/stat}
        comm=${st#*(}
        comm=${comm%)*}
        [[ $comm == nsenter ]] && isns[$p]=1
        rest=${st##*) }
        rest=${rest#* }
        kids[${rest%% *}]+=" $p"
    done
    # todo holds "pid:inside" pairs; bounded walk.
    local -a todo=() all=()
    for p in "$@"; do todo+=("$p:0"); done
    local in
    for ((i = 0; i < ${#todo[@]} && i < 10000; i++)); do
        p=${todo[i]%:*}
        in=${todo[i]#*:}
        if [[ $mode == all || $in == 1 ]]; then
            all+=("$p")
        fi
        [[ -n ${isns[$p]:-} ]] && in=1
        for f in ${kids[$p]:-}; do todo+=("$f:$in"); done
    done
    ((${#all[@]})) || return 0
    kill -"$sig" "${all[@]}" 2>/dev/null
    kill -CONT "${all[@]}" 2>/dev/null
    return 0
}

# _e2e_end_job PID : end a background job of ours that runs nsenter (TERM inside
# the container, 5 s grace, then KILL everything) and reap it.
_e2e_end_job() {
    local - # best effort: no errexit in here, whatever the caller set
    set +e
    local pid=$1 deadline=$((SECONDS + 5))
    _e2e_signal_tree TERM inside "$pid"
    while _e2e_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
    _e2e_alive "$pid" && _e2e_signal_tree KILL all "$pid"
    wait "$pid" 2>/dev/null || true
}

# e2e_prepare NAME TARBALL : extract a fresh rootfs copy for NAME without
# booting it, so files or packages can go in first (e.g. `rpm --root
# "$(e2e_root NAME)" -ivh pkg.rpm`, or a failing unit). e2e_boot then boots it.
e2e_prepare() {
    local name=${1:?usage: e2e_prepare NAME TARBALL} tarball=${2:?tarball}
    [[ $name =~ ^[a-zA-Z0-9][a-zA-Z0-9-]{0,30}$ ]] || e2e_die "bad container name '$name'"
    [[ -z ${E2E_STATE[$name]:-} ]] || e2e_die "container '$name' already exists"
    [[ -s $tarball ]] || e2e_die "no rootfs tarball at '$tarball'"
    e2e_host_deps
    ((E2E_TRAP_INSTALLED)) || [[ -n $(trap -p EXIT) ]] || e2e_trap
    e2e_gc
    local state t0=$SECONDS
    state=$(mktemp -d "$(_e2e_workdir)/extractedprism-e2e.$$.$name.XXXXXX") || return 1
    E2E_CONTAINERS+=("$name")
    E2E_STATE[$name]=$state
    E2E_ROOT[$name]=$state/root
    mkdir "$state/root"
    zstd -q -dc "$tarball" |
        tar --numeric-owner --xattrs --xattrs-include='*' --acls -xpf - -C "$state/root" ||
        e2e_die "extracting $tarball failed"
    e2e_log "$name: rootfs extracted in $((SECONDS - t0))s to ${E2E_ROOT[$name]}"
}

# e2e_boot NAME TARBALL DISTDIR
# Extracts a fresh rootfs (unless e2e_prepare already did), boots it with
# systemd-nspawn (DISTDIR bound read-only at /dist; pass "-" for none) and waits
# until the system is running. "degraded" is accepted; failed units are printed.
e2e_boot() {
    local name=${1:?usage: e2e_boot NAME TARBALL DISTDIR} tarball=${2:?tarball} dist=${3:?distdir}
    [[ -z ${E2E_NSPAWN_PID[$name]:-} ]] || e2e_die "container '$name' is already booted"
    [[ -n ${E2E_STATE[$name]:-} ]] || e2e_prepare "$name" "$tarball"
    local timeout=${E2E_BOOT_TIMEOUT:-60} t0=$SECONDS state=${E2E_STATE[$name]} root=${E2E_ROOT[$name]}

    local -a bind=()
    if [[ $dist != - ]]; then
        [[ -d $dist ]] || e2e_die "DISTDIR '$dist' is not a directory"
        bind=("--bind-ro=$(realpath "$dist"):/dist")
    fi

    # Own cgroup per container (nothing delegates one here), see README.md.
    local cg="extractedprism-e2e-$name-$$" r
    local -a cgdirs=()
    if [[ -d /run/systemd/system ]]; then
        : # host runs systemd: nspawn is wrapped in a delegated scope below
    else
        while read -r r; do
            [[ -n $r ]] || continue
            mkdir -p "$r/$cg" || e2e_die "cannot create cgroup $r/$cg"
            cgdirs+=("$r/$cg")
        done < <(_e2e_cgroup_roots)
    fi
    E2E_CGROUPS[$name]="${cgdirs[*]}"

    local -a nspawn=(systemd-nspawn -q -D "$root" -M "$name" --boot --register=no --keep-unit
        --private-network --system-call-filter=bpf --console=passive "${bind[@]}")
    if [[ -d /run/systemd/system ]]; then
        # Untested here (PID 1 is not systemd on the dev machines): the documented
        # way to give nspawn --keep-unit a delegated cgroup on a systemd host.
        nspawn=(systemd-run --quiet --scope --collect -p Delegate=yes
            --unit="extractedprism-e2e-$name-$$" "${nspawn[@]}")
    fi

    e2e_log "booting $name"
    (
        exec {E2E_STDOUT}>&- {E2E_STDERR}>&-
        for r in "${cgdirs[@]}"; do echo "$BASHPID" >"$r/cgroup.procs"; done
        exec "${nspawn[@]}"
    ) </dev/null >"$state/console.log" 2>&1 &
    E2E_NSPAWN_PID[$name]=$!

    local leader="" deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        _e2e_alive "${E2E_NSPAWN_PID[$name]}" || break
        if [[ -z $leader ]]; then
            leader=$(_e2e_find_leader "${E2E_NSPAWN_PID[$name]}") || leader=""
            # systemd-run --scope execs nspawn in place, so the pid is the same.
        fi
        [[ -n $leader && -S /proc/$leader/root/run/systemd/private ]] && break
        sleep 0.1
    done
    if [[ -z $leader || ! -S /proc/$leader/root/run/systemd/private ]]; then
        if _e2e_alive "${E2E_NSPAWN_PID[$name]}"; then
            e2e_log "$name did not come up within ${timeout}s; console:"
        else
            e2e_log "systemd-nspawn for $name exited during boot; console:"
        fi
        tail -n 40 "$state/console.log" >&2 || true
        return 1
    fi
    E2E_LEADER[$name]=$leader

    local left=$((deadline - SECONDS)) sysstate
    ((left > 0)) || left=1
    sysstate=$(timeout "$left" nsenter -t "$leader" -a "${E2E_INNER_ENV[@]}" \
        systemctl is-system-running --wait 2>&1) || true
    case $sysstate in
    running) ;;
    degraded)
        e2e_log "$name is degraded; failed units:"
        e2e_exec "$name" systemctl --failed --no-legend --plain >&2 || true
        ;;
    *)
        e2e_log "$name did not reach running within ${timeout}s (state: '${sysstate:-timeout}')"
        e2e_exec "$name" systemctl list-jobs --no-legend >&2 || true
        return 1
        ;;
    esac
    e2e_log "$name is $sysstate after $((SECONDS - t0))s (nspawn pid ${E2E_NSPAWN_PID[$name]}, leader $leader)"
}

# e2e_exec NAME CMD... : run CMD inside the container (all namespaces, clean env).
# stdin/stdout/stderr and the exit status pass through.
e2e_exec() {
    local name=${1:?usage: e2e_exec NAME CMD...}
    shift
    local leader=${E2E_LEADER[$name]:-}
    [[ -n $leader ]] || {
        e2e_log "e2e_exec: container '$name' is not running"
        return 125
    }
    nsenter -t "$leader" -a "${E2E_INNER_ENV[@]}" "$@"
}

# e2e_root NAME : print the host path of the container's root directory. Files
# written there are visible inside at once (nspawn uses the directory as is).
e2e_root() { printf '%s\n' "${E2E_ROOT[${1:?name}]:?unknown container $1}"; }

# e2e_show NAME UNIT PROPERTY : print one `systemctl show` property value.
e2e_show() {
    e2e_exec "${1:?name}" systemctl show -p "${3:?property}" --value "${2:?unit}"
}

# e2e_wait_until TIMEOUT CMD... : poll CMD every 0.1 s until it succeeds (0) or
# TIMEOUT seconds pass (1).
e2e_wait_until() {
    local timeout=${1:?usage: e2e_wait_until TIMEOUT CMD...} deadline
    shift
    deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        "$@" >/dev/null 2>&1 && return 0
        sleep 0.1
    done
    "$@" >/dev/null 2>&1
}

# e2e_journal NAME [JOURNALCTL ARGS...] : print the container's journal.
e2e_journal() {
    local name=${1:?name}
    shift
    timeout 20 nsenter -t "${E2E_LEADER[$name]:?not running}" -a "${E2E_INNER_ENV[@]}" \
        journalctl -b --no-pager -q "$@"
}

_e2e_kill_cgroups() { # SIGKILL whatever is left in the container's cgroups
    local - # best effort: no errexit in here, whatever the caller set
    set +e
    local dir f pid
    for dir in $1; do
        [[ -d $dir ]] || continue
        if [[ -e $dir/cgroup.kill ]]; then
            echo 1 >"$dir/cgroup.kill" 2>/dev/null || true
        fi
        while IFS= read -r f; do
            while read -r pid; do
                kill -KILL "$pid" 2>/dev/null || true
            done <"$f"
        done < <(find "$dir" -name cgroup.procs 2>/dev/null)
    done
}

_e2e_cgroups_empty() {
    local dir f
    for dir in $1; do
        [[ -d $dir ]] || continue
        while IFS= read -r f; do
            [[ -s $f ]] && return 1
        done < <(find "$dir" -name cgroup.procs 2>/dev/null)
    done
    return 0
}

# _e2e_shutdown LABEL NSPAWN_PID LEADER TIMEOUT : end processes attached with
# nsenter, power the container off (bounded), kill what is left. 1 if forced.
_e2e_shutdown() {
    local - # best effort: no errexit in here, whatever the caller set
    set +e
    local name=$1 pid=$2 leader=$3 timeout=$4 rc=0 deadline
    local -a nsenters=()
    # systemd-shutdown does kill(-1, SIGSTOP) ... kill(-1, SIGCONT) in the
    # container. A process entered with nsenter stops with it, and nsenter (on
    # the host side, out of reach of that SIGCONT) then stops itself and never
    # reaps it: shutdown hangs. So keep SIGCONTing our nsenters while waiting.
    # Anything else still attached through nsenter is about to die anyway; end it
    # first (bounded), or systemd-shutdown waits ~10 s for it before SIGKILL.
    if [[ -n $leader ]]; then
        mapfile -t nsenters < <(_e2e_nsenter_pids "$leader")
        if ((${#nsenters[@]})); then
            e2e_log "terminating ${#nsenters[@]} process(es) still attached to $name"
            _e2e_signal_tree TERM inside "${nsenters[@]}"
            deadline=$((SECONDS + 3))
            while (($(_e2e_nsenter_pids "$leader" | wc -l) > 0 && SECONDS < deadline)); do
                sleep 0.1
            done
        fi
    fi
    if [[ -n $pid ]] && _e2e_alive "$pid"; then
        if [[ -n $leader ]] && _e2e_alive "$leader"; then
            timeout 10 nsenter -t "$leader" -a "${E2E_INNER_ENV[@]}" systemctl poweroff \
                >/dev/null 2>&1 || true
        else
            kill -TERM "$pid" 2>/dev/null || true # nspawn turns it into a clean shutdown
        fi
        deadline=$((SECONDS + timeout))
        local n=0
        while _e2e_alive "$pid" && ((SECONDS < deadline)); do
            if [[ -n $leader ]] && ((n++ % 5 == 0)); then
                mapfile -t nsenters < <(_e2e_nsenter_pids "$leader")
                ((${#nsenters[@]} == 0)) || kill -CONT "${nsenters[@]}" 2>/dev/null || true
            fi
            sleep 0.1
        done
        if _e2e_alive "$pid"; then
            e2e_log "$name did not power off within ${timeout}s; killing it"
            rc=1
            kill -TERM "$pid" 2>/dev/null || true
            deadline=$((SECONDS + 5))
            while _e2e_alive "$pid" && ((SECONDS < deadline)); do sleep 0.1; done
            kill -KILL "$pid" 2>/dev/null || true
        fi
    fi
    if [[ -n $pid ]]; then
        wait "$pid" 2>/dev/null || true
    fi
    # Whatever is still attached through nsenter lives outside the container's
    # cgroups: kill it explicitly.
    if [[ -n $leader ]]; then
        mapfile -t nsenters < <(_e2e_nsenter_pids "$leader")
        if ((${#nsenters[@]})); then
            e2e_log "killing ${#nsenters[@]} leftover nsenter process(es) of $name"
            _e2e_signal_tree KILL all "${nsenters[@]}"
        fi
    fi

    return "$rc"
}

# _e2e_release_cgroups NAME : kill what is left in NAME's cgroups (bounded
# wait) and remove them. 1 if one could not be removed.
_e2e_release_cgroups() {
    local - # best effort: no errexit in here, whatever the caller set
    set +e
    local cgs=${E2E_CGROUPS[$1]:-} rc=0 deadline dir
    _e2e_kill_cgroups "$cgs"
    deadline=$((SECONDS + 10))
    until _e2e_cgroups_empty "$cgs" || ((SECONDS >= deadline)); do sleep 0.1; done
    for dir in $cgs; do
        [[ -d $dir ]] || continue
        find "$dir" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d $dir ]] && {
            e2e_log "could not remove cgroup $dir"
            rc=1
        }
    done
    return "$rc"
}

# e2e_reboot NAME DISTDIR : power the container off (as e2e_stop does) and
# boot the same rootfs again: what was installed and enabled stays, /run and
# the network namespace are new. A client loop is ended first. 1 if the
# poweroff had to be forced or the boot failed.
e2e_reboot() {
    local name=${1:?usage: e2e_reboot NAME DISTDIR} dist=${2:?distdir} rc=0
    [[ -n ${E2E_NSPAWN_PID[$name]:-} ]] || e2e_die "container '$name' is not running"
    if [[ -n ${E2E_CLIENT_PID[$name]:-} ]]; then
        _e2e_end_job "${E2E_CLIENT_PID[$name]}"
        unset "E2E_CLIENT_PID[$name]"
    fi
    _e2e_shutdown "$name" "${E2E_NSPAWN_PID[$name]}" "${E2E_LEADER[$name]:-}" "${E2E_STOP_TIMEOUT:-20}" || rc=1
    _e2e_release_cgroups "$name" || rc=1
    unset "E2E_NSPAWN_PID[$name]" "E2E_LEADER[$name]" "E2E_CGROUPS[$name]"
    e2e_boot "$name" - "$dist" || return 1 # prepared: the tarball is not used
    return "$rc"
}

# e2e_stop NAME : power the container off (bounded; SIGTERM then SIGKILL if it
# hangs), remove its cgroups and its rootfs copy. Safe to call twice.
e2e_stop() {
    local - # best effort: no errexit in here, whatever the caller set
    set +e
    local name=${1:?usage: e2e_stop NAME}
    local pid=${E2E_NSPAWN_PID[$name]:-} leader=${E2E_LEADER[$name]:-} state=${E2E_STATE[$name]:-}
    local timeout=${E2E_STOP_TIMEOUT:-20} rc=0
    [[ -n $state ]] || return 0

    # Background clients talking to this container go first.
    if [[ -n ${E2E_CLIENT_PID[$name]:-} ]]; then
        _e2e_end_job "${E2E_CLIENT_PID[$name]}"
        unset "E2E_CLIENT_PID[$name]"
    fi

    _e2e_shutdown "$name" "$pid" "$leader" "$timeout" || rc=1
    _e2e_release_cgroups "$name" || rc=1

    if [[ ${E2E_KEEP:-0} == 1 ]]; then
        e2e_log "keeping $state (E2E_KEEP=1)"
    elif grep -q " ${state}[/ ]" /proc/self/mountinfo; then
        e2e_log "something is still mounted under $state; not removing it"
        rc=1
    else
        rm -rf --one-file-system "$state"
    fi
    unset "E2E_NSPAWN_PID[$name]" "E2E_LEADER[$name]" "E2E_STATE[$name]" \
        "E2E_ROOT[$name]" "E2E_CGROUPS[$name]"
    ((rc == 0)) && e2e_log "$name stopped"
    return "$rc"
}

# ---------------------------------------------------------------------------
# Cleanup
# ---------------------------------------------------------------------------

# e2e_gc : remove what runs killed with SIGKILL left behind: rootfs copies and
# cgroups whose owning script (the pid in their name) is gone, powering off
# any systemd-nspawn still running on them. Called by e2e_boot.
e2e_gc() {
    local - # best effort: no errexit in here, whatever the caller set
    set +e
    local d owner f nspid r cg
    local -a args
    for d in /dev/shm/extractedprism-e2e.* /var/tmp/extractedprism-e2e.* \
        ${E2E_WORKDIR:+"$E2E_WORKDIR"/extractedprism-e2e.*}; do
        [[ -d $d ]] || continue
        owner=${d##*/extractedprism-e2e.}
        owner=${owner%%.*}
        [[ $owner =~ ^[0-9]+$ ]] || continue
        [[ -d /proc/$owner ]] && continue
        for f in /proc/[0-9]*/cmdline; do
            { mapfile -d '' -t args <"$f"; } 2>/dev/null || continue
            [[ ${args[0]:-} == *systemd-nspawn* && " ${args[*]} " == *" $d/root "* ]] || continue
            nspid=${f#/proc/}
            nspid=${nspid%/cmdline}
            e2e_log "gc: stopping orphaned systemd-nspawn $nspid on $d"
            _e2e_shutdown "orphan $nspid" "$nspid" "$(_e2e_find_leader "$nspid")" 20
        done
        if grep -q " ${d}[/ ]" /proc/self/mountinfo; then
            e2e_log "gc: $d still has mounts; leaving it"
            continue
        fi
        e2e_log "gc: removing stale $d"
        rm -rf --one-file-system "$d"
    done
    while read -r r; do
        [[ -n $r ]] || continue
        for cg in "$r"/extractedprism-e2e-*-*; do
            [[ -d $cg ]] || continue
            owner=${cg##*-}
            [[ $owner =~ ^[0-9]+$ && ! -d /proc/$owner ]] || continue
            _e2e_kill_cgroups "$cg"
            sleep 0.2
            find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null
            [[ -d $cg ]] || e2e_log "gc: removed stale cgroup $cg"
        done
    done < <(_e2e_cgroup_roots)
    return 0
}

# e2e_defer CMD... : run CMD (once) when the script exits, last registered first.
e2e_defer() {
    local q
    printf -v q '%q ' "$@"
    E2E_DEFERRED+=("$q")
}

# e2e_tmpdir VAR : create a temp dir, store its path in VAR and remove it on
# exit. (Not `dir=$(e2e_tmpdir)`: the defer would be lost in the subshell.)
e2e_tmpdir() {
    local -n _e2e_out=${1:?usage: e2e_tmpdir VARNAME}
    _e2e_out=$(mktemp -d "${TMPDIR:-/tmp}/extractedprism-e2e.tmp.XXXXXX")
    e2e_defer rm -rf --one-file-system "$_e2e_out"
}

# Dump journals (when WHY is non-empty), stop every container, kill helpers,
# run deferred commands. Idempotent.
_e2e_cleanup() {
    local - # best effort: no errexit in here, whatever the caller set
    set +e
    local why=$1 name i
    if [[ -n $why ]] && ((${E2E_JOURNAL_ON_FAIL:-80} > 0)); then
        for name in "${E2E_CONTAINERS[@]}"; do
            [[ -n ${E2E_LEADER[$name]:-} ]] || continue
            e2e_log "---- $why: last ${E2E_JOURNAL_ON_FAIL:-80} journal lines of $name ----"
            e2e_journal "$name" -n "${E2E_JOURNAL_ON_FAIL:-80}" >&2
            e2e_log "---- end of journal of $name ----"
        done
    fi
    if [[ -n $E2E_SLEEP_PID ]]; then
        kill -TERM "$E2E_SLEEP_PID" 2>/dev/null
        E2E_SLEEP_PID=""
    fi
    for name in "${E2E_CONTAINERS[@]}"; do
        [[ -n ${E2E_STATE[$name]:-} ]] && e2e_stop "$name"
    done
    for ((i = ${#E2E_DEFERRED[@]} - 1; i >= 0; i--)); do
        eval "${E2E_DEFERRED[i]}"
    done
    E2E_DEFERRED=()
}

_e2e_on_exit() {
    local rc=$?
    set +e
    exec 1>&"$E2E_STDOUT" 2>&"$E2E_STDERR"
    trap "" INT TERM # cleanup is bounded; do not let a second signal cut it short
    if ((E2E_SUMMARY_PRINTED)); then
        _e2e_cleanup ""
    else
        _e2e_cleanup "$( ((rc != 0)) && echo "exit status $rc")"
        if ((E2E_PASSED + E2E_FAILED > 0 || rc != 0)); then
            ((rc != 0)) && e2e_fail "script exited with status $rc before e2e_summary"
            e2e_summary || ((rc != 0)) || rc=1
        fi
    fi
    exit "$rc"
}

# e2e_trap : install the EXIT/INT/TERM handler that stops every container the
# script booted, runs e2e_defer'ed commands and prints the summary if the script
# died early. e2e_boot installs it itself unless the caller has an EXIT trap.
e2e_trap() {
    trap _e2e_on_exit EXIT
    trap 'exit 130' INT
    trap 'exit 143' TERM
    E2E_TRAP_INSTALLED=1
}

# ---------------------------------------------------------------------------
# Assertions: one PASS/FAIL line each; they never abort the script.
# ---------------------------------------------------------------------------

e2e_pass() {
    E2E_PASSED=$((E2E_PASSED + 1))
    printf 'PASS: %s\n' "$*"
}

e2e_fail() {
    E2E_FAILED=$((E2E_FAILED + 1))
    printf 'FAIL: %s\n' "$*"
}

# e2e_assert_eq DESC EXPECTED ACTUAL
e2e_assert_eq() {
    if [[ $3 == "$2" ]]; then
        e2e_pass "$1"
    else
        e2e_fail "$1: expected '$2', got '$3'"
    fi
}

# e2e_assert_match DESC ERE ACTUAL
e2e_assert_match() {
    if [[ $3 =~ $2 ]]; then
        e2e_pass "$1"
    else
        e2e_fail "$1: '$3' does not match /$2/"
    fi
}

# e2e_assert_ok DESC CMD... : CMD exits 0 (its output is shown only on failure).
# CMD runs in a subshell: do not pass e2e_boot/e2e_stop/e2e_client_* here.
e2e_assert_ok() {
    local desc=$1 out rc=0
    shift
    out=$("$@" 2>&1) || rc=$?
    if ((rc == 0)); then
        e2e_pass "$desc"
    else
        e2e_fail "$desc: exit $rc from '$*'${out:+: ${out:0:500}}"
    fi
}

# e2e_assert_fails DESC CMD... : CMD exits non-zero
e2e_assert_fails() {
    local desc=$1 rc=0
    shift
    "$@" >/dev/null 2>&1 || rc=$?
    if ((rc != 0)); then
        e2e_pass "$desc"
    else
        e2e_fail "$desc: '$*' succeeded"
    fi
}

# e2e_absent NAME CMD... : run the probe CMD in the container, which exits 1
# when what it looks for is absent and 0 when present. Returns 0 for absent,
# 1 for present and 2 when the probe itself did not run or failed otherwise
# (container gone, nsenter failed, CMD missing): an absence check must not
# pass because nothing could be checked.
e2e_absent() {
    local name=${1:?usage: e2e_absent NAME CMD...} rc=0
    shift
    # 42 can only come from this shell inside the container.
    # shellcheck disable=SC2016 # expanded by that shell
    e2e_exec "$name" sh -c '"$@"; rc=$?; [ "$rc" -eq 1 ] && exit 42; exit "$rc"' _ "$@" >/dev/null 2>&1 || rc=$?
    case $rc in
    42) return 0 ;;
    0) return 1 ;;
    *)
        e2e_log "e2e_absent: probe '$*' in $name failed (exit $rc)"
        return 2
        ;;
    esac
}

# e2e_assert_absent DESC NAME CMD... : e2e_absent says absent.
e2e_assert_absent() {
    local desc=$1 rc=0
    shift
    e2e_absent "$@" || rc=$?
    case $rc in
    0) e2e_pass "$desc" ;;
    1) e2e_fail "$desc: '${*:2}' found it" ;;
    *) e2e_fail "$desc: the probe '${*:2}' did not run, nothing was checked" ;;
    esac
}

# e2e_probe NAME CMD... : print CMD's output from inside the container, or
# "probe failed (exit N)" when it could not run or failed: an assertion that
# expects no output (nothing left behind) cannot pass on a failed probe.
e2e_probe() {
    local name=${1:?usage: e2e_probe NAME CMD...} out rc=0
    shift
    out=$(e2e_exec "$name" "$@") || rc=$?
    if ((rc != 0)); then
        echo "probe failed (exit $rc)"
    else
        printf '%s\n' "$out"
    fi
}

# e2e_assert_eventually DESC TIMEOUT CMD... : CMD succeeds within TIMEOUT s
e2e_assert_eventually() {
    local desc=$1 timeout=$2
    shift 2
    if e2e_wait_until "$timeout" "$@"; then
        e2e_pass "$desc"
    else
        e2e_fail "$desc: '$*' did not succeed within ${timeout}s"
    fi
}

# e2e_summary : end of the test. On failures, print the journals of the
# containers still running; then stop them all and run the deferred commands,
# and print "N passed, N failed" as the last line. Returns non-zero if anything
# failed or nothing was asserted at all.
e2e_summary() {
    if ((E2E_PASSED + E2E_FAILED == 0)); then
        e2e_fail "no assertions ran"
    fi
    if ((!E2E_SUMMARY_PRINTED)); then
        E2E_SUMMARY_PRINTED=1
        _e2e_cleanup "$( ((E2E_FAILED > 0)) && echo "$E2E_FAILED failed")"
    fi
    if [[ -n $E2E_START_TIME && -n ${EPOCHREALTIME:-} ]]; then
        local el
        el=$(awk -v a="$E2E_START_TIME" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}')
        e2e_log "elapsed ${el}s"
    fi
    printf '%d passed, %d failed\n' "$E2E_PASSED" "$E2E_FAILED"
    ((E2E_FAILED == 0))
}

# e2e_sleep SECONDS : a sleep that INT/TERM interrupt at once (bash runs traps
# only after a foreground command ends, so a plain `sleep 60` delays cleanup).
e2e_sleep() {
    sleep "${1:?seconds}" &
    E2E_SLEEP_PID=$!
    wait "$E2E_SLEEP_PID" || true
    E2E_SLEEP_PID=""
}

# ---------------------------------------------------------------------------
# Client loop: prove "no refused connection" while something restarts.
# ---------------------------------------------------------------------------

# Runs inside the container (bash is Essential in Debian, so it is always
# there). Args: PORT SECONDS INTERVAL EXPECT CTL. Each attempt opens
# 127.0.0.1:PORT with bash /dev/tcp under a 3 s timeout and, if EXPECT is not
# empty, reads one line (3 s) and compares. After each attempt it writes
# "ATTEMPTS OK" to CTL.progress; it ends when CTL.stop exists, else after
# SECONDS (and at most SECONDS*1000 attempts). Prints one summary line.
# shellcheck disable=SC2016
_E2E_CLIENT_SCRIPT='
port=$1 dur=$2 interval=$3 expect=$4 ctl=$5
attempts=0 ok=0 refused=0 failed=0 firsterr=""
max=$((dur * 1000))
end=$(( ${EPOCHREALTIME/./} + dur * 1000000 ))
trap "exit 143" TERM
probe() {
    exec 3<>"/dev/tcp/127.0.0.1/$1" || return 1
    if [[ -n $2 ]]; then
        local line
        IFS= read -r -t 3 line <&3 || { echo "no line read" >&2; return 1; }
        [[ $line == "$2" ]] || { echo "read \"$line\"" >&2; return 1; }
    fi
}
export -f probe
while (( ${EPOCHREALTIME/./} < end && attempts < max )) && [[ ! -e $ctl.stop ]]; do
    attempts=$((attempts + 1))
    if err=$(timeout 3 bash -c "probe \"\$@\"" _ "$port" "$expect" 2>&1); then
        ok=$((ok + 1))
    else
        rc=$?
        err=${err//environment: /}
        ((rc == 124)) && err="timed out${err:+: $err}"
        case $err in
        *"Connection refused"*) refused=$((refused + 1)) ;;
        *) failed=$((failed + 1)) ;;
        esac
        [[ -n $firsterr ]] || firsterr=${err//$'\''\n'\''/ }
    fi
    printf "%d %d\n" "$attempts" "$ok" >"$ctl.progress"
    sleep "$interval"
done
echo "attempts=$attempts ok=$ok refused=$refused failed=$failed first_error=${firsterr:0:200}"
'

# e2e_client_start NAME PORT SECONDS [INTERVAL [EXPECT]]
# Start the connect loop in the background (one per container at a time).
# It runs for SECONDS, or until e2e_client_stop when that comes first: a test
# proving "nothing refused while X happens" waits for the loop's connections
# before and after X (e2e_client_await) and then stops it, so the load covers
# X however long X takes. SECONDS is then only a bound.
e2e_client_start() {
    local name=${1:?usage: e2e_client_start NAME PORT SECONDS [INTERVAL [EXPECT]]}
    local port=${2:?port} dur=${3:?seconds} interval=${4:-0.05} expect=${5:-}
    [[ $dur =~ ^[0-9]+$ && $dur -ge 1 && $dur -le 600 ]] || e2e_die "client loop: SECONDS must be 1..600"
    [[ -z ${E2E_CLIENT_PID[$name]:-} ]] || e2e_die "client loop already running in $name"
    local out=${E2E_STATE[$name]:?container $name not booted}/client.$RANDOM.out
    local ctl=/run/e2e-client.$RANDOM
    e2e_exec "$name" rm -f "$ctl.stop" "$ctl.progress"
    (
        exec {E2E_STDOUT}>&- {E2E_STDERR}>&-
        e2e_exec "$name" bash -c "$_E2E_CLIENT_SCRIPT" _ "$port" "$dur" "$interval" "$expect" "$ctl"
    ) </dev/null >"$out" 2>&1 &
    E2E_CLIENT_PID[$name]=$!
    E2E_CLIENT_OUT[$name]=$out
    E2E_CLIENT_CTL[$name]=$ctl
    E2E_CLIENT_DEADLINE[$name]=$((SECONDS + dur + 10))
}

# e2e_client_ok NAME : the number of successful attempts of the running loop
# so far (0 before its first).
e2e_client_ok() {
    local name=${1:?usage: e2e_client_ok NAME} ok=0
    read -r _ ok < <(e2e_exec "$name" cat "${E2E_CLIENT_CTL[$name]:?no client loop in $name}.progress" 2>/dev/null) || true
    [[ $ok =~ ^[0-9]+$ ]] || ok=0
    echo "$ok"
}

# e2e_client_await NAME COUNT TIMEOUT : wait until the running loop has made
# COUNT successful attempts in all. Returns non-zero if it did not within
# TIMEOUT seconds, or ended first (then it did not cover what was tested).
e2e_client_await() {
    local name=${1:?usage: e2e_client_await NAME COUNT TIMEOUT} want=${2:?count} timeout=${3:?timeout}
    local pid=${E2E_CLIENT_PID[$name]:?no client loop running in $name} deadline=$((SECONDS + timeout))
    while ((SECONDS < deadline)); do
        (($(e2e_client_ok "$name") >= want)) && _e2e_alive "$pid" && return 0
        _e2e_alive "$pid" || break
        sleep 0.1
    done
    e2e_log "client loop in $name: $(e2e_client_ok "$name") successful attempts, wanted $want (loop $(_e2e_alive "$pid" && echo running || echo ended))"
    return 1
}

# e2e_client_stop NAME : tell the running loop to end after its current
# attempt, then e2e_client_wait for it. Returns what e2e_client_wait returns.
e2e_client_stop() {
    local name=${1:?usage: e2e_client_stop NAME}
    e2e_exec "$name" touch "${E2E_CLIENT_CTL[$name]:?no client loop in $name}.stop" || true
    e2e_client_wait "$name"
}

# e2e_client_wait NAME : wait (bounded) for the loop, print its summary line to
# stderr and set E2E_CLIENT_ATTEMPTS, _OK, _REFUSED, _FAILED, _FIRST_ERROR.
# Returns 0 only if every attempt succeeded.
e2e_client_wait() {
    local name=${1:?usage: e2e_client_wait NAME} pid line
    pid=${E2E_CLIENT_PID[$name]:?no client loop running in $name}
    while _e2e_alive "$pid" && ((SECONDS < E2E_CLIENT_DEADLINE[$name])); do sleep 0.1; done
    if _e2e_alive "$pid"; then
        e2e_log "client loop in $name overran its deadline; killing it"
    fi
    _e2e_end_job "$pid"
    unset "E2E_CLIENT_PID[$name]" "E2E_CLIENT_CTL[$name]"
    line=$(grep '^attempts=' "${E2E_CLIENT_OUT[$name]}" | tail -n 1) || line=""
    E2E_CLIENT_ATTEMPTS=0 E2E_CLIENT_OK=0 E2E_CLIENT_REFUSED=0 E2E_CLIENT_FAILED=0 E2E_CLIENT_FIRST_ERROR=""
    if [[ $line =~ ^attempts=([0-9]+)\ ok=([0-9]+)\ refused=([0-9]+)\ failed=([0-9]+)\ first_error=(.*)$ ]]; then
        E2E_CLIENT_ATTEMPTS=${BASH_REMATCH[1]} E2E_CLIENT_OK=${BASH_REMATCH[2]}
        E2E_CLIENT_REFUSED=${BASH_REMATCH[3]} E2E_CLIENT_FAILED=${BASH_REMATCH[4]}
        E2E_CLIENT_FIRST_ERROR=${BASH_REMATCH[5]}
        e2e_log "client loop in $name: $line"
    else
        e2e_log "client loop in $name produced no summary:"
        cat "${E2E_CLIENT_OUT[$name]}" >&2 || true
        E2E_CLIENT_FAILED=1
        E2E_CLIENT_FIRST_ERROR="no summary"
    fi
    ((E2E_CLIENT_ATTEMPTS > 0 && E2E_CLIENT_OK == E2E_CLIENT_ATTEMPTS))
}

# e2e_client_loop NAME PORT SECONDS [INTERVAL [EXPECT]] : start + wait.
e2e_client_loop() {
    e2e_client_start "$@"
    e2e_client_wait "$1"
}

# e2e_assert_no_refused DESC : after e2e_client_wait, assert the loop made at
# least one attempt and none was refused or failed.
e2e_assert_no_refused() {
    if ((E2E_CLIENT_ATTEMPTS > 0 && E2E_CLIENT_REFUSED == 0 && E2E_CLIENT_FAILED == 0)); then
        e2e_pass "$1 ($E2E_CLIENT_OK/$E2E_CLIENT_ATTEMPTS connections ok)"
    else
        e2e_fail "$1: attempts=$E2E_CLIENT_ATTEMPTS ok=$E2E_CLIENT_OK refused=$E2E_CLIENT_REFUSED failed=$E2E_CLIENT_FAILED first error: $E2E_CLIENT_FIRST_ERROR"
    fi
}
