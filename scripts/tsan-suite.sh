#!/usr/bin/env bash
# scripts/tsan-suite.sh — ThreadSanitizer over the specs that exercise the I/O thread: append
# sessions, producers, read sessions, the scheduler hooks, and their fault-proxy variants.
#
# Builds build-tsan/s2/core.so (-fsanitize=thread), then runs busted with libtsan preloaded
# into the Lua interpreter only. The Lua interpreter is not instrumented, so the runtime must
# be there from the start (LD_PRELOAD); but the processes the specs spawn (curl, bash, s2-lite,
# the fault proxy) must not get it. A tiny preloaded shim (build-tsan/unpreload.so) removes
# LD_PRELOAD from the environment in its constructor, after the loader has used it, so
# nothing the Lua process spawns inherits it (the same problem that spec/support/s2lite.lua
# works around for `make asan` by unsetting LD_PRELOAD in its shell commands).
#
# Also run: spec/fault_server_spec.lua (the scripted S2 faults: GOAWAY, RST_STREAM, drops,
# stalls, terminal frames, malformed acks) and spec/regress/.
# Reports go to build-tsan/tsan.<pid> (halt_on_error=0: every report of the run is kept);
# a summary (count, and the first frame in csrc/ of each distinct report) is printed.
# Left out: producer_spec's 1,000,000-record test (minutes under TSan, same code path as the
# 100,000-record ones). TSAN_SPECS="spec/x_spec.lua ..." picks other files.
# Exit status: non-zero when busted failed or TSan reported anything.
set -euo pipefail
cd "$(dirname "$0")/.."
LUA="${LUA:-lua5.4}"
CC="${CC:-cc}"
B=build-tsan
TSAN_FLAGS="-O1 -g -fno-omit-frame-pointer -fsanitize=thread"
libtsan="$($CC -print-file-name=libtsan.so)"
[ -e "$libtsan" ] || { echo "tsan-suite: $CC has no libtsan.so (apt-get install libtsan2 or gcc)" >&2; exit 2; }

make --no-print-directory BUILD=$B CFLAGS="$TSAN_FLAGS" LDFLAGS="-fsanitize=thread" all >/dev/null
make --no-print-directory build/fault-proxy build/fault-server >/dev/null
cat >"$B/unpreload.c" <<'C'
#include <stdlib.h>
__attribute__((constructor)) static void s2_tsan_unpreload(void) { unsetenv("LD_PRELOAD"); }
C
"$CC" -shared -fPIC -O1 -o "$B/unpreload.so" "$B/unpreload.c"

specs="${TSAN_SPECS:-spec/append_session_spec.lua spec/producer_spec.lua spec/read_session_spec.lua spec/scheduler_spec.lua spec/session_faults_spec.lua spec/producer_faults_spec.lua spec/fault_server_spec.lua spec/regress}"
rm -f "$B"/tsan.*

set +e
# shellcheck disable=SC2086
scripts/with-s2-lite.sh env LD_PRELOAD="$libtsan $PWD/$B/unpreload.so" \
  TSAN_OPTIONS="halt_on_error=0:second_deadlock_stack=1:history_size=4:log_path=$PWD/$B/tsan:exitcode=66" \
  "$LUA" /usr/bin/busted --cpath="$B/?.so" --filter-out='1,000,000' $specs
status=$?
set -e

reports=0
for f in "$B"/tsan.*; do
  [ -e "$f" ] || continue
  reports=$(( reports + $(grep -c '^WARNING: ThreadSanitizer' "$f" || true) ))
done
if [ "$reports" -gt 0 ]; then
  echo "tsan: distinct reports (kind, first csrc/ frame):"
  for f in "$B"/tsan.*; do
    awk '/^WARNING: ThreadSanitizer/ { kind = $0; sub(/ \(pid=.*/, "", kind); want = 1; next }
         want && /csrc\// { sub(/^ *#[0-9]+ /, ""); print "  " kind " @ " $0; want = 0 }' "$f"
  done | sort | uniq -c | sort -rn
fi
echo "tsan: $reports report(s) (logs: $B/tsan.*), busted exit status $status"
[ "$reports" -eq 0 ] && [ "$status" -eq 0 ]
