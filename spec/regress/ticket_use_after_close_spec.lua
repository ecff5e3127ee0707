-- Regression: a ticket's __close is its __gc, which frees the core ticket; any method called
-- on the ticket afterwards (after a `local t <close>` scope, after __close twice, or from
-- another object's finalizer once the ticket was collected) dereferenced NULL and the process
-- died with SIGSEGV. Every method on a released ticket, session, producer or read session
-- must raise a clear error instead. Each case runs in a child `lua5.4` so that a crash
-- cannot take the spec runner with it; the child sees the test server through the
-- S2_ACCOUNT_ENDPOINT / S2_BASIN_ENDPOINT / S2_ACCESS_TOKEN of scripts/with-s2-lite.sh.
local H = require "helper"

local function shell_quote(s)
  return "'" .. s:gsub("'", "'\\''") .. "'"
end

-- Runs `code` (with BASIN defined) in a child lua5.4 using this worktree's module; returns
-- its output (stdout and stderr) followed by "exit=<status>" (139 for SIGSEGV).
local function run_child(basin, code)
  local prelude = ("local BASIN = %q\n"):format(basin)
  local cmd = ("unset LD_PRELOAD; LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' "
    .. "timeout 120 lua5.4 -e %s 2>&1; echo exit=$?"):format(shell_quote(prelude .. code))
  local p = io.popen(cmd)
  local out = p:read("a")
  p:close()
  return out
end

-- "name: message" for each method, called on obj through pcall.
local REPORT = [[
local function report(obj, names, ...)
  for _, name in ipairs(names) do
    local ok, err = pcall(obj[name], obj, ...)
    print(name .. ": " .. (ok and "no error" or tostring(err)))
  end
end
local s2 = require "s2"
local client = s2.client()
local stream = client:basin(BASIN):stream("s")
]]

local RECORD_TICKET = { "ready", "result", "result_seq_num", "ack", "seq_num", "wait", "pollfd",
                        "events", "timeout" }
local TICKET = { "ready", "result", "ack", "wait", "pollfd", "events", "timeout" }

-- The expected report: "name: message" per method (a message may carry the location of the
-- Lua caller, e.g. "lua/s2/await.lua:53: ticket is closed" for ack, which is Lua code).
local function expect(names, message)
  local lines = {}
  for _, name in ipairs(names) do lines[#lines + 1] = { name = name, message = message } end
  return lines
end

local function check(out, ...)
  local want = {}
  for _, list in ipairs { ... } do
    for _, l in ipairs(list) do want[#want + 1] = l end
  end
  local got = {}
  for line in out:gmatch("[^\n]+") do got[#got + 1] = line end
  assert.are.equal("exit=0", got[#got], out) -- exited normally (SIGSEGV gives exit=139)
  assert.are.equal(#want + 1, #got, out)
  for i, l in ipairs(want) do
    local name, msg = got[i]:match("^([%w_]+): (.*)$")
    assert.are.equal(l.name, name, out)
    if l.message then
      assert.is_truthy(msg == l.message or msg:sub(-#l.message - 2) == ": " .. l.message, out)
    end
  end
end

describe("a ticket used after it was closed", function()
  local basin
  lazy_setup(function()
    local name = H.unique_name("tclosed")
    assert(H.client():create_basin(name, { create_stream_on_append = true }))
    basin = name
  end)

  it("raises for every method of a producer's record ticket after its <close> scope", function()
    local out = run_child(basin, REPORT .. [[
local p = assert(stream:producer { linger = 0.001 })
local t
do
  local x <close> = assert(p:submit("a"))
  assert(x:ack(20))
  t = x
end
report(t, { "ready", "result", "result_seq_num", "ack", "seq_num", "wait", "pollfd", "events", "timeout" })
assert(p:close())
]])
    check(out, expect(RECORD_TICKET, "ticket is closed"))
  end)

  it("raises for every method of a session's ticket after __close twice (and __gc)", function()
    local out = run_child(basin, REPORT .. [[
local s = assert(stream:append_session())
local t = assert(s:submit({ "b" }))
assert(t:ack(20))
local mt = getmetatable(t)
mt.__close(t)
mt.__close(t, "the error of a scope")
mt.__gc(t)
report(t, { "ready", "result", "ack", "wait", "pollfd", "events", "timeout" })
assert(s:close())
]])
    check(out, expect(TICKET, "ticket is closed"))
  end)

  it("raises when another object's finalizer uses a ticket collected in the same cycle", function()
    -- finalizers run in the reverse order of their objects' creation: the ticket, made after
    -- its holder, is finalized (released) first, and the holder's finalizer then uses it.
    -- A session's ticket: a batch ticket, the class with a finalizer.
    local out = run_child(basin, REPORT .. [[
local s = assert(stream:append_session())
local holder = setmetatable({}, { __gc = function(h)
  report(h.t, { "ready", "result", "pollfd" })
  print("finalized: yes")
end })
holder.t = assert(s:submit({ "c" }))
assert(holder.t:ack(20))
holder = nil
collectgarbage()
collectgarbage()
assert(s:close())
]])
    check(out, expect({ "ready", "result", "pollfd" }, "ticket is closed"), { { name = "finalized", message = "yes" } })
  end)

  it("raises when a finalizer uses a record ticket whose batch was collected in the same cycle", function()
    -- A producer's record ticket has no finalizer of its own: it stands for its batch ticket
    -- (its user value), which is finalized first here (the producer went too), so the
    -- record ticket is closed.
    local out = run_child(basin, REPORT .. [[
local holder
do
  local p = assert(stream:producer { linger = 0.001 })
  holder = setmetatable({}, { __gc = function(h)
    report(h.t, { "ready", "result", "result_seq_num", "pollfd" })
    print("finalized: yes")
  end })
  holder.t = assert(p:submit("c"))
  assert(holder.t:ack(20))
end
holder = nil
collectgarbage()
collectgarbage()
]])
    check(out, expect({ "ready", "result", "result_seq_num", "pollfd" }, "ticket is closed"),
      { { name = "finalized", message = "yes" } })
  end)

  it("works when a finalizer uses a record ticket whose batch is still held", function()
    -- The producer (and so the batch ticket its record tickets share) is alive: the record
    -- ticket, resurrected by the finalizer, still gives its ack.
    local out = run_child(basin, REPORT .. [[
local p = assert(stream:producer { linger = 0.001 })
local holder = setmetatable({}, { __gc = function(h)
  print("seq_num: " .. tostring(h.t:result_seq_num() == h.want))
  print("finalized: yes")
end })
holder.t = assert(p:submit("d"))
holder.want = assert(holder.t:seq_num(20))
holder = nil
collectgarbage()
collectgarbage()
assert(p:close())
]])
    check(out, { { name = "seq_num", message = "true" }, { name = "finalized", message = "yes" } })
  end)

  it("raises for the methods of a released core session, producer and read session", function()
    local out = run_child(basin, REPORT .. [[
local core = client.core
local s = assert(core:append_session(BASIN, "s", {}))
local p = assert(core:producer(BASIN, "s", {}))
local r = assert(core:read_session(BASIN, "s", { seq_num = 0 }))
for _, obj in ipairs { s, p, r } do
  local mt = getmetatable(obj)
  mt.__close(obj, "the error of a scope")
  mt.__gc(obj)
  mt.__close(obj)
end
report(s, { "submit", "stats" }, { "x" })
report(p, { "submit", "flush", "stats" }, "x")
report(r, { "next", "status" })
]])
    check(out, expect({ "submit", "stats" }, "append session is closed"),
      expect({ "submit", "flush", "stats" }, "producer is closed"),
      expect({ "next", "status" }, "read session is closed"))
  end)
end)
