-- OpenResty handler: appends the request body to a stream through a per-worker producer and
-- answers with the record's seq_num (docs/hosts/openresty.md). Waiting for the ack yields the
-- request's coroutine (woken by the core's notice), so the worker keeps serving other
-- requests meanwhile.
--
--   init_worker_by_lua_block { require("append_handler").init_worker() }
--   location = /append { content_by_lua_block { require("append_handler").handle() } }
--
-- Configuration from the environment (nginx.conf: `env S2_...;`): S2_ACCESS_TOKEN,
-- S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT, S2_BASIN, S2_STREAM, S2_LINGER.
local s2 = require "s2"

local M = {}

-- One client and one producer per worker. The client is made in init_worker (after the
-- fork; no I/O, no thread yet: a bad option shows up in error.log at start-up); the producer
-- on the first request that needs it (opening one starts the worker's I/O thread).
local client, producer

function M.init_worker()
  client = s2.client()
end

local function get_producer()
  if producer then return producer end
  client = client or s2.client() -- also works without the init_worker line
  local stream = client:basin(os.getenv("S2_BASIN")):stream(os.getenv("S2_STREAM") or "requests")
  local linger = tonumber(os.getenv("S2_LINGER") or "") or 0.005
  local p, err = stream:producer { linger = linger }
  if not p then return nil, err end
  producer = p
  return p
end

function M.handle()
  ngx.req.read_body()
  local body = ngx.req.get_body_data() or ""
  local p, err = get_producer()
  if not p then
    ngx.status = 503
    ngx.say("producer: ", tostring(err))
    return
  end
  local ticket, serr = p:submit(body) -- yields only when max_inflight_bytes are in flight
  if not ticket then
    ngx.status = 503
    ngx.say("submit: ", tostring(serr))
    return
  end
  local ack, aerr = ticket:ack(10) -- yields; never blocks the worker
  if not ack then
    ngx.status = aerr.retryable and 503 or 500
    ngx.say("append: ", tostring(aerr))
    return
  end
  ngx.say(ack.seq_num)
end

return M
