-- Regression: an HTTP/1.1 (server-sent events) read session whose caller drained a full
-- queue stalled for good.
--
-- The SSE worker stops taking bytes while more than 8 MiB of records wait for the caller,
-- and waits on the runtime's condition for room. The caller taking records freed the room
-- but broadcast nothing, so once the caller had drained what was buffered it waited on the
-- same condition as the worker: neither woke (next() without a timeout hung; with one, it
-- timed out though the server had records to send). Found by an adversarial review of
-- issue 15's loop change. Here: 12 MiB of records, read over HTTP/1.1, the queue let fill
-- up before anything is taken.
local H = require "helper"

local must = H.must

describe("regression: an SSE read session with a full queue", function()
  it("goes on reading once the caller drains it", function()
    local direct = H.client()
    local basin = H.new_basin(direct, "sseroom")
    local name = H.unique_name("s")
    local n, size = 1200, 10000 -- 12 MB, over the 8 MiB the SSE worker buffers
    local s = must(basin:stream(name):append_session())
    for b = 0, n / 100 - 1 do
      local batch = {}
      for j = 1, 100 do batch[j] = ("%06d"):format(b * 100 + j) .. ("q"):rep(size - 6) end
      must(s:submit(batch))
    end
    must(s:close(30))

    local c = H.client { force_http1 = true }
    local r = must(c:basin(basin.name):stream(name):read_session { seq_num = 0, count = n })
    -- the worker fills the queue to its limit and stops there
    assert(H.eventually(function() return r:status().buffered_bytes > 8 * 1024 * 1024 end, 30),
      "the queue never filled")
    local got = 0
    while true do
      local list, err = r:next_batch(100, 15)
      if list == nil then
        assert.is_nil(err, "after " .. got .. " records: " .. tostring(err))
        break
      end
      for _, rec in ipairs(list) do
        assert.are.equal(got, rec.seq_num)
        assert.are.equal(("%06d"):format(got + 1), rec.body:sub(1, 6))
        got = got + 1
      end
    end
    assert.are.equal(n, got)
    r:close()
    c:close()
  end)
end)
