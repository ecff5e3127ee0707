-- reader:next_columns([max [, timeout]]): next_batch's records as columns (seq_nums,
-- timestamps, bodies, sparse headers). Against s2-lite: the same records in the same order as
-- next() and next_batch(), mixed with them; headers only where a record has some; limits,
-- timeout and misuse; several readers on one TLS client through a shaped link; yielding under
-- cqueues.
local H = require "helper"
local L = require "support.shaped_tls"
local T = require "support.ticker"

local must = H.must

local eventually, fill = H.eventually, H.fill

-- The records of one columns result as a list of { seq_num, timestamp, body, headers }.
local function rows(cols)
  local out = {}
  for i = 1, cols.n do
    out[i] = { seq_num = cols.seq_nums[i], timestamp = cols.timestamps[i],
               body = cols.bodies[i], headers = cols.headers[i] }
  end
  return out
end

describe("reader:next_columns", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "rcols")
  end)

  it("hands out columns of at most max records, in order, then nil at the end", function()
    local stream = H.new_stream(basin, "limits")
    local n = 2500
    fill(stream, n)
    local reader <close> = must(stream:read_session { seq_num = 0, count = n })
    local got, biggest = 0, 0
    while true do
      local cols, err = reader:next_columns(7, 10)
      if cols == nil then
        assert.is_nil(err)
        break
      end
      assert.is_true(cols.n >= 1 and cols.n <= 7, "a result of " .. cols.n)
      assert.are.equal(cols.n, #cols.seq_nums)
      assert.are.equal(cols.n, #cols.timestamps)
      assert.are.equal(cols.n, #cols.bodies)
      assert.is_nil(next(cols.headers)) -- no record here has headers
      if cols.n > biggest then biggest = cols.n end
      for j = 1, cols.n do
        assert.are.equal(got, cols.seq_nums[j])
        assert.are.equal("r" .. (got + 1), cols.bodies[j])
        assert.are.equal("integer", math.type(cols.timestamps[j]))
        got = got + 1
      end
    end
    assert.are.equal(n, got)
    assert.are.equal(7, biggest)
    assert.are.equal(n, reader:status().delivered)
    assert.is_nil(reader:next_columns()) -- ended stays ended
  end)

  it("gives the records next() gives, headers where a record has some, mixed with it", function()
    local stream = H.new_stream(basin, "same")
    local records = {}
    for i = 1, 30 do
      records[i] = { body = "m" .. i, timestamp = 1000 + i,
                     headers = i % 3 == 0 and { { "k", "v" .. i } } or nil }
    end
    must(stream:append(records))
    local reader <close> = must(stream:read_session { seq_num = 0, count = 30 })
    local seen, from = {}, {}
    local function add(list, how)
      for _, r in ipairs(list) do
        seen[#seen + 1] = r
        from[#seen] = how
      end
    end
    add({ must(reader:next(10)) }, "table")
    add(rows(must(reader:next_columns(10, 10))), "columns")
    add(must(reader:next_batch(5, 10)), "table")
    while #seen < 30 do add(rows(must(reader:next_columns(nil, 10))), "columns") end
    assert.are.equal(30, #seen)
    local columns = 0
    for i, rec in ipairs(seen) do
      assert.are.equal(i - 1, rec.seq_num)
      assert.are.equal("m" .. i, rec.body)
      assert.are.equal(1000 + i, rec.timestamp)
      if i % 3 == 0 then
        assert.are.same({ { "k", "v" .. i } }, rec.headers)
      elseif from[i] == "columns" then
        assert.is_nil(rec.headers, "record " .. i) -- sparse: no entry for no headers
      else
        assert.are.same({}, rec.headers)
      end
      if from[i] == "columns" then columns = columns + 1 end
    end
    assert.is_true(columns >= 11, columns .. " records from columns")
    assert.is_nil(reader:next_columns(10, 10))
  end)

  it("times out with code timeout when no record comes, then hands out a later one", function()
    local stream = H.new_stream(basin, "timeout")
    must(stream:append { "only" })
    local reader <close> = must(stream:read_session { seq_num = 1 })
    local cols, err = reader:next_columns(10, 0.3)
    assert.is_nil(cols)
    assert.are.equal("timeout", err.code)
    must(stream:append { "late" })
    local later = must(reader:next_columns(10, 10))
    assert.are.equal(1, later.n)
    assert.are.same({ 1 }, later.seq_nums)
    assert.are.same({ "late" }, later.bodies)
  end)

  it("raises on misuse, naming the function and the argument", function()
    local stream = H.new_stream(basin, "misuse")
    local reader = must(stream:read_session { seq_num = 0 })
    for _, bad in ipairs { 0, -1, 1.5, "10", true } do
      assert.has_error(function() reader:next_columns(bad) end,
        "reader:next_columns: max must be an integer >= 1, got " .. tostring(bad))
    end
    assert.has_error(function() reader:next_columns(10, -1) end)
    reader:close()
    assert.has_error(function() reader:next_columns() end,
      "reader:next_columns: the read session is closed")
  end)

  describe("over TLS through a shaped link", function()
    local link
    lazy_setup(function()
      link = L.start { rate_down = 2500000, latency_up = 10, latency_down = 10, mss = 1460 }
    end)
    lazy_teardown(function() if link then link:stop() end end)

    it("several readers on one client each get their stream whole and in order", function()
      local direct = link:direct_client()
      local bname = ("rcolstls-%x-%d"):format(os.time(), math.random(1e6))
      must(direct:create_basin(bname, { create_stream_on_append = true }))
      local K, N, SIZE = 4, 3000, 300
      for k = 1, K do
        local s = must(direct:basin(bname):stream("s" .. k):append_session())
        for b = 0, N / 500 - 1 do
          local batch = {}
          for j = 1, 500 do batch[j] = L.body("s" .. k, b * 500 + j, SIZE) end
          must(s:submit(batch))
        end
        must(s:close())
      end
      local c = link:client { request_timeout = 20 }
      local readers, got, want = {}, {}, {}
      for k = 1, K do
        readers[k] = must(c:basin(bname):stream("s" .. k):read_session { seq_num = 0, count = N })
        got[k], want[k] = 0, nil
      end
      -- round-robin over the readers, each call taking whatever is buffered
      local open = K
      while open > 0 do
        for k = 1, K do
          local r = readers[k]
          if r then
            local cols, err = r:next_columns(400, 30)
            if cols == nil then
              assert.is_nil(err, "reader " .. k .. ": " .. tostring(err))
              readers[k] = nil
              open = open - 1
            else
              for j = 1, cols.n do
                assert.are.equal(got[k], cols.seq_nums[j])
                got[k] = got[k] + 1
                if cols.bodies[j] ~= L.body("s" .. k, got[k], SIZE) then
                  error(("reader %d: record %d has the wrong body"):format(k, got[k] - 1))
                end
              end
            end
          end
        end
      end
      for k = 1, K do assert.are.equal(N, got[k], "reader " .. k) end
      c:close()
    end)
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
        local r = measure(reader.next_columns, reader, 10, 10)
        if not r[1] then return "next_columns: " .. tostring(r[2]) end
        if r[1].bodies[1] ~= "x1" or r[1].seq_nums[1] ~= 1 then
          return "got " .. tostring(r[1].bodies[1]) .. " at " .. tostring(r[1].seq_nums[1])
        end
      end)
      T.assert_yielded(report, "reader:next_columns", "cqueues")
      assert.is_nil(report.value)
    end)
  end)

  it("leaves nothing behind for next() after a columns call drained a batch", function()
    local stream = H.new_stream(basin, "drain")
    fill(stream, 10)
    local reader <close> = must(stream:read_session { seq_num = 0, count = 10 })
    assert(eventually(function() return reader:status().ended end), "the read never ended")
    local cols = must(reader:next_columns(100, 5))
    assert.are.equal(10, cols.n)
    assert.is_nil(reader:next(5))
    assert.are.equal(10, reader:status().delivered)
  end)
end)
