#!/usr/bin/env bash
# shellcheck disable=SC2016 # commands for inside the container are single-quoted on purpose
# test/provisioning/e2e-cloud-init.sh - packaging/cloud-init/apt.yaml run for
# real: a Debian bookworm container (test/e2e/lib.sh: systemd as PID 1 in
# systemd-nspawn, no network) boots with cloud-init's NoCloud datasource and
# the user-data, optional discovery block enabled. It checks that:
#   - cloud-init finishes without errors;
#   - the config.toml written by write_files survives the package install
#     (the packaged one lands next to it as config.toml.dpkg-dist) and is what
#     the daemon's first start uses (no restart, the configured upstreams);
#   - the socket is enabled and active, and socket activation works;
#   - the kubeconfig is 0600 root and handed over by LoadCredential=;
#   - the kubelet wiring .path unit rewrites a kubelet.conf that appears
#     after boot (as `kubeadm join` writes it), restarts a running kubelet,
#     and leaves it alone when nothing changes.
#
# The user-data differs from the shipped file only where it must: the
# repository's URL is the container's own http://127.0.0.1:8080 (`make repo`
# of this tree, signed with its throwaway key, served by a stdlib file
# server started before cloud-init's final stage), the key placeholder is
# that key, and the endpoints are 127.0.0.11-12:6443.
#
# usage: sudo test/provisioning/e2e-cloud-init.sh
# One PASS:/FAIL: line per assertion, then "N passed, N failed". The first
# run builds a rootfs with cloud-init (debootstrap, cached afterwards under
# ~/.cache/extractedprism/e2e).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
repo=$(cd "$here/../.." && pwd)
# shellcheck source-path=SCRIPTDIR source=../e2e/lib.sh
source "$repo/test/e2e/lib.sh"
e2e_trap

# cloud-init's final stage installs the package; booting takes longer than
# the library's default allows.
export E2E_BOOT_TIMEOUT=${E2E_BOOT_TIMEOUT:-240}

