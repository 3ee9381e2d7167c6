#!/usr/bin/env bash
# Runs a `go test` command that is meant to run one named fuzz target or
# benchmark, and fails unless it did. `go test -fuzz '^FuzzX$'` and
# `go test -bench '^BenchmarkX$'` exit 0 having run nothing when no function
# matches (after a rename, say), which would make a make target pass empty.
#
# usage: hack/must-run.sh NAME go test ... [-v for fuzz targets]
#   NAME is an extended regular expression for the function name; the run
#   counts when the output has a fuzz target's "--- PASS: NAME (" line or a
#   benchmark's result line "NAME[-GOMAXPROCS] <iterations> ...".
set -euo pipefail

if [ $# -lt 2 ]; then
	echo "usage: $0 NAME COMMAND..." >&2
	exit 2
fi

name=$1
shift

out=$(mktemp)
trap 'rm -f "$out"' EXIT

# pipefail: the command's own failure is the script's.
"$@" 2>&1 | tee "$out"

if ! grep -Eq "^(--- PASS: ($name) \(|($name)(-[0-9]+)?[[:space:]]+[0-9]+[[:space:]])" "$out"; then
	echo "must-run: no run of $name in the output of: $*" >&2
	echo "must-run: the command passed having run nothing (was the function renamed?)" >&2
	exit 1
fi
