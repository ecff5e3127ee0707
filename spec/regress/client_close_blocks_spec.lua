-- Regression (issue 13): client:close joined the I/O thread on the caller's thread. Over the
-- HTTP/1.1 fallback the batch being posted finishes its attempt first (so it gets its real
-- outcome, docs/api.md): through a link with 150 ms each way, a ticker coroutine in the same
-- cqueues controller ran 0 times while close waited for that round trip. client:close now
-- waits the way the caller's scheduler wants (it yields to cqueues).
local H = require "helper"
local P = require "support.fault_proxy"
local T = require "support.ticker"

describe("client:close with a batch in flight, in a cqueues controller (regress)", function()
  local proxy
  setup(function()
    proxy = P.start { target = H.endpoint():gsub("^http://", ""), latency_up = 150, latency_down = 150 }
  end)
  teardown(function()
    if proxy then proxy:stop() end
  end)

  it("lets a ticker coroutine run while it waits, and the batch in flight is acked", function()
    local direct = H.client()
    local basin = H.new_basin(direct, "closeblk")
    local client = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                              force_http1 = true }
    local session = assert(client:basin(basin.name):stream("s"):append_session())
    local conns = proxy:stats().conns
    local ticket = assert(session:submit({ "in flight" }))
    -- the session's worker connects once it took the batch: from then on it is in flight
    local deadline = require("s2.core").now() + 5
    while proxy:stats().conns == conns do
      assert(require("s2.core").now() < deadline, "the HTTP/1.1 worker never connected")
    end
    local rep = T.run("cqueues", function(measure)
      measure(client.close, client)
      if not ticket:ready() then return "the batch in flight is still pending after close" end
      local ack, err = ticket:ack(0)
      if not ack then return "the batch in flight: nil, " .. tostring(err) end
    end)
    T.assert_yielded(rep, "client:close", "cqueues")
    assert.are.equal(1, assert(basin:stream("s"):check_tail()).seq_num)
  end)
end)
