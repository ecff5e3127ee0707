-- Handlers of spec/openresty_never_block_spec.lua, inside real nginx (one worker).
--
-- Every call under test talks to S2 through S2_SLOW_ENDPOINT (tools/fault_proxy in front of
-- s2-lite: the spec stalls it, or the call long-polls), so it has to wait. Right before the
-- call a handler sets its id to "running" in the shared dict, right after it to "done";
-- /ping?watch=ID answers with that state. The worker runs one Lua handler at a time, so a
-- "pong running" is proof that /ping was served while the call was still waiting.
local s2 = require "s2"

local M = {}
local dict = ngx.shared.calls
local BASIN = os.getenv("S2_BASIN")

local function options()
  return {
    access_token = "ignored",
    account_endpoint = os.getenv("S2_SLOW_ENDPOINT"),
    basin_endpoint = os.getenv("S2_SLOW_ENDPOINT"),
    -- a call that blocks the worker ends by itself within a few seconds (and fails the spec)
    request_timeout = 4,
    retry = { max_attempts = 1 },
  }
end

local client -- one per worker, made after the fork
local function get_client()
  if not client then client = s2.client(options()) end
  return client
end

local function stream(name)
  return get_client():basin(BASIN):stream(name)
end

local function describe(v, err)
  if v == nil or v == false then
    if type(err) == "table" then return ("err %s: %s"):format(tostring(err.code), tostring(err.message)) end
    return "err " .. tostring(err)
  end
  return "ok"
end

-- The calls. Each gets the request's args and `mark`, to be called right before the call under
-- test (setup before it may wait too); returns the text the spec checks ("ok ..." or "err ...").
local OPS = {}

function OPS.append(a, mark)
  local st = stream(a.stream)
  mark()
  local ack, err = st:append({ "slow append" })
  return ack and ("ok " .. ack.start.seq_num) or describe(nil, err)
end

