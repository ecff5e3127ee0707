#!/usr/bin/env bash
# fuzz/run.sh [SECONDS] — builds the libFuzzer harnesses (fuzz/fuzz_*.c + the codec sources of
# csrc/) into build-fuzz/ with clang (-fsanitize=fuzzer,address,undefined) and runs each one
# for at most SECONDS (default 60), FUZZ_JOBS harnesses at a time (default 2).
#
#   FUZZ_TARGETS="frame proto"   which harnesses (default: all of fuzz/fuzz_*.c)
#   FUZZ_RUNS=10000000           also stop a harness after this many executions
#   FUZZ_JOBS=2                  harnesses run in parallel
#   CLANG=clang                  the compiler (Debian: apt-get install clang)
#   FUZZ_PATCHED=1               build from a copy of csrc/ with fuzz/patches/*.patch applied
#                                (proposed fixes of findings not yet fixed in csrc/, so a run
#                                can get past them); binaries are build-fuzz/fuzz_<name>-patched.
#                                A patch that no longer applies (fixed upstream) is skipped.
#
# Each harness starts from its committed seed corpus (fuzz/corpus/<name>/, never written to)
# plus what earlier runs found (build-fuzz/corpus/<name>/). Crashes, leaks and timeouts go to
# build-fuzz/artifacts/<name>/; the log of a run is build-fuzz/<name>.log. One line per
# harness is printed: executions, execs/s, coverage, and OK or FAILED. Exits 1 if any failed.
# Reproduce a crash: build-fuzz/fuzz_<name> build-fuzz/artifacts/<name>/crash-...
set -euo pipefail
cd "$(dirname "$0")/.."
SECONDS_PER="${1:-60}"
JOBS="${FUZZ_JOBS:-2}"
CLANG="${CLANG:-clang}"
OUT=build-fuzz
command -v "$CLANG" >/dev/null || { echo "fuzz/run.sh: $CLANG not found (apt-get install clang)" >&2; exit 2; }

CODEC="csrc/s2_buf.c csrc/s2_error.c csrc/s2_proto.c csrc/s2_frame.c csrc/s2_endpoint.c"
[ -f csrc/s2_json.c ] && CODEC="$CODEC csrc/s2_json.c" # the error bodies' JSON scanner
[ -f csrc/s2_sse_parse.c ] && CODEC="$CODEC csrc/s2_sse_parse.c" # SSE framing, JSON ReadBatch
PCS="libzstd zlib"
# s2_internal.h (included by some codec files) names nghttp2 and OpenSSL types: headers only.
CFLAGS="-std=c11 -D_GNU_SOURCE -g -O1 -fno-omit-frame-pointer -Icsrc $(pkg-config --cflags $PCS libnghttp2 openssl)"
SAN="-fsanitize=fuzzer,address,undefined -fno-sanitize-recover=undefined"
SRC=csrc
OUT_TAG=""
if [ -n "${FUZZ_PATCHED:-}" ]; then
  SRC="$OUT/src-patched"
  OUT_TAG="-patched"
  rm -rf "$SRC"; mkdir -p "$SRC"; cp csrc/*.c csrc/*.h "$SRC/"
  for p in fuzz/patches/*.patch; do
    [ -e "$p" ] || continue
    if (cd "$OUT" && patch -s -p2 --dry-run -d src-patched <"../$p" >/dev/null 2>&1); then
      (cd "$OUT" && patch -s -p2 -d src-patched <"../$p") && echo "patched: $p"
    else
      echo "skipped (does not apply, fixed already?): $p"
    fi
  done
  CODEC="${CODEC//csrc\//$SRC/}"
  CFLAGS="${CFLAGS/-Icsrc/-I$SRC}"
fi
LIBS="$(pkg-config --libs $PCS)"

if [ -n "${FUZZ_TARGETS:-}" ]; then
  targets="$FUZZ_TARGETS"
else
  targets="$(ls fuzz/fuzz_*.c | sed 's#fuzz/fuzz_##; s#\.c$##' | tr '\n' ' ')"
fi

mkdir -p "$OUT"
for t in $targets; do
  bin="$OUT/fuzz_$t$OUT_TAG"
  if [ ! -x "$bin" ] || [ -n "$(find fuzz/fuzz_$t.c $CODEC $SRC/s2.h -newer "$bin" 2>/dev/null)" ]; then
    echo "build $bin"
    # shellcheck disable=SC2086
    "$CLANG" $CFLAGS $SAN -o "$bin" "fuzz/fuzz_$t.c" $CODEC $LIBS
  fi
done

run_one() {
  local t="$1" bin="$OUT/fuzz_$1$OUT_TAG" work="$OUT/corpus/$1" art="$OUT/artifacts/$1/" log="$OUT/$1.log"
  mkdir -p "$work" "$art"
  local runs=()
  [ -n "${FUZZ_RUNS:-}" ] && runs=(-runs="$FUZZ_RUNS")
  local rc=0
  ASAN_OPTIONS="${ASAN_OPTIONS:-detect_leaks=1}" UBSAN_OPTIONS="${UBSAN_OPTIONS:-print_stacktrace=1}" \
    "$bin" -max_total_time="$SECONDS_PER" "${runs[@]}" -print_final_stats=1 -timeout=10 \
    -rss_limit_mb=2048 -artifact_prefix="$art" "$work" "fuzz/corpus/$t" >"$log" 2>&1 || rc=$?
  local execs speed cov
  execs="$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -1 || true)"
  speed="$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -1 || true)"
  cov="$(grep -o 'cov: [0-9]*' "$log" | tail -1 | cut -d' ' -f2 || true)"
  if [ "$rc" -eq 0 ]; then
    printf '%-9s %12s execs %8s/s  cov %-5s OK\n' "$t" "${execs:-?}" "${speed:-?}" "${cov:-?}"
  else
    printf '%-9s %12s execs %8s/s  cov %-5s FAILED (exit %d): see %s, %s\n' "$t" "${execs:-?}" \
      "${speed:-?}" "${cov:-?}" "$rc" "$log" "$art"
    grep -m3 -E 'ERROR|SUMMARY|check failed|runtime error' "$log" | sed 's/^/    /' || true
  fi
  return "$rc"
}

status=0
pids=()
names=()
for t in $targets; do
  while [ "$(jobs -rp | wc -l)" -ge "$JOBS" ]; do sleep 1; done
  run_one "$t" &
  pids+=($!)
  names+=("$t")
done
for i in "${!pids[@]}"; do
  wait "${pids[$i]}" || status=1
done
exit "$status"
