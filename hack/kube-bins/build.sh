#!/bin/bash
# Builds kube-apiserver, kubectl, etcd and etcdctl from the pinned module in this directory
# into a content-addressed cache directory, and prints that directory as the last
# line of stdout:
#
#   KUBE_BINS=$(hack/kube-bins/build.sh | tail -1)
#
# The cache key is sha256(go.mod + go.sum + `go version`), so a version bump or a
# toolchain change gets a fresh directory while repeated runs cost ~0 s.
# Everything except the final path goes to stderr.
#
# Environment:
#   KUBE_BINS_CACHE  cache root (default: $HOME/.cache/extractedprism/kube-bins)
set -euo pipefail

HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
CACHE_ROOT=${KUBE_BINS_CACHE:-$HOME/.cache/extractedprism/kube-bins}

log() { echo "kube-bins: $*" >&2; }

# The nested module must never be resolved through a parent go.work or edited.
export GOWORK=off
export GOFLAGS="${GOFLAGS:-} -mod=readonly"

cache_key() {
	{ cat "$HERE/go.mod" "$HERE/go.sum"; go version; } | sha256sum | cut -d' ' -f1
}

# module_version prints the version of a required module from go.mod, in either
# the one-line ("require m v") or the block form.
module_version() {
	awk -v m="$1" '
		$1 == "require" && $2 == m { print $3; exit }
		$1 == m && $2 ~ /^v/ { print $2; exit }' "$HERE/go.mod"
}

binaries_work() {
	local dir=$1
	"$dir/kube-apiserver" --version >/dev/null 2>&1 &&
		"$dir/kubectl" version --client >/dev/null 2>&1 &&
		"$dir/etcd" --version >/dev/null 2>&1 &&
		"$dir/etcdctl" version >/dev/null 2>&1
}

build_into() {
	local out=$1 kver major minor
	kver=$(module_version k8s.io/kubernetes)
	if [ -z "$kver" ]; then
		log "k8s.io/kubernetes is not required in $HERE/go.mod"
		return 1
	fi
	major=${kver#v}; major=${major%%.*}
	minor=${kver#v*.}; minor=${minor%%.*}
	# Without -X the apiserver reports a placeholder version, which makes
	# `kubectl version` and client-side version checks misleading.
	local cv=k8s.io/component-base/version
	local ldflags="-s -w -X $cv.gitVersion=$kver -X $cv.gitMajor=$major -X $cv.gitMinor=$minor -X $cv.gitTreeState=clean"
	log "building kube-apiserver and kubectl $kver, etcd and etcdctl $(module_version go.etcd.io/etcd/server/v3) (a cold build takes 5-10 min)"
	# In the background so a signal to this script is handled at once (bash
	# defers traps until a foreground child exits). Job control gives the
	# build its own process group, so the trap can stop go and its compilers
	# together.
	set -m
	(cd "$HERE" && exec go build -trimpath -ldflags="$ldflags" -o "$out/" \
		k8s.io/kubernetes/cmd/kube-apiserver \
		k8s.io/kubernetes/cmd/kubectl \
		go.etcd.io/etcd/server/v3 \
		go.etcd.io/etcd/etcdctl/v3) &
	local pid=$!
	set +m
	trap 'kill -TERM -- -'"$pid"' 2>/dev/null; wait '"$pid"'; exit 130' INT TERM
	wait "$pid"
	trap 'exit 130' INT TERM
	# The /v3 major-version suffix makes go name the etcd binary after the
	# package directory ("server").
	mv "$out/server" "$out/etcd"
}

main() {
	local dest
	dest="$CACHE_ROOT/$(cache_key)"
	if [ -d "$dest" ] && binaries_work "$dest"; then
		log "up to date: $dest"
		echo "$dest"
		return 0
	fi

	mkdir -p "$CACHE_ROOT"
	# Build next to the destination (same filesystem) so the final mv is atomic
	# and an interrupted build never leaves a half-filled cache directory.
	# Not local: the EXIT trap runs after main has returned.
	BUILD_TMP=$(mktemp -d "$CACHE_ROOT/.build.XXXXXX")
	trap 'rm -rf "$BUILD_TMP"' EXIT
	trap 'exit 130' INT TERM # make signals run the EXIT trap
	local tmp=$BUILD_TMP
	chmod 0755 "$tmp" # mktemp makes it 0700; the cache may be shared with other users

	local start=$SECONDS
	build_into "$tmp"
	binaries_work "$tmp" || { log "freshly built binaries do not run"; return 1; }

	# A broken leftover (e.g. from a different libc) would block the mv.
	if [ -d "$dest" ] && ! binaries_work "$dest"; then
		rm -rf "$dest"
	fi
	if ! mv -T "$tmp" "$dest" 2>/dev/null; then
		# Lost a race with a concurrent build.sh; its result is equivalent.
		binaries_work "$dest" || { log "cannot install into $dest"; return 1; }
	fi
	log "built in $((SECONDS - start)) s: $("$dest/kube-apiserver" --version), $("$dest/etcd" --version | head -1)"
	echo "$dest"
}

main "$@"
