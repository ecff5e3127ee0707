-- Awaitable tickets: blocking scripts, cqueues, luv and custom hooks. Interleaving is shown
-- by the order of events, never by timing.
local H = require "helper"
local s2 = require "s2"

local must = H.must

local function open_fds()
  local n = 0
  local p = io.popen("ls /proc/self/fd 2>/dev/null") -- counts the shell's; compare deltas
  for _ in p:lines() do n = n + 1 end
  p:close()
  local f = io.open("/proc/self/status")
  local _ = f and f:close()
  -- the Lua process's own fds, via its pid
  local pid = io.open("/proc/self/stat"):read("a"):match("^(%d+)")
  n = 0
  p = io.popen("ls /proc/" .. pid .. "/fd")
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

describe("tickets", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "sched")
  end)
  after_each(function() s2.set_scheduler(nil) end)

  it("block a plain script in ack(), and time out without cancelling the append", function()
    local stream = H.new_stream(basin, "block")
    local p = must(stream:producer { linger = 0.3 })
    local t = must(p:submit("slow"))
    local ack, err = t:ack(0.01)
    assert.is_nil(ack)
    assert.are.equal("timeout", err.code)
    assert.are.equal(0, must(t:ack()).seq_num) -- it landed anyway
    must(p:close())
  end)

  it("implement cqueues' pollable protocol", function()
    local stream = H.new_stream(basin, "poll")
    local p = must(stream:producer { linger = 0.2 })
    local t = must(p:submit("x"))
    assert.is_number(t:pollfd())
    assert.are.equal("r", t:events())
    assert.is_nil(t:timeout())
    must(t:ack())
    assert.are.equal(0, t:timeout())
    must(p:close())
  end)

  it("yield to cqueues: another coroutine runs while one awaits", function()
    local cqueues = require "cqueues"
    local stream = H.new_stream(basin, "cq")
    local p = must(stream:producer { linger = 0.2 })
    local events = {}
    local cq = cqueues.new()
    local t
    cq:wrap(function()
      t = must(p:submit("cq"))
      events[#events + 1] = "submitted"
      local ack = must(t:ack(10))
      events[#events + 1] = "acked " .. ack.seq_num
    end)
    cq:wrap(function()
      cqueues.sleep(0.01) -- let the other one submit and start waiting
      events[#events + 1] = t:ready() and "other ran after the ack" or "other ran while pending"
    end)
    assert(cq:loop(10))
    assert.are.same({ "submitted", "other ran while pending", "acked 0" }, events)
    must(p:close())
  end)

  it("yield to luv through the adapter", function()
    local uv = require "luv"
    s2.set_scheduler(require("s2.adapters.luv")(uv))
    local stream = H.new_stream(basin, "luv")
    local p = must(stream:producer { linger = 0.2 })
    local events = {}
    coroutine.wrap(function()
      local t = must(p:submit("luv"))
      events[#events + 1] = "submitted"
      local ack = must(t:ack(10))
      events[#events + 1] = "acked " .. ack.seq_num
    end)()
    local timer = uv.new_timer()
    timer:start(1, 0, function()
      events[#events + 1] = "timer ran"
      timer:close()
    end)
    uv.run()
    assert.are.same({ "submitted", "timer ran", "acked 0" }, events)
    must(p:close())
  end)

  it("use a custom hook, which may defer to blocking", function()
    local calls = 0
    s2.set_scheduler(function(w, timeout)
      calls = calls + 1
      return "block"
    end)
    local stream = H.new_stream(basin, "hook")
    local session = must(stream:append_session())
    local ticket = must(session:submit({ "h" }))
    calls = 0 -- the unary calls above (create_stream) went through the hook too
    local ack = must(ticket:ack(10))
    assert.are.equal(0, ack.start.seq_num)
    assert.is_true(calls <= 1) -- not called when the ticket was already resolved
    must(session:close())
    assert.has_error(function() s2.set_scheduler(42) end)
  end)

  it("survive 10,000 tickets dropped mid-flight under aggressive GC, leaking no fd", function()
    local stream = H.new_stream(basin, "gc")
    local before = open_fds()
    collectgarbage("setpause", 50)
    collectgarbage("setstepmul", 400)
    local p = must(stream:producer { linger = 0.01 })
    for i = 1, 10000 do
      local t = must(p:submit("g" .. i))
      if i % 3 == 0 then t:pollfd() end -- some tickets made their fd
      if i % 100 == 0 then collectgarbage("step") end
    end
    collectgarbage()
    collectgarbage()
    must(p:flush())
    must(p:close())
    p = nil
    collectgarbage()
    collectgarbage()
    collectgarbage("setpause", 200)
    collectgarbage("setstepmul", 100)
    assert.are.equal(10000, must(stream:check_tail()).seq_num)
    assert.is_true(open_fds() <= before + 2, ("fds before %d, after %d"):format(before, open_fds()))
  end)
end)

describe("backpressure in a scheduler", function()
  it("yields a cqueues coroutine blocked on a full producer instead of blocking", function()
    local cqueues = require "cqueues"
    local client = H.client()
    local basin = H.new_basin(client, "bpsched")
    local stream = H.new_stream(basin, "full")
    -- 1 MiB in flight and 300 KB records: the 5th submit has to wait for acks
    local p = must(stream:producer { max_inflight_bytes = 1024 * 1024, linger = 0.001 })
    local body = ("w"):rep(300 * 1024)
    local events, other_ran_while_waiting = {}, 0
    local cq = cqueues.new()
    local submitting = false
    cq:wrap(function()
      for i = 1, 12 do
        submitting = true
        must(p:submit(body))
        submitting = false
        events[#events + 1] = "submitted " .. i
      end
      must(p:flush())
      events[#events + 1] = "flushed"
    end)
    cq:wrap(function()
      for _ = 1, 200 do
        if #events > 0 and events[#events] == "flushed" then break end
        if submitting then other_ran_while_waiting = other_ran_while_waiting + 1 end
        cqueues.sleep(0.002)
      end
    end)
    assert(cq:loop(20))
    assert.are.equal("flushed", events[#events])
    assert.are.equal(13, #events)
    -- the other coroutine ran while the first one was inside a waiting submit
    assert.is_true(other_ran_while_waiting > 0)
    must(p:close())
    assert.are.equal(12, must(stream:check_tail()).seq_num)
  end)
end)
