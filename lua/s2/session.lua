--- Append session: batches pipelined over one S2S request stream, acked in order.
-- The work happens in the C core's I/O thread; this wrapper checks arguments and keeps
-- the Lua-side state (closed or not).
local util = require "s2.util"
local deliver = require("s2.events").deliver

local Session = {}
Session.__index = Session

local SUBMIT_OPTIONS = util.set { "match_seq_num", "fencing_token" }
local OPTIONS = util.set { "max_inflight_bytes", "max_inflight_batches", "retry" }
local MIN_INFLIGHT_BYTES = 1024 * 1024

function Session.open(stream, opts)
  local F = "stream:append_session"
  opts = util.check_options(F, opts, OPTIONS, 3)
  local max_bytes = opts.max_inflight_bytes or 5 * 1024 * 1024
  if not util.is_integer(max_bytes) or max_bytes < MIN_INFLIGHT_BYTES then
    error(("%s: max_inflight_bytes must be an integer of at least %d (1 MiB), got %s")
      :format(F, MIN_INFLIGHT_BYTES, tostring(max_bytes)), 3)
  end
  local max_batches = opts.max_inflight_batches
  if max_batches ~= nil and (not util.is_integer(max_batches) or max_batches < 1) then
    error(("%s: max_inflight_batches must be a positive integer, got %s")
      :format(F, tostring(max_batches)), 3)
  end
  local client = stream.client
  local retry = client:_session_retry(F, opts.retry, 3)
  local core, err = client.core:append_session(stream.basin.name, stream.name, {
    retry = retry,
    max_inflight_bytes = max_bytes,
    max_inflight_batches = max_batches,
    compression = client.compression,
    http1 = client.force_http1,
    encryption_key = require("s2.stream")._encryption_key(stream),
  })
  if not core then return nil, err end
  return setmetatable({ _core = core, stream = stream, closed = false }, Session)
end

--- Queues one batch; waits while max_inflight_bytes / max_inflight_batches are reached.
-- Returns a ticket (ticket:ack() gives the batch's ack) or nil, err once the session failed.
function Session:submit(records, opts)
  if self.closed then error("session:submit: the session is closed", 2) end
  if type(records) ~= "table" then
    error(("session:submit: records must be a table (an array of records), got %s")
      :format(type(records)), 2)
  end
  if opts ~= nil then util.check_options("session:submit", opts, SUBMIT_OPTIONS, 2) end
  local h = self._core
  deliver()
  local ok, ticket, err = pcall(h.submit, h, records, opts, true)
  if not ok then error("session:submit: " .. tostring(ticket), 2) end
  if ticket ~= false then return ticket, err end
  -- Full: wait for room the way the current scheduler wants (yield or block).
  return require("s2.await").submit(self.stream.client.core,
    function() return h:submit(records, opts, true) end,
    function() return h:submit(records, opts) end)
end

--- Waits for every submitted batch to be acked, then ends the session.
-- Returns true, or nil, err with the error that failed the session.
function Session:close(timeout)
  self.closed = true
  return require("s2.await").close_session(self.stream.client.core, self._core, timeout,
    "session:close")
end

--- Counters: inflight_bytes, inflight_batches, peak_*, batches_submitted/acked/resent,
-- reconnects.
function Session:stats()
  deliver()
  return self._core:stats()
end

-- For `local x <close>`: Lua passes the error being raised (if any) as the second
-- argument, which is not a timeout.
function Session:__close()
  return self:close()
end

return Session
