-- Regression (issue 12, item 9): no thread of the core masked SIGPIPE, and OpenSSL's socket
-- BIO writes without MSG_NOSIGNAL, so a TLS write to a connection the peer had closed could
-- kill the host process (Lua's default disposition for SIGPIPE). The core's threads now block
-- every signal; this reads their masks from /proc.
local H = require "helper"

local SIGPIPE_BIT = 1 << (13 - 1)

local function threads_named(prefix)
  local found = {}
  -- Not /proc/self/task in a popen (that would be the shell's): this process's own pid.
  local pid = assert(io.open("/proc/self/stat")):read("l"):match("^(%d+)")
  local list = assert(io.popen("ls /proc/" .. pid .. "/task"))
  for tid in list:lines() do
    local comm = io.open(("/proc/%s/task/%s/comm"):format(pid, tid))
    local name = comm and comm:read("l")
    if comm then comm:close() end
    if name and name:sub(1, #prefix) == prefix then
      local st = assert(io.open(("/proc/%s/task/%s/status"):format(pid, tid))):read("a")
      found[#found + 1] = { name = name, blocked = tonumber(st:match("SigBlk:%s*(%x+)"), 16) }
    end
  end
  list:close()
  return found
end

describe("core threads and SIGPIPE (regress)", function()
  it("the I/O thread and the HTTP/1.1 worker block SIGPIPE", function()
    local client = H.client()
    local stream = H.new_stream(H.new_basin(client, "sigpipe"), "s")
    local session = assert(stream:append_session())
    assert(session:submit({ "x" }):ack(30))
    local h1 = H.client { force_http1 = true }
    local s1 = assert(h1:basin(stream.basin.name):stream(stream.name):append_session())
    assert(s1:submit({ "y" }):ack(30))
    local threads = threads_named("s2-")
    local names = {}
    for _, t in ipairs(threads) do
      names[t.name] = true
      assert.are_not.equal(0, t.blocked & SIGPIPE_BIT, t.name .. " does not block SIGPIPE")
    end
    assert.is_true(names["s2-io"] or false, "no s2-io thread found")
    assert.is_true(names["s2-http1"] or false, "no s2-http1 thread found")
    assert(session:close(30))
    assert(s1:close(30))
    client:close()
    h1:close()
  end)
end)
