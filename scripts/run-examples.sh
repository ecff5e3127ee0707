#!/usr/bin/env bash
# Runs every example from the checkout against an S2 the S2_* environment names, one line
# per example; fails if any fails: examples/*.lua, the host guides' examples/hosts/*.lua
# (docs/hosts/), and examples/openresty/run.lua, which runs the OpenResty example in real
# nginx (it needs build-jit/, `make luajit`).
#
#   scripts/with-s2-lite.sh scripts/run-examples.sh     (what `make examples` does)
#
# An example with a line "-- example-interpreter: luajit" runs under luajit with build-jit/
# (e.g. copas: Debian packages it for Lua 5.1 only). LUA (default lua5.4), BUILD (default
# build) and EXAMPLE_TIMEOUT (seconds, default 60) may be set.
set -uo pipefail
cd "$(dirname "$0")/.."

if [ -z "${S2_ACCESS_TOKEN:-}" ]; then
  echo "run-examples: S2_ACCESS_TOKEN is not set (run it under scripts/with-s2-lite.sh)" >&2
  exit 2
fi

lua="${LUA:-lua5.4}"
build="${BUILD:-build}"
limit="${EXAMPLE_TIMEOUT:-60}"
out="$(mktemp "${TMPDIR:-/tmp}/s2-example.XXXXXX")"
trap 'rm -f "$out"' EXIT

failed=0
total=0
for example in examples/*.lua examples/hosts/*.lua examples/openresty/run.lua; do
  [ -e "$example" ] || continue
  total=$((total + 1))
  start=$(date +%s.%N)
  run_lua="$lua" cpath="$build/?.so;;"
  if grep -q '^-- example-interpreter: luajit' "$example"; then run_lua=luajit cpath="build-jit/?.so;;"; fi
  if [ "$run_lua" = luajit ] || [ "$example" = examples/openresty/run.lua ]; then
    [ -f build-jit/s2/core.so ] || { echo "run-examples: $example needs build-jit/s2/core.so (make luajit)" >&2; exit 2; }
  fi
  # spec/ on the path: examples/openresty/run.lua starts nginx with spec/support/nginx.lua
  LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' LUA_CPATH="$cpath" \
    timeout "$limit" "$run_lua" "$example" >"$out" 2>&1
  status=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$status" -eq 0 ]; then
    printf 'ok    %-32s %5s s\n' "$example" "$secs"
  else
    failed=$((failed + 1))
    what="exit $status"
    [ "$status" -eq 124 ] && what="timed out after $limit s"
    printf 'FAIL  %-32s %5s s  (%s)\n' "$example" "$secs" "$what"
    awk '{ print "      | " $0 }' "$out"
  fi
done

if [ "$failed" -gt 0 ]; then
  echo "run-examples: $failed of $total examples failed" >&2
  exit 1
fi
echo "run-examples: all $total examples passed"
