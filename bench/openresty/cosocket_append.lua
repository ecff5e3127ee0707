-- Handler (c) of the OpenResty benchmark: what an OpenResty user writes without the s2
-- module. One JSON append (POST {basin endpoint}/streams/{stream}/records, an AppendInput)
-- over ngx.socket.tcp with a keep-alive pool; s2-lite needs the s2-basin header because the
-- endpoint is not a {basin} template. Plain http only, Content-Length answers only.
local cjson = require "cjson.safe"

local M = {}

local ep = assert(os.getenv("S2_BASIN_ENDPOINT"), "S2_BASIN_ENDPOINT")
local host, port, base = ep:match("^http://([^:/]+):?(%d*)(.*)$")
port = tonumber(port) or 80
base = (base == "" or base == "/") and "/v1" or base
local head = table.concat {
  "POST ", base, "/streams/", ngx.escape_uri(os.getenv("BENCH_STREAM")), "/records HTTP/1.1\r\n",
  "Host: ", host, ":", port, "\r\n",
  "Authorization: Bearer ", os.getenv("S2_ACCESS_TOKEN") or "", "\r\n",
  "s2-basin: ", os.getenv("S2_BASIN"), "\r\n",
  "Content-Type: application/json\r\nContent-Length: ",
}

local function append(body)
  local payload = cjson.encode { records = { { body = body } } }
  for _ = 1, 2 do -- a pooled connection the server closed meanwhile: once more on a fresh one
    local sock = ngx.socket.tcp()
    sock:settimeouts(3000, 10000, 10000)
    local ok, err = sock:connect(host, port, { pool_size = 1024 })
    if not ok then return nil, err end
    local reused = sock:getreusedtimes() > 0
    local status, len, line
    ok, err = sock:send { head, #payload, "\r\n\r\n", payload }
    if ok then status, err = sock:receive("*l") end
    line = status
    while line and line ~= "" do
      line, err = sock:receive("*l")
      len = len or tonumber(line and line:lower():match("^content%-length:%s*(%d+)"))
    end
    local answer = line and len and sock:receive(len)
    if answer then
      sock:setkeepalive(60000)
      if not status:match("^HTTP/1%.1 200") then return nil, status .. " " .. answer end
      return cjson.decode(answer)
    end
    sock:close()
    if not reused or status then return nil, err or "no Content-Length" end
  end
end

function M.handle()
  ngx.req.read_body()
  local ack, err = append(ngx.req.get_body_data() or "")
  if not ack then
    ngx.status = 502
    return ngx.say("append: ", tostring(err))
  end
  ngx.say(ack.start.seq_num)
end

return M
