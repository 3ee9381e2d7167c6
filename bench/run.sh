#!/usr/bin/env bash
# extractedprism benchmark suite: direct vs extractedprism vs HAProxy vs nginx
# stream, in front of the same three loopback upstreams. See bench/README.md.
#
#   bench/run.sh                 # everything, about 6 minutes on 2 cores
#   BENCH_ROUNDS=2 bench/run.sh  # quicker, noisier
#
# Settings (environment):
#   BENCH_ROUNDS       rounds, every proxy once per round (default 5)
#   BENCH_IDLE_CONNS   idle connections for the memory/fd figures (default 5000)
#   BENCH_PORT_BASE    upstreams on 127.0.0.2-4:BASE, proxies on 127.0.0.1:BASE+2/+102/+202 (default 17443)
#   BENCH_OUT          where latest.md and latest.json go (default bench/results)
#   BENCH_SKIP_BUILD=1 use bin/extractedprism as it is, without `make build`
#   BENCH_NO_INSTALL=1 never apt-get install; peers that are missing are not measured
#   BENCH_KEEP_WORK=1  keep the work directory (configs, logs) after the run
set -euo pipefail

ROOT=$(cd "$(dirname "$0")/.." && pwd)
BENCH=$ROOT/bench
ROUNDS=${BENCH_ROUNDS:-5}
IDLE=${BENCH_IDLE_CONNS:-5000}
PORT_BASE=${BENCH_PORT_BASE:-17443}
OUT=${BENCH_OUT:-$BENCH/results}
BUDGET=590 # seconds for the whole script; the harness gets what is left
T0=$(date +%s)

log() { echo "bench: $*" >&2; }

WORK=$(mktemp -d /tmp/extractedprism-bench.XXXXXX)
chmod 755 "$WORK" # the peers run as nobody and read their configs here
PIDFILE=$WORK/pids
TOOL_PID=
POLICY_CREATED=

cleanup() {
	local rc=$?
	trap - EXIT INT TERM HUP
	# The harness stops its children itself; this is for when it could not.
	if [ -n "$TOOL_PID" ] && kill -0 "$TOOL_PID" 2>/dev/null; then
		kill -TERM "$TOOL_PID" 2>/dev/null || true
		for _ in $(seq 50); do kill -0 "$TOOL_PID" 2>/dev/null || break; sleep 0.1; done
		kill -KILL "$TOOL_PID" 2>/dev/null || true
	fi
	if [ -s "$PIDFILE" ]; then
		while read -r pid; do
			if [ -n "$pid" ]; then kill -KILL "$pid" 2>/dev/null || true; fi
		done <"$PIDFILE"
	fi
	if [ -n "$POLICY_CREATED" ]; then rm -f /usr/sbin/policy-rc.d; fi
	if [ -n "${BENCH_KEEP_WORK:-}" ]; then
		log "work directory kept: $WORK"
	else
		rm -rf "$WORK"
	fi
	log "total $(($(date +%s) - T0)) s"
	exit "$rc"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP

# --- peers: Debian's haproxy and nginx with the stream module ----------------
HAPROXY=$(command -v haproxy || true)
NGINX=$(command -v nginx || true)
[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
[ -z "$HAPROXY" ] && [ -x /usr/sbin/haproxy ] && HAPROXY=/usr/sbin/haproxy
STREAM_MOD=/usr/lib/nginx/modules/ngx_stream_module.so

need=()
[ -n "$HAPROXY" ] || need+=(haproxy)
[ -n "$NGINX" ] || need+=(nginx)
[ -f "$STREAM_MOD" ] || need+=(libnginx-mod-stream)

SKIP=()
if [ ${#need[@]} -gt 0 ]; then
	if [ -n "${BENCH_NO_INSTALL:-}" ]; then
		log "not installing ${need[*]} (BENCH_NO_INSTALL)"
	elif [ "$(id -u)" != 0 ]; then
		log "not root: cannot apt-get install ${need[*]}"
	else
		log "installing ${need[*]} with apt-get"
		# Installing must not start them as system services.
		if [ ! -e /usr/sbin/policy-rc.d ]; then
			printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d
			chmod 755 /usr/sbin/policy-rc.d
			POLICY_CREATED=1
		fi
		if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need[@]}"; } >"$WORK/apt.log" 2>&1; then
			log "apt-get install ${need[*]} failed:"
			tail -5 "$WORK/apt.log" >&2
		fi
		if [ -n "$POLICY_CREATED" ]; then rm -f /usr/sbin/policy-rc.d; POLICY_CREATED=; fi
	fi
	HAPROXY=$(command -v haproxy || true)
	[ -z "$HAPROXY" ] && [ -x /usr/sbin/haproxy ] && HAPROXY=/usr/sbin/haproxy
	NGINX=$(command -v nginx || true)
	[ -z "$NGINX" ] && [ -x /usr/sbin/nginx ] && NGINX=/usr/sbin/nginx
fi
[ -n "$HAPROXY" ] || SKIP+=(--skip "haproxy=haproxy is not installed and could not be installed (see above)")
if [ -z "$NGINX" ]; then
	SKIP+=(--skip "nginx=nginx is not installed and could not be installed (see above)")
elif [ ! -f "$STREAM_MOD" ]; then
	SKIP+=(--skip "nginx=the stream module ($STREAM_MOD, package libnginx-mod-stream) is missing")
	NGINX=
fi

# --- extractedprism and the harness -----------------------------------------
if [ -z "${BENCH_SKIP_BUILD:-}" ]; then
	log "make build"
	make -C "$ROOT" --no-print-directory build >&2
fi
[ -x "$ROOT/bin/extractedprism" ] || { log "no $ROOT/bin/extractedprism; run make build"; exit 1; }

log "building the harness"
(cd "$BENCH" && CGO_ENABLED=0 go build -o "$WORK/benchtool" ./benchtool)

# --- limits: 5,000 idle connections are 5,000 descriptors in the client and
# 10,000 in a proxy; the hard limit here is 20,000. Children inherit this.
ulimit -Hn 20000 2>/dev/null || true
ulimit -n "$(ulimit -Hn)"
if [ "$(ulimit -n)" != unlimited ] && [ "$(ulimit -n)" -lt $((2 * IDLE + 1000)) ]; then
	IDLE=$((($(ulimit -n) - 1000) / 2))
	log "fd limit $(ulimit -n): idle connections lowered to $IDLE"
fi

left=$((BUDGET - ($(date +%s) - T0)))
deadline=$((left - 75)) # a round must not start unless it can end in time
[ "$deadline" -gt 60 ] || { log "no time left for the measurements"; exit 1; }
log "measuring: $ROUNDS rounds, $IDLE idle connections, up to ${deadline}s"

args=(run --tmp "$WORK" --pidfile "$PIDFILE" --out "$OUT"
	--extractedprism "$ROOT/bin/extractedprism"
	--rounds "$ROUNDS" --idle "$IDLE" --port-base "$PORT_BASE" --deadline "${deadline}s")
[ -n "$HAPROXY" ] && args+=(--haproxy "$HAPROXY")
[ -n "$NGINX" ] && args+=(--nginx "$NGINX" --nginx-stream-module "$STREAM_MOD")
args+=("${SKIP[@]}")

# The harness in the background so that the traps above can act on a signal;
# timeout is the last bound on its run time.
timeout --signal=TERM --kill-after=10 "$left" "$WORK/benchtool" "${args[@]}" &
TOOL_PID=$!
wait "$TOOL_PID"
TOOL_PID=
log "results: $OUT/latest.md and $OUT/latest.json"
