-- reader:next_batch([max [, timeout]]) against s2-lite: lists of up to max records taken in
-- one call, the same records in the same order as next(), the timeout, misuse, a failure
-- after buffered records, caught-up tracking, command records, and yielding under cqueues.
local H = require "helper"
local P = require "support.fault_proxy"
local T = require "support.ticker"

local must = H.must

local eventually, fill = H.eventually, H.fill

-- Waits until the reader's I/O thread has seen tail n: every record before it is buffered.
local function buffered_to(reader, n)
  assert(eventually(function()
    local t = reader:status().tail
    return t and t.seq_num == n
  end), "the reader never saw tail " .. n)
end

-- Waits until a bounded session has ended: every record is buffered by then.
local function all_received(reader)
  assert(eventually(function() return reader:status().ended end), "the read never ended")
end

describe("reader:next_batch", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "rbatch")
  end)

  it("hands out lists of at most max records, in order, then nil at the end", function()
    local stream = H.new_stream(basin, "limits")
    local n = 2500
    fill(stream, n)
    local reader <close> = must(stream:read_session { seq_num = 0, count = n })
    local got, calls, biggest = 0, 0, 0
    while true do
      local list, err = reader:next_batch(7, 10)
      if list == nil then
        assert.is_nil(err)
        break
      end
      calls = calls + 1
      assert.is_true(#list >= 1 and #list <= 7, "a list of " .. #list)
      if #list > biggest then biggest = #list end
      for j = 1, #list do
        assert.are.equal(got, list[j].seq_num)
        assert.are.equal("r" .. (got + 1), list[j].body)
        got = got + 1
      end
    end
    assert.are.equal(n, got)
    assert.are.equal(7, biggest) -- buffered records fill a list up to max
    assert.are.equal(n, reader:status().delivered)
    assert.is_true(reader:status().ended)
    assert.is_nil(reader:next_batch()) -- ended stays ended
  end)

  it("takes records of several frames in one call, at most 1000 by default", function()
    local stream = H.new_stream(basin, "default")
    local n = 2500
    fill(stream, n)
    local reader <close> = must(stream:read_session { seq_num = 0, count = n })
    all_received(reader)
    local sizes = {}
    local total = 0
    for list in function() return reader:next_batch() end do
      sizes[#sizes + 1] = #list
      total = total + #list
    end
    assert.are.equal(n, total)
    -- every record was buffered: full lists of 1000 (the producer's batches are smaller)
    assert.are.same({ 1000, 1000, 500 }, sizes)
  end)

  it("gives the same records in the same order as next(), mixed with it", function()
    local stream = H.new_stream(basin, "mixed")
    local recs = {}
    for i = 1, 30 do
      recs[i] = { body = "m" .. i, headers = i % 3 == 0 and { { "k", "v" .. i } } or nil,
                  timestamp = 1000 + i }
    end
    must(stream:append(recs))
    local reader <close> = must(stream:read_session { seq_num = 0, count = 30 })
    local seen = {}
    local r = must(reader:next(10))
    seen[#seen + 1] = r
    for _, rec in ipairs(must(reader:next_batch(4, 10))) do seen[#seen + 1] = rec end
    seen[#seen + 1] = must(reader:next(10))
    while true do
      local list, err = reader:next_batch(nil, 10)
      assert.is_nil(err)
      if not list then break end
      for _, rec in ipairs(list) do seen[#seen + 1] = rec end
    end
    assert.are.equal(30, #seen)
    for i, rec in ipairs(seen) do
      assert.are.equal(i - 1, rec.seq_num)
      assert.are.equal("m" .. i, rec.body)
      assert.are.equal(1000 + i, rec.timestamp)
      assert.are.same(i % 3 == 0 and { { "k", "v" .. i } } or {}, rec.headers)
    end
    -- every record its own headers table: changing one leaves the others alone
    table.insert(seen[1].headers, { "x", "y" })
    assert.are.same({}, seen[2].headers)
  end)

  it("ends a list at 256 KiB of bodies, taking the rest in later lists", function()
    local stream = H.new_stream(basin, "bytes")
    local n, size = 200, 8192
    for b = 0, n / 100 - 1 do -- 100 records per append: under 1 MiB metered
      local records = {}
      for j = 1, 100 do records[j] = ("%05d"):format(b * 100 + j) .. ("b"):rep(size - 5) end
      must(stream:append(records))
    end
    local reader <close> = must(stream:read_session { seq_num = 0, count = n })
    all_received(reader)
    local got, lists = 0, 0
    while got < n do
      local list = must(reader:next_batch(1000, 5))
      lists = lists + 1
      local bytes = 0
      for _, rec in ipairs(list) do
        assert.are.equal(("%05d"):format(got + 1), rec.body:sub(1, 5))
        got = got + 1
        bytes = bytes + #rec.body
      end
      -- 256 KiB of bodies, the record that crossed it included
      assert.is_true(bytes < 256 * 1024 + size, bytes .. " bytes in one list")
    end
    assert.are.equal(n, got)
    assert.is_true(lists >= math.ceil(n * size / (256 * 1024 + size)), lists .. " lists")
    assert.is_nil(reader:next_batch(1000, 5))
  end)

  it("times out with code timeout when no record comes", function()
    local stream = H.new_stream(basin, "timeout")
    must(stream:append { "only" })
    local reader <close> = must(stream:read_session { seq_num = 1 })
    local core = require "s2.core"
    local t0 = core.now()
    local list, err = reader:next_batch(10, 0.3)
    local waited = core.now() - t0
    assert.is_nil(list)
    assert.are.equal("timeout", err.code)
    assert.is_true(err.retryable)
    assert.is_true(waited >= 0.25 and waited < 5, "waited " .. waited)
    -- a record that comes later is still handed out
    must(stream:append { "late" })
    local later = must(reader:next_batch(10, 10))
    assert.are.equal(1, #later)
    assert.are.equal("late", later[1].body)
  end)

  it("raises on misuse, naming the argument", function()
    local stream = H.new_stream(basin, "misuse")
    local reader = must(stream:read_session { seq_num = 0 })
    for _, bad in ipairs { 0, -1, 1.5, "10", true, 0 / 0 } do
      assert.has_error(function() reader:next_batch(bad) end,
        "reader:next_batch: max must be an integer >= 1, got " .. tostring(bad))
    end
    assert.has_error(function() reader:next_batch(10, -1) end)
    assert.has_error(function() reader:next_batch(10, "soon") end)
    reader:close()
    assert.has_error(function() reader:next_batch() end,
      "reader:next_batch: the read session is closed")
  end)

  it("returns the buffered records of a failed session first, then the failure", function()
    local proxy = P.start { target = H.endpoint():gsub("^http://", "") }
    local ok, perr = pcall(function()
      local pc = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint }
      local name = H.unique_name("fail")
      local direct = basin:stream(name)
      must(direct:append { "a", "b", "c", "d", "e" })
      local reader <close> = must(pc:basin(basin.name):stream(name)
        :read_session { seq_num = 0, retry = { max_attempts = 1 } })
      buffered_to(reader, 5)
      proxy:command("cut_all")
      -- the failure is recorded while the five records are still buffered (the caught-up
      -- poll of another consumer reports it without taking anything)
      assert(eventually(function() return reader._core:caught_up_poll(false) == nil end),
        "the session did not fail")
      local list = must(reader:next_batch(100, 5))
      assert.are.equal(5, #list)
      assert.are.equal("e", list[5].body)
      local none, err = reader:next_batch(100, 5)
      assert.is_nil(none)
      assert.are.equal("connection_failed", err.code)
      local again, err2 = reader:next_batch(100, 5) -- the failure is sticky
      assert.is_nil(again)
      assert.are.equal("connection_failed", err2.code)
    end)
    proxy:stop()
    assert(ok, perr)
  end)

  it("counts the records of a list as handed out for caught-up", function()
    local stream = H.new_stream(basin, "caughtup")
    local n = 50
    fill(stream, n)
    local reader <close> = must(stream:read_session { seq_num = 0 })
    buffered_to(reader, n)
    assert.is_false(reader:is_caught_up())
    assert.are.equal(20, #must(reader:next_batch(20, 5)))
    assert.is_false(reader:is_caught_up(), "caught up with 30 records buffered")
    local ok, err = reader:wait_caught_up(5)
    assert.is_nil(ok)
    assert.are.equal("records_pending", err.code)
    assert.are.equal(20, #must(reader:next_batch(20, 5)))
    assert.is_false(reader:is_caught_up())
    assert.are.equal(10, #must(reader:next_batch(20, 5)))
    assert.is_true(reader:is_caught_up())
    assert.is_true(reader:wait_caught_up(5))
    assert.are.equal(n, reader:status().delivered)
  end)

  it("skips command records with ignore_command_records", function()
    local stream = H.new_stream(basin, "commands")
    must(stream:append { "a", { headers = { { "", "trim" } }, body = ("\0"):rep(8) }, "b" })
    local plain <close> = must(stream:read_session { seq_num = 0, count = 3 })
    all_received(plain)
    assert.are.equal(3, #must(plain:next_batch(10, 5)))
    local skip <close> = must(stream:read_session { seq_num = 0, count = 3,
                                                    ignore_command_records = true })
    all_received(skip)
    local list = must(skip:next_batch(10, 5))
    assert.are.same({ "a", "b" }, { list[1].body, list[2].body })
    assert.are.equal(2, #list)
    assert.are.same({ 0, 2 }, { list[1].seq_num, list[2].seq_num })
    assert.is_nil(skip:next_batch(10, 5))
  end)

  describe("under cqueues", function()
    local ok_cq = pcall(require, "cqueues")

    it("yields while no record is buffered", function()
      if not ok_cq then pending("cqueues is not installed") return end
      local stream = H.new_stream(basin, "cq")
      must(stream:append { "first" })
      local reader <close> = must(stream:read_session { seq_num = 1 })
      local report = T.run("cqueues", function(measure)
        local cqueues = require "cqueues"
        cqueues.running():wrap(function()
          cqueues.sleep(0.2)
          must(stream:append { "x1", "x2", "x3" })
        end)
        local r = measure(reader.next_batch, reader, 10, 10)
        if not r[1] then return "next_batch: " .. tostring(r[2]) end
        local bodies = {}
        for _, rec in ipairs(r[1]) do bodies[#bodies + 1] = rec.body end
        -- the three may come in one list or start with fewer
        if bodies[1] ~= "x1" then return "got " .. table.concat(bodies, ",") end
      end)
      T.assert_yielded(report, "reader:next_batch", "cqueues")
      assert.is_nil(report.value)
    end)
  end)
end)
