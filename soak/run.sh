#!/usr/bin/env bash
# soak/run.sh — builds the module and the fault proxy, then runs soak/soak.lua against a fresh
# in-memory s2-lite (scripts/with-s2-lite.sh). Settings come from the environment (see the top
# of soak/soak.lua): SOAK_SECONDS, SOAK_RECORDS, SOAK_WRITERS, SOAK_CUT_MIN, SOAK_CUT_MAX,
# SOAK_CUT_P, SOAK_SEED, SOAK_VERBOSE. Exit status: soak.lua's (1 on a gap, a broken chain, a
# misplaced ack or an idempotent duplicate).
set -euo pipefail
cd "$(dirname "$0")/.."
LUA="${LUA:-lua5.4}"
make --no-print-directory all build/fault-proxy >/dev/null
exec scripts/with-s2-lite.sh "$LUA" soak/soak.lua
