#!/usr/bin/env bash
# shellcheck disable=SC2016 # commands for inside containers are single-quoted on purpose
# test/e2e/repo.sh - `apt install extractedprism` and `dnf install
# extractedprism` for real (issue 16): `make repo` builds signed apt and rpm
# repositories, a container with systemd as PID 1 serves them over HTTP on
# its own loopback, and the README's install lines run in it. Then a newer
# version is published and the package manager upgrades under a client loop;
# altered packages, an altered Release / repomd.xml, a foreign signature and
# no signature are refused; removal leaves nothing.
#
# Usage: sudo test/e2e/repo.sh [SUITE]         (SUITE defaults to bookworm)
# Needs root and Go. Installs on the host when missing: apt-utils,
# createrepo-c, rpm, gpg, binutils (besides lib.sh's and helpers.sh's).
# The signing key is the throwaway one `make repo` makes when SIGNING_KEY is
# not set, in a temp dir: nothing is written in the clone.
#
# dnf runs inside the container too: Debian's dnf 4.14 and rpm 4.18, on a
# Debian userland prepared the way a Fedora system is (rpm database in
# /var/lib/rpm, Fedora's `disable *` preset, skip_if_unavailable=False).
# What that leaves out: README.md here.
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
port=8080 # the repository's HTTP server, alone in the container's network namespace
url=http://127.0.0.1:$port
marker="# e2e: edited by the admin $$"

# ---------------------------------------------------------------------------
# Host: tools, artifacts, the repositories and their altered copies
# ---------------------------------------------------------------------------

repo_host_deps() {
    ep_host_deps
    local -a missing=()
    command -v apt-ftparchive >/dev/null || missing+=(apt-utils)
    command -v createrepo_c >/dev/null || missing+=(createrepo-c)
    command -v gpg >/dev/null || missing+=(gpg)
    command -v gpgv >/dev/null || missing+=(gpgv)
    command -v ar >/dev/null || missing+=(binutils)
    ep_apt_install "${missing[@]}"
}

# go_build_testdata NAME OUT : a stdlib-only program of testdata/NAME, static.
go_build_testdata() {
    local name=$1 out=$2 src
    e2e_tmpdir src
    cp "$here/testdata/$name/main.go" "$src/"
    printf 'module %s\n\ngo 1.22\n' "$name" >"$src/go.mod"
    (cd "$src" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' -o "$out" .)
}

# flip FILE : change one byte in the middle of FILE (a new inode: FILE may
# be a hard link shared with another tree).
flip() {
    local f=$1 off b
    off=$(($(stat -c %s "$f") / 2))
    cp "$f" "$f.flip" && mv -f "$f.flip" "$f"
    b=$(od -An -tu1 -j "$off" -N1 "$f" | tr -d ' ')
    # shellcheck disable=SC2059 # the format is the byte
    printf "\\$(printf '%03o' $(((b + 1) % 256)))" | dd of="$f" bs=1 seek="$off" conv=notrunc status=none
}

# variant FROM NAME : a copy of repository tree FROM as $art/NAME, sharing
# unchanged files by hard link; prints the new path.
variant() {
    cp -al "$art/$1" "$art/$2"
    printf '%s\n' "$art/$2"
}

# replace FILE : break FILE's hard link before editing it in place.
replace() { cp "$1" "$1.new" && mv -f "$1.new" "$1"; }

art=""
e2e_tmpdir art
t0=$SECONDS
repo_host_deps
if [[ -n ${E2E_ARTIFACTS:-} && -x $E2E_ARTIFACTS/upstream ]]; then
    cp "$E2E_ARTIFACTS/upstream" "$art/upstream"
else
    go_build_testdata upstream "$art/upstream"
fi
go_build_testdata httpd "$art/httpd"

# `make repo` as a publisher runs it, in a snapshot of the tree (it writes
# bin/ and dist/): version 0.0.1 first, then 0.0.2 into the same dist/.
tree=""
e2e_tmpdir tree
tar -C "$EP_REPO" --exclude=./.git --exclude=./bin --exclude=./dist --exclude=./.cache -cf - . | tar -C "$tree" -xf -
commit=$(git -C "$EP_REPO" rev-parse HEAD 2>/dev/null || echo unknown)
for v in "$EP_OLD" "$EP_NEW"; do
    log=$art/make-repo-$v.log
    if ! make -C "$tree" --no-print-directory repo PKG_VERSION="$v" VERSION="v$v" COMMIT="$commit" \
        REPO_URL="$url" >"$log" 2>&1; then
        tail -n 40 "$log" >&2
        e2e_die "make repo PKG_VERSION=$v failed"
    fi
    cp -a "$tree/dist/repo" "$art/repo-$v"
done
e2e_pass "make repo for $EP_OLD, then $EP_NEW, in $((SECONDS - t0)) s (upstream, httpd and both builds)"

# --- what make repo says and wrote ----------------------------------------------
e2e_assert_ok "make repo without SIGNING_KEY says it signs with a throwaway key" \
    grep -q 'signing with a THROWAWAY key' "$art/make-repo-$EP_OLD.log"
fpr=$(gpg --batch --with-colons --show-keys "$tree/dist/throwaway-key/signing-key.asc" 2>/dev/null |
    awk -F: '$1 == "fpr" { print $10; exit }')
e2e_assert_match "the throwaway key has a fingerprint" '^[0-9A-F]{40}$' "$fpr"
for v in "$EP_OLD" "$EP_NEW"; do
    e2e_assert_eq "repo $v: extractedprism.asc is the signing key's public key" "$fpr" \
        "$(gpg --batch --with-colons --show-keys "$art/repo-$v/extractedprism.asc" 2>/dev/null |
            awk -F: '$1 == "fpr" { print $10; exit }')"
