#!/usr/bin/env bash
# scripts/valgrind-suite.sh — the busted suite under valgrind memcheck, against the Lua 5.4
# build (build/s2/core.so, -O2 -g) and a fresh s2-lite (scripts/with-s2-lite.sh).
#
#   valgrind --error-exitcode=1 --leak-check=full --errors-for-leak-kinds=definite
#
# Only the Lua process (busted) runs under valgrind; the children it spawns (s2-lite, curl,
# the fault proxy and fault server, bash) run natively (valgrind does not trace children).
#
# The whole suite runs by default: on this 2-core machine it takes about 6 minutes under
# memcheck (the heaviest parts, producer_spec's 1,000,000 records and
# spec/producer_faults_spec.lua's 2 x 100,000 records through the fault proxy, take about 4 of
# them). VALGRIND_QUICK=1 leaves those out (and read_session_spec's 100,000-record follow):
# about 2 minutes. Extra arguments are the spec files to run instead, e.g.
#   scripts/valgrind-suite.sh spec/append_session_spec.lua
#
# Timing-sensitive specs can fail under memcheck's slowness without any memory error (see
# docs/reliability.md); the summary line tells the two apart.
# Output: busted's summary, then valgrind's error summary; the full memcheck log is
# build/valgrind/memcheck.<pid>.log. Exit status: non-zero when busted failed or valgrind
# found an error (a definite leak counts as one).
set -euo pipefail
cd "$(dirname "$0")/.."
LUA="${LUA:-lua5.4}"
command -v valgrind >/dev/null || { echo "valgrind-suite: valgrind missing (apt-get install valgrind)" >&2; exit 2; }
make --no-print-directory all build/fault-proxy build/fault-server >/dev/null

out=build/valgrind
rm -rf "$out"; mkdir -p "$out"

# Suppressions for reports from system libraries that are not this project's, should any
# show up (none needed so far; reachable-at-exit memory is not an error here anyway).
supp="$out/system.supp"
cat >"$supp" <<'SUPP'
SUPP

args=()
if [ -n "${VALGRIND_QUICK:-}" ]; then
  args+=(--filter-out='1,000,000' --filter-out='100,000')
fi
if [ "$#" -gt 0 ]; then
  files=("$@")
else
  mapfile -t files < <(find spec -name '*_spec.lua' | sort)
  if [ -n "${VALGRIND_QUICK:-}" ]; then
    mapfile -t files < <(printf '%s\n' "${files[@]}" | grep -v -x -F 'spec/producer_faults_spec.lua')
  fi
fi

set +e
scripts/with-s2-lite.sh valgrind --error-exitcode=1 --leak-check=full \
  --errors-for-leak-kinds=definite --show-leak-kinds=definite --num-callers=40 --child-silent-after-fork=yes \
  --suppressions="$supp" --log-file="$out/memcheck.%p.log" \
  "$LUA" /usr/bin/busted "${args[@]}" "${files[@]}"
status=$?
set -e

errors=0
for f in "$out"/memcheck.*.log; do
  [ -e "$f" ] || continue
  n="$(sed -n 's/.*ERROR SUMMARY: \([0-9]*\) errors.*/\1/p' "$f" | tail -1)"
  errors=$(( errors + ${n:-0} ))
  if [ "${n:-0}" -gt 0 ]; then
    echo "valgrind: $n error(s) in $f:"
    grep -E '^==[0-9]+== (Invalid|Conditional|Use of|Syscall|Mismatched|[0-9,]+ bytes in .* definitely)' "$f" \
      | sort | uniq -c | sort -rn | head -20
  fi
done
echo "valgrind: ${errors} error(s) in all (logs: $out/), busted+valgrind exit status ${status}"
[ "$errors" -eq 0 ] && [ "$status" -eq 0 ]
