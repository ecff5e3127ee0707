-- Regression (issue 13): producer:flush inside a cqueues controller waited in C for the acks
-- of what was in flight: a ticker coroutine ran 0 times (0.48 s with 40 MiB in flight). Here
-- 20 records wait for their acks through a link with 150 ms each way. flush now yields to
-- cqueues until everything submitted is acked.
local H = require "helper"
local P = require "support.fault_proxy"
local T = require "support.ticker"

describe("producer:flush in a cqueues controller (regress)", function()
  local proxy
  setup(function()
    proxy = P.start { target = H.endpoint():gsub("^http://", ""), latency_up = 150, latency_down = 150 }
  end)
  teardown(function()
    if proxy then proxy:stop() end
  end)

  it("lets a ticker coroutine run while records are in flight, and every record lands", function()
    local direct = H.client()
    local basin = H.new_basin(direct, "flushblk")
    local client = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint }
    local producer = assert(client:basin(basin.name):stream("s"):producer { linger = 0.001 })
    local tickets = {}
    local rep = T.run("cqueues", function(measure)
      for i = 1, 20 do tickets[i] = assert(producer:submit("record " .. i)) end
      local r = measure(producer.flush, producer, 5)
      if r[1] ~= true then return ("%s, %s"):format(tostring(r[1]), tostring(r[2])) end
      for i, t in ipairs(tickets) do
        if not t:ready() then return ("ticket %d still pending after flush"):format(i) end
      end
    end)
    producer:close(5)
    client:close()
    T.assert_yielded(rep, "producer:flush", "cqueues")
    assert.are.equal(20, assert(basin:stream("s"):check_tail()).seq_num)
  end)
end)
