-- Regression (issue 13): stream:append inside a cqueues controller ran curl_easy_perform on
-- the controller's thread: through a link with 150 ms each way, a ticker coroutine ran 0
-- times while the append waited (0.31 s). Unary calls now run on the client's I/O thread and
-- the caller yields to cqueues until the answer is in.
local H = require "helper"
local P = require "support.fault_proxy"
local T = require "support.ticker"

describe("stream:append in a cqueues controller (regress)", function()
  local proxy
  setup(function()
    proxy = P.start { target = H.endpoint():gsub("^http://", ""), latency_up = 150, latency_down = 150 }
  end)
  teardown(function()
    if proxy then proxy:stop() end
  end)

  it("lets a ticker coroutine run while it waits, and returns the ack", function()
    local basin = H.new_basin(H.client(), "unaryblk")
    local client = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint }
    local stream = client:basin(basin.name):stream("s")
    local rep = T.run("cqueues", function(measure)
      local r = measure(stream.append, stream, { "one", "two" })
      local ack = r[1]
      if not ack then return "nil, " .. tostring(r[2]) end
      if ack.start.seq_num ~= 0 or ack["end"].seq_num ~= 2 then
        return ("ack covers %d..%d, expected 0..2"):format(ack.start.seq_num, ack["end"].seq_num)
      end
    end)
    client:close()
    T.assert_yielded(rep, "stream:append", "cqueues")
  end)
end)
