-- Regression: several coroutines waiting at once on the same fd. The record tickets of one
-- producer batch share the batch's eventfd (and coroutines held up by backpressure share the
-- client's progress fd); libuv allows one poll handle per fd, so the luv adapter's second
-- uv.new_poll returned nil and the waiter died with "attempt to index a nil value (local
-- 'poll')". Each scheduler must let every waiter resolve, with the right seq_num, and a
-- waiter that times out must leave the others waiting.
local H = require "helper"
local s2 = require "s2"

local must = H.must

-- Appends e to the list (a separate step: in `list[#list + 1] = f()` the key is taken before
-- f() runs, and f() may yield to another coroutine that appends meanwhile).
local function add(list, e)
  list[#list + 1] = e
end

local function count_handles(uv)
  local n = 0
  uv.walk(function() n = n + 1 end)
  return n
end

-- Runs the default luv loop until it has nothing left to do, bounded by a watchdog (unref'd,
-- so it does not itself keep the loop alive). Returns false when the watchdog had to stop it.
local function run_luv(uv, limit)
  local stopped = false
  local dog = uv.new_timer()
  dog:start(limit * 1000, 0, function()
    stopped = true
    uv.stop()
  end)
  dog:unref()
  uv.run()
  dog:stop()
  dog:close()
  uv.run("nowait") -- let the watchdog's close complete
  return not stopped
end

describe("coroutines sharing a ticket fd", function()
  local client, basin
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "sharedfd")
  end)
  after_each(function() s2.set_scheduler(nil) end)

  describe("under luv", function()
    local uv = require "luv"
    before_each(function() s2.set_scheduler(require("s2.adapters.luv")(uv)) end)

    it("resolves every waiter on the record tickets of one batch", function()
      local stream = H.new_stream(basin, "onebatch")
      local p = must(stream:producer { linger = 0.2 })
      local tickets = {}
      for i = 1, 6 do tickets[i] = must(p:submit("r" .. i)) end
      local handles = count_handles(uv)
      local got, order = {}, {}
      for i = 1, 6 do
        coroutine.wrap(function()
          local ack = must(tickets[i]:ack(20))
          got[i] = ack.seq_num
          order[#order + 1] = i
        end)()
      end
      -- two more on one of the same tickets, one through the cheap path
      coroutine.wrap(function() got.again = must(tickets[3]:seq_num(20)) end)()
      coroutine.wrap(function() got.again2 = must(tickets[3]:ack(20)).seq_num end)()
      assert.are.same({}, order) -- all of them are waiting
      assert.is_true(run_luv(uv, 30), "the loop did not finish: a poll or timer left behind")
      assert.are.same({ 0, 1, 2, 3, 4, 5, again = 2, again2 = 2 }, got)
      assert.are.same({ 1, 2, 3, 4, 5, 6 }, order) -- woken in the order they waited
      assert.are.equal(handles, count_handles(uv)) -- every poll and timer closed
      must(p:close())
    end)

    it("resolves waiters on tickets of different batches at once", function()
      local stream = H.new_stream(basin, "batches")
      local p = must(stream:producer { linger = 0.2, max_batch_records = 2 })
      local session = must(stream:append_session())
      local tickets = {}
      for i = 1, 6 do tickets[i] = must(p:submit("p" .. i)) end -- 3 batches of 2
      must(p:flush(20))
      -- session batches after the producer's, each waited on by two coroutines
      local st = { must(session:submit({ "s1", "s2" })), must(session:submit({ "s3" })) }
      local handles = count_handles(uv)
      local got = {}
      for i = 1, 6 do
        coroutine.wrap(function() got["p" .. i] = must(tickets[i]:ack(20)).seq_num end)()
      end
      for i = 1, 2 do
        for k = 1, 2 do
          coroutine.wrap(function() got[("s%d.%d"):format(i, k)] = must(st[i]:ack(20)).start.seq_num end)()
        end
      end
      assert.is_true(run_luv(uv, 30), "the loop did not finish: a poll or timer left behind")
      assert.are.same({ p1 = 0, p2 = 1, p3 = 2, p4 = 3, p5 = 4, p6 = 5,
                        ["s1.1"] = 6, ["s1.2"] = 6, ["s2.1"] = 8, ["s2.2"] = 8 }, got)
      assert.are.equal(handles, count_handles(uv))
      must(session:close())
      must(p:close())
    end)

    it("lets one waiter time out while the others on the same fd keep waiting", function()
      local stream = H.new_stream(basin, "timeout")
      -- The batch is sealed only by its 4th record, which the timed-out waiter submits: no
      -- ack can come before that timeout, however slow the machine.
      local p = must(stream:producer { linger = 60, max_batch_records = 4 })
      local t = {}
      for i = 1, 3 do t[i] = must(p:submit("t" .. i)) end
      local handles = count_handles(uv)
      local events = {}
      coroutine.wrap(function()
        local ack, err = t[1]:ack(0.05)
        add(events, ack and "1 acked early" or ("1 " .. err.code))
        t[4] = must(p:submit("t4")) -- seals the batch
        add(events, "1 acked " .. must(t[1]:ack(20)).seq_num)
      end)()
      for i = 2, 3 do
        coroutine.wrap(function()
          add(events, ("%d acked %d"):format(i, must(t[i]:ack(20)).seq_num))
        end)()
      end
      assert.is_true(run_luv(uv, 30), "the loop did not finish: a poll or timer left behind")
      table.sort(events, function(a, b) return a < b end)
      assert.are.same({ "1 acked 0", "1 timeout", "2 acked 1", "3 acked 2" }, events)
      assert.are.equal(3, must(t[4]:ack(1)).seq_num)
      assert.are.equal(handles, count_handles(uv))
      must(p:close())
    end)

    it("resolves several coroutines held up by backpressure at once", function()
      local stream = H.new_stream(basin, "backpressure")
      -- 1 MiB in flight, 300 KB records: at most 3 fit, the others wait on the progress fd
      local p = must(stream:producer { max_inflight_bytes = 1024 * 1024, linger = 0.001 })
      local body = ("b"):rep(300 * 1024)
      local handles = count_handles(uv)
      local acked, done = {}, 0
      for c = 1, 4 do
        coroutine.wrap(function()
          local mine = {}
          for i = 1, 3 do mine[i] = must(p:submit(body)) end
          for i = 1, 3 do add(acked, must(mine[i]:ack(30)).seq_num) end
          done = done + 1
        end)()
      end
      assert.is_true(done < 4) -- some were held up (else this checks nothing)
      assert.is_true(run_luv(uv, 60), "the loop did not finish: a poll or timer left behind")
      assert.are.equal(4, done)
      table.sort(acked)
      local want = {}
      for i = 1, 12 do want[i] = i - 1 end
      assert.are.same(want, acked)
      assert.are.equal(handles, count_handles(uv))
      must(p:close())
      assert.are.equal(12, must(stream:check_tail()).seq_num)
    end)
  end)

  describe("under cqueues", function()
    it("resolves every waiter on one batch and on different batches, with a timeout among them", function()
      local cqueues = require "cqueues"
      local submitted = require("cqueues.condition").new()
      local stream = H.new_stream(basin, "cq")
      local p = must(stream:producer { linger = 60, max_batch_records = 4 })
      local t = {}
      for i = 1, 3 do t[i] = must(p:submit("c" .. i)) end -- batch 1: sealed by the 4th
      local events = {}
      local cq = cqueues.new()
      cq:wrap(function()
        local ack, err = t[1]:ack(0.05)
        add(events, ack and "1 acked early" or ("1 " .. err.code))
        t[4] = must(p:submit("c4"))
        for i = 5, 8 do t[i] = must(p:submit("c" .. i)) end -- batch 2, sealed at once
        submitted:signal()
        add(events, "1 acked " .. must(t[1]:ack(20)).seq_num)
      end)
      for i = 2, 8 do
        cq:wrap(function()
          while not t[i] do submitted:wait() end -- 4..8 are submitted by the first one
          add(events, ("%d acked %d"):format(i, must(t[i]:ack(20)).seq_num))
        end)
      end
      cq:wrap(function() add(events, "3 again " .. must(t[3]:seq_num(20))) end)
      assert(cq:loop(30))
      table.sort(events, function(a, b) return a < b end)
      assert.are.same({ "1 acked 0", "1 timeout", "2 acked 1", "3 acked 2", "3 again 2", "4 acked 3",
                        "5 acked 4", "6 acked 5", "7 acked 6", "8 acked 7" }, events)
      must(p:close())
    end)
  end)

  describe("under copas (LuaJIT)", function()
    it("resolves every waiter on one batch, and wakes every waiter on an fd the first one drains", function()
      local name = H.unique_name("copasfd")
      assert(H.client():create_basin(name, { create_stream_on_append = true }))
      local p = io.popen(("unset LD_PRELOAD; COPAS_BASIN=%s luajit spec/jit/copas_shared_fd_check.lua 2>&1; echo exit=$?")
        :format(name))
      local out = p:read("a")
      p:close()
      assert.are.equal("tickets 0 1 2 3 4 5 again=1\ndrained fd woke 3\nexit=0\n", out)
    end)
  end)
end)