done
e2e_assert_ok "the second make repo reused the throwaway key (no new key made)" \
    cmp -s "$art/repo-$EP_OLD/extractedprism.asc" "$art/repo-$EP_NEW/extractedprism.asc"
r=$art/repo-$EP_NEW
e2e_assert_eq "apt index of repo $EP_NEW lists both versions" "$EP_OLD-1 $EP_NEW-1" \
    "$(sed -n 's/^Version: //p' "$r/apt/dists/stable/main/binary-"*/Packages | sort -V | paste -sd' ')"
e2e_assert_eq "rpm repository of $EP_NEW holds both versions" 2 \
    "$(find "$r/rpm" -name 'extractedprism-*.rpm' | wc -l)"
e2e_assert_ok "the .sources file names the served URL and the key file" grep -qxF "URIs: $url/apt" "$r/extractedprism.sources"
e2e_assert_ok "the .sources file has Signed-By" \
    grep -qxF "Signed-By: /etc/apt/keyrings/extractedprism.asc" "$r/extractedprism.sources"
for kv in "baseurl=$url/rpm/\$basearch" gpgcheck=1 repo_gpgcheck=1 \
    gpgkey=file:///etc/pki/rpm-gpg/RPM-GPG-KEY-extractedprism; do
    e2e_assert_ok "the .repo file has $kv" grep -qxF "$kv" "$r/extractedprism.repo"
done

