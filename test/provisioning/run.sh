#!/usr/bin/env bash
# Tests of what operators copy onto nodes and clusters (packaging/):
#
#   - cloud-init user-data (apt, dnf): `cloud-init schema` from Debian's
#     cloud-init package, module order, content, config.toml accepted by
#     `extractedprism check-config`;
#   - the kubelet wiring script and its units;
#   - the Butane configs (FCOS, Flatcar): translated and validated with the
#     butane/ignition libraries in the separate module ./butane;
#   - the Kubernetes manifests and the Helm chart (rendered with helm built
#     as a Go tool from tools/helm/go.mod): `helm lint`, the chart README's
#     values table against values.yaml and the seed chart's, and a
#     server-side dry-run apply to a real kube-apiserver (test/kubeharness)
#     in a private network namespace, with RBAC checked by
#     SubjectAccessReviews.
#
# usage: test/provisioning/run.sh        (root: apt-get, unshare --net)
#
# Prints one line per assertion (PASS:/FAIL:) and, last, exactly
# "N passed, N failed". Exits non-zero if anything failed or nothing ran.
# Installs what is missing with apt-get (cloud-init, systemd, jq, iproute2
# and shellcheck); a cloud-init it installed is disabled at boot
# (/etc/cloud/cloud-init.disabled), so the host is not reconfigured by it.
# Needs the kube-apiserver/etcd binaries from hack/kube-bins (cached; about
# 10 minutes to build on a cold cache).
set -uo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(cd "$here/../.." && pwd)
cd "$repo" || exit 1

start=$(date +%s)
passed=0 failed=0 summarized=0
work=$(mktemp -d "${TMPDIR:-/tmp}/provisioning.XXXXXX")

summary() {
	[ "$summarized" = 1 ] && return
	summarized=1
	echo "provisioning: $(($(date +%s) - start)) s" >&2
	echo "$passed passed, $failed failed"
}

on_exit() {
	local rc=$?
	if [ "$summarized" != 1 ] && [ "$rc" -ne 0 ]; then
		echo "FAIL: run.sh ended early (exit $rc)"
		failed=$((failed + 1))
	fi
	rm -rf "$work"
	summary
	if [ "$failed" -gt 0 ] || [ "$passed" -eq 0 ]; then
		exit 1
	fi
	exit 0
}
trap on_exit EXIT
trap 'exit 130' INT TERM

pass() {
	echo "PASS: $1"
	passed=$((passed + 1))
}

fail() { # name [details]
	echo "FAIL: $1"
	if [ -n "${2:-}" ]; then
		printf '%s\n' "$2" | tail -n 40 | sed 's/^/    /'
	fi
	failed=$((failed + 1))
}

# check NAME CMD...: one assertion, passing when CMD exits 0.
check() {
	local name=$1 out
	shift
	if out=$("$@" 2>&1); then
		pass "$name"
	else
		fail "$name" "$out"
	fi
}

# --- dependencies -----------------------------------------------------------

