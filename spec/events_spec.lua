-- Observability events (issue 14): on_event / s2.set_logger receive structured events for
-- retries, reconnects, connections, failed sessions and discarded records. Against s2-lite
-- where it can show the case (a session on a missing stream), and the fault server where
-- it cannot (scripted 503s, cut sessions, GOAWAY, acks that never come). Losses at exit and
-- a handler that raises run in child processes, to see their stderr.
local H = require "helper"
local F = require "support.fault_server"
local child = require "support.child"
local P = require "support.fault_proxy"

local TOKEN = "tok-SECRET-4f1c9e" -- no event may carry it

-- Every event any test saw, for the token scan at the end.
local all_events = {}

local function collector()
  local list = {}
  local function handler(e)
    list[#list + 1] = e
    all_events[#all_events + 1] = e
  end
  return list, handler
end

local function of_type(list, t)
  local out = {}
  for _, e in ipairs(list) do if e.type == t then out[#out + 1] = e end end
  return out
end

local must = H.must

describe("observability events", function()
  local server
  lazy_setup(function() server = F.start() end)
  lazy_teardown(function() if server then server:stop() end end)
  before_each(function() server:command("reset") end)

  local function fault_client(o)
    o = o or {}
    return H.client {
      access_token = TOKEN,
      account_endpoint = server.endpoint, basin_endpoint = server.endpoint,
      request_timeout = o.request_timeout or 5,
      drain_timeout = o.drain_timeout,
      retry = { max_attempts = o.attempts or 3, min_base_delay = o.min_delay or 0.01,
                max_base_delay = o.max_delay or 0.02 },
      on_event = o.on_event,
    }
  end

  local function fault_stream(c, tag)
    local name = H.unique_name(tag)
    return c:basin("fault-basin"):stream(name), name
  end

  it("reports each retry of a unary call: attempts 1 and 2, with the error", function()
    local list, handler = collector()
    local c = fault_client { on_event = handler }
    local stream, name = fault_stream(c, "retry")
    server:command("status 503 times=2 on=unary")
    must(stream:append { "a" })
    local retries = of_type(list, "retry")
    assert.are.equal(2, #retries)
    for i, e in ipairs(retries) do
      assert.are.equal(i, e.attempt)
      assert.are.equal(3, e.max_attempts)
      assert.are.equal("unavailable", e.code)
      assert.are.equal(503, e.status)
      assert.are.equal("unary", e.what)
      assert.are.equal("POST", e.method)
      assert.are.equal(name, e.stream)
      assert.are.equal("fault-basin", e.basin)
      assert.is_true(e.delay > 0 and e.delay < 1, tostring(e.delay))
      assert.is_true(type(e.time) == "number" and math.abs(e.time - os.time()) < 60)
    end
    c:close()
  end)

  it("reports a cut append session as a retry and a reconnect, one per stats().reconnects", function()
    local list, handler = collector()
    local c = fault_client { on_event = handler }
    local stream, name = fault_stream(c, "cut")
    server:command("drop_after 1 at_next_batch")
    local session = must(stream:append_session())
    must(must(session:submit { "one" }):ack())
    must(must(session:submit { "two" }):ack()) -- cut as it arrives, resent on a new connection
    local reconnects = of_type(list, "reconnect")
    local stats = session:stats()
    must(session:close())
    assert.is_true(stats.reconnects >= 1)
    assert.are.equal(stats.reconnects, #reconnects)
    assert.are.equal("retry", reconnects[1].reason)
    assert.are.equal("append_session", reconnects[1].what)
    assert.are.equal(name, reconnects[1].stream)
    assert.are.equal("connection_failed", reconnects[1].code)
    local retries = of_type(list, "retry")
    assert.are.equal(#reconnects, #retries)
    assert.are.equal(1, retries[1].attempt)
    assert.are.equal("append_session", retries[1].what)
    -- the cut connection is retired as lost, and the new one opened
    local retired = of_type(list, "connection_retired")
    assert.are.equal(1, #retired)
    assert.are.equal("lost", retired[1].reason)
    assert.are.equal("2", retired[1].http)
    c:close()
  end)

  it("reports a session's own retry budget: max_attempts = math.huge as math.huge", function()
    local list, handler = collector()
    local c = fault_client { on_event = handler }
    local stream = fault_stream(c, "forever")
    server:command("drop_after 1 at_next_batch")
    local session = must(stream:append_session { retry = { max_attempts = math.huge } })
    must(must(session:submit { "one" }):ack())
    must(must(session:submit { "two" }):ack())
    must(session:close())
    local retries = of_type(list, "retry")
    assert.is_true(#retries >= 1)
    assert.are.equal(math.huge, retries[1].max_attempts)
    c:close()
  end)

  it("reports every connection opened (as many as stats() counts) and retired", function()
    local list, handler = collector()
    local c = fault_client { on_event = handler }
    local stream = fault_stream(c, "conns")
    server:command("goaway_after 1 graceful")
    local session = must(stream:append_session())
    must(must(session:submit { "one" }):ack())
    must(session:close())
    local session2 = must(stream:append_session()) -- the GOAWAY'd connection takes no more
    must(must(session2:submit { "two" }):ack())
    must(session2:close())
    local opened = of_type(list, "connection_opened")
    assert.are.equal(c:stats().connections_opened, #opened)
    assert.are.equal(2, #opened)
    assert.are.equal("127.0.0.1:" .. server.port, opened[1].host)
    assert.are.equal("2", opened[1].http)
    local retired = of_type(list, "connection_retired")
    assert.are.equal(1, #retired)
    assert.are.equal("goaway", retired[1].reason)
    c:close() -- the other connection goes with the client
    retired = of_type(list, "connection_retired")
    assert.are.equal(2, #retired)
    assert.are.equal("closed", retired[2].reason)
  end)

  it("reports a session that fails for good (s2-lite: its stream does not exist)", function()
    local list, handler = collector()
    local c = H.client { access_token = TOKEN, on_event = handler }
    local basin = H.new_basin(c, "evfail", { create_stream_on_append = false })
    local name = H.unique_name("missing")
    local session = must(basin:stream(name):append_session())
    local ack, err = must(session:submit { "x" }):ack()
    assert.is_nil(ack)
    assert.are.equal("stream_not_found", err.code)
    local failed = of_type(list, "session_failed")
    assert.are.equal(1, #failed)
    assert.are.equal("append_session", failed[1].what)
    assert.are.equal(name, failed[1].stream)
    assert.are.equal(basin.name, failed[1].basin)
    assert.are.equal("stream_not_found", failed[1].code)
    session:close()
    assert.are.equal(1, #of_type(list, "session_failed")) -- once
    -- and a read session that fails the same way
    local reader = must(basin:stream(name):read_session { seq_num = 0 })
    local rec, rerr = reader:next(10)
    assert.is_nil(rec)
    assert.are.equal("stream_not_found", rerr.code)
    failed = of_type(list, "session_failed")
    assert.are.equal(2, #failed)
    assert.are.equal("read_session", failed[2].what)
    assert.are.equal(name, failed[2].stream)
    c:close()
  end)

  it("counts events it could not keep (a full queue) in one events_dropped", function()
    local list, handler = collector()
    local c = fault_client { on_event = handler, attempts = 100, min_delay = 0.001,
                             max_delay = 0.002 }
    local _, name = fault_stream(c, "full")
    -- 11 calls one after the other, each answered 503 on all of its 100 attempts: 11 x 99
    -- retry events, none delivered meanwhile (call:wait() blocks in C).
    server:command("status 503 times=1100 on=unary")
    for _ = 1, 11 do
      local call = must(c.core:append("fault-basin", name, { "r" }))
      call:wait()
      local ok, err = call:result()
      assert.is_nil(ok)
      assert.are.equal("unavailable", err.code)
    end
    assert.are.equal(0, #list)
    assert.are.equal(1025, c:poll_events())
    assert.are.equal(1024, #of_type(list, "retry"))
    local dropped = of_type(list, "events_dropped")
    assert.are.equal(1, #dropped)
    assert.are.equal(11 * 99 - 1024, dropped[1].count)
    assert.are.equal("events_dropped", list[#list].type)
    assert.are.equal(0, c:poll_events())
    c:close()
  end)

  it("gives a client's on_event precedence over s2.set_logger, which covers the others", function()
    local s2 = require "s2"
    local mine, handler = collector()
    local logged, logger = collector()
    local with = fault_client { on_event = handler }
    local without = fault_client()
    s2.set_logger(logger)
    local ok, perr = pcall(function()
      local s1, n1 = fault_stream(with, "own")
      local s2s, n2 = fault_stream(without, "logged")
      server:command("status 503 times=1 on=unary")
      must(s1:append { "a" })
      server:command("status 503 times=1 on=unary")
      must(s2s:append { "b" })
      assert.are.equal(1, #mine)
      assert.are.equal(n1, mine[1].stream)
      assert.are.equal(1, #logged)
      assert.are.equal(n2, logged[1].stream)
    end)
    s2.set_logger(nil)
    assert(ok, perr)
    -- without a logger, the other client queues nothing any more
    local s3 = fault_stream(without, "quiet")
    server:command("status 503 times=1 on=unary")
    must(s3:append { "c" })
    assert.are.equal(1, #logged)
    assert.are.equal(0, without:poll_events())
    assert.has_error(function() s2.set_logger(42) end,
      "s2.set_logger: expected a function or nil, got number")
    assert.has_error(function() H.client { on_event = "x" } end,
      "s2.client: on_event must be a function, got string")
    with:close()
    without:close()
  end)

  -- A child process: a client on the fault server whose handler prints each event as one
  -- line "type k=v ..." on stdout and counts them by type in `seen`.
  local function run_child(body)
    local script = ([[
local s2 = require "s2"
local ep, token = %q, %q
local seen = {}
local function line(e)
  seen[e.type] = (seen[e.type] or 0) + 1
  local keys = {}
  for k in pairs(e) do if k ~= "type" and k ~= "time" then keys[#keys + 1] = k end end
  table.sort(keys)
  local parts = { e.type }
  for _, k in ipairs(keys) do parts[#parts + 1] = k .. "=" .. tostring(e[k]) end
  io.stdout:write(table.concat(parts, " "), "\n")
  io.stdout:flush()
end
local function new_client(o)
  local cfg = { access_token = token, account_endpoint = ep, basin_endpoint = ep,
                retry = { max_attempts = 2, min_base_delay = 0.2, max_base_delay = 0.3 },
                on_event = line }
  for k, v in pairs(o or {}) do cfg[k] = v end
  return s2.client(cfg)
end
]]):format(server.endpoint, TOKEN) .. body
    local r = child.run(script, { timeout = 60 })
    for l in r.stdout:gmatch("[^\n]+") do all_events[#all_events + 1] = { line = l } end
    return r
  end

  it("delivers records discarded by a dropped session while the client lives (no stderr line)", function()
    server:command("status 503 times=2 on=session") -- both attempts fail: the session fails
    local r = run_child [[
local client = new_client()
local stream = client:basin("fault-basin"):stream("lost-live")
do
  local session = assert(stream:append_session())
  assert(session:submit { "a", "b", "c" })
end
collectgarbage() collectgarbage() -- dropped without close: its tickets are out of reach
-- Unary calls meanwhile (each a wait, where events are delivered) until the loss shows.
local deadline = os.time() + 20
while not seen.records_discarded and os.time() < deadline do
  assert(client:basin("fault-basin"):stream("other"):check_tail())
end
print("done")
]]
    assert.are.equal(0, r.status, r.stderr)
    assert.is_truthy(r.stdout:find("\ndone\n", 1, true), r.stdout)
    assert.is_truthy(r.stdout:find("records_discarded basin=fault-basin batches=1 code=unavailable count=3 ", 1, true), r.stdout)
    assert.is_truthy(r.stdout:find("session_failed basin=fault-basin code=unavailable ", 1, true), r.stdout)
    assert.is_falsy(r.stderr:find("were not acknowledged", 1, true), r.stderr)
  end)

  it("reports records discarded at exit on stderr (no handler can run then)", function()
    -- s2-lite behind a proxy that passes nothing back: no ack ever comes
    local lite = H.client()
    local basin = H.new_basin(lite, "evexit")
    local proxy = P.start { target = H.endpoint():match("^http://(.*)$") }
    proxy:command("stall 600000")
    local r = run_child(([[
local client = new_client { account_endpoint = %q, basin_endpoint = %q, request_timeout = 60,
                            drain_timeout = 0.3 }
local stream = client:basin(%q):stream("lost-exit")
local session = assert(stream:append_session())
assert(session:submit { "a", "b", "c" })
-- the script ends: lua_close collects the client, the drain runs out
]]):format(proxy.endpoint, proxy.endpoint, basin.name))
    proxy:stop()
    lite:close()
    assert.are.equal(0, r.status, r.stderr)
    assert.is_truthy(r.stderr:find(('s2: 3 records in 1 batch for stream "lost-exit" of basin "%s" were not acknowledged'):format(basin.name), 1, true), r.stderr)
    assert.is_falsy(r.stdout:find("records_discarded", 1, true), r.stdout)
  end)

  it("keeps appending when the handler raises, and says so on stderr once", function()
    server:command("status 503 times=1 on=unary")
    local r = run_child [[
local calls = 0
local client = new_client { on_event = function(e)
  calls = calls + 1
  error("boom " .. calls)
end }
local ack = assert(client:basin("fault-basin"):stream("raises"):append { "a" })
local session = assert(client:basin("fault-basin"):stream("raises"):append_session())
assert(assert(session:submit { "b" }):ack())
assert(session:close())
print("calls=" .. calls .. " seq=" .. ack.start.seq_num)
]]
    assert.are.equal(0, r.status, r.stderr)
    -- a retry and a connection opened: the handler raised twice
    assert.is_truthy(r.stdout:find("calls=2 seq=0", 1, true), r.stdout)
    local _, n = r.stderr:gsub("an event handler raised", "")
    assert.are.equal(1, n, r.stderr)
    assert.is_truthy(r.stderr:find("boom 1", 1, true), r.stderr)
  end)

  it("delivers from the await path while a coroutine waits under cqueues", function()
    local ok_cq, cqueues = pcall(require, "cqueues")
    assert(ok_cq, "cqueues is required for this spec")
    local list, handler = collector()
    local where = {}
    local c = fault_client { on_event = function(e)
      handler(e)
      where[#where + 1] = coroutine.running()
    end }
    local stream = fault_stream(c, "cq")
    server:command("status 503 times=2 on=unary")
    local cq = cqueues.new()
    local co, returned, ticks = nil, false, 0
    local ack
    cq:wrap(function()
      co = coroutine.running()
      ack = stream:append { "a" }
      returned = true
    end)
    cq:wrap(function() -- proves the waiting coroutine yielded instead of blocking
      while not returned do
        ticks = ticks + 1
        cqueues.sleep(0.001)
      end
    end)
    assert(cq:loop())
    assert.is_truthy(ack)
    assert.is_true(ticks > 0)
    assert.are.equal(2, #of_type(list, "retry"))
    for _, w in ipairs(where) do assert.are.equal(co, w) end
    c:close()
  end)

  it("never carries the access token (every string of every event above)", function()
    assert.is_true(#all_events > 1000, tostring(#all_events))
    local function scan(v, path)
      if type(v) == "string" then
        assert.is_falsy(v:find(TOKEN, 1, true), path)
        assert.is_falsy(v:lower():find("bearer", 1, true), path)
      elseif type(v) == "table" then
        for k, x in pairs(v) do scan(x, path .. "." .. tostring(k)) end
      end
    end
    for i, e in ipairs(all_events) do scan(e, "event " .. i) end
  end)
end)
