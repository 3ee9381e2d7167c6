#!/usr/bin/env bash
# hack/repo.sh SRC OUT - signed apt and rpm repositories from the .deb and
# .rpm files in SRC (every version there), written to OUT (`make repo`: dist/
# -> dist/repo/). Environment:
#   SIGNING_KEY         armoured OpenPGP secret key (required); the same key
#                       must have signed the packages (nfpm.yaml, SIGNING_KEY)
#   SIGNING_PASSPHRASE  its passphrase, if it has one
#   REPO_URL            where OUT will be served, e.g.
#                       https://pkgs.example.org/extractedprism; fills in the
#                       client files (default: the REPLACE-ME placeholder)
#
# OUT afterwards (serve it with any static web server, see docs/install.md):
#   extractedprism.asc                     the public key (for both)
#   extractedprism.sources                 apt client file (deb822, Signed-By)
#   extractedprism.repo                    dnf client file (gpgcheck, repo_gpgcheck)
#   apt/pool/main/*.deb
#   apt/dists/stable/{InRelease,Release,Release.gpg}
#   apt/dists/stable/main/binary-ARCH/Packages{,.gz}
#   rpm/ARCH/*.rpm, rpm/ARCH/repodata/{repomd.xml,repomd.xml.asc,...}
#
# Tools: apt-ftparchive (apt-utils) and createrepo_c (createrepo-c) write
# the indexes from the files alone, with no database, so OUT is a pure
# function of SRC: rerunning after adding a version gives the same result as
# publishing it incrementally, every version stays installable
# (`apt-get install extractedprism=VERSION`, `dnf downgrade`), and nothing
# besides SRC needs keeping. gpg signs Release (InRelease, Release.gpg) and
# repomd.xml; any gpg key works, including one behind an agent.
# reprepro and aptly keep a database (and reprepro 5.3, Debian 12's, one
# version per package), which a repository rebuilt by CI does not need.
#
# Before anything is written, every package must carry a valid signature by
# SIGNING_KEY: the rpm header signature (rpmkeys -K) and the .deb's
# _gpgorigin (debsign style, as nfpm writes it; apt itself does not check
# it). An unsigned or foreign package stops the run with its name.
# The new apt/ and rpm/ trees are built next to the old ones and swapped in
# by rename, so a server never serves a half-written index from OUT.
set -euo pipefail

src=${1:?usage: hack/repo.sh SRC OUT}
out=${2:?usage: hack/repo.sh SRC OUT}
key=${SIGNING_KEY:?hack/repo.sh: SIGNING_KEY (an armoured secret key file) is required}
url=${REPO_URL:-}
here=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
placeholder=https://REPLACE-ME.invalid/extractedprism

die() {
	echo "repo: $*" >&2
	exit 1
}

for t in gpg gpgv apt-ftparchive createrepo_c rpmkeys rpm ar; do
	command -v "$t" >/dev/null ||
		die "$t is missing (Debian: apt-get install gpg gpgv apt-utils createrepo-c rpm binutils)"
