-- Regression (issue 13): reader:next on a follow reader inside a cqueues controller blocked
-- in C (s2_read_session_next) until a record came: a ticker coroutine ran 0 times (0.8 s).
-- Here the record is submitted by the ticker itself, on its first tick while next() waits:
-- a blocked next() never sees it and ends by its timeout. reader:next now yields to cqueues.
local H = require "helper"
local T = require "support.ticker"

describe("reader:next in a cqueues controller (regress)", function()
  it("lets a ticker coroutine run while it waits, and returns the record that came", function()
    local client = H.client()
    local basin = H.new_basin(client, "readernext")
    local stream = H.new_stream(basin, "follow")
    local trigger = assert(stream:producer { linger = 0 })
    local reader = assert(stream:read_session { seq_num = 0, count = 1, wait = 2 })
    local sent = false
    local rep = T.run("cqueues", function(measure)
      local r = measure(reader.next, reader, 3)
      local rec = r[1]
      if not rec and r[2] == nil then return "no record: the session's wait ran out before one came" end
      if not rec then return "nil, " .. tostring(r[2]) end
      if rec.body ~= "later" or rec.seq_num ~= 0 then
        return ("record %q at %d, expected \"later\" at 0"):format(rec.body, rec.seq_num)
      end
    end, function()
      if not sent then
        sent = true
        assert(trigger:submit("later"))
      end
    end)
    reader:close()
    trigger:close(5)
    client:close()
    T.assert_yielded(rep, "reader:next", "cqueues")
  end)
end)