# --- hack/repo.sh refuses what it must not publish -------------------------------
# refuse DESC FILE... : hack/repo.sh on a directory with FILE... fails and
# names the (first) file.
refuse() {
    local desc=$1 dir out rc=0
    shift
    dir=$(mktemp -d "$art/refuse.XXXXXX")
    cp "$@" "$dir/"
    out=$(SIGNING_KEY="$tree/dist/throwaway-key/signing-key.asc" "$EP_REPO/hack/repo.sh" "$dir" "$dir/out" 2>&1) ||
        rc=$?
    if ((rc != 0)) && [[ $out == *"${1##*/}"* ]]; then
        e2e_pass "$desc (${out:0:160})"
    else
        e2e_fail "$desc: exit $rc: $out"
    fi
    [[ ! -e $dir/out/apt && ! -e $dir/out/rpm ]] || e2e_fail "$desc: it wrote a repository anyway"
}
deb_new=$(cd "$r/apt/pool/main" && echo extractedprism_"$EP_NEW"-*.deb)
rpm_arch=$(cd "$r/rpm" && echo *)
rpm_new=$(cd "$r/rpm/$rpm_arch" && echo extractedprism-"$EP_NEW"-*.rpm)
probe=$art/probe
mkdir -p "$probe"
cp "$r/apt/pool/main/$deb_new" "$probe/unsigned_$deb_new"
ar d "$probe/unsigned_$deb_new" _gpgorigin
refuse "hack/repo.sh refuses an unsigned .deb" "$probe/unsigned_$deb_new"
cp "$r/apt/pool/main/$deb_new" "$probe/altered_$deb_new"
flip "$probe/altered_$deb_new"
refuse "hack/repo.sh refuses a .deb altered after signing" "$probe/altered_$deb_new"
cp "$r/rpm/$rpm_arch/$rpm_new" "$probe/altered-$rpm_new"
flip "$probe/altered-$rpm_new"
refuse "hack/repo.sh refuses an .rpm altered after signing" "$probe/altered-$rpm_new"

# --- the altered repositories, each a copy of repo-NEW ---------------------------
# Hard-linked copies; every changed file is replaced, never edited in place.
attacker=$art/attacker-gnupg
mkdir -m 0700 "$attacker"
e2e_defer gpgconf --homedir "$attacker" --kill all
gpg --homedir "$attacker" --batch --quiet --passphrase '' \
    --quick-gen-key "attacker <attacker@example.invalid>" ed25519 sign never 2>/dev/null

# A Release that promises a 9.9.9 (the attacker's Packages, its hashes in
# Release), kept inside the original signature (bad-release), re-signed
# with another key (foreign-release), or without any signature (unsigned-release).
evil_release() {
    local d=$1/apt/dists/stable b
    for b in "$d"/main/binary-*; do
        replace "$b/Packages"
        sed -i "s/^Version: $EP_NEW-1\$/Version: 9.9.9-1/" "$b/Packages"
        rm -f "$b/Packages.gz"
        gzip -9nk "$b/Packages"
    done
    (cd "$d" && apt-ftparchive -o APT::FTPArchive::MD5=false -o APT::FTPArchive::SHA1=false \
        -o APT::FTPArchive::Release::Suite=stable -o APT::FTPArchive::Release::Codename=stable \
        -o APT::FTPArchive::Release::Components=main release .) >"$art/Release.evil"
    rm -f "$d/Release"
    cp "$art/Release.evil" "$d/Release"
}
d=$(variant "repo-$EP_NEW" bad-release)
evil_release "$d"
s=$d/apt/dists/stable
# The signed text replaced, the armour and signature of the original kept.
awk -v body="$art/Release.evil" '
    !h { print; if ($0 == "") { h = 1; while ((getline l < body) > 0) print l } ; next }
    /^-----BEGIN PGP SIGNATURE-----$/ { s = 1 }
    s { print }' "$art/repo-$EP_NEW/apt/dists/stable/InRelease" >"$art/InRelease.evil"
rm -f "$s/InRelease"
cp "$art/InRelease.evil" "$s/InRelease"
d=$(variant "repo-$EP_NEW" foreign-release)
evil_release "$d"
s=$d/apt/dists/stable
rm -f "$s/InRelease" "$s/Release.gpg"
gpg --homedir "$attacker" --batch --yes --quiet --clearsign -o "$s/InRelease" "$s/Release"
gpg --homedir "$attacker" --batch --yes --quiet --armor --detach-sign -o "$s/Release.gpg" "$s/Release"
d=$(variant "repo-$EP_NEW" unsigned-release)
evil_release "$d"
rm -f "$d/apt/dists/stable/InRelease" "$d/apt/dists/stable/Release.gpg"