done
[[ -r $key ]] || die "SIGNING_KEY=$key: no such file"
[[ -z $url || $url =~ ^https?://[^[:space:]\|\&\\]+$ ]] || die "REPO_URL=$url: not an http(s) URL (or it has | & \\)"
url=${url%/}

shopt -s nullglob
debs=("$src"/*.deb)
rpms=("$src"/*.rpm)
shopt -u nullglob
((${#debs[@]} + ${#rpms[@]} > 0)) || die "no .deb or .rpm in $src (make package first)"

work=$(mktemp -d)
export GNUPGHOME=$work/gnupg
cleanup() {
	gpgconf --kill all 2>/dev/null || true
	rm -rf "$work"
}
trap cleanup EXIT
mkdir -m 0700 "$GNUPGHOME"

gpg --batch --quiet --import "$key" 2>/dev/null || die "SIGNING_KEY=$key: gpg cannot import it"
fpr=$(gpg --batch --with-colons --list-secret-keys | awk -F: '$1 == "fpr" { print $10; exit }')
[[ -n $fpr ]] || die "SIGNING_KEY=$key holds no secret key"
gpg --batch --armor --export "$fpr" >"$work/public.asc"
gpg --batch --export "$fpr" >"$work/public.gpg"

# sign ARGS... : gpg with the key, non-interactive, passphrase from the
# environment when there is one.
sign() {
	local -a pass=()
	if [[ -n ${SIGNING_PASSPHRASE:-} ]]; then
		pass=(--pinentry-mode loopback --passphrase-fd 3)
	fi
	gpg --batch --yes --quiet --local-user "$fpr" --digest-algo SHA512 "${pass[@]}" "$@" \
		3<<<"${SIGNING_PASSPHRASE:-}"
}

# --- every package signed by this key -----------------------------------------
rpm --dbpath "$work/rpmdb" --initdb
rpmkeys --dbpath "$work/rpmdb" --import "$work/public.asc"
for f in "${rpms[@]}"; do
	# "digests signatures OK" only when a signature is there and verifies
	# against the imported key; unsigned: "digests OK"; other key: NOKEY.
	res=$(rpmkeys --dbpath "$work/rpmdb" --checksig "$f" 2>&1) || true
	[[ $res == *": digests signatures OK" ]] ||
		die "$f is not signed by $fpr ($res); build it with SIGNING_KEY=$key (make package), or remove it"
done
for f in "${debs[@]}"; do
	members=$(ar t "$f") || die "$f: not a .deb"
	grep -qx _gpgorigin <<<"$members" ||
		die "$f is not signed (no _gpgorigin); build it with SIGNING_KEY=$key (make package), or remove it"
	mapfile -t signed < <(grep -v '^_gpg' <<<"$members")
	ar p "$f" _gpgorigin >"$work/sig"
	ar p "$f" "${signed[@]}" | gpgv --keyring "$work/public.gpg" "$work/sig" - 2>/dev/null ||
		die "$f: its _gpgorigin signature does not verify with $fpr"
done

mkdir -p "$out"

# --- apt --------------------------------------------------------------------
if ((${#debs[@]})); then
	apt=$out/apt.new
	rm -rf "$apt"
	mkdir -p "$apt/pool/main"
	cp -p "${debs[@]}" "$apt/pool/main/"
	# MD5 and SHA-1 are ignored by apt; leave them out.
	nohash=(-o APT::FTPArchive::MD5=false -o APT::FTPArchive::SHA1=false)
	mapfile -t archs < <(for f in "${debs[@]}"; do dpkg-deb -f "$f" Architecture; done | sort -u)
	for a in "${archs[@]}"; do
		d=$apt/dists/stable/main/binary-$a
		mkdir -p "$d"
		(cd "$apt" && apt-ftparchive "${nohash[@]}" --arch "$a" packages pool/main) >"$d/Packages"
		gzip -9nk "$d/Packages"
	done
	(cd "$apt/dists/stable" && apt-ftparchive "${nohash[@]}" \
		-o APT::FTPArchive::Release::Origin=extractedprism \
		-o APT::FTPArchive::Release::Label=extractedprism \
		-o APT::FTPArchive::Release::Suite=stable \
		-o APT::FTPArchive::Release::Codename=stable \
		-o APT::FTPArchive::Release::Components=main \
		-o "APT::FTPArchive::Release::Architectures=${archs[*]}" \
		-o "APT::FTPArchive::Release::Description=extractedprism packages" \
		release .) >"$work/Release"
	mv "$work/Release" "$apt/dists/stable/Release"
	sign --clearsign -o "$apt/dists/stable/InRelease" "$apt/dists/stable/Release"
	sign --armor --detach-sign -o "$apt/dists/stable/Release.gpg" "$apt/dists/stable/Release"
	rm -rf "$out/apt.old"
	[[ ! -d $out/apt ]] || mv "$out/apt" "$out/apt.old"
	mv "$apt" "$out/apt"
	rm -rf "$out/apt.old"
	echo "repo: apt: ${#debs[@]} package(s), ${archs[*]} -> $out/apt (suite stable, component main)" >&2
fi

# --- rpm --------------------------------------------------------------------
if ((${#rpms[@]})); then
	rpmdir=$out/rpm.new
	rm -rf "$rpmdir"
	mkdir -p "$rpmdir"
	for f in "${rpms[@]}"; do
		a=$(rpm -qp --qf '%{ARCH}' "$f" 2>/dev/null)
		mkdir -p "$rpmdir/$a"
		cp -p "$f" "$rpmdir/$a/"
	done
	for d in "$rpmdir"/*/; do
		createrepo_c --quiet --no-database "$d" >/dev/null
		sign --armor --detach-sign -o "$d/repodata/repomd.xml.asc" "$d/repodata/repomd.xml"
	done
	rm -rf "$out/rpm.old"
	[[ ! -d $out/rpm ]] || mv "$out/rpm" "$out/rpm.old"
	mv "$rpmdir" "$out/rpm"
	rm -rf "$out/rpm.old"
	echo "repo: rpm: ${#rpms[@]} package(s), $(cd "$out/rpm" && echo *) -> $out/rpm" >&2
fi

# --- key and client files -------------------------------------------------------
cp "$work/public.asc" "$out/extractedprism.asc.tmp"
mv -f "$out/extractedprism.asc.tmp" "$out/extractedprism.asc"
for f in extractedprism.sources extractedprism.repo; do
	sed "s|$placeholder|${url:-$placeholder}|" "$here/packaging/repo/$f" >"$out/$f.tmp"
	mv -f "$out/$f.tmp" "$out/$f"
done
[[ -n $url ]] || echo "repo: REPO_URL not set: the client files keep the placeholder $placeholder" >&2
echo "repo: signed by $fpr; serve $out as ${url:-REPO_URL}" >&2
