#!/bin/sh
# hack/sbom-package.sh PACKAGE DOCUMENT - an SPDX SBOM of what a package
# installs, for goreleaser's `sboms` (it runs this in dist/).
#
# syft catalogs a .deb or an .rpm as one opaque file (it does not open ar or
# rpm's cpio payload), so the Go modules compiled into the binary would be
# missing. Unpacked first (bsdtar reads deb, rpm, apk and Arch packages
# alike), the payload is scanned as a directory and the SBOM lists the
# binary's modules, named after the package. Needs syft and bsdtar
# (Debian/Ubuntu: libarchive-tools) on PATH.
set -eu

pkg=${1:?usage: hack/sbom-package.sh PACKAGE DOCUMENT}
doc=${2:?usage: hack/sbom-package.sh PACKAGE DOCUMENT}
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

case $pkg in
*.deb) bsdtar -xOf "$pkg" 'data.tar*' | bsdtar -xf - -C "$tmp" ;;
*) bsdtar -xf "$pkg" -C "$tmp" ;;
esac
[ -x "$tmp/usr/bin/extractedprism" ] || { echo "sbom-package: $pkg holds no usr/bin/extractedprism" >&2; exit 1; }
syft scan "dir:$tmp" --quiet --source-name "$(basename "$pkg")" -o "spdx-json=$doc"