# bad-packages: both package files altered after signing, indexes untouched.
d=$(variant "repo-$EP_NEW" bad-packages)
flip "$d/apt/pool/main/$deb_new"
flip "$d/rpm/$rpm_arch/$rpm_new"
# resign_index TREE GNUPGHOME : rebuild TREE's rpm index and sign it.
resign_index() {
    local r=$1/rpm/$rpm_arch
    rm -rf "$r/repodata"
    createrepo_c --quiet --no-database "$r" >/dev/null
    gpg --homedir "$2" --batch --yes --quiet --armor --detach-sign -o "$r/repodata/repomd.xml.asc" "$r/repodata/repomd.xml"
}
real=$art/real-gnupg
mkdir -m 0700 "$real"
e2e_defer gpgconf --homedir "$real" --kill all
gpg --homedir "$real" --batch --quiet --import "$tree/dist/throwaway-key/signing-key.asc" 2>/dev/null
# bad-rpm-signed-index: the altered rpm with an index rebuilt around it and
# signed with the real key (as if the repository host were compromised but
# not the package key): only the package's own signature can catch it.
d=$(variant "repo-$EP_NEW" bad-rpm-signed-index)
flip "$d/rpm/$rpm_arch/$rpm_new"
resign_index "$d" "$real"
# unsigned-rpm: the package's signature removed, an index rebuilt around it
# and signed with the real key: gpgcheck must refuse an unsigned package.
d=$(variant "repo-$EP_NEW" unsigned-rpm)
replace "$d/rpm/$rpm_arch/$rpm_new"
rpmsign --delsign "$d/rpm/$rpm_arch/$rpm_new" >/dev/null
resign_index "$d" "$real"
# bad-repomd: repomd.xml altered, its signature kept; foreign-repomd: the
# same, signed with another key; unsigned-repomd: no repomd.xml.asc at all.
for v in bad-repomd foreign-repomd unsigned-repomd; do
    d=$(variant "repo-$EP_NEW" "$v")
    replace "$d/rpm/$rpm_arch/repodata/repomd.xml"
    sed -i 's|<revision>|<revision>1|' "$d/rpm/$rpm_arch/repodata/repomd.xml"
done
rm -f "$art/foreign-repomd/rpm/$rpm_arch/repodata/repomd.xml.asc" "$art/unsigned-repomd/rpm/$rpm_arch/repodata/repomd.xml.asc"
gpg --homedir "$attacker" --batch --yes --quiet --armor --detach-sign \
    -o "$art/foreign-repomd/rpm/$rpm_arch/repodata/repomd.xml.asc" "$art/foreign-repomd/rpm/$rpm_arch/repodata/repomd.xml"
# What a variant alters must look newer than what a client cached: apt asks
# for InRelease with If-Modified-Since, and the server compares whole
# seconds. Made within the second of the good one (a fast machine), the
# altered InRelease was answered 304, apt kept its good lists, and the test
# saw no BADSIG. A mirror that publishes changes the time too.
newer=$(($(stat -c %Y "$art/repo-$EP_NEW/apt/dists/stable/InRelease") + 2))
for d in "$art"/bad-* "$art"/foreign-* "$art"/unsigned-*; do
    find "$d" -type f -links 1 -exec touch -d "@$newer" {} +
done
e2e_log "repositories: $(cd "$art" && echo repo-* bad-* foreign-* unsigned-*)"

# ---------------------------------------------------------------------------
# Inside a container
# ---------------------------------------------------------------------------

