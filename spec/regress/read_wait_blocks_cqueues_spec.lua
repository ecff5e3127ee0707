-- Regression (issue 13): stream:read{ wait = 1 } on an empty stream inside a cqueues
-- controller held the controller's thread for the whole long poll (curl_easy_perform): a
-- ticker coroutine ran 0 times in 1.0 s. The read now waits on the client's I/O thread and
-- the caller yields to cqueues.
local H = require "helper"
local T = require "support.ticker"

describe("a long-poll read in a cqueues controller (regress)", function()
  it("lets a ticker coroutine run for the whole wait, and returns the empty batch", function()
    local client = H.client()
    local basin = H.new_basin(client, "readwait")
    local stream = H.new_stream(basin, "empty")
    local rep = T.run("cqueues", function(measure)
      local r = measure(stream.read, stream, { seq_num = 0, wait = 1 })
      local batch = r[1]
      if not batch then return "nil, " .. tostring(r[2]) end
      if #batch.records ~= 0 then return #batch.records .. " records from an empty stream" end
    end)
    client:close()
    T.assert_yielded(rep, "stream:read{wait=1}", "cqueues")
  end)
end)
