-- OpenResty handler: appends the request body to a stream through a per-worker producer and
-- answers with the record's seq_num. Waiting for the ack yields to nginx (ngx.sleep under
-- the hood), so the worker keeps serving other requests meanwhile.
--
--   location = /append { content_by_lua_block { require("append_handler").handle() } }
--
-- Configuration from the environment (nginx.conf: `env S2_...;`): S2_ACCESS_TOKEN,
-- S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT, S2_BASIN, S2_STREAM.
local s2 = require "s2"

local M = {}

-- One client and producer per worker, made on the first request in that worker (after the
-- fork: the client's I/O thread belongs to the worker process).
local producer

local function get_producer()
  if producer then return producer end
  local client = s2.client()
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
  local ticket, serr = p:submit(body)
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
