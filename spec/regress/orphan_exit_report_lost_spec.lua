-- Regression: at the end of a script (lua_close collects the client: its runtime is orphaned
-- and drains on its own I/O thread), the exit handler waited for the orphan's `io_done`,
-- which the I/O thread set *before* it failed the sessions and wrote their loss reports:
-- the process could exit in between, so undelivered records went unreported on stderr (and
-- ticket notices posted by that abort went to a notice socket already closed). Many
-- sessions make the window wide: before the fix most of their reports were missing.
local H = require "helper"
local P = require "support.fault_proxy"

local SESSIONS = 60

local CHILD = [[
local s2 = require "s2"
local ep, basin_name, stream_name, n = arg[1], arg[2], arg[3], tonumber(arg[4])
local client = s2.client { access_token = "x", account_endpoint = ep, basin_endpoint = ep,
                           request_timeout = 60, drain_timeout = 0.5 }
local stream = client:basin(basin_name):stream(stream_name)
local keep = {}
for i = 1, n do
  local session = assert(stream:append_session())
  assert(session:submit({ "a", "b" }))
  keep[i] = session
end
-- the script ends: lua_close collects them all, then the exit handler runs
]]

describe("loss reports of a client collected at the end of a script (regress)", function()
  local proxy, client, basin_name

  setup(function()
    client = H.client()
    local _
    _, basin_name = H.new_basin(client, "orphanrep")
    proxy = P.start { target = H.endpoint():match("^http://(.*)$") }
    proxy:command("stall 600000") -- no acks ever
  end)

  teardown(function()
    if proxy then proxy:stop() end
    if client then client:close() end
  end)

  it("reports every session's records before the process exits", function()
    local script, errf = os.tmpname(), os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(CHILD)
    f:close()
    local q = P.quote
    local cmd = ("LUA_PATH=%s LUA_CPATH=%s timeout -s KILL 30 lua5.4 %s %s %s s %d 2>%s; echo rc=$?")
      :format(q(package.path .. ";;"), q(package.cpath .. ";;"), q(script), q(proxy.endpoint),
        q(basin_name), SESSIONS, q(errf))
    local h = assert(io.popen(cmd))
    local out = h:read("a")
    h:close()
    local stderr = P.slurp(errf) or ""
    os.remove(script)
    os.remove(errf)
    assert.are.equal("0", out:match("rc=(%d+)"), stderr)
    local reported = 0
    for n in stderr:gmatch("(%d+) records? in %d+ batch") do reported = reported + tonumber(n) end
    assert.are.equal(2 * SESSIONS, reported, stderr)
  end)
end)
