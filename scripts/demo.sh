#!/usr/bin/env bash
# Runs examples/quickstart.lua from the checkout (after `make`): against the server that
# S2_ACCOUNT_ENDPOINT (and S2_BASIN_ENDPOINT, default the same) names when it is set, else
# against a fresh in-memory s2-lite (scripts/with-s2-lite.sh; S2_LITE may name its binary).
#
# LUA (default lua5.4) and BUILD (default build) may be set.
set -euo pipefail
cd "$(dirname "$0")/.."
lua="${LUA:-lua5.4}"
build="${BUILD:-build}"
export LUA_PATH="lua/?.lua;lua/?/init.lua;;" LUA_CPATH="$build/?.so;;"
if [ -n "${S2_ACCOUNT_ENDPOINT:-}" ]; then
  export S2_BASIN_ENDPOINT="${S2_BASIN_ENDPOINT:-$S2_ACCOUNT_ENDPOINT}"
  export S2_ACCESS_TOKEN="${S2_ACCESS_TOKEN:-ignored}" # s2-lite takes any token
  echo "demo: against $S2_ACCOUNT_ENDPOINT" >&2
  exec "$lua" examples/quickstart.lua
fi
exec scripts/with-s2-lite.sh "$lua" examples/quickstart.lua