missing=()
command -v cloud-init >/dev/null || missing+=(cloud-init)
command -v systemd-analyze >/dev/null || missing+=(systemd)
command -v jq >/dev/null || missing+=(jq)
command -v ip >/dev/null || missing+=(iproute2)
command -v unshare >/dev/null || missing+=(util-linux)
command -v shellcheck >/dev/null || missing+=(shellcheck)
if [ ${#missing[@]} -gt 0 ]; then
	echo "provisioning: installing ${missing[*]}" >&2
	install() { DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >"$work/apt.log" 2>&1; }
	if ! install && ! { apt-get update -qq >>"$work/apt.log" 2>&1 && install; }; then
		fail "install ${missing[*]} with apt-get" "$(cat "$work/apt.log")"
		exit 1
	fi
	# Installed only to validate user-data: never let it run at boot.
	if [[ " ${missing[*]} " == *" cloud-init "* ]]; then
		touch /etc/cloud/cloud-init.disabled
	fi
fi

# --- build what the tests use -------------------------------------------------

export EP_BINARY=$work/extractedprism
check "extractedprism builds" env CGO_ENABLED=0 go build -o "$EP_BINARY" ./cmd/extractedprism

if KUBE_BINS=$(hack/kube-bins/build.sh 2>"$work/kube-bins.log" | tail -1) && [ -x "$KUBE_BINS/kube-apiserver" ]; then
	export KUBE_BINS
	pass "kube-apiserver and etcd binaries (hack/kube-bins)"
else
	fail "kube-apiserver and etcd binaries (hack/kube-bins)" "$(cat "$work/kube-bins.log")"
fi

# --- Helm chart -----------------------------------------------------------------

chart=packaging/helm/extractedprism
export EP_RENDERED_CHART_DIR=$work/chart
mkdir -p "$EP_RENDERED_CHART_DIR"
# helm, built from tools/helm/go.mod. Built without its release ldflags it
# assumes Kubernetes v1.20, so the version is given: the harness's apiserver.
helm() { go tool -modfile="$repo/tools/helm/go.mod" helm "$@"; }
kube_version=v1.36.3
endpoints='10.0.0.1:6443\,10.0.0.2:6443\,10.0.0.3:6443'

check "helm builds (tools/helm)" helm version --short
check "helm lint --strict" helm lint --strict "$chart" --set "endpoints=$endpoints" --kube-version "$kube_version"
render() { # output-file helm-template-args...
	local out=$1
	shift
	helm template extractedprism "$chart" --namespace kube-system --kube-version "$kube_version" "$@" >"$out"
}
check "helm template with endpoints (default values)" \
	render "$EP_RENDERED_CHART_DIR/default.yaml" --set "endpoints=$endpoints"
check "helm template with every optional branch (testdata/chart-values-full.yaml)" \
	render "$EP_RENDERED_CHART_DIR/full.yaml" -f "$here/testdata/chart-values-full.yaml"
if out=$(helm template extractedprism "$chart" --namespace kube-system --kube-version "$kube_version" 2>&1); then
	fail "helm template without endpoints fails" "rendered without endpoints"
elif [[ $out == *"endpoints is required"* ]]; then
	pass "helm template without endpoints fails"
else
	fail "helm template without endpoints fails" "$out"
fi

# render_fails NAME WANT ARGS...: rendering with ARGS must fail, saying WANT.
render_fails() {
	local name=$1 want=$2 out
	shift 2
	if out=$(helm template extractedprism "$chart" --namespace kube-system --kube-version "$kube_version" --set "endpoints=$endpoints" "$@" 2>&1); then
		fail "$name" "rendered: $*"
	elif [[ $out == *"$want"* ]]; then
		pass "$name"
	else
		fail "$name" "$out"
	fi
}
render_fails "helm template refuses bindAddress 0.0.0.0 on the host network without exposeOnNodeNetwork" \
	"exposes the proxy" --set bindAddress=0.0.0.0
render_fails "helm template refuses a node IP as bindAddress without exposeOnNodeNetwork" \
	"exposes the proxy" --set bindAddress=10.0.0.5
check "helm template takes bindAddress 0.0.0.0 with exposeOnNodeNetwork=true" \
	render "$work/exposed.yaml" --set "endpoints=$endpoints" --set bindAddress=0.0.0.0 --set exposeOnNodeNetwork=true
render_fails "helm template refuses serviceAccount.create=false without a name when discovery is on" \
	"serviceAccount.name is required" --set serviceAccount.create=false
check "helm template takes serviceAccount.create=false without a name when discovery is off" \
	render "$work/nosa.yaml" --set "endpoints=$endpoints" --set serviceAccount.create=false --set enableDiscovery=false
# Surge is the default (SO_REUSEPORT); an update that changes the pod's user
# cannot overlap and is applied without it.
check "helm template without surge (an update that changes the pod's user)" \
	render "$work/nosurge.yaml" --set "endpoints=$endpoints" --set updateStrategy.maxSurge=0 --set updateStrategy.maxUnavailable=1

# --- shell --------------------------------------------------------------------

check "shellcheck packaging/kubelet/extractedprism-kubelet-wiring" shellcheck -s sh packaging/kubelet/extractedprism-kubelet-wiring
check "shellcheck test/provisioning/run.sh" shellcheck "$here/run.sh"
check "shellcheck test/provisioning/e2e-cloud-init.sh" shellcheck -x "$here/e2e-cloud-init.sh"

# --- Go tests -------------------------------------------------------------------

# gotest NAME DIR ARGS...: `go test -json` in DIR; one line per leaf test, a
# failed test's output below its line, skips count as failures.
gotest() {
	local name=$1 dir=$2 json=$work/$1.json
	shift 2
	(cd "$dir" && go test -json -count=1 "$@") >"$json" 2>"$work/$name.stderr"
	local rc=$? lines
	lines=$(jq -r -s '
		[ .[] | select(.Test != null and (.Action == "pass" or .Action == "fail" or .Action == "skip")) ] as $res
		| ($res | map(.Test)) as $names
		| $res[]
		| select(.Test as $t | all($names[]; startswith($t + "/") | not))
		| "\(.Action)\t\(.Test)"' "$json" 2>/dev/null)
	local ran=0 action test
	while IFS=$'\t' read -r action test; do
		[ -n "$test" ] || continue
		ran=1
		case $action in
		pass) pass "$name: $test" ;;
		skip) fail "$name: $test (skipped)" "$(jq -r --arg t "$test" 'select(.Test == $t and .Action == "output") | .Output' "$json" | sed '/^=== /d')" ;;
		*) fail "$name: $test" "$(jq -r --arg t "$test" 'select(.Test == $t and .Action == "output") | .Output' "$json" | sed '/^=== /d; /^--- /d')" ;;
		esac
	done <<<"$lines"
	# A build failure, a panic or a timeout fails the package outside any test.
	if [ "$rc" -ne 0 ] && ! grep -q '"Action":"fail","Package":"[^"]*","Test"' "$json"; then
		fail "$name: go test $* (exit $rc, outside any test)" \
			"$(jq -r 'select(.Action == "output" or .Action == "build-output") | .Output' "$json" 2>/dev/null; cat "$work/$name.stderr")"
	elif [ "$ran" = 0 ]; then
		fail "$name: no test ran" "$(cat "$work/$name.stderr")"
	fi
}

check "go vet (test/provisioning, tag provisioning)" go vet -tags provisioning ./test/provisioning
vet_butane() { (cd "$here/butane" && go vet ./...); }
check "go vet (test/provisioning/butane module)" vet_butane
gofmt_clean() {
	local unformatted
	unformatted=$(gofmt -l "$here" 2>&1)
	[ -z "$unformatted" ] || { echo "not gofmt'ed: $unformatted"; return 1; }
}
check "gofmt" gofmt_clean

# Inside a private network namespace (hack/netns-run.sh), like the
# integration tests: the apiserver binds TEST-NET-2 addresses that exist
# only there. The test binary is built outside it (go test -exec).
gotest provisioning "$repo" -tags provisioning -timeout 10m -exec "$repo/hack/netns-run.sh" ./test/provisioning
gotest butane "$here/butane" -timeout 10m ./...
