#!/bin/bash
# Emits a minimal go.mod that can build k8s.io/kubernetes at the given version.
#
# k8s.io/kubernetes pins every staging module (k8s.io/api, k8s.io/client-go, ...)
# to v0.0.0 and replaces it with ./staging/..., so `go install ...@v1.x` refuses to
# build it. This script re-creates those replaces as proxy versions (v0.<minor>.<patch>).
# Only staging modules that kubernetes actually requires are pinned: some (e.g.
# k8s.io/sample-cli-plugin) are only in the replace block and are not on the proxy.
#
# usage: gen-gomod.sh 1.36.3 > go.mod
#        go get -tool k8s.io/kubernetes/cmd/kube-apiserver@v1.36.3 \
#            go.etcd.io/etcd/server/v3@v3.6.8 go.etcd.io/etcd/etcdctl/v3@v3.6.8
set -euo pipefail

if [ $# -ne 1 ]; then
	echo "usage: $0 <kubernetes version, e.g. 1.36.3>" >&2
	exit 2
fi
V=${1#v}
MODULE=${KUBE_BINS_MODULE:-example.invalid/kube-bins}

# Run outside any module so the download does not touch a go.mod.
J=$(cd / && GOWORK=off GOFLAGS=-mod=mod go mod download -json "k8s.io/kubernetes@v$V" || true)
if echo "$J" | grep -q '"Error"'; then
	echo "$J" | grep '"Error"' >&2
	exit 1
fi
MOD=$(echo "$J" | sed -n 's/.*"GoMod": "\(.*\)".*/\1/p')
if [ -z "$MOD" ] || [ ! -f "$MOD" ]; then
	echo "could not locate go.mod of k8s.io/kubernetes@v$V" >&2
	exit 1
fi

printf 'module %s\n\ngo 1.26.0\n\nrequire k8s.io/kubernetes v%s\n\nreplace (\n' "$MODULE" "$V"
for m in $(sed -n '/^replace/,/^)/p' "$MOD" | awk '/=> \.\/staging/{print $1}'); do
	if grep -q "^[[:space:]]$m v0.0.0" "$MOD"; then
		printf '\t%s => %s v0.%s\n' "$m" "$m" "${V#1.}"
	fi
done
echo ")"
