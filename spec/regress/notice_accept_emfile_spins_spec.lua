-- Regression: the notice socket's listener (csrc/s2_notice.c on_listen) stopped at any
-- accept4 failure but stayed in the epoll set, level-triggered. Out of file descriptors
-- (EMFILE: an nginx worker at its limit, say), a dispatcher's connection stays queued, the
-- listener stays readable, and the I/O thread spun at 100% CPU until an fd was freed.
-- Seen before the fix: ~100 ticks of s2-io CPU time in the one second below; now ~0, and
-- the queued peer is served once fds are free again.
local H = require "helper"

local CHILD = [[
local s2 = require "s2"
local unix = require "socket.unix"
local socket = require "socket"
local ep = arg[1]
local client = s2.client { access_token = "x", account_endpoint = ep, basin_endpoint = ep }
assert(client:list_basins()) -- the I/O thread runs
local _, path = assert(client.core:progress_notice())
local PID = assert(io.open("/proc/self/stat")):read("a"):match("^(%d+)")
-- CPU ticks (utime + stime) of the s2-io thread.
local function io_ticks()
  local p = assert(io.popen("ls /proc/" .. PID .. "/task"))
  local tids = {}
  for tid in p:lines() do tids[#tids + 1] = tid end
  p:close()
  local total = 0
  for _, tid in ipairs(tids) do
    local f = io.open("/proc/" .. PID .. "/task/" .. tid .. "/comm")
    if f and f:read("l") == "s2-io" then
      local sf = assert(io.open("/proc/" .. PID .. "/task/" .. tid .. "/stat"))
      local fields = {}
      for x in sf:read("a"):match("%) (.*)"):gmatch("%S+") do fields[#fields + 1] = x end
      sf:close()
      total = total + tonumber(fields[12]) + tonumber(fields[13])
    end
    if f then f:close() end
  end
  return total
end
local before = io_ticks()
local sock = assert(unix())
local files = {}
while true do -- every fd of the process in use
  local f = io.open("/dev/null")
  if not f then break end
  files[#files + 1] = f
end
assert(sock:connect(path)) -- queued: the core has no fd to accept it with
socket.sleep(1)
for i = 1, #files do files[i]:close() end
local spent = io_ticks() - before
sock:settimeout(5)
local first = sock:receive(16) -- a heartbeat at the latest: the peer was accepted after all
print(("ticks=%d served=%s"):format(spent, tostring(first ~= nil)))
]]

describe("notice socket with no fd left for accept (regress)", function()
  it("does not spin the I/O thread, and serves the peer later", function()
    local script = os.tmpname()
    local f = assert(io.open(script, "w"))
    f:write(CHILD)
    f:close()
    local cmd = ("ulimit -n 64; LUA_PATH='%s;;' LUA_CPATH='%s;;' timeout -s KILL 30 lua5.4 %s '%s' 2>&1")
      :format(package.path, package.cpath, script, H.endpoint())
    local h = assert(io.popen(cmd))
    local out = h:read("a")
    h:close()
    os.remove(script)
    local ticks, served = out:match("ticks=(%d+) served=(%a+)")
    assert(ticks, out)
    assert.is_true(tonumber(ticks) < 30, ("the I/O thread used %s ticks in 1 s"):format(ticks))
    assert.are.equal("true", served, out)
  end)
end)
