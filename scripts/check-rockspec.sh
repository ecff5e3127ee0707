#!/usr/bin/env bash
# The rockspecs, checked the way users meet them (run by `make test`; offline: Debian's
# packages provide the dependencies, hence --deps-mode=none):
#
#  1. `luarocks lint` passes for rockspec/s2-scm-1.rockspec and the release rockspec, and both
#     list exactly the C sources the Makefile builds, every Lua file under lua/s2/, bin/s2lua,
#     the same external dependencies; the release's version is the core's S2_VERSION.
#  2. `luarocks make` of the scm rockspec into a throwaway tree builds, and the module loads
#     from there, outside the checkout.
#  3. `make dist`'s source rock (scripts/dist.sh, `luarocks pack`) installs into a clean tree
#     with --deps-mode=none from another directory, and a smoke test runs from that tree:
#     the module loads from it, makes a client, and its s2lua command runs.
#  4. `luarocks test` (the unit specs, `busted --run=unit`) passes in the unpacked sources of
#     the rock, with the s2.core built by the install in 3.
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT
lr() { luarocks --lua-version=5.4 "$@"; }
fail() { echo "rockspec: $*" >&2; exit 1; }
run() { # run LOG CMD...: quiet unless it fails
  local log="$1"; shift
  "$@" >"$log" 2>&1 || { cat "$log" >&2; fail "failed: $*"; }
}