# serve NAME TREE : the HTTP server publishes /dist/TREE as $url (started on
# first use; publishing is an atomic symlink swap, as a mirror would do).
serve() {
    local name=$1 tree=$2
    e2e_exec "$name" ln -sfn "/dist/$tree" /srv/repo.new
    e2e_exec "$name" mv -T /srv/repo.new /srv/repo
    if [[ $(e2e_show "$name" e2e-repo.service ActiveState) != active ]]; then
        e2e_exec "$name" install -m 0755 /dist/httpd /usr/local/bin/e2e-httpd
        e2e_exec "$name" systemd-run --quiet --unit=e2e-repo /usr/local/bin/e2e-httpd "127.0.0.1:$port" /srv/repo ||
            e2e_die "could not start the repository server"
        e2e_wait_until 10 e2e_exec "$name" timeout 2 bash -c "exec 3<>/dev/tcp/127.0.0.1/$port" ||
            e2e_die "the repository server does not accept"
    fi
}

# readme NAME : the ```sh block after <!-- e2e:NAME ... --> in README.md,
# with REPO= pointing at the container's server.
readme() {
    awk -v m="<!-- e2e:$1 " '
        index($0, m) == 1 { f = 1; next }
        f && $0 == "```sh" { b = 1; next }
        b && $0 == "```" { exit }
        b { print }' "$EP_REPO/README.md" | sed "s|^REPO=.*|REPO=$url|"
}

# install_as_readme NAME apt|dnf : run the README's install-apt/-dnf lines
# in NAME as root (sudo is not in the rootfs and not needed): REPO= line,
# key, fingerprint check, client file, install. Sets $out to their output.
install_as_readme() {
    local name=$1 pm=$2 block rc=0
    block=$(readme "install-$pm")
    e2e_assert_eq "README: the $pm block is REPO=, key, check, client file, install" 5 "$(grep -c . <<<"$block")"
    out=$(e2e_exec "$name" bash -ec 'sudo() { "$@"; }; '"$block" 2>&1) || rc=$?
    e2e_assert_eq "$pm: the README's lines exit 0" 0 "$rc"
    ((rc == 0)) || e2e_log "README $pm lines: $(tr '\r' '\n' <<<"$out" | tail -n 30)"
    e2e_assert_ok "$pm: the fingerprint check shows the repository key's fingerprint" grep -q "$fpr" <<<"$out"
}

state() { echo "$(e2e_show "$1" "$2" ActiveState)/$(e2e_show "$1" "$2" SubState)"; }
enabled() { e2e_exec "$1" systemctl is-enabled "$2" 2>/dev/null || true; }

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

# upgrade NAME DESC CMD... : CMD inside NAME while a client connects in a
# loop (upstream "a" every time): none refused or failed, the service
# restarted into the new version, the edited config.toml kept.
upgrade() {
    local name=$1 desc=$2 pid0 pid1 loop=15 deadline t0
    shift 2
    pid0=$(e2e_show "$name" "$unit" MainPID)
    e2e_client_start "$name" "$EP_PORT" "$loop" 0.05 a
    deadline=$((SECONDS + loop))
    e2e_sleep 1
    t0=$EPOCHREALTIME
    e2e_assert_ok "$desc" e2e_exec "$name" "$@"
    ep_metric "repo_upgrade_ms_${name%%-*}" "$(ep_ms "${t0/./}" "${EPOCHREALTIME/./}" | cut -d. -f1)"
    ((SECONDS + 2 <= deadline)) || e2e_fail "$desc: it ended less than 2 s before the client loop"
    e2e_client_wait "$name" || true
    e2e_assert_no_refused "$desc: no refused or failed connection during the upgrade"
    ep_metric "repo_upgrade_attempts_${name%%-*}" "$E2E_CLIENT_ATTEMPTS"
    pid1=$(e2e_show "$name" "$unit" MainPID)
    if [[ $pid1 =~ ^[1-9][0-9]*$ && $pid1 != "$pid0" ]]; then
        e2e_pass "$desc: the service was restarted (MainPID $pid0 -> $pid1)"
    else
        e2e_fail "$desc: MainPID $pid0 -> $pid1"
    fi
    e2e_assert_eq "$desc: the running daemon is the new version" "v$EP_NEW" "$(ep_running_version "$name")"
    e2e_assert_ok "$desc: the edited config.toml was kept" \
        e2e_exec "$name" grep -qxF "$marker" /etc/extractedprism/config.toml
}

