#!/usr/bin/env bash
# shellcheck disable=SC2016 # the sh -c scripts take their arguments as $1...
# hack/release-snapshot.sh - a goreleaser release of this checkout as a
# snapshot (`make release-snapshot`): binaries, archives, packages,
# checksums, SBOMs, signatures, into dist/; no image, nothing published.
# Then it checks what a release must have, with the tools a user has:
#   - checksums.txt.sig verifies (gpgv) and every artifact matches checksums.txt;
#   - every .rpm carries a signature by the key (rpmkeys -K), every .deb a
#     _gpgorigin signature that verifies (gpgv);
#   - every archive and package has an SBOM that lists the binary's Go modules.
#
# The key: SIGNING_KEY (armoured secret key file), else a throwaway key made
# in a temp dir, as `make repo` does. A key with a passphrase: nfpm takes it
# from SIGNING_PASSPHRASE; gpg (checksums.txt) from an agent that has it
# (gpg-preset-passphrase), which this script does not set up.
# goreleaser (tools/goreleaser) and syft (tools/syft) are the pinned Go tools;
# needs gpg, rpm, binutils and bsdtar (libarchive-tools).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."

die() {
	echo "release-snapshot: $*" >&2
	exit 1
}
for t in gpg gpgv rpmkeys ar bsdtar sha256sum; do
	command -v "$t" >/dev/null ||
		die "$t is missing (Debian: apt-get install gpg gpgv rpm binutils libarchive-tools coreutils)"
done

work=$(mktemp -d)
export GNUPGHOME=$work/gnupg
trap 'gpgconf --kill all 2>/dev/null || true; rm -rf "$work"' EXIT
mkdir -m 0700 "$GNUPGHOME"

key=${SIGNING_KEY:-}
[[ -n $key ]] || key=$(hack/throwaway-key.sh "$work/key")
key=$(realpath "$key")
gpg --batch --quiet --import "$key" 2>/dev/null || die "SIGNING_KEY=$key: gpg cannot import it"
fpr=$(gpg --batch --with-colons --list-secret-keys | awk -F: '$1 == "fpr" { print $10; exit }')
gpg --batch --export "$fpr" >"$work/public.gpg"
gpg --batch --armor --export "$fpr" >"$work/public.asc"
mkdir -p bin/tools
go build -modfile=tools/syft/go.mod -o bin/tools/syft github.com/anchore/syft/cmd/syft
PATH=$PWD/bin/tools:$PATH PKG_VERSION=$(hack/pkg-version.sh) SIGNING_KEY=$key SIGNING_FINGERPRINT=$fpr \
	NFPM_PACKAGES_PASSPHRASE=${SIGNING_PASSPHRASE:-} \
	go tool -modfile=tools/goreleaser/go.mod goreleaser release --snapshot --clean --skip=docker,publish

passed=0 failed=0
ok() { echo "PASS: $1"; passed=$((passed + 1)); }
bad() { echo "FAIL: $1"; failed=$((failed + 1)); }
check() { if "${@:2}" >/dev/null 2>&1; then ok "$1"; else bad "$1"; fi; }

check "checksums.txt.sig verifies with the key" gpgv --keyring "$work/public.gpg" dist/checksums.txt.sig dist/checksums.txt
# checksums.txt names artifacts; the bare binaries are not in dist/ under
# their names: artifacts.json maps each name to its path.
sums() {
	local name sum path n=0
	while read -r sum name; do
		path=$(grep -o "\"name\":\"$name\",\"path\":\"[^\"]*\"" dist/artifacts.json | head -n 1 | sed 's/.*"path":"//; s/"$//')
		[[ -n $path && -f $path ]] || { echo "no file for $name" >&2; return 1; }
		[[ $(sha256sum <"$path" | cut -d' ' -f1) == "$sum" ]] || { echo "$name: checksum differs" >&2; return 1; }
		n=$((n + 1))
	done <dist/checksums.txt
	((n > 0))
}
check "every artifact matches checksums.txt" sums
rpm --dbpath "$work/rpmdb" --initdb
rpmkeys --dbpath "$work/rpmdb" --import "$work/public.asc"
shopt -s nullglob
pkgs=(dist/*.deb dist/*.rpm dist/*.apk dist/*.pkg.tar.zst)
for f in dist/*.rpm; do
	check "$f: signed by the key" sh -c 'rpmkeys --dbpath "$1" -K "$2" | grep -q ": digests signatures OK$"' _ "$work/rpmdb" "$f"
done
for f in dist/*.deb; do
	ar p "$f" _gpgorigin >"$work/sig" 2>/dev/null || : >"$work/sig"
	mapfile -t members < <(ar t "$f" | grep -v '^_gpg')
	check "$f: _gpgorigin verifies with the key" bash -c \
		'ar p "$1" "${@:4}" | gpgv --keyring "$2" "$3" -' _ "$f" "$work/public.gpg" "$work/sig" "${members[@]}"
done
for f in dist/*.tar.gz "${pkgs[@]}"; do
	check "$f: SBOM lists the Go modules" grep -q '"go.uber.org/zap"' "$f.sbom.json"
done
if ((${#pkgs[@]} >= 8)); then
	ok "${#pkgs[@]} packages (deb, rpm, apk, archlinux for amd64 and arm64)"
else
	bad "only ${#pkgs[@]} packages: ${pkgs[*]}"
fi
echo "$passed passed, $failed failed"
((failed == 0))
