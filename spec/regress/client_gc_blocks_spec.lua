-- Regression (issue 13): collecting a client with batches in flight ran the whole drain in
-- the finalizer — the collector (and the event loop around it) stood still for up to
-- drain_timeout, and whatever the link could not deliver in that time was dropped. Now the
-- finalizer returns at once and the client's I/O thread goes on draining for drain_timeout.
-- Seen before the fix: the collector returned only after the drain gave up on the stalled
-- link, so the records never landed once the link recovered.
local H = require "helper"
local P = require "support.fault_proxy"

describe("collecting a client with work in flight (regress)", function()
  local proxy
  setup(function()
    proxy = P.start { target = H.endpoint():gsub("^http://", "") }
  end)
  teardown(function()
    if proxy then proxy:stop() end
  end)

  it("returns from the collector at once and keeps draining in the background", function()
    local direct = H.client()
    local basin = H.new_basin(direct, "gcdrain")
    local stream = direct:basin(basin.name):stream("s")
    assert(stream:append({ "first" }))

    local c = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                         drain_timeout = 20, request_timeout = 20 }
    local producer = assert(c:basin(basin.name):stream("s"):producer { linger = 0 })
    assert(producer:submit("warm"):ack(10)) -- the connection is up
    proxy:command("stop_reading on")
    for i = 1, 50 do assert(producer:submit("r" .. i)) end
    producer, c = nil, nil
    collectgarbage()
    collectgarbage()
    -- Back from the collector while the link is still stalled: were the drain in the
    -- finalizer, it would have waited out drain_timeout here and given the records up.
    proxy:command("stop_reading off")

    local reader = assert(stream:read_session { seq_num = 0 })
    local got = 0
    for _ = 1, 52 do
      local record, err = reader:next(15)
      assert(record, "record " .. got .. " did not arrive: " .. tostring(err))
      got = got + 1
    end
    assert.are.equal(52, got)
    reader:close()
    direct:close()
  end)
end)