function OPS.read_wait(a, mark)
  local st = stream(a.stream)
  mark()
  local batch, err = st:read { seq_num = tonumber(a.seq), wait = 3 }
  if not batch then return describe(nil, err) end
  return ("ok %d records%s"):format(#batch.records, batch.records[1] and (" " .. batch.records[1].body) or "")
end

function OPS.check_tail(a, mark)
  local st = stream(a.stream)
  mark()
  local pos, err = st:check_tail()
  return pos and ("ok " .. pos.seq_num) or describe(nil, err)
end

function OPS.list_streams(a, mark)
  local basin = get_client():basin(BASIN)
  mark()
  local page, err = basin:list_streams { prefix = a.stream }
  return page and ("ok " .. #page.streams) or describe(nil, err)
end

function OPS.reader_next(a, mark)
  local reader, oerr = stream(a.stream):read_session { seq_num = tonumber(a.seq) }
  if not reader then return describe(nil, oerr) end
  mark()
  local record, err = reader:next(4)
  reader:close()
  if record then return "ok " .. record.body end
  return err and describe(nil, err) or "err the read session ended"
end

-- At the tail: s2-lite reports the tail at once, but the stalled proxy holds that report.
function OPS.reader_wait_caught_up(a, mark)
  local reader, oerr = stream(a.stream):read_session { seq_num = tonumber(a.seq) }
  if not reader then return describe(nil, oerr) end
  mark()
  local ok, err = reader:wait_caught_up(4)
  local caught_up = reader:is_caught_up()
  reader:close()
  if not ok then return describe(nil, err) end
  return caught_up and "ok caught up" or "err wait_caught_up returned but is_caught_up() is false"
end

function OPS.reader_next_batch(a, mark)
  local reader, oerr = stream(a.stream):read_session { seq_num = tonumber(a.seq) }
  if not reader then return describe(nil, oerr) end
  mark()
  local list, err = reader:next_batch(10, 4)
  reader:close()
  if list then return ("ok %d %s"):format(#list, list[1].body) end
  return err and describe(nil, err) or "err the read session ended"
end

function OPS.reader_next_columns(a, mark)
  local reader, oerr = stream(a.stream):read_session { seq_num = tonumber(a.seq) }
  if not reader then return describe(nil, oerr) end
  mark()
  local cols, err = reader:next_columns(10, 4)
  reader:close()
  if cols then return ("ok %d %s"):format(cols.n, cols.bodies[1]) end
  return err and describe(nil, err) or "err the read session ended"
end

local function producer_with_one_record(name)
  local p, err = stream(name):producer { linger = 60 }
  if not p then return nil, err end
  local t, serr = p:submit("record")
  if not t then return nil, serr end
  return p, t
end

function OPS.producer_flush(a, mark)
  local p, t = producer_with_one_record(a.stream)
  if not p then return describe(nil, t) end
  mark()
  local ok, err = p:flush(5)
  if not ok then return describe(nil, err) end
  local ack = t:result()
  return ack and ("ok " .. ack.seq_num) or "err flushed but the ticket is not acked"
end

function OPS.producer_close(a, mark)
  local p, t = producer_with_one_record(a.stream)
  if not p then return describe(nil, t) end
  mark()
  local ok, err = p:close(5)
  if not ok then return describe(nil, err) end
  local ack = t:result()
  return ack and ("ok " .. ack.seq_num) or "err closed but the ticket is not acked"
end

function OPS.session_close(a, mark)
  local s, err = stream(a.stream):append_session()
  if not s then return describe(nil, err) end
  local t, serr = s:submit({ "record" })
  if not t then return describe(nil, serr) end
  mark()
  local ok, cerr = s:close(5)
  if not ok then return describe(nil, cerr) end
  local ack = t:result()
  return ack and ("ok " .. ack.start.seq_num) or "err closed but the ticket is not acked"
end

function OPS.ticket_ack(a, mark)
  local p, err = stream(a.stream):producer { linger = 0 }
  if not p then return describe(nil, err) end
  local t, serr = p:submit("record")
  if not t then return describe(nil, serr) end
  mark()
  local ack, aerr = t:ack(5)
  return ack and ("ok " .. ack.seq_num) or describe(nil, aerr)
end

-- client:close of a client whose I/O thread has work in flight (a producer's batch whose ack
-- the stalled proxy holds, a following read session): it must wait for that thread to shut
-- down without blocking the worker. Evidence: a timer queued right before the call runs while
-- the call is still in progress (it records the call's state), i.e. the call yielded to nginx.
function OPS.client_close(a, mark)
  local c = s2.client(options())
  local st = c:basin(BASIN):stream(a.stream)
  local p, perr = st:producer { linger = 0 }
  if not p then return describe(nil, perr) end
  local t, serr = p:submit("record")
  if not t then return describe(nil, serr) end
  local reader, rerr = st:read_session { seq_num = tonumber(a.seq) }
  if not reader then return describe(nil, rerr) end
  local id = a.id
  assert(ngx.timer.at(0, function() dict:set(id .. ":timer", dict:get(id)) end))
  mark()
  c:close()
  local ack, terr = t:result()
  if ack then return "ok acked " .. ack.seq_num end
  if ack == false then return "err the ticket is still pending after client:close" end
  return "ok ticket " .. tostring(terr and terr.code)
end

function M.call()
  local a = ngx.req.get_uri_args()
  local op = OPS[a.op]
  if not op then
    ngx.status = 400
    return ngx.say("err unknown op ", tostring(a.op))
  end
  local id = a.id
  local ok, res = pcall(op, a, function() dict:set(id, "running") end)
  dict:set(id, "done")
  ngx.say(ok and res or ("err raised: " .. tostring(res)))
end

function M.ping()
  local watch = ngx.var.arg_watch
  if watch then
    watch = ngx.unescape_uri(watch) return ngx.say("pong ", dict:get(watch) or "none") end
  ngx.say("pong")
end

-- 1000 of these wait at once in the 1000-waiter spec.
local ack_producer
function M.ack()
  if not ack_producer then
    local p, err = stream(ngx.var.arg_stream):producer { linger = 0.005 }
    if not p then return ngx.say(describe(nil, err)) end
    ack_producer = p
  end
  local t, err = ack_producer:submit("waiter")
  if not t then return ngx.say(describe(nil, err)) end
  dict:incr("waiting", 1, 0)
  local ack, aerr = t:ack(30)
  dict:incr("waiting", -1, 0)
  ngx.say(ack and ("ok " .. ack.seq_num) or describe(nil, aerr))
end

-- "waits=N wakes=N polls=N waiting=N", or "missing waiting=N" without require("s2.await").stats.
function M.stats()
  local await = require "s2.await"
  local waiting = dict:get("waiting") or 0
  if type(await.stats) ~= "function" then return ngx.say("missing waiting=", waiting) end
  local s = await.stats()
  ngx.say(("waits=%s wakes=%s polls=%s waiting=%d"):format(tostring(s.waits), tostring(s.wakes),
    tostring(s.polls), waiting))
end

-- The result of a call made where nginx forbids yielding: "<code>|<message>" of its error,
-- or "returned|..." when it did not fail.
local function record_phase_result(key, f)
  local ok, v, err = pcall(f)
  if not ok then
    dict:set(key, "raised|" .. tostring(v))
  elseif v == nil and type(err) == "table" then
    dict:set(key, tostring(err.code) .. "|" .. tostring(err.message))
  else
    dict:set(key, ("returned|%s%s"):format(v == nil and "nil" or type(v) == "table" and "a result" or tostring(v),
      err ~= nil and (", " .. tostring(err)) or ""))
  end
end

-- Calls from the log phase (/in_log?stream=S); the spec reads log:<op> from the dict.
function M.in_log()
  local a = ngx.req.get_uri_args()
  local st = stream(a.stream)
  -- reads at the tail of a stream nobody writes to: they have to wait
  local empty = stream(a.stream .. "-empty")
  record_phase_result("log:append", function() return st:append({ "from the log phase" }) end)
  record_phase_result("log:read_wait", function() return empty:read { seq_num = 0, wait = 1 } end)
  record_phase_result("log:check_tail", function() return st:check_tail() end)
  record_phase_result("log:list_streams", function() return get_client():basin(BASIN):list_streams() end)
  record_phase_result("log:reader_next", function()
    local reader, err = empty:read_session { seq_num = 0 }
    if not reader then return nil, err end
    return reader:next(1)
  end)
  local function producer_with_pending_record()
    local p, err = st:producer { linger = 1 }
    if not p then return nil, err end
    local t, serr = p:submit("from the log phase")
    if not t then return nil, serr end
    return p, t
  end
  record_phase_result("log:ticket_ack", function()
    local p, t = producer_with_pending_record()
    if not p then return nil, t end
    return t:ack(1)
  end)
  record_phase_result("log:producer_flush", function()
    local p, err = producer_with_pending_record()
    if not p then return nil, err end
    return p:flush(1)
  end)
  -- The same once every record is acked (polled without waiting): flush must still refuse,
  -- not succeed because there happens to be nothing left to wait for.
  record_phase_result("log:producer_flush_acked", function()
    local p, err = st:producer { linger = 0 }
    if not p then return nil, err end
    local t, serr = p:submit("acked before the flush")
    if not t then return nil, serr end
    local deadline = ngx.now() + 5
    while not t:ready() and ngx.now() < deadline do ngx.update_time() end
    if not t:ready() then return nil, { code = "not_acked", message = "no ack within 5 s" } end
    return p:flush(1)
  end)
  dict:set("log:done", "yes")
end

-- init_worker may not yield either: one call from there, read by the spec as init_worker:check_tail.
function M.in_init_worker()
  local c = s2.client(options())
  record_phase_result("init_worker:check_tail", function()
    return c:basin(BASIN):stream("init-worker"):check_tail()
  end)
end

return M
