-- Regression (issue 13): with hundreds of unary calls in flight, libcurl closed sockets while
-- the I/O thread was still going through one epoll batch; the watch of a closed socket was
-- freed at once, and a later event of the same batch called through it (nginx worker
-- SIGSEGV at 500 concurrent stream:append, under wrk). Now removed sockets are freed between
-- batches. 400 cqueues coroutines appending at once ran into it within seconds; the child
-- process died of a signal instead of printing its count.
local H = require "helper"

-- Under the TSan suite the child needs the sanitizer's runtime preloaded too.
local PRELOAD = ""
if (package.searchpath("s2.core", package.cpath) or ""):find("build-tsan", 1, true) then
  PRELOAD = "LD_PRELOAD=\"$(${CC:-cc} -print-file-name=libtsan.so)\" "
end

local CHILD = [[
local cqueues = require "cqueues"
local s2 = require "s2"
local ep = os.getenv("S2_TEST_ENDPOINT")
local client = s2.client { access_token = "x", account_endpoint = ep, basin_endpoint = ep }
local stream = client:basin(arg[1]):stream("s")
local cq = cqueues.new()
local ok, failed = 0, 0
for i = 1, 400 do
  cq:wrap(function()
    for j = 1, 5 do
      local ack, err = stream:append({ ("c%d-%d"):format(i, j) })
      if ack then ok = ok + 1 else failed = failed + 1; io.stderr:write(tostring(err), "\n") end
    end
  end)
end
assert(cq:loop())
print(("acked=%d failed=%d"):format(ok, failed))
]]

describe("hundreds of concurrent unary calls (regress)", function()
  it("do not crash the I/O thread, and every append lands once (3 runs of 2000)", function()
    local client = H.client()
    local basin = H.new_basin(client, "stale")
    local path = os.tmpname()
    local f = assert(io.open(path, "w"))
    f:write(CHILD)
    f:close()
    -- Three runs: one crashed in two of three on the old code.
    for run = 1, 3 do
      local cmd = ("%sLUA_PATH=%q LUA_CPATH=%q %s %s %s 2>&1; echo rc=$?"):format(
        PRELOAD, package.path, package.cpath, "lua5.4", path, basin.name)
      local p = assert(io.popen(cmd))
      local out = p:read("a")
      p:close()
      assert.are.equal("rc=0", out:match("rc=%d+"), "run " .. run .. ": " .. out)
      assert.are.equal("acked=2000 failed=0", out:match("acked=%d+ failed=%d+"), out)
    end
    os.remove(path)
    assert.are.equal(6000, assert(client:basin(basin.name):stream("s"):check_tail()).seq_num)
    client:close()
  end)
end)
