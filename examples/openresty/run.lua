-- Runs the OpenResty example in real nginx (Debian nginx-light + libnginx-mod-http-lua, the
-- LuaJIT build in build-jit/): 20 concurrent POSTs to /append, each answered with its own
-- seq_num, while /ping keeps answering; then the records are read back. `make examples`
-- runs it (scripts/run-examples.sh), against the server the S2_* variables name.
--
--   make luajit && scripts/with-s2-lite.sh env LUA_PATH='lua/?.lua;lua/?/init.lua;spec/?.lua;;' \
--     LUA_CPATH='build/?.so;;' lua5.4 examples/openresty/run.lua
local s2 = require "s2"
local N = require "support.nginx" -- starts and stops nginx (spec/support/nginx.lua)

local REQUESTS = 20

assert(N.available())
local client = s2.client()
local basin_name = ("ex-openresty-%d-%04x"):format(os.time(), math.random(0, 0xffff))
assert(client:ensure_basin(basin_name, { create_stream_on_append = true }))

local srv = N.start {
  conf = "examples/openresty/nginx.conf",
  env = {
    S2_ACCESS_TOKEN = os.getenv "S2_ACCESS_TOKEN", S2_ACCOUNT_ENDPOINT = os.getenv "S2_ACCOUNT_ENDPOINT",
    S2_BASIN_ENDPOINT = os.getenv "S2_BASIN_ENDPOINT", S2_BASIN = basin_name, S2_STREAM = "requests",
    S2_LINGER = "0.2",
  },
}
local ok, err = pcall(function()
  -- all requests at once (curl in the background), then /ping while they wait for acks
  for i = 1, REQUESTS do
    os.execute(("unset LD_PRELOAD; curl -s -m 20 -o %s/out.%d -d 'request %d' %s >/dev/null 2>&1 &")
      :format(srv.prefix, i, i, srv:url("/append")))
  end
  local pong, code = srv:get("/ping")
  assert(code == 200 and pong == "pong\n", "/ping did not answer while appends waited")
  local seen = {}
  for i = 1, REQUESTS do
    local body
    for _ = 1, 400 do
      body = N.slurp(("%s/out.%d"):format(srv.prefix, i)) or ""
      if body:match("\n$") then break end
      os.execute("sleep 0.05")
    end
    local seq = tonumber(body:match("^(%d+)\n$"))
    assert(seq, ("request %d: %q"):format(i, body))
    assert(not seen[seq], "two requests got seq_num " .. seq)
    seen[seq] = true
  end
  local batch = assert(client:basin(basin_name):stream("requests"):read { seq_num = 0, count = REQUESTS })
  assert(#batch.records == REQUESTS, ("read back %d records"):format(#batch.records))
  assert(srv:errors() == "", "nginx error.log: " .. srv:errors())
end)
srv:stop()
client:close()
if not ok then error(err, 0) end
print(("nginx: %d concurrent requests appended through one worker's producer, each with its own seq_num")
  :format(REQUESTS))
