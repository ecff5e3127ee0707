-- Regression: scripts/deps.sh stopped on a machine with no Lua installed at all.
--
-- It records the lua-interpreter/lua-compiler alternatives before installing packages (so that
-- luarocks' lua5.1 does not take /usr/bin/lua over). `update-alternatives --query` exits non-zero
-- for an alternative that does not exist yet, and under `set -euo pipefail` the command
-- substitution around it ended the script before anything was installed: `make deps` failed on
-- exactly the fresh machine it is for. Now a missing alternative reads as "".

local function sh_quote(s) return "'" .. s:gsub("'", "'\\''") .. "'" end

describe("regression: deps.sh on a machine without any Lua", function()
  it("reads a missing alternative as empty instead of stopping the script", function()
    -- the helper exactly as deps.sh defines it, run under deps.sh's own shell options
    local f = assert(io.open("scripts/deps.sh"))
    local src = f:read("a")
    f:close()
    local fn = src:match("\n(alternative_value%(%) {.-\n})")
    assert.is_truthy(fn, "alternative_value() not found in scripts/deps.sh")
    local script = "set -euo pipefail\n" .. fn ..
      "\nv=\"$(alternative_value s2-lua-no-such-alternative)\"\necho \"after[$v]\"\n"
    local p = assert(io.popen("bash -c " .. sh_quote(script) .. " 2>&1; echo \"rc=$?\""))
    local out = p:read("a")
    p:close()
    assert.are.equal("after[]\nrc=0\n", out)
  end)
end)
