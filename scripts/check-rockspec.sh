#!/usr/bin/env bash
# Builds the rockspec with Debian's luarocks into a throwaway tree (offline: the Debian
# packages provide the dependencies) and loads the module from there, outside the checkout.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
cp -r "$repo/csrc" "$repo/lua" "$repo/bin" "$repo/rockspec" "$work/"
cd "$work"
luarocks --lua-version=5.4 make --deps-mode=none --tree="$work/tree" rockspec/s2-scm-1.rockspec >"$work/log" 2>&1 \
  || { cat "$work/log" >&2; exit 1; }
cd /
LUA_PATH="$work/tree/share/lua/5.4/?.lua;$work/tree/share/lua/5.4/?/init.lua;;" \
LUA_CPATH="$work/tree/lib/lua/5.4/?.so;;" \
  lua5.4 -e '
    local s2 = require "s2"
    assert(package.searchpath("s2.core", package.cpath):find("/tree/", 1, true), "loaded the wrong s2.core")
    local c = s2.client { access_token = "t", account_endpoint = "http://127.0.0.1:1", basin_endpoint = "http://127.0.0.1:1" }
    assert(s2.metered_bytes("abc") == 11)
    print("rockspec: built and loaded s2 " .. s2.VERSION .. " from a luarocks tree")'
test -x "$work/tree/bin/s2lua" || { echo "rockspec: bin/s2lua not installed" >&2; exit 1; }
# The installed command finds its s2.cli modules in the tree (not the checkout's).
LUA_PATH="$work/tree/share/lua/5.4/?.lua;$work/tree/share/lua/5.4/?/init.lua;;" \
LUA_CPATH="$work/tree/lib/lua/5.4/?.so;;" \
  "$work/tree/bin/s2lua" read --help | grep -q -- "--tail-offset" \
  || { echo "rockspec: the installed s2lua does not run" >&2; exit 1; }
