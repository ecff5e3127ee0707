-- The module inside real nginx (Debian nginx-light + libnginx-mod-http-lua, LuaJIT build of
-- s2.core in build-jit/): examples/openresty handles /append through a per-worker producer.
-- One worker: N concurrent appends all succeed, and /ping answers while appends wait.
local H = require "helper"

local N = require "support.nginx"
local sh = N.sh

describe("OpenResty", function()
  local srv, prefix, port, basin_name
  lazy_setup(function()
    assert(N.available())
    local client = H.client()
    basin_name = H.unique_name("nginx")
    assert(client:create_basin(basin_name, { create_stream_on_append = true }))
    srv = N.start {
      conf = "examples/openresty/nginx.conf",
      env = { S2_BASIN = basin_name, S2_STREAM = "requests", S2_LINGER = "0.5" },
    }
    prefix, port = srv.prefix, srv.port
  end)

  lazy_teardown(function()
    if srv then srv:stop() end
  end)

  it("appends concurrent requests, and keeps serving while acks are awaited", function()
    local n = 20
    -- 20 appends at once; the producer lingers 0.5 s, so they all wait in the worker
    for i = 1, n do
      os.execute(("unset LD_PRELOAD; curl -s -m 20 -o %s/out.%d -d 'request-%d' http://127.0.0.1:%d/append &")
        :format(prefix, i, i, port))
    end
    -- meanwhile the same (single) worker answers /ping ...
    os.execute("sleep 0.1")
    local pong = sh(("curl -s -m 5 http://127.0.0.1:%d/ping"):format(port))
    assert.are.equal("pong\n", pong)
    -- ... before the appends have finished (they are still waiting for their acks)
    local done_at_ping = 0
    for i = 1, n do
      local f = io.open(("%s/out.%d"):format(prefix, i))
      if f and f:read("a") ~= "" then done_at_ping = done_at_ping + 1 end
      if f then f:close() end
    end
    assert.are.equal(0, done_at_ping)
    -- then every append answers with its own seq_num
    local seen = {}
    for _ = 1, 200 do
      local all = true
      for i = 1, n do
        local f = io.open(("%s/out.%d"):format(prefix, i))
        local body = f and f:read("a") or ""
        if f then f:close() end
        if body == "" then all = false end
      end
      if all then break end
      os.execute("sleep 0.05")
    end
    for i = 1, n do
      local f = assert(io.open(("%s/out.%d"):format(prefix, i)))
      local body = f:read("a")
      f:close()
      local seq = tonumber(body:match("^(%d+)\n$"))
      assert.is_number(seq, "response " .. i .. ": " .. body)
      assert.is_nil(seen[seq])
      seen[seq] = true
    end
    for s = 0, n - 1 do assert.is_true(seen[s], "seq_num " .. s) end
    -- the records are in the stream
    local stream = H.client():basin(basin_name):stream("requests")
    local batch = assert(stream:read { seq_num = 0, count = n })
    assert.are.equal(n, #batch.records)
    assert.are.equal("", srv:errors())
  end)
end)
