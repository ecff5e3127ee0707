#!/usr/bin/env bash
# Runs COMMAND with the S2_* environment pointing at a fresh tools/null_sink.c (the null S2
# server of the benchmarks) on a free loopback port, then stops it; like
# scripts/with-s2-lite.sh for s2-lite. Builds build/null-sink when it is missing or stale.
#
#   bench/with_sink.sh COMMAND [ARGS...]
#
# Environment: NULL_SINK (binary, default $BUILD/null-sink), SINK_ARGS (extra flags, e.g.
# "--read-record-size 1024"), BUILD (default build).
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
root="$(cd "$here/.." && pwd)"
build="${BUILD:-build}"
case "$build" in /*) ;; *) build="$root/$build" ;; esac
sink="${NULL_SINK:-$build/null-sink}"
make -s -C "$root" NULL_SINK="$sink" "$sink" >&2

out="$(mktemp)"
# stdin from a FIFO-like pipe we hold: --exit-on-stdin-eof ends the sink if we die.
exec 9> >(exec "$sink" --port 0 ${SINK_ARGS:-} --exit-on-stdin-eof >"$out")
sink_pid=$!
for _ in $(seq 1 250); do
  grep -q '^listening ' "$out" 2>/dev/null && break
  sleep 0.02
done
port="$(awk '/^listening /{print $2}' "$out")"
rm -f "$out"
[ -n "$port" ] || { echo "with_sink: null-sink did not start" >&2; exit 1; }

export S2_ACCOUNT_ENDPOINT="http://127.0.0.1:$port" S2_BASIN_ENDPOINT="http://127.0.0.1:$port"
export S2_ACCESS_TOKEN="${S2_ACCESS_TOKEN:-ignored}" S2_SINK=1
rc=0
"$@" || rc=$?
exec 9>&-
kill -TERM "$sink_pid" 2>/dev/null || true
wait "$sink_pid" 2>/dev/null || true
exit "$rc"
