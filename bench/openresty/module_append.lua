-- Handlers (a) and (b) of the OpenResty benchmark (bench/openresty/run.py): each request
-- appends its body as one record to $BENCH_STREAM in basin $S2_BASIN with the s2 module.
-- Endpoints and token come from the environment (S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT,
-- S2_ACCESS_TOKEN), as s2.client() reads them.
local s2 = require "s2"

local M = {}

-- One client, stream and producer per worker, made by its first request (after the fork:
-- the client's I/O thread belongs to the worker process).
local stream, producer

local function get_stream()
  if not stream then
    stream = s2.client():basin(os.getenv("S2_BASIN")):stream(os.getenv("BENCH_STREAM"))
  end
  return stream
end

local function fail(what, err)
  ngx.status = (type(err) == "table" and err.retryable) and 503 or 500
  ngx.say(what, ": ", tostring(err))
end

local function body()
  ngx.req.read_body()
  return ngx.req.get_body_data() or ""
end

-- (a) one unary append per request
function M.unary()
  local ack, err = get_stream():append({ body() })
  if not ack then return fail("append", err) end
  ngx.say(ack.start.seq_num)
end

-- (b) the worker's producer; the handler awaits its record's ticket
function M.producer()
  local record = body()
  if not producer then
    local p, err = get_stream():producer { linger = tonumber(os.getenv("BENCH_LINGER") or "") or 0.005 }
    if not p then return fail("producer", err) end
    producer = p
  end
  local ticket, err = producer:submit(record)
  if not ticket then return fail("submit", err) end
  local ack, aerr = ticket:ack(10)
  if not ack then return fail("ack", aerr) end
  ngx.say(ack.seq_num)
end

return M
