#!/usr/bin/env bash
# Inspects the built packages in dist/ with the distributions' own tools:
# contents, modes, owners, conffiles and maintainer scripts of the .deb
# (dpkg-deb, lintian) and the .rpm (rpm -qp). Prints one line per assertion
# and "N passed, N failed".
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v lintian >/dev/null || need+=(lintian)
command -v rpm >/dev/null || need+=(rpm)
command -v shellcheck >/dev/null || need+=(shellcheck)
if [ ${#need[@]} -gt 0 ]; then
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi

deb=$(ls dist/*.deb | head -1)
rpm=$(ls dist/*.rpm | head -1)
passed=0 failed=0

ok() { echo "PASS: $1"; passed=$((passed + 1)); }
bad() { printf 'FAIL: %s\n%s\n' "$1" "${2:-}"; failed=$((failed + 1)); }
# has NAME TEXT REGEX: TEXT has a line matching REGEX.
has() { if grep -Eq -- "$3" <<<"$2"; then ok "$1"; else bad "$1" "$2"; fi; }

# .deb
listing=$(dpkg-deb -c "$deb")
has "deb: binary 0755 root:root" "$listing" '^-rwxr-xr-x root/root .* \./usr/bin/extractedprism$'
has "deb: socket unit 0644" "$listing" '^-rw-r--r-- root/root .* \./usr/lib/systemd/system/extractedprism\.socket$'
has "deb: health socket unit 0644" "$listing" '^-rw-r--r-- root/root .* \./usr/lib/systemd/system/extractedprism-health\.socket$'
has "deb: link-local socket unit 0644" "$listing" '^-rw-r--r-- root/root .* \./usr/lib/systemd/system/extractedprism-link-local\.socket$'
has "deb: link-local oneshot unit 0644" "$listing" '^-rw-r--r-- root/root .* \./usr/lib/systemd/system/extractedprism-link-local\.service$'
has "deb: service unit 0644" "$listing" '^-rw-r--r-- root/root .* \./usr/lib/systemd/system/extractedprism\.service$'
has "deb: config 0644" "$listing" '^-rw-r--r-- root/root .* \./etc/extractedprism/config\.toml$'
has "deb: copyright" "$listing" '\./usr/share/doc/extractedprism/copyright$'
has "deb: kubeconfig drop-in example" "$listing" '\./usr/share/doc/extractedprism/examples/kubeconfig\.conf$'
has "deb: man page" "$listing" '\./usr/share/man/man8/extractedprism\.8\.gz$'
has "deb: bash completion" "$listing" '\./usr/share/bash-completion/completions/extractedprism$'

info=$(dpkg-deb -I "$deb")
has "deb: conffile" "$(dpkg-deb --ctrl-tarfile "$deb" | tar -xO ./conffiles)" '^/etc/extractedprism/config\.toml$'
for s in postinst prerm postrm; do
	has "deb: $s present and executable" "$info" "^ +[0-9]+ bytes, +[0-9]+ lines +\* +$s +#!/bin/sh$"
done

lint=$(lintian --fail-on error --suppress-tags statically-linked-binary,unknown-field,embedded-library "$deb" 2>&1) && ok "deb: lintian reports no errors" || bad "deb: lintian reports no errors" "$lint"
[ -z "$lint" ] || printf 'lintian (non-error) tags:\n%s\n' "$lint"

# .rpm
rdump=$(rpm -qp --dump "$rpm" 2>/dev/null)
has "rpm: binary 0755 root:root" "$rdump" '^/usr/bin/extractedprism [0-9]+ [0-9]+ [0-9a-f]+ 0100755 root root 0 '
has "rpm: socket unit 0644" "$rdump" '^/usr/lib/systemd/system/extractedprism\.socket .* 0100644 root root 0 '
has "rpm: health socket unit 0644" "$rdump" '^/usr/lib/systemd/system/extractedprism-health\.socket .* 0100644 root root 0 '
has "rpm: link-local socket unit 0644" "$rdump" '^/usr/lib/systemd/system/extractedprism-link-local\.socket .* 0100644 root root 0 '
has "rpm: link-local oneshot unit 0644" "$rdump" '^/usr/lib/systemd/system/extractedprism-link-local\.service .* 0100644 root root 0 '
has "rpm: config is %config(noreplace)" "$(rpm -qp --configfiles "$rpm" 2>/dev/null)" '^/etc/extractedprism/config\.toml$'
has "rpm: config flagged noreplace" "$(rpm -qp --qf '[%{FILENAMES} %{FILEFLAGS:fflags}\n]' "$rpm" 2>/dev/null)" '^/etc/extractedprism/config\.toml cn$'
scripts=$(rpm -qp --scripts "$rpm" 2>/dev/null)
for s in postinstall preuninstall postuninstall; do
	has "rpm: $s scriptlet" "$scripts" "^$s scriptlet"
done
# rpm leaves behind directories that no package owns.
has "rpm: owns its doc directory" "$rdump" '^/usr/share/doc/extractedprism [0-9]+ [0-9]+ [0-9a-f]+ 040755 root root '
has "rpm: owns its examples directory" "$rdump" '^/usr/share/doc/extractedprism/examples [0-9]+ [0-9]+ [0-9a-f]+ 040755 root root '
has "rpm: license" "$(rpm -qp --qf '%{LICENSE}' "$rpm" 2>/dev/null)" '^BSD-3-Clause$'

# The packaging and repository scripts.
for f in hack/pkg-version.sh hack/throwaway-key.sh hack/repo.sh hack/sbom-package.sh hack/release-snapshot.sh \
	test/e2e/repo.sh; do
	if out=$(shellcheck -x -P SCRIPTDIR "$f" 2>&1); then ok "shellcheck $f"; else bad "shellcheck $f" "$out"; fi
done

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
