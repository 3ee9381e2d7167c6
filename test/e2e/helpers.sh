# shellcheck shell=bash disable=SC2016 # commands for inside containers are single-quoted on purpose
#
# test/e2e/helpers.sh - what service.sh and packages.sh share on top of
# lib.sh: building the artifacts (the upstream stand-in and two versions of
# the packages, with the repository's own `make package`), the upstreams
# inside a container, the configuration, probes through 127.0.0.1:7445, and
# known-bug bookkeeping. Source it after lib.sh.

EP_REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)
EP_OLD=${EP_OLD:-0.0.1}
EP_NEW=${EP_NEW:-0.0.2}
EP_PORT=7445

# ---------------------------------------------------------------------------
# Artifacts
# ---------------------------------------------------------------------------

# ep_host_deps : what building and the rpm part need on the host, besides
# lib.sh's own prerequisites (installed the same way, only when missing).
ep_host_deps() {
    e2e_host_deps
    command -v go >/dev/null || e2e_die "Go is not installed"
    local -a missing=()
    command -v make >/dev/null || missing+=(make)
    command -v rpm >/dev/null || missing+=(rpm)
    command -v gzip >/dev/null || missing+=(gzip)
    ep_apt_install "${missing[@]}"
}

# ep_apt_install PKG... : install host packages with apt-get (bounded; an
# apt-get update only if the first attempt fails). Nothing to do without PKG.
ep_apt_install() {
    (($# == 0)) && return 0
    e2e_log "installing host prerequisites: $*"
    local -a apt=(apt-get -y -q -o Dpkg::Use-Pty=0 install --no-install-recommends)
    if ! DEBIAN_FRONTEND=noninteractive timeout 600 "${apt[@]}" "$@" >&2; then
        DEBIAN_FRONTEND=noninteractive timeout 300 apt-get -q update >&2 || e2e_die "apt-get update failed"
        DEBIAN_FRONTEND=noninteractive timeout 600 "${apt[@]}" "$@" >&2 ||
            e2e_die "apt-get install $* failed"
    fi
}

# ep_build_artifacts OUT : build into OUT
#   upstream                                   the stand-in API server (stdlib only)
#   extractedprism_OLD-1_ARCH.deb, …_NEW-…deb  `make package PKG_VERSION=…`
#   extractedprism-OLD-1.ARCH.rpm, …NEW….rpm
# The packages are built in a snapshot of the working tree (no .git, bin/,
# dist/), because the package target writes bin/ and dist/ in place: the
# clone's own outputs stay untouched, and a concurrent `make build` in the
# clone cannot swap the binary under nfpm. VERSION is set to vPKG_VERSION so
# the two builds' binaries tell themselves apart (`extractedprism version`).
ep_build_artifacts() {
    local out=${1:?usage: ep_build_artifacts OUT} t0=$SECONDS src v commit
    ep_host_deps
    mkdir -p "$out"
    e2e_tmpdir src
    commit=$(git -C "$EP_REPO" rev-parse HEAD 2>/dev/null || echo unknown)

    e2e_log "building the upstream stand-in"
    mkdir "$src/upstream"
    cp "$EP_REPO/test/e2e/testdata/upstream/main.go" "$src/upstream/"
    printf 'module upstream\n\ngo 1.22\n' >"$src/upstream/go.mod"
    (cd "$src/upstream" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath \
        -ldflags='-s -w' -o "$out/upstream" .) || return 1

    mkdir "$src/tree"
    tar -C "$EP_REPO" --exclude=./.git --exclude=./bin --exclude=./dist --exclude=./.cache -cf - . |
        tar -C "$src/tree" -xf - || return 1
    for v in "$EP_OLD" "$EP_NEW"; do
        e2e_log "make package PKG_VERSION=$v"
        rm -rf "$src/tree/dist"
        if ! make -C "$src/tree" --no-print-directory package PKG_VERSION="$v" VERSION="v$v" \
            COMMIT="$commit" >"$src/make-$v.log" 2>&1; then
            tail -n 40 "$src/make-$v.log" >&2
            e2e_die "make package PKG_VERSION=$v failed"
        fi
        # The package target writes dist/NAME_VERSION-1_ARCH.deb and
        # dist/NAME-VERSION-1.ARCH.rpm (plus apk and archlinux, unused here).
        cp "$src/tree/dist/extractedprism_$v-"*.deb "$src/tree/dist/extractedprism-$v-"*.rpm "$out/" ||
            e2e_die "make package PKG_VERSION=$v wrote no .deb/.rpm: $(ls "$src/tree/dist")"
    done
    e2e_log "artifacts built in $((SECONDS - t0))s: $(cd "$out" && echo *)"
}

# ep_artifacts VAR : the artifacts directory: $E2E_ARTIFACTS when run.sh
# built it already, else a temp dir built now. Stored in VAR.
ep_artifacts() {
    local -n _ep_out=${1:?usage: ep_artifacts VAR}
    if [[ -n ${E2E_ARTIFACTS:-} ]]; then
        [[ -x $E2E_ARTIFACTS/upstream ]] || e2e_die "E2E_ARTIFACTS=$E2E_ARTIFACTS has no upstream binary"
        _ep_out=$E2E_ARTIFACTS
        return 0
    fi
    local tmp
    e2e_tmpdir tmp
    ep_build_artifacts "$tmp"
    _ep_out=$tmp
}

# ep_pkg DIR deb|rpm VERSION : the package file name in DIR.
ep_pkg() {
    local f
    case $2 in
    deb) f=$(cd "$1" && echo extractedprism_"$3"-*.deb) ;;
    rpm) f=$(cd "$1" && echo extractedprism-"$3"-*.rpm) ;;
    esac
    [[ -f $1/$f ]] || e2e_die "no $2 package of version $3 in $1"
    printf '%s\n' "$f"
}

