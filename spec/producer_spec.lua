-- The producer against s2-lite: per-record tickets, batching by linger / records / bytes,
-- flush and close, failure propagation, chained match_seq_num.
local H = require "helper"
local s2 = require "s2"

local must = H.must

describe("producer", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "producer")
  end)

  it("runs the example of the appending guide", function()
    local stream = H.new_stream(basin, "example")
    local producer <close> = must(stream:producer { linger = 0.005 })
    local ticket = must(producer:submit({ body = "my event" }))
    local ack = must(ticket:ack())
    assert.are.equal(0, ack.seq_num)
    assert.are.equal(0, ack.batch.start.seq_num)
    assert.is_true(must(producer:close()))
  end)

  it("acks 1,000,000 records of 100 B in order, in full batches", function()
    -- A generous ack deadline: on a loaded machine (or under ASan) a 5 s timeout would
    -- resend batches, and under the default "all" policy resends may write duplicates,
    -- which shift seq nums. This spec is about ordering; faults have their own specs.
    local c = H.client { request_timeout = 60 }
    local stream = c:basin(basin.name):stream(H.new_stream(basin, "million").name)
    -- a 50 ms linger, so that batches fill by count even when this process is slow (ASan)
    local producer = must(stream:producer { linger = 0.05 })
    local n = 1000000
    local pad = ("p"):rep(92)
    local tickets = {}
    for i = 1, n do tickets[i] = must(producer:submit(("%08d"):format(i) .. pad)) end
    assert.is_true(must(producer:flush()))
    -- plain comparisons in the loop (luassert per record would dominate the run time)
    local wrong, first = 0, nil
    for i = 1, n do
      local ack = tickets[i]:result()
      if not ack or ack.seq_num ~= i - 1 then
        wrong = wrong + 1
        first = first or ("record %d: %s"):format(i, ack and ("seq_num " .. ack.seq_num) or tostring(ack))
      end
    end
    local stats = producer:stats()
    assert.are.equal(0, stats.batches_resent)
    assert.are.equal(0, wrong, first)
    tickets = nil
    assert.are.equal(n, stats.records_submitted)
    assert.are.equal(stats.batches_submitted, stats.batches_acked)
    -- under load, batches fill up to max_batch_records (1000)
    assert.is_true(n / stats.batches_submitted >= 900,
      ("%.1f records per batch"):format(n / stats.batches_submitted))
    must(producer:close())
    -- read back: order and bodies
    local at = 0
    while at < n do
      local batch = must(stream:read { seq_num = at, count = 1000 })
      for _, r in ipairs(batch.records) do
        at = at + 1
        if r.body ~= ("%08d"):format(at) .. pad then
          error(("record %d: got %q"):format(at - 1, r.body:sub(1, 8)))
        end
      end
    end
    assert.are.equal(n, must(stream:check_tail()).seq_num)
  end)

  it("holds a lone record for the linger, batching what comes meanwhile", function()
    local stream = H.new_stream(basin, "linger")
    local producer = must(stream:producer { linger = 0.5 })
    local t1 = must(producer:submit("one"))
    -- nothing has been sealed yet: the batch waits out its linger
    assert.are.equal(0, producer:stats().batches_submitted)
    assert.is_false(t1:ready())
    local t2 = must(producer:submit("two"))
    local a1, a2 = must(t1:ack()), must(t2:ack())
    assert.are.equal(1, producer:stats().batches_submitted)
    assert.are.same(a1.batch, a2.batch)
    assert.are.equal(0, a1.seq_num)
    assert.are.equal(1, a2.seq_num)
    must(producer:close())
  end)

  it("seals a batch when the next record would exceed a limit, or at the limit", function()
    local stream = H.new_stream(basin, "limits")
    local by_count = must(stream:producer { linger = 30, max_batch_records = 10 })
    local last
    for i = 1, 95 do last = must(by_count:submit("c" .. i)) end
    assert.are.equal(9, by_count:stats().batches_submitted) -- 9 full, one open
    must(by_count:flush())
    assert.are.equal(10, by_count:stats().batches_submitted)
    assert.are.equal(94, must(last:ack()).seq_num)
    must(by_count:close())

    local stream2 = H.new_stream(basin, "bytes")
    -- 100-byte bodies are 108 metered: 9 fit in 1000 bytes, the 10th would exceed
    local by_bytes = must(stream2:producer { linger = 30, max_batch_bytes = 1000 })
    local body = ("b"):rep(100)
    for _ = 1, 18 do must(by_bytes:submit(body)) end
    assert.are.equal(1, by_bytes:stats().batches_submitted)
    local t = must(by_bytes:submit(body))
    assert.are.equal(2, by_bytes:stats().batches_submitted)
    local ack = must(by_bytes:flush() and t:ack())
    assert.are.equal(18, ack.seq_num)
    assert.are.equal(18, ack.batch.start.seq_num)
    must(by_bytes:close())
  end)

  it("rejects a record larger than max_batch_bytes at submit, losing nothing", function()
    local stream = H.new_stream(basin, "big")
    local producer = must(stream:producer { max_batch_bytes = 1000 })
    local ok_ticket = must(producer:submit("fine"))
    local ok, e = pcall(producer.submit, producer, ("x"):rep(1000))
    assert.is_false(ok)
    assert.truthy(tostring(e):find("max_batch_bytes", 1, true), tostring(e))
    assert.truthy(tostring(e):find("1000", 1, true))
    assert.has_error(function() producer:submit({ body = 5 }) end)
    assert.has_error(function() producer:submit(nil) end)
    must(producer:close())
    assert.are.equal(0, must(ok_ticket:ack()).seq_num)
    assert.are.equal(1, must(stream:check_tail()).seq_num)
  end)

  it("fails that batch and every later ticket on a fencing token mismatch", function()
    local stream = H.new_stream(basin, "fenced")
    must(stream:append({ s2.fence("a") }))
    local producer = must(stream:producer { fencing_token = "a", linger = 0.001 })
    local first = {}
    for i = 1, 100 do first[i] = must(producer:submit("ok" .. i)) end
    assert.is_true(must(producer:flush()))
    -- someone else takes over the stream
    must(stream:append({ s2.fence("b") }, { fencing_token = "a" }))
    local later = {}
    for i = 1, 100 do
      local t = producer:submit("late" .. i)
      if t then later[#later + 1] = t end
    end
    local ok, err = producer:flush()
    assert.is_nil(ok)
    assert.are.equal("fencing_token_mismatch", err.code)
    assert.are.equal("b", err.expected_fencing_token)
    for _, t in ipairs(later) do
      local ack, terr = t:ack()
      assert.is_nil(ack)
      assert.are.equal("fencing_token_mismatch", terr.code)
    end
    for i = 1, 100 do assert.are.equal(i, must(first[i]:ack()).seq_num) end
    local t, serr = producer:submit("after")
    assert.is_nil(t)
    assert.are.equal("fencing_token_mismatch", serr.code)
    local cok, cerr = producer:close()
    assert.is_nil(cok)
    assert.are.equal("fencing_token_mismatch", cerr.code)
    assert.are.equal(102, must(stream:check_tail()).seq_num)
  end)

  it("chains match_seq_num across batches", function()
    local stream = H.new_stream(basin, "chain")
    local producer = must(stream:producer { match_seq_num = 0, max_batch_records = 10, linger = 30 })
    local last
    for i = 1, 25 do last = must(producer:submit("m" .. i)) end
    must(producer:flush())
    assert.are.equal(24, must(last:ack()).seq_num)
    must(producer:close())

    local wrong = must(stream:producer { match_seq_num = 5 })
    local t = must(wrong:submit("x"))
    local _, err = t:ack()
    assert.are.equal("seq_num_mismatch", err.code)
    assert.are.equal(25, err.expected_seq_num)
  end)

  it("starts an idempotent producer at the tail", function()
    local stream = H.new_stream(basin, "idem")
    must(stream:append({ "a", "b", "c" }))
    local producer = must(stream:producer { idempotent = true })
    assert.are.equal(3, must(must(producer:submit("d")):ack()).seq_num)
    must(producer:close())
  end)

  it("checks its options", function()
    local stream = H.new_stream(basin, "opts")
    for _, bad in ipairs {
      { linger = -1 }, { linger = "5ms" }, { max_batch_records = 1001 }, { max_batch_records = 0 },
      { max_batch_bytes = 1024 * 1024 + 1 }, { max_inflight_bytes = 10 },
      { fencing_token = ("t"):rep(37) }, { match_seq_num = -1 }, { lingr = 1 },
    } do
      assert.has_error(function() stream:producer(bad) end)
    end
    local p = must(stream:producer())
    must(p:close())
    assert.has_error(function() p:submit("x") end)
    assert.has_error(function() p:flush() end)
  end)

  it("drains when dropped, and when closed as a to-be-closed variable", function()
    local stream = H.new_stream(basin, "drop")
    do
      local p = must(stream:producer { linger = 0.05 })
      for i = 1, 500 do must(p:submit("d" .. i)) end
    end
    collectgarbage()
    collectgarbage()
    for _ = 1, 200 do
      if must(stream:check_tail()).seq_num == 500 then break end
      os.execute "sleep 0.05"
    end
    assert.are.equal(500, must(stream:check_tail()).seq_num)
    do
      local p <close> = must(stream:producer { linger = 10 })
      must(p:submit("closed at the end of the block"))
    end
    assert.are.equal(501, must(stream:check_tail()).seq_num) -- no 10 s linger on close
  end)
end)

describe("record tickets", function()
  it("give the seq_num alone, cheaply, with the same waiting as ack()", function()
    local c = H.client()
    local stream = H.new_stream(H.new_basin(c, "seqnum"), "s")
    local p = must(stream:producer { linger = 0.05 })
    local t1, t2 = must(p:submit("a")), must(p:submit("b"))
    assert.is_false(t2:result_seq_num())
    assert.are.equal(1, must(t2:seq_num(10)))
    assert.are.equal(0, must(t1:seq_num()))
    assert.are.equal(0, t1:result_seq_num())
    must(p:close())
    assert.has_error(function() t1:seq_num(-1) end)
  end)
end)
