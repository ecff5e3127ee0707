--- Read session: follows a stream over S2S, resuming after failures without duplicates or
-- gaps. Records come from the C core one at a time; heartbeats are consumed there.
local util = require "s2.util"
local await = require "s2.await"
local errors = require "s2.error"
local deliver = require("s2.events").deliver

local Reader = {}
Reader.__index = Reader

local OPTIONS = util.set {
  "seq_num", "timestamp", "tail_offset", "clamp", "count", "bytes", "until", "wait",
  "ignore_command_records",
}

function Reader.open(stream, opts)
  local F = "stream:read_session"
  opts = util.check_options(F, opts, OPTIONS, 3)
  local client = stream.client
  local copy = {}
  for k, v in pairs(opts) do copy[k] = v end
  copy.compression = client.compression
  copy.http1 = client.force_http1
  copy.encryption_key = require("s2.stream")._encryption_key(stream)
  local ok, handle, err = pcall(client.core.read_session, client.core, stream.basin.name,
    stream.name, copy)
  if not ok then error(F .. ": " .. tostring(handle), 3) end
  if not handle then return nil, err end
  return setmetatable({ _core = handle, stream = stream, closed = false }, Reader)
end

--- The next record, waiting up to timeout seconds (nil: until one comes).
-- record | nil (a limit was reached: count, bytes, until, wait) | nil, err
function Reader:next(timeout)
  if self.closed then error("reader:next: the read session is closed", 2) end
  timeout = await.check_timeout("reader:next", timeout)
  local h = self._core
  local deadline = timeout and require("s2.core").now() + timeout
  while true do
    local left = deadline and math.max(0, deadline - require("s2.core").now())
    local ok, err = await.wait(h, left)
    if ok == "block" then
      local record, rerr = h:next(left)
      deliver()
      return record, rerr
    end
    if not ok then
      if err.code == "timeout" then
        return nil, errors.new("timeout", ("no record within %.3f s"):format(timeout),
          { retryable = true })
      end
      return nil, err
    end
    local record, rerr = h:next(0)
    -- A timeout here: only command records were there (ignore_command_records): wait on.
    if record ~= nil or rerr == nil or rerr.code ~= "timeout" then return record, rerr end
    if deadline and require("s2.core").now() >= deadline then return record, rerr end
  end
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

--- True once the session has reached the tail (then it waits for new records).
function Reader:is_caught_up()
  if self.closed then return false end
  return self._core:status().caught_up
end

--- The last tail the server reported ({ seq_num, timestamp }), or nil.
function Reader:last_tail()
  if self.closed then return nil end
  return self._core:status().tail
end

--- Counters and state: caught_up, tail, ended, delivered, reconnects.
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
