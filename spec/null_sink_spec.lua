-- The Lua client against tools/null_sink.c (spec/support/null_sink.lua), the benchmarks' null
-- S2 server: the instrument is checked before anything is measured with it. Producer and
-- session acks carry consecutive seq nums across batches and sessions; a read session of a
-- generated stream yields exactly its records, with the documented deterministic bodies;
-- unary read pages likewise. No s2-lite is needed.
local s2 = require "s2"
local N = require "support.null_sink"

local WAIT = 10

-- The documented body of record i of a generated stream of `size`-byte records.
local function body(i, size)
  local hex = ("%016x"):format(i)
  if size < 16 then return hex:sub(17 - size) end
  return hex .. ("x"):rep(size - 16)
end

describe("null sink", function()
  local sink, client

  lazy_setup(function()
    sink = N.start { read_record_size = 40 }
    client = s2.client { access_token = "ignored", account_endpoint = sink.endpoint,
                         basin_endpoint = sink.endpoint, request_timeout = WAIT }
  end)
  lazy_teardown(function()
    if client then client:close() end
    if sink then sink:stop() end
  end)

  local function stream(name) return client:basin("sink-basin"):stream(name) end

  it("answers basin and stream management with success", function()
    local info = assert(client:create_basin("sink-basin-" .. math.random(1e6)))
    assert.is_truthy(info)
    assert.is_truthy(client:basin("sink-basin"):create_stream("made"))
    local tail = assert(stream("made"):check_tail())
    assert.are.equal(0, tail.seq_num)
  end)

  it("acks producer records with consecutive seq nums across batches and producers", function()
    local s = stream("prod-" .. math.random(1e9))
    local next_seq = 0
    for _ = 1, 2 do -- two producers (two append sessions) on one stream
      local p = assert(s:producer { linger = 0.001, max_batch_records = 100 })
      local tickets = {}
      for i = 1, 2500 do tickets[i] = assert(p:submit("r" .. i)) end
      for i = 1, 2500 do
        local seq = assert(tickets[i]:seq_num(WAIT))
        assert.are.equal(next_seq, seq)
        next_seq = next_seq + 1
      end
      assert(p:close(WAIT))
    end
    assert.are.equal(5000, assert(s:check_tail()).seq_num)
    -- unary appends go on from there
    local ack = assert(s:append { "a", "b", "c" })
    assert.are.equal(5000, ack.start.seq_num)
    assert.are.equal(5003, ack["end"].seq_num)
  end)

  it("acks append-session batches at start = the previous end", function()
    local s = stream("sess-" .. math.random(1e9))
    local session = assert(s:append_session())
    local batch = {}
    for i = 1, 1000 do batch[i] = "x" end
    local tickets = {}
    for i = 1, 7 do tickets[i] = assert(session:submit(i == 7 and { "y", "z" } or batch)) end
    for i = 1, 7 do
      local ack = assert(tickets[i]:ack(WAIT))
      assert.are.equal((i - 1) * 1000, ack.start.seq_num)
      assert.are.equal(i == 7 and 6002 or i * 1000, ack["end"].seq_num)
    end
    assert(session:close(WAIT))
  end)

  it("a read session drains a generated stream: exactly N records, documented bodies", function()
    for _, case in ipairs { { 128, 25000 }, { 8192, 300 }, { 5, 20 } } do
      local size, n = case[1], case[2]
      local name = ("gen-%d-%d"):format(size, n)
      assert.are.equal(n, assert(stream(name):check_tail()).seq_num)
      local reader = assert(stream(name):read_session { seq_num = 0, count = n + 10 })
      local got = 0
      while true do
        local r, err = reader:next(WAIT)
        assert.is_nil(err)
        if not r then break end
        assert.are.equal(got, r.seq_num)
        assert.are.equal(got, r.timestamp)
        if r.body ~= body(got, size) then
          error(("record %d of %s: body %q"):format(got, name, r.body:sub(1, 40)))
        end
        got = got + 1
      end
      assert.are.equal(n, got) -- the count was larger: it stopped at the tail
      reader:close()
    end
  end)

  it("a read session with count stops after count records, from any start", function()
    local reader = assert(stream("gen-64-100000"):read_session { seq_num = 99000, count = 1500 })
    local got, last = 0, nil
    for r in reader:records() do got = got + 1; last = r end
    assert.are.equal(1000, got) -- only 1000 exist from 99000
    assert.are.equal(99999, last.seq_num)
    assert.are.equal(body(99999, 64), last.body)
    reader:close()
    reader = assert(stream("gen-64-100000"):read_session { seq_num = 10, count = 2345 })
    got = 0
    for r in reader:records() do
      assert.are.equal(10 + got, r.seq_num)
      got = got + 1
    end
    assert.are.equal(2345, got)
    reader:close()
  end)

  it("a following read session gets records appended later", function()
    local s = stream("follow-" .. math.random(1e9))
    assert(s:append { "a", "b" })
    local reader = assert(s:read_session { seq_num = 0 }) -- no limit: follows
    for i = 0, 1 do
      local r = assert(reader:next(WAIT))
      assert.are.equal(i, r.seq_num)
      assert.are.equal(body(i, 40), r.body) -- --read-record-size 40, not the appended bodies
    end
    assert(s:append { "c" })
    local r = assert(reader:next(WAIT))
    assert.are.equal(2, r.seq_num)
    reader:close()
  end)

  it("unary reads page through a generated stream", function()
    local s = stream("gen-128-2500")
    local seq, pages = 0, 0
    while seq < 2500 do
      local batch = assert(s:read { seq_num = seq, count = 1000 })
      assert.is_true(#batch.records >= 1 and #batch.records <= 1000)
      for _, r in ipairs(batch.records) do
        assert.are.equal(seq, r.seq_num)
        assert.are.equal(body(seq, 128), r.body)
        seq = seq + 1
      end
      assert.are.equal(2500, batch.tail.seq_num)
      pages = pages + 1
    end
    assert.are.equal(2500, seq)
    assert.are.equal(3, pages)
    -- 1 MiB metered per page: 8 KiB records come 127 at a time
    local big = assert(stream("gen-8192-1000"):read { seq_num = 0, count = 1000 })
    assert.are.equal(math.floor(1048576 / (8192 + 8)), #big.records)
    assert.are.equal(body(126, 8192), big.records[127].body)
    -- past the tail: 416 with the tail
    local none, err = s:read { seq_num = 2501 }
    assert.is_nil(none)
    assert.are.equal(416, err.status)
  end)

  it("counts what it served", function()
    local st = sink:stats()
    assert.is_true(st.sessions >= 3)
    assert.is_true(st.read_sessions >= 6)
    assert.is_true(st.records_in >= 5000 + 3 + 6002 + 3)
  end)
end)
