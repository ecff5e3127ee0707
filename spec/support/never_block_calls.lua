-- The waiting calls of the public API, each set up so that it must wait a while, for
-- spec/never_block_spec.lua: every scheduler there runs every call of this table (and the
-- copas runner, spec/jit/never_block_copas.lua, loads it under LuaJIT), so adding a call here
-- adds it everywhere. Written for Lua 5.1 too.
--
-- A call is { name, link, client_opts, prepare, call, on_tick, check, cleanup }:
--   link         "slow": ctx.client reaches s2-lite through the fault proxy with LATENCY ms
--                each way; "stalled": through the proxy, which reads nothing from clients
--                (stop_reading); "direct": straight to s2-lite (the server makes it wait)
--   client_opts  extra options of ctx.client
--   prepare(ctx) -> state: the set-up, before the clock starts (may block; not measured)
--   call(state)  the waiting call, measured: the ticker must run while it waits
--   on_tick(state)  run on the ticker's ticks while the call waits (must not wait): what
--                only happens once the scheduler runs (e.g. the record a reader waits for)
--   check(state, r) -> nil | what was wrong: r = { n =, ... } the call's results; it may
--                wait (it runs in the caller's coroutine after the measurement)
--   cleanup(state)
-- ctx (M.context): client, direct (a client straight to s2-lite), basin (its name), proxy
-- (an object with command/stats, or nil), name(tag) (a stream name unique to this run),
-- streams(tag) -> stream through ctx.client, the same stream through ctx.direct.
local M = {}

M.LATENCY = 150 -- ms each way on the slow link: every round trip takes >= 0.3 s

local function describe(v, err)
  if err ~= nil then return ("nil, %s"):format(tostring(err)) end
  return tostring(v)
end

local function must(what, v, err)
  if v == nil then error(("set-up: %s failed: %s"):format(what, tostring(err)), 2) end
  return v
end

-- Waits (polling the proxy's control port) until pred() holds; raises after `limit` s.
local function wait_until(what, pred, limit)
  local now = require("s2.core").now
  local deadline = now() + (limit or 5)
  while not pred() do
    if now() > deadline then error("set-up: timed out waiting for " .. what, 2) end
  end
end

-- Checks that tickets[i] acked with seq num first + i - 1 (batch tickets: ack.start). They
-- must be resolved already, unless `wait` (seconds to wait for each).
local function check_acks(tickets, first, batch, wait)
  for i, t in ipairs(tickets) do
    if not wait and not t:ready() then return ("ticket %d is still pending"):format(i) end
    local ack, err = t:ack(wait or 1)
    if not ack then return ("ticket %d: %s"):format(i, describe(ack, err)) end
    local seq = batch and ack.start.seq_num or ack.seq_num
    if seq ~= first + i - 1 then
      return ("ticket %d acked at seq_num %s, expected %d"):format(i, tostring(seq), first + i - 1)
    end
  end
end

local function tail_of(ctx, name)
  local tail, err = ctx.direct:basin(ctx.basin):stream(name):check_tail()
  if not tail then return nil, "check_tail: " .. tostring(err) end
  return tail.seq_num
end

local calls = {
  {
    name = "stream:append", link = "slow",
    prepare = function(ctx) return { stream = ctx.streams("append") } end,
    call = function(s) return s.stream:append({ "one", "two" }) end,
    check = function(_, r)
      local ack = r[1]
      if not ack then return describe(r[1], r[2]) end
      if ack.start.seq_num ~= 0 or ack["end"].seq_num ~= 2 then
        return ("ack covers %s..%s, expected 0..2"):format(tostring(ack.start.seq_num),
          tostring(ack["end"].seq_num))
      end
    end,
  },
  {
    name = "stream:read{wait=1}", link = "direct",
    prepare = function(ctx)
      local stream, _, name = ctx.streams("longpoll")
      must("create_stream", ctx.direct:basin(ctx.basin):create_stream(name))
      return { stream = stream }
    end,
    call = function(s) return s.stream:read { seq_num = 0, wait = 1 } end,
    check = function(_, r)
      local batch = r[1]
      if not batch then return describe(r[1], r[2]) end
      if #batch.records ~= 0 then return ("%d records from an empty stream"):format(#batch.records) end
      if batch.tail and batch.tail.seq_num ~= 0 then
        return "tail " .. tostring(batch.tail.seq_num) .. ", expected 0"
      end
    end,
  },
  {
    name = "stream:check_tail", link = "slow",
    prepare = function(ctx)
      local stream, direct = ctx.streams("tail")
      must("append", direct:append({ "a", "b", "c" }))
      return { stream = stream }
    end,
    call = function(s) return s.stream:check_tail() end,
    check = function(_, r)
      local tail = r[1]
      if not tail then return describe(r[1], r[2]) end
      if tail.seq_num ~= 3 then return "tail " .. tostring(tail.seq_num) .. ", expected 3" end
    end,
  },
  {
    name = "basin:create_stream", link = "slow",
    prepare = function(ctx) return { basin = ctx.client:basin(ctx.basin), name = ctx.name("created") } end,
    call = function(s) return s.basin:create_stream(s.name) end,
    check = function(s, r)
      local info = r[1]
      if not info then return describe(r[1], r[2]) end
      if info.name ~= s.name then return "created " .. tostring(info.name) .. ", expected " .. s.name end
    end,
  },
  {
    name = "client:list_basins", link = "slow",
    prepare = function(ctx) return { client = ctx.client, basin = ctx.basin } end,
    call = function(s) return s.client:list_basins { prefix = s.basin } end,
    check = function(s, r)
      local body = r[1]
      if not body then return describe(r[1], r[2]) end
      for _, b in ipairs(body.basins or {}) do
        if b.name == s.basin then return nil end
      end
      return "basin " .. s.basin .. " not listed"
    end,
  },
  {
    name = "idempotent producer open", link = "slow",
    prepare = function(ctx)
      local stream, direct = ctx.streams("idem")
      must("append", direct:append({ "a", "b" }))
      return { stream = stream }
    end,
    call = function(s) return s.stream:producer { idempotent = true, linger = 0 } end,
    check = function(s, r)
      local p = r[1]
      if not p then return describe(r[1], r[2]) end
      s.producer = p
      local ack, err = must("submit", p:submit("c")):ack(5)
      if not ack then return "its first record: " .. describe(ack, err) end
      if ack.seq_num ~= 2 then return ("the chain started at %d, not at the tail 2"):format(ack.seq_num) end
    end,
    cleanup = function(s) if s.producer then s.producer:close(5) end end,
  },
}

calls[#calls + 1] = {
  -- the link takes the request and never answers: the call's own deadline must end it
  name = "stream:append timing out", link = "stalled",
  client_opts = { request_timeout = 0.5, retry = { max_attempts = 1 } },
  prepare = function(ctx) return { stream = ctx.streams("stalled") } end,
  call = function(s) return s.stream:append({ "never read" }) end,
  check = function(_, r)
    local err = r[2]
    if r[1] ~= nil or err == nil then return "expected nil, err; got " .. describe(r[1], r[2]) end
    if err.code ~= "timeout" then return "expected code timeout, got " .. tostring(err) end
  end,
}

-- A follow reader, and the record it waits for: submitted on the ticker's first tick during
-- the wait (so it cannot be there before the call waits; a blocked call never gets it and
-- ends by the session's wait or its own timeout).
local function follow_reader(ctx, tag)
  local stream, direct, name = ctx.streams(tag)
  must("create_stream", ctx.direct:basin(ctx.basin):create_stream(name))
  local trigger = must("producer", direct:producer { linger = 0 })
  local reader = must("read_session", stream:read_session { seq_num = 0, count = 1, wait = 2 })
  return { reader = reader, trigger = trigger }
end

local function send_later(s)
  if s.sent then return end
  s.sent = true
  must("submit", s.trigger:submit("later"))
end

local function check_later(_, r)
  local rec = r[1]
  if not rec and r[2] == nil then return "no record: the session ended (its wait ran out) before one came" end
  if not rec then return describe(r[1], r[2]) end
  if rec.body ~= "later" or rec.seq_num ~= 0 then
    return ("record %s at %s, expected \"later\" at 0"):format(tostring(rec.body), tostring(rec.seq_num))
  end
end

local function close_reader(s)
  s.reader:close()
  s.trigger:close(5)
end

calls[#calls + 1] = {
  name = "reader:next", link = "direct",
  prepare = function(ctx) return follow_reader(ctx, "next") end,
  on_tick = send_later,
  call = function(s) return s.reader:next(3) end,
  check = check_later, cleanup = close_reader,
}
calls[#calls + 1] = {
  name = "reader:records()", link = "direct",
  prepare = function(ctx) return follow_reader(ctx, "records") end,
  on_tick = send_later,
  call = function(s)
    for rec in s.reader:records() do return rec end
    return nil
  end,
  check = check_later, cleanup = close_reader,
}

-- A read session that cannot catch up before the ticker runs: the proxy refuses connections
-- until the first tick (the session's own retry keeps trying), then the tail report comes.
calls[#calls + 1] = {
  name = "reader:wait_caught_up", link = "slow",
  prepare = function(ctx)
    local stream, _, name = ctx.streams("caughtup")
    must("create_stream", ctx.direct:basin(ctx.basin):create_stream(name))
    ctx.proxy:command("refuse on")
    ctx.proxy:command("cut_all") -- no connection made before goes through either
    local reader = must("read_session", stream:read_session {
      seq_num = 0, retry = { max_attempts = math.huge, min_base_delay = 0.01, max_base_delay = 0.05 },
    })
    return { reader = reader, ctx = ctx }
  end,
  on_tick = function(s)
    if s.opened then return end
    s.opened = true
    s.ctx.proxy:command("refuse off")
  end,
  call = function(s) return s.reader:wait_caught_up(5) end,
  check = function(_, r)
    if r[1] ~= true then return "expected true, got " .. describe(r[1], r[2]) end
  end,
  cleanup = function(s)
    s.ctx.proxy:command("refuse off")
    s.reader:close()
  end,
}

-- A producer with 20 records in flight through the slow link.
local function loaded_producer(ctx, tag)
  local stream, _, name = ctx.streams(tag)
  local p = must("producer", stream:producer { linger = 0.001 })
  local tickets = {}
  for i = 1, 20 do tickets[i] = must("submit", p:submit(("r%02d"):format(i):rep(50))) end
  return { producer = p, tickets = tickets, ctx = ctx, name = name }
end

local function check_landed(s, r, batch)
  if r[1] ~= true then return describe(r[1], r[2]) end
  local bad = check_acks(s.tickets, 0, batch)
  if bad then return bad end
  local tail, err = tail_of(s.ctx, s.name)
  if tail ~= #s.tickets then return ("tail %s, expected %d"):format(tostring(tail or err), #s.tickets) end
end

calls[#calls + 1] = {
  name = "producer:flush", link = "slow",
  prepare = function(ctx) return loaded_producer(ctx, "flush") end,
  call = function(s) return s.producer:flush(5) end,
  check = check_landed,
  cleanup = function(s) s.producer:close(5) end,
}
calls[#calls + 1] = {
  name = "producer:close", link = "slow",
  prepare = function(ctx) return loaded_producer(ctx, "pclose") end,
  call = function(s) return s.producer:close(5) end,
  check = check_landed,
}
calls[#calls + 1] = {
  name = "session:close", link = "slow",
  prepare = function(ctx)
    local stream, _, name = ctx.streams("sclose")
    local session = must("append_session", stream:append_session())
    local tickets = {}
    for i = 1, 3 do tickets[i] = must("submit", session:submit({ "batch " .. i })) end
    return { session = session, tickets = tickets, ctx = ctx, name = name }
  end,
  call = function(s) return s.session:close(5) end,
  check = function(s, r) return check_landed(s, r, true) end,
}
calls[#calls + 1] = {
  name = "session:submit backpressure", link = "slow",
  prepare = function(ctx)
    local session = must("append_session", ctx.streams("sfull"):append_session { max_inflight_batches = 1 })
    return { session = session, first = must("submit", session:submit({ "first" })) }
  end,
  call = function(s) return s.session:submit({ "second" }) end,
  check = function(s, r)
    local t = r[1]
    if not t then return describe(r[1], r[2]) end
    if not s.first:ready() then return "it returned while the first batch was still in flight" end
    return check_acks({ s.first, t }, 0, true, 5)
  end,
  cleanup = function(s) s.session:close(5) end,
}
calls[#calls + 1] = {
  name = "producer:submit backpressure", link = "slow",
  prepare = function(ctx)
    -- 68 metered bytes a record, 100 in flight at most: the second waits for the first's ack
    local p = must("producer", ctx.streams("pfull"):producer { linger = 0, max_batch_bytes = 100,
                                                               max_inflight_bytes = 100 })
    return { producer = p, first = must("submit", p:submit(("a"):rep(60))) }
  end,
  call = function(s) return s.producer:submit(("b"):rep(60)) end,
  check = function(s, r)
    local t = r[1]
    if not t then return describe(r[1], r[2]) end
    if not s.first:ready() then return "it returned while the first record was still in flight" end
    return check_acks({ s.first, t }, 0, false, 5)
  end,
  cleanup = function(s) s.producer:close(5) end,
}
calls[#calls + 1] = {
  name = "ticket:ack", link = "slow",
  prepare = function(ctx)
    local session = must("append_session", ctx.streams("ack"):append_session())
    return { session = session, ticket = must("submit", session:submit({ "x", "y" })) }
  end,
  call = function(s) return s.ticket:ack(5) end,
  check = function(_, r)
    local ack = r[1]
    if not ack then return describe(r[1], r[2]) end
    if ack.start.seq_num ~= 0 or ack["end"].seq_num ~= 2 then
      return ("ack covers %s..%s, expected 0..2"):format(tostring(ack.start.seq_num),
        tostring(ack["end"].seq_num))
    end
  end,
  cleanup = function(s) s.session:close(5) end,
}
-- client:close with a batch in flight: over the HTTP/1.1 fallback the batch being posted
-- finishes its attempt first and gets its real outcome (docs/api.md), so close has to wait
-- for that round trip. The set-up waits until the session's worker has connected (it took
-- the batch) before the clock starts.
calls[#calls + 1] = {
  name = "client:close", link = "slow", client_opts = { force_http1 = true },
  prepare = function(ctx)
    local stream, _, name = ctx.streams("cclose")
    local session = must("append_session", stream:append_session())
    local conns = ctx.proxy:stats().conns
    local ticket = must("submit", session:submit({ "in flight" }))
    wait_until("the HTTP/1.1 worker's connection", function() return ctx.proxy:stats().conns > conns end)
    return { client = ctx.client, ticket = ticket, tickets = { ticket }, ctx = ctx, name = name }
  end,
  call = function(s) return s.client:close() end,
  check = function(s)
    return check_landed(s, { n = 1, true }, true)
  end,
}

M.calls = calls
M.by_name = {}
for _, c in ipairs(calls) do M.by_name[c.name] = c end

local counter = 0

-- ctx for one call. o: { link = endpoint of ctx.client, direct = endpoint of s2-lite, basin =
-- name, proxy = object with command/stats (or nil), prefix = unique per run, client_opts }
function M.context(o)
  local s2 = require "s2"
  local function client(endpoint, extra)
    local cfg = { access_token = "ignored", account_endpoint = endpoint, basin_endpoint = endpoint }
    for k, v in pairs(extra or {}) do cfg[k] = v end
    return s2.client(cfg)
  end
  local ctx = { basin = o.basin, proxy = o.proxy }
  ctx.client = client(o.link, o.client_opts)
  ctx.direct = client(o.direct)
  function ctx.name(tag)
    counter = counter + 1
    return ("%s-%s-%d"):format(o.prefix, tag, counter)
  end
  function ctx.streams(tag)
    local name = ctx.name(tag)
    return ctx.client:basin(ctx.basin):stream(name), ctx.direct:basin(ctx.basin):stream(name), name
  end
  return ctx
end

-- The body and on_tick to hand to support.ticker's run (or the copas runner) for `call`.
function M.body(call, ctx)
  local state
  local function body(measure)
    state = call.prepare(ctx)
    local r = measure(call.call, state)
    local wrong = call.check(state, r)
    if call.cleanup then call.cleanup(state) end
    -- their I/O threads end here rather than at exit (a second close does nothing)
    ctx.client:close()
    ctx.direct:close()
    return wrong
  end
  local on_tick = call.on_tick and function()
    if state then call.on_tick(state) end
  end
  return body, on_tick
end

return M