# refused NAME DESC REGEX CMD... : CMD fails, its output matches REGEX, and
# the installed binary and the running daemon did not change.
refused() {
    local name=$1 desc=$2 re=$3 out rc=0 sum0 pid0
    shift 3
    sum0=$(e2e_exec "$name" sha256sum /usr/bin/extractedprism)
    pid0=$(e2e_show "$name" "$unit" MainPID)
    out=$(e2e_exec "$name" "$@" 2>&1) || rc=$?
    if ((rc != 0)) && [[ $out =~ $re ]]; then
        e2e_pass "$desc (exit $rc: $(tr '\r' '\n' <<<"$out" | grep -Em1 -- "$re" | cut -c1-160))"
    else
        e2e_fail "$desc: exit $rc, output: ${out: -600}"
    fi
    e2e_assert_eq "$desc: the binary on disk is unchanged" "$sum0" \
        "$(e2e_exec "$name" sha256sum /usr/bin/extractedprism)"
    e2e_assert_eq "$desc: the daemon was not restarted" "$pid0" "$(e2e_show "$name" "$unit" MainPID)"
}

# gone NAME DESC : nothing of the package runs, listens or stays installed.
gone() {
    local name=$1 desc=$2
    e2e_assert_eq "$desc: nothing runs" "inactive/inactive/" \
        "$(e2e_show "$name" "$sock" ActiveState)/$(e2e_show "$name" "$unit" ActiveState)/$(ep_daemon_pids "$name")"
    e2e_assert_ok "$desc: 127.0.0.1:7445 refuses connections" ep_refused "$name"
    e2e_assert_eq "$desc: no file of the package left outside /etc" "" \
        "$(e2e_exec "$name" sh -c 'ls -d /usr/bin/extractedprism /usr/lib/systemd/system/extractedprism.* \
            /usr/share/doc/extractedprism /var/lib/extractedprism /var/lib/private/extractedprism 2>/dev/null' || true)"
    e2e_assert_eq "$desc: no unit, mask or symlink of ours in /etc/systemd" "" \
        "$(e2e_exec "$name" find /etc/systemd -name 'extractedprism*')"
}

tarball=$(e2e_rootfs "$suite" curl gpg dnf rpm)

# ===========================================================================
# apt
# ===========================================================================
n=apt-$$
e2e_boot "$n" "$tarball" "$art"
ep_upstreams "$n" e2e-upstreams a=127.0.0.11:6443
serve "$n" "repo-$EP_OLD"

install_as_readme "$n" apt
e2e_assert_match "apt: installed from the repository" "^$EP_OLD-1\$" \
    "$(e2e_exec "$n" dpkg-query -W -f '${Version}' extractedprism 2>&1)"
e2e_assert_match "apt: apt-cache policy shows the repository" "$url/apt stable/main" \
    "$(e2e_exec "$n" apt-cache policy extractedprism)"
e2e_assert_eq "apt: the socket is enabled" enabled "$(enabled "$n" "$sock")"
e2e_assert_eq "apt: the socket is listening" active/listening "$(state "$n" "$sock")"
e2e_assert_eq "apt: the service waits for the first connection" inactive "$(e2e_show "$n" "$unit" ActiveState)"
config "$n"
e2e_assert_eq "apt: traffic flows" a "$(ep_hello "$n")"
e2e_assert_eq "apt: the running daemon is $EP_OLD" "v$EP_OLD" "$(ep_running_version "$n")"

