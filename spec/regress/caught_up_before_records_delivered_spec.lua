-- Regression (issue 14): reader:is_caught_up() was true before the records were delivered.
--
-- The flag was the I/O thread's: set when the tail heartbeat arrived, although the records
-- before it were still in the reader's buffer, not yet handed to the caller by next(). A
-- loop "read until caught up, then serve" stopped early and lost the buffered records.
-- Now it is true only once every record up to the reported tail was taken (the official
-- SDKs' is_caught_up), and a reconnect resets it until the new connection reports a tail.
local H = require "helper"

local must = H.must

describe("regression: caught up reported before the records were delivered", function()
  it("stays false while received records wait in the buffer", function()
    local basin = H.new_basin(H.client(), "cubefore")
    local stream = H.new_stream(basin, "s")
    local n = 50
    local p = must(stream:producer())
    for i = 1, n do must(p:submit("r" .. i)) end
    must(p:close())
    local reader <close> = must(stream:read_session { seq_num = 0 })
    -- wait (bounded) until the I/O thread has the tail: all n records are buffered by then
    local core = require "s2.core"
    local deadline = core.now() + 10
    while core.now() < deadline do
      local t = reader:status().tail
      if t and t.seq_num == n then break end
      os.execute("sleep 0.01")
    end
    assert.are.equal(n, reader:status().tail.seq_num)
    assert.is_false(reader:is_caught_up(), "caught up with all " .. n .. " records undelivered")
    -- the loop the bug broke: read until caught up
    local got = 0
    while not reader:is_caught_up() do
      must(reader:next(5))
      got = got + 1
    end
    assert.are.equal(n, got)
  end)
end)
