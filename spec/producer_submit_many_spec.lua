-- producer:submit_many against s2-lite, and the record tickets it (and submit) returns: one
-- small userdata per record sharing its batch's ticket (issue 15).
local H = require "helper"

local must = H.must

describe("producer:submit_many", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "submitmany")
  end)

  it("submits an array in order and returns one ticket per record", function()
    local stream = H.new_stream(basin, "order")
    local producer <close> = must(stream:producer { linger = 0.005, max_batch_records = 7 })
    must(producer:submit("first"))
    local recs = {}
    for i = 1, 50 do
      recs[i] = i % 3 == 0 and { body = "r" .. i, headers = { { "k", tostring(i) } } } or "r" .. i
    end
    local tickets = must(producer:submit_many(recs))
    assert.are.equal(50, #tickets)
    for i, t in ipairs(tickets) do assert.are.equal(i, t:seq_num()) end
    local ack = must(tickets[50]:ack())
    assert.are.equal(50, ack.seq_num)
    assert.are.equal(ack.seq_num, ack.batch.start.seq_num + (50 - ack.batch.start.seq_num))
    assert.is_true(ack.batch["end"].seq_num > 50)
    assert.is_true(must(producer:close()))
    local got = must(stream:read { seq_num = 1, count = 50 }).records
    assert.are.equal(50, #got)
    for i, r in ipairs(got) do
      assert.are.equal("r" .. i, r.body)
      if i % 3 == 0 then assert.are.same({ { "k", tostring(i) } }, r.headers) end
    end
    assert.are.equal(51, must(stream:check_tail()).seq_num)
  end)

  it("raises naming the bad record's index and submits nothing", function()
    local stream = H.new_stream(basin, "bad")
    local producer <close> = must(stream:producer { linger = 0.005, max_batch_bytes = 1000 })
    must(producer:submit("kept"))
    for _, case in ipairs {
      { { "a", "b", { body = 5 } }, "records%[3%]%.body" },
      { { "a", { bogus = 1 } }, "records%[2%]: unknown field 'bogus'" },
      { { "a", 42 }, "records%[2%]: expected a string or a record table" },
      { { "a", ("x"):rep(993) }, "records%[2%]: 1001 metered bytes is over max_batch_bytes %(1000%)" },
    } do
      local ok, msg = pcall(function() local r = producer:submit_many(case[1]); return r end)
      assert.is_false(ok)
      assert.matches("producer:submit_many: " .. case[2], msg)
      assert.matches("producer_submit_many_spec.lua:%d+:", msg) -- the caller's position
    end
    assert.has_error(function() producer:submit_many("a") end,
      "producer:submit_many: records must be an array of records, got string")
    assert.are.equal(1, producer:stats().records_submitted) -- only "kept"
    assert.is_true(must(producer:close()))
    assert.are.equal(1, must(stream:check_tail()).seq_num)
  end)

  it("returns nil, err, tickets once the producer failed", function()
    local stream = H.new_stream(basin, "failed")
    -- a chain that starts at 7 on an empty stream: the first batch fails
    local producer = must(stream:producer { linger = 0.005, match_seq_num = 7 })
    local t = must(producer:submit("x"))
    local ok, err = t:ack()
    assert.is_nil(ok)
    assert.are.equal("seq_num_mismatch", err.code)
    local tickets, err2, partial = producer:submit_many { "a", "b" }
    assert.is_nil(tickets)
    assert.are.equal("seq_num_mismatch", err2.code)
    assert.are.same({}, partial)
    producer:close()
    assert.has_error(function() producer:submit_many { "a" } end,
      "producer:submit_many: the producer is closed")
  end)
end)

describe("record tickets", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "recticket")
  end)

  it("keep their batch and producer alive after everything else is dropped", function()
    local stream = H.new_stream(basin, "alive")
    local tickets
    do
      local producer = must(stream:producer { linger = 0.2 })
      tickets = must(producer:submit_many { "a", "b", "c" })
    end
    collectgarbage()
    collectgarbage()
    for i, t in ipairs(tickets) do assert.are.equal(i - 1, must(t:seq_num())) end
    assert.are.equal(1, must(tickets[2]:ack()).seq_num)
  end)

  it("share one batch yet each has its own index; a closed one raises", function()
    local stream = H.new_stream(basin, "closed")
    local producer <close> = must(stream:producer { linger = 0.005 })
    local t1 = must(producer:submit("one"))
    local t2 = must(producer:submit("two"))
    do
      local t3 <close> = must(producer:submit("three"))
      assert.are.equal(2, must(t3:seq_num()))
      assert.is_true(t3:ready())
      assert.are.equal(0, t3:timeout())
      t1 = t3
    end
    assert.has_error(function() t1:result() end, "ticket is closed")
    assert.are.equal(1, must(t2:seq_num()))
    assert.are.equal(1, t2:result_seq_num())
    local ack = must(t2:result())
    assert.are.equal(1, ack.seq_num)
    assert.are.same({ start = ack.batch.start, ["end"] = ack.batch["end"], tail = ack.batch.tail },
      ack.batch)
    assert.are.equal(0, ack.batch.start.seq_num)
    assert.are.equal(3, ack.batch["end"].seq_num)
  end)
end)
