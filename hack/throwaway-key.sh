#!/usr/bin/env bash
# hack/throwaway-key.sh DIR - make a THROWAWAY OpenPGP signing key for tests
# in DIR, unless DIR has one already (so repeated `make repo` runs keep
# signing with the same key and clients keep trusting the repository):
#   DIR/signing-key.asc    the secret key, armoured, no passphrase (0600)
#   DIR/public-key.asc     its public key
# Prints the secret key's path on stdout, a loud note on stderr.
#
# RSA 3072, SHA-2 signatures (nfpm: SHA-256, gpg here: SHA-512): accepted by every apt (including the
# stricter sqv of Debian 13) and every rpm/dnf this package targets (RHEL 8
# and 9 included, whose crypto policies reject SHA-1 and weak keys).
# Never publish a repository signed with it: the secret key sits unprotected
# next to the packages.
set -euo pipefail

dir=${1:?usage: hack/throwaway-key.sh DIR}
key=$dir/signing-key.asc

if [[ ! -s $key ]]; then
	command -v gpg >/dev/null || { echo "throwaway-key: gpg is needed (apt-get install gpg)" >&2; exit 1; }
	mkdir -p "$dir"
	home=$(mktemp -d)
	trap 'gpgconf --homedir "$home" --kill all 2>/dev/null || true; rm -rf "$home"' EXIT
	gpg --homedir "$home" --batch --quiet --passphrase '' \
		--quick-gen-key "extractedprism throwaway test key (NOT FOR PRODUCTION) <throwaway@extractedprism.invalid>" \
		rsa3072 sign never 2>/dev/null
	(umask 077 && gpg --homedir "$home" --batch --armor --export-secret-keys >"$key.tmp")
	gpg --homedir "$home" --batch --armor --export >"$dir/public-key.asc"
	mv -f "$key.tmp" "$key"
fi

fpr=$(gpg --batch --with-colons --show-keys "$key" 2>/dev/null | awk -F: '$1 == "fpr" { print $10; exit }')
cat >&2 <<EOF
*** No SIGNING_KEY given: signing with a THROWAWAY key made for tests,
*** $key (fingerprint $fpr).
*** Anyone with that file can sign for this repository: do not publish it.
*** Publish with SIGNING_KEY=path/to/armoured-secret-key (passphrase, if any,
*** in SIGNING_PASSPHRASE).
EOF
echo "$key"
