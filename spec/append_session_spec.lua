-- Append sessions against s2-lite: S2S over HTTP/2, pipelining, ordering, backpressure,
-- failures reaching every ticket, close/drain and garbage collection.
local H = require "helper"
local s2 = require "s2"

local must = H.must

local function read_all(stream, n)
  local out = {}
  while #out < n do
    local batch = must(stream:read { seq_num = #out, count = 1000 })
    assert.is_true(#batch.records > 0)
    for _, r in ipairs(batch.records) do out[#out + 1] = r end
  end
  return out
end

-- Waits (bounded) until f() is true; for effects that complete in the background.
local function eventually(f, what)
  for _ = 1, 200 do
    if f() then return end
    os.execute "sleep 0.05"
  end
  error("not reached in 10 s: " .. what, 2)
end

describe("append session", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "session")
  end)

  it("runs the example of the appending guide", function()
    local stream = H.new_stream(basin, "example")
    local session = must(stream:append_session())
    local ticket = must(session:submit({ "event-1", "event-2" }))
    local ack = must(ticket:ack())
    assert.are.equal(0, ack.start.seq_num)
    assert.are.equal(2, ack["end"].seq_num)
    assert.is_true(ack.tail.seq_num >= 2)
    assert.is_true(must(session:close()))
    local batch = must(stream:read { seq_num = 0, count = 10 })
    assert.are.equal("event-1", batch.records[1].body)
    assert.are.equal("event-2", batch.records[2].body)
  end)

  it("pipelines 10,000 batches: acks in order, seq nums contiguous, read-back equal", function()
    -- a generous ack deadline: a timeout's resend could duplicate under "all" (see the
    -- fault specs); this one is about ordering
    local c = H.client { request_timeout = 60 }
    local stream = c:basin(basin.name):stream(H.new_stream(basin, "many").name)
    local session = must(stream:append_session())
    local tickets = {}
    local n = 10000
    for i = 1, n do
      tickets[i] = must(session:submit({ { body = "b" .. i, headers = { { "i", tostring(i) } } } }))
    end
    local expect = 0
    for i = 1, n do
      local ack = must(tickets[i]:ack())
      assert.are.equal(expect, ack.start.seq_num)
      assert.are.equal(expect + 1, ack["end"].seq_num)
      expect = expect + 1
    end
    assert.is_true(must(session:close()))
    local stats = session:stats()
    assert.are.equal(n, stats.batches_acked)
    assert.is_true(stats.peak_inflight_batches > 1, "batches were pipelined")
    local records = read_all(stream, n)
    for i = 1, n do
      assert.are.equal("b" .. i, records[i].body)
      assert.are.equal(tostring(i), records[i].headers[1][2])
    end
  end)

  it("runs 50 sessions on 50 streams over one HTTP/2 connection", function()
    local c = H.client()
    local sessions, streams, tickets = {}, {}, {}
    for i = 1, 50 do
      streams[i] = basin:stream(H.unique_name("par"))
      -- a stream per session, auto-created on append
      sessions[i] = must(c:basin(basin.name):stream(streams[i].name):append_session())
    end
    for round = 1, 20 do
      for i = 1, 50 do
        tickets[#tickets + 1] = { i, round, must(sessions[i]:submit({ ("s%d-r%d"):format(i, round) })) }
      end
    end
    for _, t in ipairs(tickets) do
      local ack = must(t[3]:ack())
      assert.are.equal(t[2] - 1, ack.start.seq_num)
    end
    for i = 1, 50 do assert.is_true(must(sessions[i]:close())) end
    assert.are.equal(1, c:stats().connections_opened)
    local batch = must(streams[50]:read { seq_num = 0, count = 100 })
    assert.are.equal(20, #batch.records)
    assert.are.equal("s50-r20", batch.records[20].body)
  end)

  it("never has more than max_inflight_batches in flight", function()
    local stream = H.new_stream(basin, "bp")
    local session = must(stream:append_session { max_inflight_batches = 3 })
    local last
    for i = 1, 300 do last = must(session:submit({ "x" .. i })) end
    must(last:ack())
    must(session:close())
    local stats = session:stats()
    assert.are.equal(300, stats.batches_acked)
    assert.is_true(stats.peak_inflight_batches <= 3, "peak " .. stats.peak_inflight_batches)
    assert.is_true(stats.peak_inflight_batches >= 1)
  end)

  it("never has more than max_inflight_bytes in flight", function()
    local stream = H.new_stream(basin, "bpbytes")
    local session = must(stream:append_session { max_inflight_bytes = 1024 * 1024 })
    local body = ("y"):rep(300 * 1024)
    for _ = 1, 20 do must(session:submit({ body })) end
    must(session:close())
    local stats = session:stats()
    assert.are.equal(20, stats.batches_acked)
    assert.is_true(stats.peak_inflight_bytes <= 1024 * 1024, "peak " .. stats.peak_inflight_bytes)
  end)

  it("round-trips large batches with zstd and gzip compression", function()
    for _, algo in ipairs { "zstd", "gzip" } do
      local c = H.client { compression = algo }
      local stream = c:basin(basin.name):stream(H.unique_name(algo))
      local session = must(stream:append_session())
      local body = ("compressible " .. algo .. " "):rep(20000)
      local ack = must(must(session:submit({ body, "small" })):ack())
      assert.are.equal(0, ack.start.seq_num)
      must(session:close())
      local batch = must(stream:read { seq_num = 0, count = 2 })
      assert.are.equal(body, batch.records[1].body)
      assert.are.equal("small", batch.records[2].body)
    end
  end)

  it("chains match_seq_num and fails every later ticket on a mismatch", function()
    local stream = H.new_stream(basin, "msn")
    local session = must(stream:append_session())
    local t1 = must(session:submit({ "a", "b" }, { match_seq_num = 0 }))
    local t2 = must(session:submit({ "c" }, { match_seq_num = 2 }))
    local t3 = must(session:submit({ "d" }, { match_seq_num = 99 }))
    local t4 = session:submit({ "e" }) -- may be refused once the failure is known
    assert.are.equal(0, must(t1:ack()).start.seq_num)
    assert.are.equal(2, must(t2:ack()).start.seq_num)
    local _, err = t3:ack()
    assert.are.equal("seq_num_mismatch", err.code)
    assert.are.equal(3, err.expected_seq_num)
    if t4 then
      local _, err4 = t4:ack()
      assert.are.equal("seq_num_mismatch", err4.code)
    end
    local t5, err5 = session:submit({ "f" })
    assert.is_nil(t5)
    assert.are.equal("seq_num_mismatch", err5.code)
    local ok, cerr = session:close()
    assert.is_nil(ok)
    assert.are.equal("seq_num_mismatch", cerr.code)
    assert.are.equal(3, must(stream:check_tail()).seq_num)
  end)

  it("fails with fencing_token_mismatch after a fence, keeping what came before", function()
    local stream = H.new_stream(basin, "fence")
    local session = must(stream:append_session())
    local t1 = must(session:submit({ s2.fence("mine") }))
    local t2 = must(session:submit({ "ok" }, { fencing_token = "mine" }))
    local t3 = must(session:submit({ "bad" }, { fencing_token = "theirs" }))
    must(t1:ack())
    must(t2:ack())
    local _, err = t3:ack()
    assert.are.equal("fencing_token_mismatch", err.code)
    assert.are.equal("mine", err.expected_fencing_token)
    assert.is_false(err.retryable)
  end)

  it("reports stream_not_found on the tickets of a session to a missing stream", function()
    local strict = H.new_basin(client, "strict", { create_stream_on_append = false,
                                                   create_stream_on_read = false })
    local session = must(strict:stream("missing"):append_session())
    local t = must(session:submit({ "x" }))
    local ack, err = t:ack()
    assert.is_nil(ack)
    assert.are.equal("stream_not_found", err.code)
    assert.are.equal(404, err.status)
    local ok, cerr = session:close()
    assert.is_nil(ok)
    assert.are.equal("stream_not_found", cerr.code)
  end)

  it("has tickets that can be polled without waiting", function()
    local stream = H.new_stream(basin, "poll")
    local session = must(stream:append_session())
    local t = must(session:submit({ "x" }))
    local r = t:result()
    assert.is_true(r == false or type(r) == "table")
    must(t:ack())
    assert.is_true(t:ready())
    assert.are.equal(0, t:result().start.seq_num)
    must(session:close())
  end)

  it("raises on misuse and on use after close", function()
    local stream = H.new_stream(basin, "misuse")
    assert.has_error(function() stream:append_session { max_inflight_bytes = 10 } end)
    assert.has_error(function() stream:append_session { nope = 1 } end)
    local session = must(stream:append_session())
    assert.has_error(function() session:submit({}) end)
    local ok, e = pcall(session.submit, session, { "x" }, { match_seq_num = -1 })
    assert.is_false(ok)
    assert.truthy(tostring(e):find("match_seq_num", 1, true))
    must(session:close())
    assert.has_error(function() session:submit({ "x" }) end)
    assert.is_true(must(session:close())) -- closing twice is fine
  end)

  it("drains a session dropped without close", function()
    local stream = H.new_stream(basin, "dropped")
    do
      local session = must(stream:append_session())
      for i = 1, 100 do must(session:submit({ "d" .. i })) end
    end
    collectgarbage()
    collectgarbage()
    eventually(function() return must(stream:check_tail()).seq_num == 100 end, "100 records")
  end)

  it("closes as a to-be-closed variable", function()
    local stream = H.new_stream(basin, "tbc")
    do
      local session <close> = must(stream:append_session())
      must(session:submit({ "one" }))
    end
    -- close drained before the block ended
    assert.are.equal(1, must(stream:check_tail()).seq_num)
  end)

  it("falls back to HTTP/1.1 when forced: sequential unary appends, same API", function()
    local c = H.client { force_http1 = true, compression = "zstd" }
    local stream = c:basin(basin.name):stream(H.unique_name("h1"))
    local session = must(stream:append_session())
    local tickets = {}
    for i = 1, 50 do tickets[i] = must(session:submit({ "h1-" .. i, ("z"):rep(3000) })) end
    for i = 1, 50 do assert.are.equal((i - 1) * 2, must(tickets[i]:ack()).start.seq_num) end
    local bad = must(session:submit({ "late" }, { match_seq_num = 5 }))
    local _, err = bad:ack()
    assert.are.equal("seq_num_mismatch", err.code)
    local t, err2 = session:submit({ "after" })
    assert.is_nil(t)
    assert.are.equal("seq_num_mismatch", err2.code)
    assert.are.equal(0, c:stats().connections_opened) -- no HTTP/2 connection was used
    local batch = must(stream:read { seq_num = 98, count = 10 })
    assert.are.equal("h1-50", batch.records[1].body)
    assert.are.equal(100, must(stream:check_tail()).seq_num)
  end)

  it("fails outstanding tickets with closed when the client closes", function()
    local c = H.client()
    local stream = c:basin(basin.name):stream(H.unique_name("cc"))
    local session = must(stream:append_session())
    local t = must(session:submit({ "x" }))
    t:ack()
    c:close()
    local t2, err = session:submit({ "y" })
    assert.is_nil(t2)
    assert.are.equal("closed", err.code)
  end)
end)