serve "$n" "repo-$EP_NEW"
e2e_assert_ok "apt: apt-get update sees $EP_NEW" e2e_exec "$n" apt-get -q update
e2e_assert_match "apt: the candidate is $EP_NEW" "Candidate: $EP_NEW-1" "$(e2e_exec "$n" apt-cache policy extractedprism)"
upgrade "$n" "apt: apt-get upgrade -y" env DEBIAN_FRONTEND=noninteractive apt-get -q -y upgrade
e2e_assert_match "apt: dpkg has $EP_NEW" "^$EP_NEW-1\$" "$(e2e_exec "$n" dpkg-query -W -f '${Version}' extractedprism)"
e2e_assert_eq "apt: no .dpkg-* file next to config.toml" config.toml "$(e2e_exec "$n" ls /etc/extractedprism)"

# Altered after signing: apt checks every file against the signed index.
serve "$n" bad-packages
e2e_exec "$n" apt-get -q update >/dev/null 2>&1 || true
e2e_exec "$n" apt-get clean
refused "$n" "apt: a .deb altered after signing is refused" 'Hash Sum mismatch' \
    env DEBIAN_FRONTEND=noninteractive apt-get -q -y install --reinstall extractedprism
# Altered indexes: apt keeps the lists it had and installs nothing new.
# A plain `apt-get update` only warns ("the previous index files will be
# used") and exits 0; --error-on=any (apt >= 2.1.16) makes that an error,
# as a fleet's automation wants it.
for v in bad-release:'BADSIG' foreign-release:'NO_PUBKEY' unsigned-release:'is (no longer|not) signed'; do
    serve "$n" "${v%%:*}"
    e2e_assert_match "apt: ${v%%:*}: apt-get update rejects it" "${v#*:}" "$(e2e_exec "$n" apt-get -q update 2>&1)"
    refused "$n" "apt: ${v%%:*}: apt-get update --error-on=any fails" "${v#*:}" apt-get -q update --error-on=any
    e2e_assert_match "apt: ${v%%:*}: the candidate is still $EP_NEW (the attacker's 9.9.9 never listed)" \
        "Candidate: $EP_NEW-1" "$(e2e_exec "$n" apt-cache policy extractedprism)"
done
serve "$n" "repo-$EP_NEW"
e2e_assert_ok "apt: the good repository is accepted again" e2e_exec "$n" apt-get -q update

e2e_assert_ok "apt: apt-get purge -y extractedprism" \
    e2e_exec "$n" env DEBIAN_FRONTEND=noninteractive apt-get -q -y purge extractedprism
gone "$n" "apt: after purge"
e2e_assert_fails "apt: /etc/extractedprism gone after purge" e2e_exec "$n" test -e /etc/extractedprism
e2e_assert_eq "apt: no deb-systemd-helper state left" "" "$(e2e_exec "$n" find /var/lib/systemd -name '*extractedprism*')"
e2e_assert_fails "apt: dpkg no longer knows the package" e2e_exec "$n" sh -c \
    'dpkg-query -W -f "\${db:Status-Abbrev}" extractedprism 2>/dev/null | grep -q "^[ir]"'
if e2e_stop "$n"; then e2e_pass "apt: clean poweroff"; else e2e_fail "apt: e2e_stop $n"; fi

# ===========================================================================
# dnf
# ===========================================================================
n=dnf-$$
e2e_prepare "$n" "$tarball"
root=$(e2e_root "$n")
# What a Fedora system has and this Debian one lacks: rpm's database in
# /var/lib/rpm (Debian's rpm defaults to ~/.rpmdb), Fedora's preset policy
# and dnf's Fedora defaults. (/etc/yum.repos.d and /etc/pki/rpm-gpg are
# missing too: the README's curl --create-dirs makes them.)
mkdir -p "$root/etc/rpm"
echo '%_dbpath /var/lib/rpm' >"$root/etc/rpm/macros.dbpath"
rpm --root "$root" --dbpath /var/lib/rpm --initdb
mkdir -p "$root/etc/systemd/system-preset"
echo 'disable *' >"$root/etc/systemd/system-preset/99-default.preset"
sed -i 's/^skip_if_unavailable=.*/skip_if_unavailable=False/' "$root/etc/dnf/dnf.conf"
tr -d - </proc/sys/kernel/random/uuid >"$root/etc/machine-id"
e2e_boot "$n" "$tarball" "$art"
ep_upstreams "$n" e2e-upstreams a=127.0.0.11:6443
serve "$n" "repo-$EP_OLD"

