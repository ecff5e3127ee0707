-- reader:is_caught_up() and reader:wait_caught_up() against s2-lite: caught up as the
-- consumer sees it (every record up to the reported tail handed out by next()), reset by a
-- reconnect (fault proxy), and the wait under a plain script and a cqueues controller.
local H = require "helper"
local P = require "support.fault_proxy"
local T = require "support.ticker"

local must = H.must

local eventually, fill = H.eventually, H.fill

describe("reader caught-up", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "caughtup")
  end)

  it("is false until the N-th record was taken by next(), true after and after heartbeats", function()
    local stream = H.new_stream(basin, "n")
    local n = 20
    fill(stream, n)
    local reader <close> = must(stream:read_session { seq_num = 0 })
    -- the I/O thread has every record and the tail, the caller has none yet
    assert.is_true(eventually(function()
      local t = reader:status().tail
      return t ~= nil and t.seq_num == n
    end), "the tail never arrived")
    assert.is_false(reader:is_caught_up())
    assert.is_false(reader:status().caught_up)
    for i = 1, n - 1 do
      local r = must(reader:next(5))
      assert.are.equal(i - 1, r.seq_num)
      assert.is_false(reader:is_caught_up(), "caught up after record " .. i .. " of " .. n)
    end
    local last = must(reader:next(5))
    assert.are.equal(n - 1, last.seq_num)
    assert.is_true(reader:is_caught_up())
    assert.is_true(reader:status().caught_up)
    -- waiting past heartbeats keeps it so
    local r, err = reader:next(0.3)
    assert.is_nil(r)
    assert.are.equal("timeout", err.code)
    assert.is_true(reader:is_caught_up())
    assert.are.equal(n, reader:last_tail().seq_num)
  end)

  it("an append makes it false while the new record waits, true again once it is taken", function()
    local stream = H.new_stream(basin, "append")
    fill(stream, 3)
    local reader <close> = must(stream:read_session { seq_num = 0 })
    for _ = 1, 3 do must(reader:next(5)) end
    assert.is_true(reader:wait_caught_up(5))
    must(stream:append { "late" })
    assert.is_true(eventually(function() return reader:status().tail.seq_num == 4 end),
      "the appended record never arrived")
    assert.is_false(reader:is_caught_up()) -- received, not handed out
    local r = must(reader:next(5))
    assert.are.equal("late", r.body)
    -- caught up with the batch's own tail, or at the next heartbeat: either way, again
    assert.is_true(reader:wait_caught_up(5))
    assert.is_true(reader:is_caught_up())
    assert.are.equal(4, reader:last_tail().seq_num)
  end)

  it("counts ignored command records as handed out", function()
    local stream = H.new_stream(basin, "cmd")
    must(stream:append { "a", { headers = { { "", "fence" } }, body = "tok" } })
    local reader <close> = must(stream:read_session { seq_num = 0, ignore_command_records = true })
    assert.is_true(eventually(function()
      local t = reader:status().tail
      return t ~= nil and t.seq_num == 2
    end))
    assert.is_false(reader:is_caught_up())
    assert.are.equal("a", must(reader:next(5)).body)
    assert.is_true(reader:wait_caught_up(5)) -- the command record is never handed out
  end)

  describe("wait_caught_up in a plain script", function()
    it("is true at once at the tail of an empty read", function()
      local stream = H.new_stream(basin, "empty")
      fill(stream, 2)
      local reader <close> = must(stream:read_session { tail_offset = 0 })
      assert.is_true(reader:wait_caught_up(5))
      assert.is_true(reader:is_caught_up())
    end)

    it("fails with records_pending instead of waiting for records only the caller can take", function()
      local stream = H.new_stream(basin, "pending")
      fill(stream, 5)
      local reader <close> = must(stream:read_session { seq_num = 0 })
      local core = require "s2.core"
      local t0 = core.now()
      local ok, err = reader:wait_caught_up(10)
      assert.is_nil(ok)
      assert.are.equal("records_pending", err.code)
      assert.is_true(core.now() - t0 < 5, "it waited instead of failing")
      for _ = 1, 5 do must(reader:next(5)) end
      assert.is_true(reader:wait_caught_up(5))
    end)

    it("times out with code timeout, and fails with the session's error", function()
      local proxy = P.start { target = H.endpoint():gsub("^http://", "") }
      finally(function() proxy:stop() end)
      proxy:command("refuse on")
      local c = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                           retry = { max_attempts = math.huge, min_base_delay = 0.01,
                                     max_base_delay = 0.05 } }
      local s = c:basin(basin.name):stream(H.unique_name("refused"))
      local forever <close> = must(s:read_session { seq_num = 0 })
      local ok, err = forever:wait_caught_up(0.3)
      assert.is_nil(ok)
      assert.are.equal("timeout", err.code)
      assert.matches("not caught up within", err.message)
      local once <close> = must(s:read_session { seq_num = 0, retry = { max_attempts = 1 } })
      ok, err = once:wait_caught_up(10)
      assert.is_nil(ok)
      assert.are.equal("connection_failed", err.code)
    end)
  end)

  it("a forced reconnect resets it until the new connection reports the tail", function()
    local proxy = P.start { target = H.endpoint():gsub("^http://", "") }
    finally(function() proxy:stop() end)
    local name = H.unique_name("reconnect")
    local direct = basin:stream(name)
    fill(direct, 10)
    local c = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                         retry = { max_attempts = math.huge, min_base_delay = 0.02,
                                   max_base_delay = 0.05 } }
    local reader <close> = must(c:basin(basin.name):stream(name):read_session { seq_num = 0 })
    for i = 1, 10 do assert.are.equal(i - 1, must(reader:next(5)).seq_num) end
    assert.is_true(reader:wait_caught_up(5))
    proxy:command("refuse on")
    proxy:command("cut_all")
    assert.is_true(eventually(function() return reader:status().reconnects >= 1 end),
      "the reader never noticed the cut")
    assert.is_false(reader:is_caught_up())
    local ok, err = reader:wait_caught_up(0.2) -- nothing pending: it waits (and times out)
    assert.is_nil(ok)
    assert.are.equal("timeout", err.code)
    must(direct:append { "during" })
    proxy:command("refuse off")
    local r = must(reader:next(10))
    assert.are.equal(10, r.seq_num) -- no duplicate, no gap
    assert.are.equal("during", r.body)
    assert.is_true(reader:wait_caught_up(10))
    assert.is_true(reader:is_caught_up())
  end)

  describe("wait_caught_up under cqueues", function()
    local ok_cq = pcall(require, "cqueues")

    it("yields while another coroutine takes the records, returns once the last is taken", function()
      if not ok_cq then pending("cqueues is not installed") return end
      local stream = H.new_stream(basin, "cq")
      local n = 3000
      fill(stream, n)
      local reader = must(stream:read_session { seq_num = 0 })
      local taken = 0
      local report = T.run("cqueues", function(measure)
        local cqueues = require "cqueues"
        cqueues.running():wrap(function()
          for _ = 1, n do
            must(reader:next(10))
            taken = taken + 1
            if taken % 100 == 0 then cqueues.sleep(0.005) end -- a consumer that takes its time
          end
        end)
        -- the consumer takes its first record: from then on it is the one that reads
        while taken == 0 do cqueues.sleep(0.001) end
        local r = measure(reader.wait_caught_up, reader, 15)
        if r[1] ~= true then return "wait_caught_up: " .. tostring(r[2]) end
        if taken ~= n then return ("returned after %d of %d records"):format(taken, n) end
        if not reader:is_caught_up() then return "not caught up after the wait" end
      end)
      reader:close()
      T.assert_yielded(report, "reader:wait_caught_up", "cqueues")
    end)

    it("fails with records_pending in the coroutine that reads", function()
      if not ok_cq then pending("cqueues is not installed") return end
      local stream = H.new_stream(basin, "cqself")
      fill(stream, 5)
      local reader <close> = must(stream:read_session { seq_num = 0 })
      local report = T.run("cqueues", function()
        must(reader:next(5))
        local ok, err = reader:wait_caught_up(10)
        if ok ~= nil or err.code ~= "records_pending" then
          return "expected records_pending, got " .. tostring(ok) .. " " .. tostring(err)
        end
        for _ = 1, 4 do must(reader:next(5)) end
        if reader:wait_caught_up(5) ~= true then return "not caught up after the last record" end
      end)
      assert.is_nil(report.error)
      assert.is_nil(report.value)
    end)
  end)
end)
