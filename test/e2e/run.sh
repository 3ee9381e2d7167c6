#!/usr/bin/env bash
# test/e2e/run.sh - every end-to-end test under a real systemd, one command:
# builds the artifacts once (the upstream stand-in; `make package` for
# versions 0.0.1 and 0.0.2, see helpers.sh), then runs service.sh (issue 3)
# packages.sh (issue 5), repo.sh (issue 16: `make repo`, apt and dnf from
# signed repositories; it builds its own signed packages) and coldboot.sh
# (issue 18; it also needs kube-apiserver and etcd from hack/kube-bins,
# cached, built if missing) against them, and ends with
# "N passed, N failed" over everything. Exit status non-zero on any failure.
#
# Usage: sudo test/e2e/run.sh [SUITE]          (SUITE defaults to bookworm)
# Needs root and Go; installs its apt prerequisites when missing
# (systemd-container debootstrap zstd debian-archive-keyring make rpm;
# repo.sh adds apt-utils createrepo-c gpg binutils).
set -euo pipefail

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
# shellcheck source=lib.sh
source "$here/lib.sh"
# shellcheck source=helpers.sh
source "$here/helpers.sh"
e2e_trap

suite=${1:-bookworm}
scripts=(service.sh packages.sh repo.sh coldboot.sh)
declare -a metrics=() timings=()

t0=$SECONDS
ep_host_deps
art=""
e2e_tmpdir art
if ep_build_artifacts "$art"; then
    e2e_pass "artifacts built (upstream, deb and rpm $EP_OLD and $EP_NEW) in $((SECONDS - t0)) s"
else
    e2e_fail "building the artifacts"
    e2e_summary
fi
timings+=("build $((SECONDS - t0)) s")

for s in "${scripts[@]}"; do
    out="$art/$s.out"
    ts=$SECONDS
    printf '\n==== %s %s ====\n' "$s" "$suite"
    rc=0
    # Output goes to the console as it comes, and to a file to be summed up.
    E2E_ARTIFACTS=$art "$here/$s" "$suite" 2>&1 | tee "$out" || rc=$?
    timings+=("$s $((SECONDS - ts)) s")
    line=$(grep -E '^[0-9]+ passed, [0-9]+ failed$' "$out" | tail -n 1) || line=""
    if [[ $line =~ ^([0-9]+)\ passed,\ ([0-9]+)\ failed$ ]]; then
        E2E_PASSED=$((E2E_PASSED + BASH_REMATCH[1]))
        E2E_FAILED=$((E2E_FAILED + BASH_REMATCH[2]))
        if ((rc != 0 && BASH_REMATCH[2] == 0)); then
            e2e_fail "$s exited with status $rc"
        fi
    else
        e2e_fail "$s exited with status $rc without a summary"
    fi
    mapfile -t -O "${#metrics[@]}" metrics < <(sed -n 's/^E2E-METRIC //p' "$out")
done

printf '\n==== e2e summary (%s) ====\n' "$suite"
timing=$(printf '%s, ' "${timings[@]}")
printf 'time: %s; total %d s\n' "${timing%, }" "$((SECONDS - t0))"
((${#metrics[@]} == 0)) || printf 'metric: %s\n' "${metrics[@]}"
e2e_summary