scm="$repo/rockspec/s2-scm-1.rockspec"
release=("$repo"/rockspec/s2-[0-9]*.rockspec)
[ ${#release[@]} -eq 1 ] && [ -f "${release[0]}" ] || fail "want one release rockspec in rockspec/, found: ${release[*]}"
release="${release[0]}"

# 1. Lint, and the lists against the tree.
for r in "$scm" "$release"; do
  (cd "$(dirname "$r")" && run "$work/lint.log" lr lint "$(basename "$r")")
done
makefile_srcs="$(make -s -C "$repo" --no-print-directory -f - print-srcs <<'EOF'
include Makefile
print-srcs:
	@printf '%s\n' $(SRCS)
EOF
)"
lua_files="$(cd "$repo" && find lua/s2 -name '*.lua' | LC_ALL=C sort)"
S2_MAKEFILE_SRCS="$makefile_srcs" S2_LUA_FILES="$lua_files" S2_CORE_H="$repo/csrc/s2.h" \
  lua5.4 - "$scm" "$release" <<'EOF' || exit 1
local function load(path)
  local env = {}
  local chunk = assert(loadfile(path, "t", env))
  chunk()
  return env
end
local function lines(s) local t = {} for l in s:gmatch("[^\n]+") do t[#t + 1] = l end table.sort(t) return t end
local function sorted(t) table.sort(t) return t end
local function same(a, b) return table.concat(a, "\n") == table.concat(b, "\n") end
local problems = {}
local function check(ok, msg) if not ok then problems[#problems + 1] = msg end end

local core_version = assert(io.open(os.getenv "S2_CORE_H")):read("a"):match('#define S2_VERSION "([^"]+)"')
local want_srcs = lines(os.getenv "S2_MAKEFILE_SRCS")
local want_lua = lines(os.getenv "S2_LUA_FILES")
local specs = {}
for i, path in ipairs(arg) do
  local r = load(path)
  specs[i] = r
  local name = path:match("[^/]+$")
  check(name == ("%s-%s.rockspec"):format(r.package, r.version), name .. ": package/version do not match the file name")
  local core = r.build.modules["s2.core"]
  check(same(sorted({ table.unpack(core.sources) }), want_srcs),
    name .. ": s2.core sources differ from the Makefile's SRCS:\n  rockspec: "
      .. table.concat(sorted({ table.unpack(core.sources) }), " ") .. "\n  Makefile: " .. table.concat(want_srcs, " "))
  local files = {}
  for mod, file in pairs(r.build.modules) do
    if mod ~= "s2.core" then
      files[#files + 1] = file
      local want = file:gsub("^lua/", ""):gsub("/init%.lua$", ""):gsub("%.lua$", ""):gsub("/", ".")
      check(mod == want, ("%s: module %s is in %s (want %s)"):format(name, mod, file, want))
    end
  end
  check(same(sorted(files), want_lua), name .. ": Lua modules differ from the files under lua/s2/:\n  rockspec: "
    .. table.concat(sorted(files), " ") .. "\n  lua/s2:   " .. table.concat(want_lua, " "))
  check(r.build.install and r.build.install.bin and r.build.install.bin.s2lua == "bin/s2lua", name .. ": does not install bin/s2lua")
  for _, dep in ipairs { "CURL", "NGHTTP2", "OPENSSL", "ZSTD", "ZLIB" } do
    check(r.external_dependencies[dep], name .. ": external_dependencies lacks " .. dep)
  end
  check(r.test and r.test.type == "busted", name .. ": no test = { type = \"busted\" }")
end
local scm, rel = specs[1], specs[2]
check(rel.version == core_version .. "-1", ("release rockspec is %s, csrc/s2.h says S2_VERSION %q"):format(rel.version, tostring(core_version)))
check(rel.source.url == ("s2-%s.tar.gz"):format(core_version) and rel.source.dir == "s2-" .. core_version,
  "release rockspec: source should be the tarball make dist writes, s2-" .. tostring(core_version) .. ".tar.gz")
-- Everything but version and source is the same in both.
local function body(path)
  local s = assert(io.open(path)):read("a")
  return (s:gsub("^.-\ndescription = ", ""))
end
check(body(arg[1]) == body(arg[2]), "the two rockspecs differ below `source` (keep them the same)")
if #problems > 0 then
  io.stderr:write("rockspec: ", table.concat(problems, "\nrockspec: "), "\n")
  os.exit(1)
end
EOF

smoke() { # smoke TREE LABEL: load the module from TREE, outside the checkout; run its s2lua
  local tree="$1"
  (cd / && LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;;" \
    LUA_CPATH="$tree/lib/lua/5.4/?.so;;" S2_TREE="$tree" lua5.4 -e '
      local s2 = require "s2"
      local tree = os.getenv "S2_TREE"
      assert(package.searchpath("s2.core", package.cpath):sub(1, #tree) == tree, "loaded the wrong s2.core")
      assert(package.searchpath("s2", package.path):sub(1, #tree) == tree, "loaded the wrong s2")
      local c = s2.client { access_token = "t", account_endpoint = "http://127.0.0.1:1", basin_endpoint = "http://127.0.0.1:1" }
      assert(s2.metered_bytes("abc") == 11)
      c:close()
      require "s2.adapters.luv"; require "s2.adapters.copas"
      io.write(s2.VERSION)') || fail "the module does not load from $tree"
  test -x "$tree/bin/s2lua" || fail "bin/s2lua not installed into $tree"
  local out status=0
  # (a tree other than the default ones needs its paths, as `luarocks path --tree` prints)
  out="$(cd / && LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;;" \
    LUA_CPATH="$tree/lib/lua/5.4/?.so;;" "$tree/bin/s2lua" 2>&1)" || status=$?
  [ "$status" -eq 2 ] && [[ "$out" == *"usage: s2lua"* ]] || fail "$tree/bin/s2lua without arguments: exit $status, $out"
  # its commands (the s2.cli modules) come from the tree too
  (cd / && LUA_PATH="$tree/share/lua/5.4/?.lua;$tree/share/lua/5.4/?/init.lua;;" \
    LUA_CPATH="$tree/lib/lua/5.4/?.so;;" "$tree/bin/s2lua" read --help | grep -q -- "--tail-offset") \
    || fail "$tree/bin/s2lua read --help does not run"
}

# 2. luarocks make of the scm rockspec, from a copy of the checkout's files.
mkdir "$work/src"
cp -r "$repo/csrc" "$repo/lua" "$repo/bin" "$repo/rockspec" "$work/src/"
(cd "$work/src" && run "$work/make.log" lr make --deps-mode=none --tree="$work/tree" rockspec/s2-scm-1.rockspec)
version="$(smoke "$work/tree")"
echo "rockspec: luarocks make rockspec/s2-scm-1.rockspec built and loaded s2 $version from a luarocks tree"

# 3. The source rock, installed into a clean tree from another directory.
rock="$("$repo/scripts/dist.sh" "$work/dist" 2>"$work/dist.log")" || { cat "$work/dist.log" >&2; fail "make dist failed"; }
mkdir "$work/elsewhere"
cp "$rock" "$work/elsewhere/"
rm -rf "$work/dist" # the install must need nothing but the rock
(cd "$work/elsewhere" && run "$work/install.log" lr install --deps-mode=none --tree="$work/clean" "$(basename "$rock")")
version="$(smoke "$work/clean")"
echo "rockspec: $(basename "$rock") installed into a clean tree (--deps-mode=none); s2 $version and s2lua run from there"

# 4. luarocks test in the rock's unpacked sources. luarocks wants busted as a rock in one of
# its configured trees; Debian's lua-busted (what make test installs) is not one, so the clean
# tree gets a one-line rock that runs it, and a luarocks config names that tree alone.
name="$(basename "$rock" .src.rock)"
(cd "$work/elsewhere" && unzip -q "$(basename "$rock")" && tar -xzf s2-*.tar.gz)
src="$(echo "$work"/elsewhere/s2-*/)"
bversion="$(dpkg-query -W -f='${Version}' lua-busted 2>/dev/null | sed 's/-[^-]*$//')"
[ -n "$bversion" ] || fail "luarocks test needs Debian's lua-busted (make test-deps)"
mkdir "$work/busted-shim"
cat >"$work/busted-shim/busted" <<'EOF'
-- Runs Debian's busted (lua-busted), so that `luarocks test` finds busted in a tree.
require "busted.runner" { standalone = false }
EOF
cat >"$work/busted-shim/busted-$bversion-1.rockspec" <<EOF
rockspec_format = "3.0"
package = "busted"
version = "$bversion-1"
source = { url = "busted" }
build = { type = "none", install = { bin = { busted = "busted" } } }
EOF
(cd "$work/busted-shim" && run "$work/shim.log" lr make --deps-mode=none --tree="$work/clean" "busted-$bversion-1.rockspec")
printf 'rocks_trees = { { name = "clean", root = "%s" } }\n' "$work/clean" >"$work/luarocks-config.lua"
(cd "$src" && unset S2_TEST_ENDPOINT && export LUAROCKS_CONFIG="$work/luarocks-config.lua" \
  LUA_PATH="$work/clean/share/lua/5.4/?.lua;$work/clean/share/lua/5.4/?/init.lua;;" \
  LUA_CPATH="$work/clean/lib/lua/5.4/?.so;;" && run "$work/test.log" lr test "rockspec/$name.rockspec")
grep -q ' passed, 0 failed' "$work/test.log" || { cat "$work/test.log" >&2; fail "luarocks test: no passing summary"; }
echo "rockspec: luarocks test in the rock's sources: $(grep ' passed, ' "$work/test.log" | tail -1)"
