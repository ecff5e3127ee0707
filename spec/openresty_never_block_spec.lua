-- Issue 13 in real nginx (one worker): no call of the module blocks the worker. Each waiting
-- call runs in a handler against a slowed server — tools/fault_proxy between nginx and s2-lite,
-- stalled (every server->client byte held until the spec releases it), or a read that waits for
-- a record the spec appends later — and /ping must be answered while the call is still waiting.
--
-- The evidence is ordering, never speed: the handler marks the call "running" in a shared dict
-- right before it and "done" right after; /ping?watch=ID answers with that state. One worker runs
-- one Lua handler at a time, so "pong running" means the worker served /ping while the call
-- waited. The spec releases the server only after two such answers; a call that blocks the
-- worker keeps /ping waiting until the call gives up by itself (the client's request_timeout
-- of 4 s, or the call's own timeout), and /ping then says "done".
--
-- Handlers: spec/support/openresty/never_block.lua; nginx config: never_block.conf next to it.
local H = require "helper"
local N = require "support.nginx"
local P = require "support.fault_proxy"

local function q(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

local function urlencode(s)
  return (tostring(s):gsub("[^%w%-_.~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

local function query(args)
  local keys, parts = {}, {}
  for k in pairs(args) do keys[#keys + 1] = k end
  table.sort(keys)
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. urlencode(args[k]) end
  return table.concat(parts, "&")
end

describe("OpenResty never blocks the worker", function()
  local srv, proxy, direct, basin_name

  lazy_setup(function()
    assert(N.available())
    direct = H.client()
    basin_name = H.unique_name("neverblock")
    assert(direct:create_basin(basin_name, { create_stream_on_append = true, create_stream_on_read = true }))
    local target = H.endpoint():match("^https?://([^/]+)")
    proxy = P.start { target = target }
    srv = N.start {
      conf = "spec/support/openresty/never_block.conf",
      env = { S2_BASIN = basin_name, S2_SLOW_ENDPOINT = proxy.endpoint },
    }
  end)

  lazy_teardown(function()
    if srv then srv:stop() end
    if proxy then proxy:stop() end
  end)

  after_each(function()
    if proxy then proxy:command("stall 0") end
  end)

  -- A fresh stream holding one record (so that its tail is 1).
  local function fresh_stream(tag)
    local name = H.unique_name(tag)
    assert(direct:basin(basin_name):stream(name):append({ "first" }))
    return name, 1
  end

  -- Starts /call in the background (curl); returns a handle whose :result() waits for the answer.
  local function start_call(args)
    local h = assert(io.popen(("unset LD_PRELOAD; curl -s -m 30 %s 2>&1")
      :format(q(srv:url("/call?" .. query(args))))))
    return {
      result = function()
        local out = h:read("a")
        h:close()
        return (out:gsub("%s+$", ""))
      end,
    }
  end

  local function watch(id)
    local body, code = srv:get("/ping?watch=" .. urlencode(id), { timeout = 30 })
    assert.are.equal(200, code, "/ping failed: " .. body)
    return body:match("^pong (%S+)") or body
  end

  -- Polls /ping until the call has started; returns the state of the first answer after that.
  local function first_state_after_start(id)
    for _ = 1, 1500 do
      local state = watch(id)
      if state ~= "none" then return state end
      os.execute("sleep 0.01")
    end
    error("the call never started (no /call request reached its handler)")
  end

  -- The heart of every spec: the call waits (held by `release`), /ping is served twice
  -- meanwhile, then the server is released and the call must succeed.
  local function assert_yields(label, args, release)
    local id = H.unique_name(args.op)
    args.id = id
    local call = start_call(args)
    local states = { first_state_after_start(id) }
    if states[1] == "running" then states[2] = watch(id) end
    release()
    local result = call:result()
    assert(states[1] == "running" and states[2] == "running", ([[
%s blocked the worker: /ping was answered only after the call had returned.
  /ping answers while the call should have been waiting: %s (want: running, running)
  the call's own answer: %s]]):format(label, table.concat(states, ", "), result))
    assert(result:match("^ok"), ("%s yielded, but then failed: %s"):format(label, result))
    return result
  end

  local function stalled()
    proxy:command("stall 600000")
    return function() proxy:command("stall 0") end
  end

  local function appending(stream_name)
    return function() assert(direct:basin(basin_name):stream(stream_name):append({ "released" })) end
  end

  it("stream:append (unary) yields while the server is stalled", function()
    local name = fresh_stream("append")
    local release = stalled()
    local result = assert_yields("stream:append", { op = "append", stream = name }, release)
    assert.are.equal("ok 1", result)
  end)

  it("stream:read{ wait = ... } yields while it long-polls for a record", function()
    local name, tail = fresh_stream("readwait")
    local result = assert_yields("stream:read{wait=3}", { op = "read_wait", stream = name, seq = tail },
      appending(name))
    assert.are.equal("ok 1 records released", result)
  end)

  it("stream:check_tail yields while the server is stalled", function()
    local name = fresh_stream("checktail")
    local release = stalled()
    assert.are.equal("ok 1", assert_yields("stream:check_tail", { op = "check_tail", stream = name }, release))
  end)

  it("a management call (basin:list_streams) yields while the server is stalled", function()
    local name = fresh_stream("liststreams")
    local release = stalled()
    assert.are.equal("ok 1", assert_yields("basin:list_streams", { op = "list_streams", stream = name }, release))
  end)

  it("reader:next on a following read session yields until a record comes", function()
    local name, tail = fresh_stream("readernext")
    local result = assert_yields("reader:next", { op = "reader_next", stream = name, seq = tail }, appending(name))
    assert.are.equal("ok released", result)
  end)

  it("reader:next_batch on a following read session yields until a record comes", function()
    local name, tail = fresh_stream("readernextbatch")
    local result = assert_yields("reader:next_batch", { op = "reader_next_batch", stream = name, seq = tail },
      appending(name))
    assert.are.equal("ok 1 released", result)
  end)

  it("reader:next_columns on a following read session yields until a record comes", function()
    local name, tail = fresh_stream("readernextcols")
    local result = assert_yields("reader:next_columns",
      { op = "reader_next_columns", stream = name, seq = tail }, appending(name))
    assert.are.equal("ok 1 released", result)
  end)

  it("reader:wait_caught_up yields while the tail report is held", function()
    local name, tail = fresh_stream("waitcaughtup")
    local release = stalled()
    local result = assert_yields("reader:wait_caught_up",
      { op = "reader_wait_caught_up", stream = name, seq = tail }, release)
    assert.are.equal("ok caught up", result)
  end)

  it("producer:flush yields while the ack is held", function()
    local name = fresh_stream("flush")
    local release = stalled()
    assert.are.equal("ok 1", assert_yields("producer:flush", { op = "producer_flush", stream = name }, release))
  end)

  it("producer:close yields while the ack is held", function()
    local name = fresh_stream("pclose")
    local release = stalled()
    assert.are.equal("ok 1", assert_yields("producer:close", { op = "producer_close", stream = name }, release))
  end)

  it("session:close yields while the ack is held", function()
    local name = fresh_stream("sclose")
    local release = stalled()
    assert.are.equal("ok 1", assert_yields("session:close", { op = "session_close", stream = name }, release))
  end)

  it("ticket:ack yields while the ack is held", function()
    local name = fresh_stream("ack")
    local release = stalled()
    assert.are.equal("ok 1", assert_yields("ticket:ack", { op = "ticket_ack", stream = name }, release))
  end)

  -- client:close needs no answer from the server (outstanding tickets fail with `closed`), so
  -- it may be quick: the evidence here is a timer queued right before the call, which records the
  -- call's state when it runs. It can run only when the handler yields: "running" means
  -- client:close waited for the I/O thread by yielding, "done" that it blocked the worker.
  -- The I/O thread may also have stopped before the call first looked (nothing to wait
  -- for: "done" without blocking either), so up to three tries; a close that blocks the
  -- worker shows "done" every time.
  it("client:close yields while its I/O thread winds down in-flight work", function()
    local timer_saw, result
    for _ = 1, 3 do
      local name, tail = fresh_stream("cclose")
      proxy:command("stall 600000")
      local id = H.unique_name("cclose")
      local call = start_call { op = "client_close", id = id, stream = name, seq = tail }
      timer_saw = ""
      for _ = 1, 1500 do
        timer_saw = srv:get("/dict?key=" .. urlencode(id .. ":timer"))
        if timer_saw ~= "" then break end
        os.execute("sleep 0.01")
      end
      proxy:command("stall 0")
      result = call:result()
      assert.are.equal("ok ticket closed", result)
      if timer_saw == "running" then break end
    end
    assert(timer_saw == "running", ([[
client:close blocked the worker: a timer queued right before the call ran only after it had returned.
  the call's state when the timer ran: %q (want: running), in three tries
  the call's own answer: %s]]):format(timer_saw, result))
  end)

  it("1000 requests in one worker each await their producer ticket: all succeed, woken without polling", function()
    local name = H.unique_name("waiters")
    local n, per_curl = 1000, 250
    local function stats()
      local body = srv:get("/stats")
      local t = { missing = body:match("^missing") ~= nil }
      for k, v in body:gmatch("(%w+)=(%d+)") do t[k] = tonumber(v) end
      return t, body
    end
    local before = stats()
    proxy:command("stall 600000")
    local out = srv.prefix .. "/waiters"
    assert(os.execute("mkdir -p " .. q(out)))
    -- curl runs at most 300 transfers at once: four of them, 250 each
    local cmds = {}
    for k = 0, n / per_curl - 1 do
      cmds[#cmds + 1] = ("curl -s --no-progress-meter -m 60 -Z --parallel-max %d --parallel-immediate -o %s %s &")
        :format(per_curl, q(out .. "/" .. k .. "_#1"), q(srv:url("/ack?stream=" .. name .. "&i=[1-" .. per_curl .. "]")))
    end
    local load = assert(io.popen("unset LD_PRELOAD; ulimit -n 8192; { " .. table.concat(cmds, " ")
      .. " wait; } 2>/dev/null; echo finished"))
    local waiting, body = 0, ""
    for _ = 1, 3000 do
      local t
      t, body = stats()
      waiting = t.waiting or 0
      if waiting >= n then break end
      os.execute("sleep 0.01")
    end
    proxy:command("stall 0")
    assert.are.equal("finished\n", load:read("a"))
    load:close()
    assert.are.equal(n, waiting, "not all requests were waiting at once: " .. body)
    local seen, count = {}, 0
    for k = 0, n / per_curl - 1 do
      for i = 1, per_curl do
        local f = io.open(("%s/%d_%d"):format(out, k, i))
        local answer = f and f:read("a") or "(no answer)"
        if f then f:close() end
        local seq = tonumber(answer:match("^ok (%d+)\n$"))
        assert(seq, ("request %d of curl %d: %s"):format(i, k, answer))
        assert(not seen[seq], "seq_num twice: " .. seq)
        seen[seq] = true
        count = count + 1
      end
    end
    assert.are.equal(n, count)
    local after, raw = stats()
    assert(not after.missing and not before.missing,
      "require('s2.await').stats() is missing in the worker (CONTRACT item 3): " .. raw)
    local waits, wakes, polls = after.waits - before.waits, after.wakes - before.wakes, after.polls - before.polls
    assert(polls == 0, ("the waiters were polled (%d ngx.sleep rounds), not woken: %s"):format(polls, raw))
    assert(waits >= n, ("only %d waits suspended for %d waiting requests: %s"):format(waits, n, raw))
    assert(wakes <= waits, ("%d wakes for %d waits (more than one wake per wait): %s"):format(wakes, waits, raw))
    assert.are.equal(0, after.waiting)
  end)

  describe("where nginx forbids yielding, a waiting call fails with 'invalid' instead of blocking", function()
    local log_done = false
    local function logged(op)
      if not log_done then
        local name = fresh_stream("inlog")
        local _, code = srv:get("/in_log?" .. query { stream = name })
        assert.are.equal(200, code)
        for _ = 1, 1500 do
          if srv:get("/dict?key=log:done") == "yes" then break end
          os.execute("sleep 0.01")
        end
        log_done = true
      end
      return srv:get("/dict?key=" .. urlencode("log:" .. op))
    end

    local function assert_invalid(phase, label, got)
      local code, message = got:match("^([^|]*)|(.*)$")
      assert(code ~= "returned", ("%s in the %s phase returned (%s) instead of failing with 'invalid': it waited by blocking the worker")
        :format(label, phase, message))
      assert(code == "invalid", ("%s in the %s phase did not fail with 'invalid' (a call that has to wait must refuse here, not block the worker): %s")
        :format(label, phase, got == "" and "(no result recorded)" or got))
      assert(message:find(phase, 1, true), ("the 'invalid' error of %s does not name the %s phase: %s")
        :format(label, phase, message))
    end

    for _, c in ipairs {
      { "append", "stream:append" }, { "read_wait", "stream:read{wait=1}" }, { "check_tail", "stream:check_tail" },
      { "list_streams", "basin:list_streams" }, { "reader_next", "reader:next" }, { "ticket_ack", "ticket:ack" },
      { "producer_flush", "producer:flush" },
    } do
      it(c[2] .. " in log_by_lua", function()
        assert_invalid("log", c[2], logged(c[1]))
      end)
    end

    it("stream:check_tail in init_worker_by_lua", function()
      assert_invalid("init_worker", "stream:check_tail", srv:get("/dict?key=init_worker:check_tail"))
    end)
  end)

  it("left no errors in nginx's error log", function()
    -- the calls of the failing specs above may have logged; this one is about crashes and
    -- Lua errors in the handlers themselves
    local bad = {}
    for line in srv:errors():gmatch("[^\n]+") do
      if not line:match("lua entry thread aborted") and (line:match("alert") or line:match("crit")
        or line:match("emerg") or line:match("runtime error")) then
        bad[#bad + 1] = line
      end
    end
    assert.are.equal("", table.concat(bad, "\n"))
  end)
end)