# make repo's tools (hack/repo.sh): apt-ftparchive, createrepo_c, rpm, gpg, ar.
need=()
command -v apt-ftparchive >/dev/null || need+=(apt-utils)
command -v createrepo_c >/dev/null || need+=(createrepo-c)
command -v rpm >/dev/null || need+=(rpm)
command -v gpg >/dev/null || need+=(gpg)
command -v ar >/dev/null || need+=(binutils)
if ((${#need[@]})); then
	DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2 ||
		{ apt-get update -qq >&2 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}" >&2; }
fi

# python3-cffi-backend provides the virtual packages python3-cryptography
# needs, which debootstrap does not resolve on its own.
tarball=$(e2e_rootfs bookworm cloud-init python3-cffi-backend)

# --- the repository, in a snapshot of the tree (make repo writes bin/ and dist/)
work=""
e2e_tmpdir work
mkdir -p "$work/tree" "$work/dist" "$work/httpd"
tar -C "$repo" --exclude=./.git --exclude=./bin --exclude=./dist --exclude=./.cache -cf - . | tar -C "$work/tree" -xf -
e2e_log "make repo PKG_VERSION=0.0.1"
if ! make -C "$work/tree" --no-print-directory repo PKG_VERSION=0.0.1 VERSION=v0.0.1 \
	REPO_URL=http://127.0.0.1:8080 >"$work/make.log" 2>&1; then
	tail -n 40 "$work/make.log" >&2
	e2e_die "make repo failed"
fi
cp -a "$work/tree/dist/repo" "$work/dist/repo"
cp "$repo/test/e2e/testdata/httpd/main.go" "$work/httpd/"
printf 'module httpd\n\ngo 1.22\n' >"$work/httpd/go.mod"
(cd "$work/httpd" && CGO_ENABLED=0 GOWORK=off GOFLAGS=-mod=mod go build -trimpath -ldflags='-s -w' \
	-o "$work/dist/httpd" .) || e2e_die "building the repository server failed"

# --- the user-data --------------------------------------------------------------
# Optional blocks uncommented exactly as an operator would; then the
# repository, its key and the endpoints replaced.
sed -e '/# BEGIN OPTIONAL/,/# END OPTIONAL/{/# BEGIN OPTIONAL/b;/# END OPTIONAL/b;s/^\( *\)# /\1/;s/^\( *\)#$/\1/;}' \
	-e 's|^      URIs: https://REPLACE-ME.invalid/extractedprism/apt$|      URIs: http://127.0.0.1:8080/apt|' \
	-e 's|^      endpoints = \[.*\]$|      endpoints = ["127.0.0.11:6443", "127.0.0.12:6443"]|' \
	"$repo/packaging/cloud-init/apt.yaml" |
	# The key placeholder (BEGIN ... END) replaced by the repository's key.
	awk -v key="$work/dist/repo/extractedprism.asc" '
		$0 == "      -----BEGIN PGP PUBLIC KEY BLOCK-----" { while ((getline l < key) > 0) print "      " l; skip = 1; next }
		skip { if ($0 == "      -----END PGP PUBLIC KEY BLOCK-----") skip = 0; next }
		{ print }' >"$work/user-data"
for want in 'URIs: http://127.0.0.1:8080/apt' 'Signed-By: /etc/apt/keyrings/extractedprism.asc' \
	'127.0.0.11:6443' '- path: /etc/extractedprism/kubeconfig' "$(sed -n 3p "$work/dist/repo/extractedprism.asc")"; do
	grep -qF -- "$want" "$work/user-data" || e2e_die "user-data substitution failed: no '$want'"
done
if grep -q 'REPLACE-ME' "$work/user-data"; then
	e2e_die "user-data substitution failed: a REPLACE-ME placeholder is still there: $(grep -m1 REPLACE-ME "$work/user-data")"
fi

# --- the node -------------------------------------------------------------------
e2e_prepare node "$tarball"
root=$(e2e_root node)
mkdir -p "$root/var/lib/cloud/seed/nocloud" "$root/etc/cloud/cloud.cfg.d"
cp "$work/user-data" "$root/var/lib/cloud/seed/nocloud/user-data"
printf 'instance-id: provisioning-e2e\nlocal-hostname: node-1\n' >"$root/var/lib/cloud/seed/nocloud/meta-data"
# No network in the container: only the NoCloud seed, no network config, no
# Debian mirror (the only repository is the user-data's, served on the
# container's loopback by e2e-repo.service below).
# The minimal rootfs has no en_US.UTF-8, which cloud-init's locale module
# would set.
printf 'datasource_list: [NoCloud]\nnetwork: {config: disabled}\nlocale: C.UTF-8\n' >"$root/etc/cloud/cloud.cfg.d/99-e2e.cfg"
: >"$root/etc/apt/sources.list"
rm -f "$root"/etc/apt/sources.list.d/*
# A stand-in kubelet, running from boot, so a restart can be seen.
cat >"$root/etc/systemd/system/kubelet.service" <<'EOF'
[Unit]
Description=kubelet stand-in
[Service]
ExecStart=/bin/sleep infinity
[Install]
WantedBy=multi-user.target
EOF
# The package repository, as a web server would serve it: started at boot,
# active once it accepts connections, before cloud-init's final stage
# (apt-get update && apt-get install).
cat >"$root/etc/systemd/system/e2e-repo.service" <<'EOF'
[Unit]
Description=the test's package repository on http://127.0.0.1:8080
Before=cloud-final.service
[Service]
ExecStart=/dist/httpd 127.0.0.1:8080 /dist/repo
ExecStartPost=/bin/bash -c 'for i in {1..100}; do (exec 3<>/dev/tcp/127.0.0.1/8080) 2>/dev/null && exit 0; sleep 0.1; done; exit 1'
[Install]
WantedBy=multi-user.target
EOF
mkdir -p "$root/etc/systemd/system/multi-user.target.wants"
ln -sf /etc/systemd/system/kubelet.service "$root/etc/systemd/system/multi-user.target.wants/kubelet.service"
ln -sf /etc/systemd/system/e2e-repo.service "$root/etc/systemd/system/multi-user.target.wants/e2e-repo.service"

e2e_boot node "$tarball" "$work/dist"

# --- cloud-init -----------------------------------------------------------------
status=$(e2e_exec node timeout 120 cloud-init status --wait --long 2>&1 || true)
e2e_assert_eq "cloud-init finished without errors" "status: done" "$(grep '^status:' <<<"$status" || echo "$status")"
e2e_assert_ok "extractedprism is installed from the user-data's repository" \
	e2e_exec node dpkg-query -W -f='${Status}' extractedprism
e2e_assert_match "apt got it from the signed repository" 'http://127\.0\.0\.1:8080/apt stable/main' \
	"$(e2e_exec node apt-cache policy extractedprism 2>&1)"

conf=$(e2e_exec node cat /etc/extractedprism/config.toml)
e2e_assert_match "config.toml is the one write_files wrote" 'endpoints = \["127\.0\.0\.11:6443", "127\.0\.0\.12:6443"\]' "$conf"
e2e_assert_ok "the packaged config.toml was set aside as config.toml.dpkg-dist" \
	e2e_exec node test -f /etc/extractedprism/config.toml.dpkg-dist
e2e_assert_match "runcmd's check-config shows the file's endpoints" \
	'endpoints = \["127\.0\.0\.11:6443", "127\.0\.0\.12:6443"\] +# /etc/extractedprism/config\.toml' \
	"$(e2e_exec node cat /var/log/cloud-init-output.log)"

# --- the socket and the daemon ----------------------------------------------------
e2e_assert_eq "extractedprism.socket is enabled" enabled "$(e2e_exec node systemctl is-enabled extractedprism.socket 2>&1 || true)"
e2e_assert_eq "extractedprism.socket is active" active "$(e2e_show node extractedprism.socket ActiveState)"
e2e_exec node bash -c 'exec 3<>/dev/tcp/127.0.0.1/7445' || true
e2e_assert_eventually "a connection to 127.0.0.1:7445 starts extractedprism.service" 15 \
	bash -c '[ "$(nsenter -t '"${E2E_LEADER[node]}"' -a systemctl show -p ActiveState --value extractedprism.service)" = active ]'
e2e_assert_eq "the first start already had the configuration (no restart)" 0 "$(e2e_show node extractedprism.service NRestarts)"
status_json=$(e2e_exec node extractedprism status --json 2>&1 || true)
e2e_assert_match "the daemon serves the configured upstreams" '127\.0\.0\.11:6443.*127\.0\.0\.12:6443|127\.0\.0\.12:6443.*127\.0\.0\.11:6443' "$(tr -d '\n' <<<"$status_json")"

# --- discovery credentials ------------------------------------------------------------
e2e_assert_eq "the kubeconfig is root-only" "600 root:root" "$(e2e_exec node stat -c '%a %U:%G' /etc/extractedprism/kubeconfig)"
e2e_assert_ok "the drop-in hands it to the service as a credential" \
	e2e_exec node test -f /run/credentials/extractedprism.service/kubeconfig
e2e_assert_match "and the daemon reads it from there" 'run/credentials/extractedprism\.service/kubeconfig' \
	"$(e2e_exec node journalctl -b -u extractedprism.service -o cat)"

# --- kubelet wiring -----------------------------------------------------------------
e2e_assert_eq "extractedprism-kubelet-wiring.path is active" active "$(e2e_show node extractedprism-kubelet-wiring.path ActiveState)"
e2e_assert_eq "the wiring ran at boot and succeeded" success "$(e2e_show node extractedprism-kubelet-wiring.service Result)"
kubelet_id=$(e2e_show node kubelet.service InvocationID)
e2e_assert_match "the kubelet stand-in runs" '^[0-9a-f]{32}$' "$kubelet_id"

# kubeadm join writes /etc/kubernetes/kubelet.conf; the directory does not
# exist yet either.
e2e_exec node sh -c 'mkdir -p /etc/kubernetes && umask 077 && cat >/etc/kubernetes/kubelet.conf' <<'EOF'
apiVersion: v1
clusters:
- cluster:
    certificate-authority-data: LS0tLS1CRUdJTiBDRVJUSUZJQ0FURS0tLS0tCg==
    server: https://10.0.0.1:6443
  name: default-cluster
contexts:
- context:
    cluster: default-cluster
    user: default-auth
  name: default-context
current-context: default-context
kind: Config
users:
- name: default-auth
  user:
    client-certificate: /var/lib/kubelet/pki/kubelet-client-current.pem
    client-key: /var/lib/kubelet/pki/kubelet-client-current.pem
EOF
kubelet_conf="$root/etc/kubernetes/kubelet.conf"
e2e_assert_eventually "a new kubelet.conf is pointed at https://127.0.0.1:7445" 15 \
	grep -q '^    server: https://127.0.0.1:7445$' "$kubelet_conf"
e2e_assert_ok "with tls-server-name: kubernetes" grep -q '^    tls-server-name: kubernetes$' "$kubelet_conf"
# A new invocation id, not an empty one from a probe that failed.
e2e_assert_eventually "kubelet was restarted" 15 \
	bash -c 'id=$(nsenter -t '"${E2E_LEADER[node]}"' -a systemctl show -p InvocationID --value kubelet.service) &&
		[[ $id =~ ^[0-9a-f]{32}$ && $id != '"$kubelet_id"' ]]'
e2e_assert_eq "the file kept mode 0600" 600 "$(e2e_exec node stat -c %a /etc/kubernetes/kubelet.conf)"

# The same content again: the unit runs, changes nothing, restarts nothing.
kubelet_id=$(e2e_show node kubelet.service InvocationID)
runs=$(e2e_exec node journalctl -b -u extractedprism-kubelet-wiring.service -o cat | grep -c 'already points at' || true)
e2e_exec node sh -c 'cat /etc/kubernetes/kubelet.conf >/etc/kubernetes/kubelet.conf.new && mv /etc/kubernetes/kubelet.conf.new /etc/kubernetes/kubelet.conf'
e2e_assert_eventually "a rewritten but unchanged kubelet.conf is checked again" 15 \
	bash -c '[ "$(nsenter -t '"${E2E_LEADER[node]}"' -a journalctl -b -u extractedprism-kubelet-wiring.service -o cat | grep -c "already points at")" -gt '"$runs"' ]'
e2e_sleep 2
e2e_assert_eq "and kubelet is not restarted" "$kubelet_id" "$(e2e_show node kubelet.service InvocationID)"

e2e_stop node
e2e_summary