# ---------------------------------------------------------------------------
# Inside a container
# ---------------------------------------------------------------------------

# ep_upstreams NAME UNIT NAME=ADDR... : run the upstream stand-in as a
# transient unit and wait until every address accepts.
ep_upstreams() {
    local name=$1 unit=$2 spec addr
    shift 2
    e2e_exec "$name" install -m 0755 /dist/upstream /usr/local/bin/e2e-upstream
    e2e_exec "$name" systemd-run --quiet --unit="$unit" /usr/local/bin/e2e-upstream "$@" ||
        e2e_die "could not start $unit"
    for spec in "$@"; do
        addr=${spec#*=}
        e2e_wait_until 10 e2e_exec "$name" timeout 2 bash -c "exec 3<>/dev/tcp/${addr%:*}/${addr##*:}" ||
            e2e_die "upstream $spec does not accept"
    done
}

# ep_config NAME < TOML : install /etc/extractedprism/config.toml from stdin.
ep_config() {
    e2e_exec "${1:?name}" sh -c 'mkdir -p /etc/extractedprism &&
        cat >/etc/extractedprism/config.toml.e2e &&
        chmod 0644 /etc/extractedprism/config.toml.e2e &&
        mv -f /etc/extractedprism/config.toml.e2e /etc/extractedprism/config.toml'
}

# ep_hello NAME [PORT] : connect through the proxy and print the first line
# the upstream sends (its name). Bounded: 10 s.
ep_hello() {
    e2e_exec "${1:?name}" timeout 10 bash -c \
        'exec 3<>"/dev/tcp/127.0.0.1/$1" && IFS= read -r -t 8 line <&3 && printf "%s\n" "$line"' \
        _ "${2:-$EP_PORT}" 2>&1
}

# ep_roundtrip NAME PAYLOAD : connect, read the upstream's name, send PAYLOAD,
# read the echo; prints "NAME ECHO".
ep_roundtrip() {
    e2e_exec "${1:?name}" timeout 10 bash -c '
        exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 1
        IFS= read -r -t 8 name <&3 || exit 1
        printf "%s\n" "$2" >&3
        IFS= read -r -t 8 echo <&3 || exit 1
        printf "%s %s\n" "$name" "$echo"' _ "$EP_PORT" "${2:?payload}" 2>&1
}

# ep_names NAME N : N connections one after another; prints the upstream
# names seen, sorted and unique, space-separated.
ep_names() {
    e2e_exec "${1:?name}" timeout 30 bash -c '
        for ((i = 0; i < $2; i++)); do
            exec 3<>"/dev/tcp/127.0.0.1/$1" || { echo "connect-failed"; continue; }
            IFS= read -r -t 5 line <&3 || line=no-line
            exec 3<&-
            echo "$line"
        done' _ "$EP_PORT" "${2:?count}" 2>&1 | sort -u | paste -sd' ' -
}

# ep_daemon_pids NAME : pids of extractedprism processes in the container;
# "probe failed ..." when it could not look (so "none" cannot pass then).
ep_daemon_pids() {
    e2e_probe "${1:?name}" bash -c '
        for f in /proc/[0-9]*/comm; do
            read -r c <"$f" 2>/dev/null || continue
            [[ $c == extractedprism ]] && { p=${f#/proc/}; echo "${p%/comm}"; }
        done; true'
}

# ep_refused NAME [PORT] : true if a connect to the port is refused.
ep_refused() {
    local out
    out=$(e2e_exec "${1:?name}" timeout 5 bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1"' _ "${2:-$EP_PORT}" 2>&1) &&
        return 1
    [[ $out == *"Connection refused"* ]]
}

# ep_running_version NAME : the version the running daemon reports on its
# health server (extractedprism status --json), not the one on disk.
ep_running_version() {
    e2e_exec "${1:?name}" timeout 10 extractedprism status --json 2>/dev/null |
        sed -n 's/^ *"version": *"\([^"]*\)".*/\1/p' | head -n 1
}

# ---------------------------------------------------------------------------
# Bookkeeping
# ---------------------------------------------------------------------------

# ep_metric NAME VALUE : one "E2E-METRIC name=value" line for run.sh to collect.
ep_metric() { printf 'E2E-METRIC %s=%s\n' "$1" "$2"; }

# ep_ms A B : B - A, both in microseconds, in milliseconds with one decimal.
ep_ms() { awk -v a="$1" -v b="$2" 'BEGIN{printf "%.1f", (b - a) / 1000}'; }
