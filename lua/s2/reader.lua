--- Read session: follows a stream over S2S, resuming after failures without duplicates or
-- gaps. Records come from the C core one at a time; heartbeats are consumed there.
local util = require "s2.util"
local await = require "s2.await"
local errors = require "s2.error"
local deliver = require("s2.events").deliver

local Reader = {}
Reader.__index = Reader

-- Who takes records (see wait_caught_up): the coroutine of the last next(); the main thread
-- is this token (LuaJIT's coroutine.running() gives nil there).
local MAIN = {}
local function current() return coroutine.running() or MAIN end

local OPTIONS = util.set {
  "seq_num", "timestamp", "tail_offset", "clamp", "count", "bytes", "until", "wait",
  "ignore_command_records", "retry",
}

function Reader.open(stream, opts)
  local F = "stream:read_session"
  opts = util.check_options(F, opts, OPTIONS, 3)
  local client = stream.client
  local copy = {}
  for k, v in pairs(opts) do copy[k] = v end
  copy.retry = client:_session_retry(F, opts.retry, 3)
  copy.compression = client.compression
  copy.http1 = client.force_http1
  copy.encryption_key = require("s2.stream")._encryption_key(stream)
  local ok, handle, err = pcall(client.core.read_session, client.core, stream.basin.name,
    stream.name, copy)
  if not ok then error(F .. ": " .. tostring(handle), 3) end
  if not handle then return nil, err end
  return setmetatable({ _core = handle, stream = stream, closed = false }, Reader)
end

local core = require "s2.core"
local now = core.now

local function timeout_error(timeout)
  return errors.new("timeout", ("no record within %.3f s"):format(timeout), { retryable = true })
end

-- Waits (the scheduler's way, see s2.await) until take(max) gives something other than
-- false, up to timeout seconds; in a plain script blocks in C through blocking(left).
local function wait_take(self, max, timeout, blocking, columns)
  local h = self._core
  local deadline = timeout and now() + timeout
  while true do
    local left = deadline and math.max(0, deadline - now())
    local ok, err = await.wait(h, left)
    if ok == "block" then
      local got, rerr = blocking(h, left)
      deliver()
      return got, rerr
    end
    if not ok then
      if err.code == "timeout" then return nil, timeout_error(timeout) end
      return nil, err
    end
    local got, rerr = h:take(max, columns)
    -- false here: only command records were there (ignore_command_records): wait on.
    if got ~= false then return got, rerr end
    if deadline and now() >= deadline then return nil, timeout_error(timeout) end
  end
end

local function block_next(h, left) return h:next(left) end

--- The next record, waiting up to timeout seconds (nil: until one comes).
-- record | nil (a limit was reached: count, bytes, until, wait) | nil, err
function Reader:next(timeout)
  if self.closed then error("reader:next: the read session is closed", 2) end
  if timeout ~= nil then timeout = await.check_timeout("reader:next", timeout) end
  self._consumer = current()
  -- A record already buffered: one call into C, no wait.
  local record, err = self._core:take()
  if record ~= false then
    deliver()
    return record, err
  end
  return wait_take(self, nil, timeout, block_next)
end

local function check_max(fn, max)
  if max == nil then return 1000 end
  if type(max) ~= "number" or max < 1 or max ~= math.floor(max) or max > 1e15 then
    error(fn .. ": max must be an integer >= 1, got " .. tostring(max), 3)
  end
  return max
end

--- Up to max records (default 1000) in one call: a list of those buffered now, waiting up
-- to timeout seconds (nil: until one comes) only while none is. The same records, in the
-- same order, as next() would return one at a time; records it returns count as handed out
-- (is_caught_up, status().delivered). A failure after some records is returned by the
-- next call.
-- list (1..max records) | nil (a limit was reached) | nil, err
function Reader:next_batch(max, timeout)
  if self.closed then error("reader:next_batch: the read session is closed", 2) end
  max = check_max("reader:next_batch", max)
  if timeout ~= nil then timeout = await.check_timeout("reader:next_batch", timeout) end
  self._consumer = current()
  local list, err = self._core:take(max)
  if list ~= false then
    deliver()
    return list, err
  end
  return wait_take(self, max, timeout, function(h, left) return h:next_batch(max, left) end)
end

--- next_batch's records as columns: { n = count, seq_nums = {...}, timestamps = {...},
-- bodies = {...}, headers = {...} }, record i being seq_nums[i], timestamps[i], bodies[i]
-- and headers[i] (nil when it has none). No table per record: the cheapest way to drain
-- small records.
-- columns | nil (a limit was reached) | nil, err
function Reader:next_columns(max, timeout)
  if self.closed then error("reader:next_columns: the read session is closed", 2) end
  max = check_max("reader:next_columns", max)
  if timeout ~= nil then timeout = await.check_timeout("reader:next_columns", timeout) end
  self._consumer = current()
  local cols, err = self._core:take(max, true)
  if cols ~= false then
    deliver()
    return cols, err
  end
  return wait_take(self, max, timeout, function(h, left) return h:next_columns(max, left) end,
    true)
end

--- Iterator over the records, until a limit is reached or the session is closed.
-- A failure is raised (the error object), since a for loop has no other way to report it.
function Reader:records()
  return function()
    if self.closed then return nil end
    local record, err = self:next()
    if record == nil and err ~= nil then error(err, 2) end
    return record
  end
end

--- True once every record up to the tail the server last reported has been handed out by
-- next() (or records()), and nothing came since: no record, no reconnect. Records received
-- but not taken yet keep it false; a reconnect resets it until the new connection reports
-- a tail; a failed session is not caught up.
function Reader:is_caught_up()
  if self.closed then return false end
  return self._core:status().caught_up
end

--- Waits until is_caught_up() (at once when it is), up to timeout seconds (nil: no limit).
-- It reads nothing itself: records are handed out only by next(). So when the caller is
-- the one taking records (it called next() last, nobody has yet, or it is a plain script,
-- which blocks its thread) and records are buffered, it fails at once with code
-- "records_pending" instead of waiting for a catch-up that could never come. Another
-- coroutine (cqueues, copas, luv, OpenResty) taking the records lets it wait them out.
-- true | nil, err (code "timeout"; "records_pending"; "closed" when the session was closed
-- or ended by a limit short of the tail; the session's error when it failed)
function Reader:wait_caught_up(timeout)
  if self.closed then error("reader:wait_caught_up: the read session is closed", 2) end
  timeout = await.check_timeout("reader:wait_caught_up", timeout)
  local h = self._core
  local me = self._consumer == nil or self._consumer == current()
  local waitable = {
    ready = function() return h:caught_up_poll(me) ~= false end,
    pollfd = function() return h:caught_up_fd(me) end,
    events = function() return "r" end,
    timeout = function() return nil end,
    notice = function() return h:caught_up_notice(me) end,
  }
  local deadline = timeout and now() + timeout
  while true do
    local left = deadline and math.max(0, deadline - now())
    local ok, err = await.wait(waitable, left)
    if ok == "block" then return h:wait_caught_up(left) end
    if not ok then
      if err.code == "timeout" then
        return nil, errors.new("timeout", ("not caught up within %.3f s"):format(timeout),
          { retryable = true })
      end
      return nil, err
    end
    local done, perr = h:caught_up_poll(me)
    if done then return true end
    if done == nil then return nil, perr end
    -- (false: it fell behind again between the wake and this look: wait on)
  end
end

--- The last tail the server reported ({ seq_num, timestamp }), or nil.
function Reader:last_tail()
  if self.closed then return nil end
  return self._core:status().tail
end

--- Counters and state: caught_up (as is_caught_up), tail, ended, delivered, reconnects.
function Reader:status()
  deliver()
  return self._core:status()
end

function Reader:close()
  if not self.closed then
    self.closed = true
    self._core:close()
  end
  deliver()
  return true
end
Reader.__close = Reader.close

return Reader
