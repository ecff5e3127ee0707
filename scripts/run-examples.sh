#!/usr/bin/env bash
# Runs every examples/*.lua (not examples/openresty/, which needs nginx) from the checkout
# against an S2 the S2_* environment names, one line per example; fails if any fails.
#
#   scripts/with-s2-lite.sh scripts/run-examples.sh     (what `make examples` does)
#
# LUA (default lua5.4), BUILD (default build) and EXAMPLE_TIMEOUT (seconds, default 60)
# may be set.
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
for example in examples/*.lua; do
  [ -e "$example" ] || continue
  total=$((total + 1))
  start=$(date +%s.%N)
  LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH="$build/?.so;;" \
    timeout "$limit" "$lua" "$example" >"$out" 2>&1
  status=$?
  secs=$(awk -v a="$start" -v b="$(date +%s.%N)" 'BEGIN { printf "%.1f", b - a }')
  if [ "$status" -eq 0 ]; then
    printf 'ok    %-28s %5s s\n' "$example" "$secs"
  else
    failed=$((failed + 1))
    what="exit $status"
    [ "$status" -eq 124 ] && what="timed out after $limit s"
    printf 'FAIL  %-28s %5s s  (%s)\n' "$example" "$secs" "$what"
    awk '{ print "      | " $0 }' "$out"
  fi
done

if [ "$failed" -gt 0 ]; then
  echo "run-examples: $failed of $total examples failed" >&2
  exit 1
fi
echo "run-examples: all $total examples passed"
