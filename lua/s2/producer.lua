--- Producer: submit single records, get a ticket per record. Batching (linger, record and
-- byte limits), timers and ack fan-out live in the C core; submit is one C call.
local util = require "s2.util"
local core = require "s2.core"
local await = require "s2.await"
local deliver = require("s2.events").deliver
local core_submit = core.methods("producer").submit

local Producer = {}
Producer.__index = Producer

local OPTIONS = util.set {
  "linger", "max_batch_records", "max_batch_bytes", "max_inflight_bytes", "idempotent",
  "fencing_token", "match_seq_num", "retry",
}

local function check_int(F, name, v, lo, hi)
  if not util.is_integer(v) or v < lo or v > hi then
    error(("%s: %s must be an integer from %d to %d, got %s"):format(F, name, lo, hi,
      tostring(v)), 4)
  end
  return v
end

function Producer.open(stream, opts)
  local F = "stream:producer"
  opts = util.check_options(F, opts, OPTIONS, 3)
  local retry = stream.client:_session_retry(F, opts.retry, 3)
  local linger = opts.linger or 0.005
  if type(linger) ~= "number" or linger ~= linger or linger < 0 or linger > 60 then
    error(("%s: linger must be a number of seconds from 0 to 60, got %s")
      :format(F, tostring(linger)), 3)
  end
  if opts.idempotent ~= nil and type(opts.idempotent) ~= "boolean" then
    error(("%s: idempotent must be a boolean, got %s"):format(F, type(opts.idempotent)), 3)
  end
  local max_records = check_int(F, "max_batch_records", opts.max_batch_records or 1000, 1,
    core.MAX_BATCH_RECORDS)
  local max_bytes = check_int(F, "max_batch_bytes", opts.max_batch_bytes or core.MAX_BATCH_BYTES,
    8, core.MAX_BATCH_BYTES)
  local max_inflight = check_int(F, "max_inflight_bytes",
    opts.max_inflight_bytes or 5 * 1024 * 1024, max_bytes, util.MAX_INTEGER)
  if opts.fencing_token ~= nil and (type(opts.fencing_token) ~= "string"
      or #opts.fencing_token > core.MAX_FENCING_TOKEN) then
    error(("%s: fencing_token must be a string of at most %d bytes"):format(F,
      core.MAX_FENCING_TOKEN), 3)
  end
  local match_seq_num = opts.match_seq_num
  if match_seq_num ~= nil then check_int(F, "match_seq_num", match_seq_num, 0, util.MAX_INTEGER) end
  if opts.idempotent and match_seq_num == nil then
    -- The chain starts at the tail; the single-writer rule makes it stay right.
    local tail, err = stream:check_tail()
    if not tail then return nil, err end
    match_seq_num = tail.seq_num
  end
  local client = stream.client
  local handle, err = client.core:producer(stream.basin.name, stream.name, {
    retry = retry,
    linger = linger, max_batch_records = max_records, max_batch_bytes = max_bytes,
    max_inflight_bytes = max_inflight, idempotent = opts.idempotent and true or false,
    match_seq_num = match_seq_num, fencing_token = opts.fencing_token,
    compression = client.compression, http1 = client.force_http1,
    encryption_key = require("s2.stream")._encryption_key(stream),
  })
  if not handle then return nil, err end
  return setmetatable({ _core = handle, stream = stream, closed = false,
    _max_batch_bytes = max_bytes }, Producer)
end

--- Takes one record (a string or a record table); returns its ticket, or nil, err once the
-- producer failed. Waits while max_inflight_bytes are in flight.
-- The core raises misuse itself as "producer:submit: ..." at our caller's position (no pcall
-- on this path: it is the per-record cost).
function Producer:submit(record)
  if self.closed then error("producer:submit: the producer is closed", 2) end
  local core = self._core
  deliver()
  local ticket, err = core_submit(core, record, true)
  if ticket ~= false then return ticket, err end
  -- Full: wait for room the way the current scheduler wants (yield or block).
  return await.submit(self.stream.client.core,
    function() return core_submit(core, record, true) end,
    function() return core_submit(core, record) end)
end

--- Takes an array of records; returns the array of their tickets, in order. Every record is
-- checked before the first goes in: a malformed one (or one over max_batch_bytes) raises
-- naming its index and nothing is submitted. nil, err, tickets once the producer failed
-- part-way: tickets are those of the records that went in (they resolve as usual).
function Producer:submit_many(records)
  local F = "producer:submit_many"
  if self.closed then error(F .. ": the producer is closed", 2) end
  if type(records) ~= "table" then
    error(("%s: records must be an array of records, got %s"):format(F, type(records)), 2)
  end
  local core = self._core
  local n = core:check_records(records, self._max_batch_bytes)
  local tickets = {}
  for i = 1, n do
    local ticket, err = self:submit(records[i])
    if not ticket then return nil, err, tickets end
    tickets[i] = ticket
  end
  return tickets
end

--- Sends the open batch now and waits until everything submitted so far is acked.
-- true, or nil, err with the error that failed the producer.
function Producer:flush(timeout)
  if self.closed then error("producer:flush: the producer is closed", 2) end
  timeout = await.check_timeout("producer:flush", timeout)
  -- Where waiting is not allowed, refuse before sealing: whether the acks happen to be in
  -- already must not decide between "invalid" and success.
  local can, cerr = await.can_wait()
  if not can then return nil, cerr end
  local last, err = self._core:flush_start()
  if not last then return nil, err end
  if last == true then return true end -- nothing was ever sealed
  local ack, aerr = last:ack(timeout)
  if ack then return true end
  if aerr.code == "timeout" and not last:ready() then
    return nil, require("s2.error").new("timeout",
      ("flush: not everything was acked within %.3f s"):format(timeout), { retryable = true })
  end
  return nil, aerr
end

--- Flushes (without waiting out the linger), then ends the session. true | nil, err.
function Producer:close(timeout)
  self.closed = true
  return await.close_session(self.stream.client.core, self._core, timeout, "producer:close")
end

--- Counters: records_submitted, batches_submitted, batches_acked, inflight_bytes, ...
function Producer:stats()
  deliver()
  return self._core:stats()
end

-- For `local x <close>`: Lua passes the error being raised (if any) as the second
-- argument, which is not a timeout.
function Producer:__close()
  return self:close()
end

return Producer
