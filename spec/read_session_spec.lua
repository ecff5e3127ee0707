-- Read sessions against s2-lite: following the tail, bounded reads, start positions, and
-- resuming through the fault proxy without duplicates or gaps.
local H = require "helper"
local s2 = require "s2"
local P = require "support.fault_proxy"

local must = H.must

describe("read session", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "reader")
  end)

  local function fill(stream, n, prefix)
    local p = must(stream:producer())
    for i = 1, n do must(p:submit((prefix or "r") .. i)) end
    must(p:close())
  end

  it("follows a stream while a producer writes 100,000 records, then is caught up", function()
    local stream = H.new_stream(basin, "follow")
    local reader <close> = must(stream:read_session { seq_num = 0 })
    -- the writer with a generous ack deadline, so that no resend can duplicate a record
    local producer = must(H.client { request_timeout = 60 }:basin(basin.name)
      :stream(stream.name):producer())
    local n = 100000
    for i = 1, n do must(producer:submit(("%06d"):format(i))) end
    local bad = 0
    for i = 1, n do
      local r = must(reader:next(30))
      if r.seq_num ~= i - 1 or r.body ~= ("%06d"):format(i) then bad = bad + 1 end
    end
    assert.are.equal(0, bad)
    must(producer:close())
    -- at the tail the server sends a heartbeat at once; wait for it (bounded)
    for _ = 1, 100 do
      if reader:is_caught_up() then break end
      local r, err = reader:next(0.1)
      assert.is_nil(r)
      assert.are.equal("timeout", err.code)
    end
    assert.is_true(reader:is_caught_up())
    assert.are.equal(n, reader:last_tail().seq_num)
  end)

  it("stops exactly at count and at bytes", function()
    local stream = H.new_stream(basin, "bounded")
    fill(stream, 50)
    local r = must(stream:read_session { seq_num = 0, count = 10 })
    local got = {}
    for rec in r:records() do got[#got + 1] = rec.body end
    assert.are.equal(10, #got)
    assert.are.equal("r10", got[10])
    assert.is_true(r:status().ended)
    local five = 0
    for i = 1, 5 do five = five + s2.metered_bytes("r" .. i) end
    local rb = must(stream:read_session { seq_num = 0, bytes = five })
    local n = 0
    for _ in rb:records() do n = n + 1 end
    assert.are.equal(5, n)
  end)

  it("starts at tail_offset, at a timestamp, and stops before until", function()
    local stream = H.new_stream(basin, "starts")
    local recs = {}
    for i = 1, 10 do recs[i] = { body = "t" .. i, timestamp = 1000 * i } end
    must(stream:append(recs))
    local r = must(stream:read_session { tail_offset = 3, count = 3 })
    assert.are.equal("t8", must(r:next(10)).body)
    local rt = must(stream:read_session { timestamp = 5000, ["until"] = 8000 })
    local bodies = {}
    for rec in rt:records() do bodies[#bodies + 1] = rec.body end
    assert.are.same({ "t5", "t6", "t7" }, bodies)
  end)

  it("clamps a start beyond the tail, and without clamp reports the tail", function()
    local stream = H.new_stream(basin, "clamp")
    fill(stream, 3)
    local r = must(stream:read_session { seq_num = 100, clamp = true })
    must(stream:append({ "after" }))
    local rec = must(r:next(10))
    assert.are.equal(3, rec.seq_num)
    assert.are.equal("after", rec.body)
    r:close()
    local r2 = must(stream:read_session { seq_num = 100 })
    local rec2, err = r2:next(10)
    assert.is_nil(rec2)
    assert.are.equal(416, err.status)
    assert.are.equal(4, err.tail.seq_num)
  end)

  it("ends after wait seconds without a record", function()
    local stream = H.new_stream(basin, "wait")
    fill(stream, 2)
    local r = must(stream:read_session { seq_num = 0, wait = 1 })
    assert.are.equal("r1", must(r:next(10)).body)
    assert.are.equal("r2", must(r:next(10)).body)
    local rec, err = r:next(10)
    assert.is_nil(rec)
    assert.is_nil(err) -- ended, not failed
    assert.is_true(r:status().ended)
  end)

  it("skips command records when asked", function()
    local stream = H.new_stream(basin, "cmds")
    must(stream:append({ "a", s2.fence("tok"), "b" }, {}))
    local all = must(stream:read_session { seq_num = 0, count = 3 })
    local n = 0
    for _ in all:records() do n = n + 1 end
    assert.are.equal(3, n)
    local data = must(stream:read_session { seq_num = 0, count = 3, ignore_command_records = true })
    local bodies = {}
    for rec in data:records() do bodies[#bodies + 1] = rec.body end
    assert.are.same({ "a", "b" }, bodies)
  end)

  it("checks its options and raises on use after close", function()
    local stream = H.new_stream(basin, "ropts")
    assert.has_error(function() stream:read_session { nope = true } end)
    assert.has_error(function() stream:read_session { seq_num = -1 } end)
    assert.has_error(function() stream:read_session { seq_num = 0, tail_offset = 1 } end)
    local r = must(stream:read_session { seq_num = 0 })
    r:close()
    assert.has_error(function() r:next() end)
  end)

  it("reports stream_not_found for a missing stream", function()
    local strict = H.new_basin(client, "rstrict", { create_stream_on_append = false,
                                                    create_stream_on_read = false })
    local r = must(strict:stream("missing"):read_session { seq_num = 0 })
    local rec, err = r:next(10)
    assert.is_nil(rec)
    assert.are.equal("stream_not_found", err.code)
  end)
end)

describe("read session through a faulty network", function()
  local proxy, direct, basin
  lazy_setup(function()
    proxy = P.start { target = H.endpoint():gsub("^http://", "") }
    direct = H.client()
    basin = H.new_basin(direct, "rfaults")
  end)
  lazy_teardown(function() if proxy then proxy:stop() end end)

  it("resumes after cut connections with no duplicate and no gap", function()
    local name = H.unique_name("cut")
    local stream = direct:basin(basin.name):stream(name)
    local p = must(stream:producer())
    local n = 50000
    local pad = ("q"):rep(100)
    for i = 1, n do must(p:submit(("%06d"):format(i) .. pad)) end
    must(p:close())

    proxy:command("cut_after_down 300000") -- every connection dies after ~300 KB of records
    local c = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                         retry = { max_attempts = 10, min_base_delay = 0.01, max_base_delay = 0.05 } }
    local r = must(c:basin(basin.name):stream(name):read_session { seq_num = 0, count = n })
    local bad, got = 0, 0
    for rec in r:records() do
      got = got + 1
      if rec.seq_num ~= got - 1 or rec.body:sub(1, 6) ~= ("%06d"):format(got) then bad = bad + 1 end
    end
    proxy:command("reset")
    assert.are.equal(n, got)
    assert.are.equal(0, bad)
    assert.is_true(r:status().reconnects >= 5, "reconnects " .. r:status().reconnects)
    assert.is_true(proxy:stats().cuts >= 5)
  end)
end)

describe("read session over HTTP/1.1 (server-sent events)", function()
  local basin
  lazy_setup(function()
    basin = H.new_basin(H.client(), "sse")
  end)

  it("follows, decodes binary records and stops at limits, like the HTTP/2 path", function()
    local c = H.client { force_http1 = true }
    local stream = c:basin(basin.name):stream(H.unique_name("s"))
    local reader = must(stream:read_session { seq_num = 0 })
    local p = must(stream:producer())
    for i = 1, 3000 do
      must(p:submit({ body = ("%05d"):format(i) .. "\0\255", headers = { { "k", "v" .. i }, { "z", "" } } }))
    end
    local bad = 0
    for i = 1, 3000 do
      local r = must(reader:next(30))
      if r.seq_num ~= i - 1 or r.body ~= ("%05d"):format(i) .. "\0\255"
          or r.headers[1][2] ~= "v" .. i or r.headers[2][1] ~= "z" or r.headers[2][2] ~= "" then
        bad = bad + 1
      end
    end
    assert.are.equal(0, bad)
    must(p:close())
    for _ = 1, 200 do
      if reader:is_caught_up() then break end
      reader:next(0.05)
    end
    assert.is_true(reader:is_caught_up())
    assert.are.equal(3000, reader:last_tail().seq_num)
    reader:close()
    local bounded = must(stream:read_session { seq_num = 10, count = 5 })
    local got = {}
    for rec in bounded:records() do got[#got + 1] = rec.seq_num end
    assert.are.same({ 10, 11, 12, 13, 14 }, got)
    assert.are.equal(0, c:stats().connections_opened) -- no HTTP/2 connection was used
  end)

  it("resumes with Last-Event-ID after cut connections, without duplicates or gaps", function()
    local proxy = P.start { target = H.endpoint():gsub("^http://", "") }
    local direct = H.client()
    local name = H.unique_name("ssecut")
    local p = must(direct:basin(basin.name):stream(name):producer())
    local n = 20000
    for i = 1, n do must(p:submit(("%06d"):format(i) .. ("s"):rep(100))) end
    must(p:close())
    proxy:command("cut_after_down 400000")
    local c = H.client { force_http1 = true, account_endpoint = proxy.endpoint,
                         basin_endpoint = proxy.endpoint,
                         retry = { max_attempts = 10, min_base_delay = 0.01, max_base_delay = 0.05 } }
    local r = must(c:basin(basin.name):stream(name):read_session { seq_num = 0, count = n })
    local got, bad = 0, 0
    for rec in r:records() do
      got = got + 1
      if rec.seq_num ~= got - 1 or rec.body:sub(1, 6) ~= ("%06d"):format(got) then bad = bad + 1 end
    end
    local cuts = proxy:stats().cuts
    proxy:stop()
    assert.are.equal(n, got)
    assert.are.equal(0, bad)
    assert.is_true(r:status().reconnects >= 3, "reconnects " .. r:status().reconnects)
    assert.is_true(cuts >= 3)
  end)
end)