install_as_readme "$n" dnf
e2e_assert_ok "dnf: dnf imported the key into rpm (gpgcheck)" grep -qi "importing GPG key\|imported successfully" <<<"$out"
e2e_assert_eq "dnf: installed from the repository" "$EP_OLD-1" \
    "$(e2e_exec "$n" rpm -q --qf '%{VERSION}-%{RELEASE}' extractedprism 2>&1)"
e2e_assert_match "dnf: the installed package's signature is the repository key's" "${fpr: -16}" \
    "$(e2e_exec "$n" rpm -q --qf '%{RSAHEADER:pgpsig}' extractedprism 2>&1 | tr 'a-f' 'A-F')"
e2e_assert_eq "dnf: the socket is enabled (the README's last line)" enabled "$(enabled "$n" "$sock")"
e2e_assert_eq "dnf: the service is not enabled (Fedora's preset)" disabled "$(enabled "$n" "$unit")"
config "$n"
e2e_assert_eq "dnf: traffic flows" a "$(ep_hello "$n")"
e2e_assert_eq "dnf: the running daemon is $EP_OLD" "v$EP_OLD" "$(ep_running_version "$n")"

serve "$n" "repo-$EP_NEW"
upgrade "$n" "dnf: dnf upgrade -y --refresh" dnf -q -y upgrade --refresh
e2e_assert_eq "dnf: rpm has $EP_NEW" "$EP_NEW-1" "$(e2e_exec "$n" rpm -q --qf '%{VERSION}-%{RELEASE}' extractedprism)"
e2e_assert_eq "dnf: no .rpmnew/.rpmsave next to config.toml" config.toml "$(e2e_exec "$n" ls /etc/extractedprism)"

serve "$n" bad-packages
refused "$n" "dnf: an .rpm altered after signing is refused (index checksum)" \
    "checksum doesn't match" dnf -y reinstall --refresh extractedprism
serve "$n" bad-rpm-signed-index
refused "$n" "dnf: an altered .rpm in a re-signed index is refused (the package's signature)" \
    'GPG check FAILED' dnf -y reinstall --refresh extractedprism
serve "$n" unsigned-rpm
refused "$n" "dnf: an unsigned .rpm in a signed index is refused (gpgcheck)" \
    'is not signed' dnf -y reinstall --refresh extractedprism
for v in bad-repomd:'Bad GPG signature' foreign-repomd:'GPG signature verification error' \
    unsigned-repomd:'repomd.xml.asc'; do
    serve "$n" "${v%%:*}"
    refused "$n" "dnf: ${v%%:*}: the index is refused (repo_gpgcheck)" "${v#*:}" dnf -y makecache --refresh
done
serve "$n" "repo-$EP_NEW"
e2e_assert_ok "dnf: the good repository is accepted again" e2e_exec "$n" dnf -q -y makecache --refresh

e2e_assert_ok "dnf: dnf remove -y extractedprism" e2e_exec "$n" dnf -q -y remove extractedprism
gone "$n" "dnf: after remove"
e2e_assert_ok "dnf: the edited config is kept as config.toml.rpmsave" \
    e2e_exec "$n" grep -qxF "$marker" /etc/extractedprism/config.toml.rpmsave
e2e_assert_fails "dnf: rpm no longer knows the package" e2e_exec "$n" rpm -q extractedprism
if e2e_stop "$n"; then e2e_pass "dnf: clean poweroff"; else e2e_fail "dnf: e2e_stop $n"; fi

e2e_summary
