-- What happens to a producer's pending tickets when the producer is dropped, collected or
-- outlived by its tickets, and when the client goes first (docs/api.md, Producer, Lifetime).
local H = require "helper"
local s2 = require "s2"

local must = H.must

local function bodies(stream)
  local batch = must(stream:read { seq_num = 0, count = 1000 })
  local out = {}
  for i, r in ipairs(batch.records) do out[i] = r.body end
  return out
end

describe("producer lifetime", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "plife")
  end)

  it("is kept alive by its tickets: held tickets resolve after the producer was dropped", function()
    local stream = H.new_stream(basin, "held")
    local tickets = {}
    do
      local p = must(stream:producer { linger = 0.2 })
      for i = 1, 5 do tickets[i] = must(p:submit("r" .. i)) end
    end
    collectgarbage()
    collectgarbage()
    for i = 1, 5 do
      local ack = must(tickets[i]:ack(10))
      assert.are.equal(i - 1, ack.seq_num)
    end
    assert.are.same({ "r1", "r2", "r3", "r4", "r5" }, bodies(stream))
  end)

  it("fails held tickets with the error that failed a collected producer", function()
    local stream = H.new_stream(basin, "fenced")
    must(stream:append { s2.fence("mine") })
    local tickets = {}
    do
      local p = must(stream:producer { linger = 0.2, fencing_token = "not-mine" })
      for i = 1, 3 do tickets[i] = must(p:submit("x" .. i)) end
    end
    collectgarbage()
    collectgarbage()
    for i = 1, 3 do
      local ack, err = tickets[i]:ack(10)
      assert.is_nil(ack)
      assert.are.equal("fencing_token_mismatch", err.code)
    end
    assert.are.equal(1, must(stream:check_tail()).seq_num) -- only the fence
  end)

  it("sends the open batch at once when collected with no ticket held", function()
    local stream = H.new_stream(basin, "unheld")
    do
      -- a 60 s linger: only the collection of the producer can send this batch in time
      local p = must(stream:producer { linger = 60 })
      for i = 1, 5 do must(p:submit("u" .. i)) end
    end
    collectgarbage()
    collectgarbage()
    local reader = must(stream:read_session { seq_num = 0, count = 5, wait = 10 })
    local got = {}
    for i = 1, 5 do got[i] = must(reader:next(10)).body end
    reader:close()
    assert.are.same({ "u1", "u2", "u3", "u4", "u5" }, got)
  end)

  it("keeps draining after close(timeout) ran out, and tickets still resolve", function()
    local stream = H.new_stream(basin, "bg")
    local p = must(stream:producer { linger = 60 })
    local tickets = {}
    for i = 1, 200 do tickets[i] = must(p:submit(("%03d"):format(i))) end
    -- 0: no wait at all, so the close cannot have seen the acks
    local ok, err = p:close(0)
    if ok == nil then assert.are.equal("timeout", err.code) end
    assert.has_error(function() p:submit("after close") end)
    for i = 1, 200 do assert.are.equal(i - 1, must(tickets[i]:seq_num(10))) end
    assert.are.equal(200, #bodies(stream))
  end)

  it("fails pending tickets with closed when the client is closed first", function()
    local c = H.client()
    local stream = c:basin(basin.name):stream(H.new_stream(basin, "cclose").name)
    local p = must(stream:producer { linger = 60 })
    local tickets = {}
    for i = 1, 3 do tickets[i] = must(p:submit("c" .. i)) end
    c:close()
    for i = 1, 3 do
      local ack, err = tickets[i]:ack(10)
      assert.is_nil(ack)
      assert.are.equal("closed", err.code)
    end
    local t, err = p:submit("late")
    assert.is_nil(t)
    assert.are.equal("closed", err.code)
    -- the linger never ran out and close does not flush: nothing was written
    local same = client:basin(basin.name):stream(stream.name)
    assert.are.equal(0, must(same:check_tail()).seq_num)
  end)
end)
