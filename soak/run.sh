#!/usr/bin/env bash
# soak/run.sh [mixed|history|chaos] — builds the module and the fault proxy, then runs one of
# the soak tools (default: mixed). Each starts and stops its own servers and proxy and is
# bounded in time (a `timeout` around it kills its whole process group if it overruns).
#
#   mixed    soak/mixed.lua: producers, append sessions, fast and slow read sessions on ONE
#            client, TLS through the shaped, cutting, stalling proxy; hash chains (make soak)
#   history  soak/history.lua: concurrent clients' operations checked against a model of the
#            stream (make history)
#   chaos    soak/soak.lua: the older multi-client soak, plain h2c with random cuts only
#
# Settings come from the environment (see the top of each script). Exit status: the tool's
# (1 on any violation, 2 when it could not run, 124 when it overran its time limit).
set -euo pipefail
cd "$(dirname "$0")/.."
LUA="${LUA:-lua5.4}"
export LUA
make --no-print-directory all build/fault-proxy >/dev/null
what="${1:-mixed}"
case "$what" in
  mixed)
    limit=$(( ${SOAK_SECONDS:-120} + ${SOAK_DRAIN:-90} + 300 ))
    exec timeout -k 10 "$limit" "$LUA" soak/mixed.lua ;;
  history)
    limit=$(( ${HIST_SECONDS:-60} * 3 + 300 ))
    exec timeout -k 10 "$limit" "$LUA" soak/history.lua ;;
  chaos)
    limit=$(( ${SOAK_SECONDS:-180} * 3 + 300 ))
    exec scripts/with-s2-lite.sh timeout -k 10 "$limit" "$LUA" soak/soak.lua ;;
  *)
    echo "usage: soak/run.sh [mixed|history|chaos]" >&2; exit 2 ;;
esac
