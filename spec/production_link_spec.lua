-- The production setting (issue 12): ONE client, TLS end to end, through a link shaped like
-- a WAN (about 50 ms RTT and 20 Mbit/s each way, Ethernet MSS), carrying at the same time a
-- producer and an append session that push 50 MB between them, and a read session on the
-- same client that is opened, reads a little, and is then left undrained, as a slow
-- consumer would. Every ticket must be acked, every ack must say where its records are, and
-- afterwards both streams must hold exactly what was sent, in order (read back with a
-- direct client: counts, positions and a digest of the contents).
--
-- About 25 s when the client is healthy: 50 MB at 2.5 MB/s is 20 s of link time.
local L = require "support.shaped_tls"

local RATE = 2500000          -- 20 Mbit/s, each way
local ONE_WAY_MS = 25         -- 50 ms RTT
local SIZE = 10000            -- bytes of each record body
local ROUNDS = 250            -- each round: a 10-record session batch + 10 producer records
local PER_ROUND = 10
local BACKLOG = 1600          -- records of SIZE waiting for the reader: 16 MB, over its windows
local DEADLINE_S = 75         -- bound on the whole push-and-ack phase

local function now() return os.time() end

describe("production link: one TLS client over a shaped WAN", function()
  local link, basin_name

  lazy_setup(function()
    link = L.start { rate_up = RATE, rate_down = RATE, latency_up = ONE_WAY_MS,
                     latency_down = ONE_WAY_MS, mss = 1460, rcvbuf = 131072 }
    basin_name = ("prodlink-%x-%d"):format(os.time(), math.random(1e6))
    local direct = link:direct_client()
    local _, err = direct:create_basin(basin_name, { create_stream_on_append = true,
                                                     create_stream_on_read = true })
    assert(not err, err and tostring(err))
    -- The reader's backlog, written straight to s2-lite (not over the slow link).
    local s = assert(direct:basin(basin_name):stream("backlog"):append_session())
    local last
    for b = 1, BACKLOG / 100 do
      local records = {}
      for j = 1, 100 do records[j] = L.body("r", (b - 1) * 100 + j, SIZE) end
      last = assert(s:submit(records))
    end
    assert(last:ack(60))
    assert(s:close(30))
  end)
  lazy_teardown(function()
    if link then link:stop() end
  end)

  it("pushes 50 MB through a producer and a session beside an undrained reader: 0 failed", function()
    local c = link:client { request_timeout = 10,
                            retry = { max_attempts = 3, min_base_delay = 0.05, max_base_delay = 0.5 } }
    local basin = c:basin(basin_name)

    -- The slow consumer: opened, reads a little, then not drained (kept alive to the end).
    local reader = assert(basin:stream("backlog"):read_session { seq_num = 0 })
    for i = 1, 3 do
      local rec, err = reader:next(30)
      assert(rec, "the read session gave no record: " .. tostring(err))
      assert.are.equal(L.body("r", i, SIZE):sub(1, 24), rec.body:sub(1, 24))
    end

    local session = assert(basin:stream("session"):append_session())
    local producer = basin:stream("producer"):producer()
    local started = now()
    local deadline = started + DEADLINE_S
    local batch_tickets, record_tickets = {}, {}
    local stopped_at   -- why submitting ended early, if it did
    for r = 1, ROUNDS do
      if now() >= deadline then stopped_at = ("round %d: deadline"):format(r) break end
      local records = {}
      for j = 1, PER_ROUND do records[j] = L.body("s", (r - 1) * PER_ROUND + j, SIZE) end
      local t, err = session:submit(records)
      if not t then stopped_at = ("round %d: session submit: %s"):format(r, tostring(err)) break end
      batch_tickets[r] = t
      for j = 1, PER_ROUND do
        local i = (r - 1) * PER_ROUND + j
        t, err = producer:submit(L.body("p", i, SIZE))
        if not t then
          stopped_at = ("round %d: producer submit: %s"):format(r, tostring(err))
          break
        end
        record_tickets[i] = t
      end
      if stopped_at then break end
    end

    -- Every ticket resolves within the deadline; none fails; acks say where records are.
    local failed, pending, misplaced, errors = 0, 0, 0, {}
    local function settle(t, expected_seq, seq_of)
      local left = math.max(1, deadline - now())
      local ack, err = t:ack(left)
      if ack then
        if seq_of(ack) ~= expected_seq then misplaced = misplaced + 1 end
      elseif err and err.code == "timeout" and not t:ready() then
        pending = pending + 1
      else
        failed = failed + 1
        errors[tostring(err)] = (errors[tostring(err)] or 0) + 1
      end
    end
    for r, t in ipairs(batch_tickets) do
      settle(t, (r - 1) * PER_ROUND, function(a) return a.start.seq_num end)
    end
    for i, t in ipairs(record_tickets) do
      settle(t, i - 1, function(a) return a.seq_num end)
    end
    local elapsed = now() - started
    local summary = {}
    for m, n in pairs(errors) do summary[#summary + 1] = ("%dx %s"):format(n, m) end
    local function stats(obj)
      local ok, st = pcall(obj.stats, obj)
      if not ok or type(st) ~= "table" then return "?" end
      return ("reconnects=%s resent=%s"):format(tostring(st.reconnects), tostring(st.batches_resent))
    end
    local report = ("%d batches + %d records submitted%s in %d s: %d failed, %d still pending at"
      .. " the deadline, %d misplaced acks (session %s, producer %s); %s"):format(
      #batch_tickets, #record_tickets,
      stopped_at and (" (submitting stopped at " .. stopped_at .. ")") or "", elapsed,
      failed, pending, misplaced, stats(session), stats(producer), table.concat(summary, " | "))

    reader:close()
    session:close(10)
    producer:close(10)

    assert.is_nil(stopped_at, report)
    assert.are.equal(0, failed, report)
    assert.are.equal(0, pending, report)
    assert.are.equal(0, misplaced, report)

    -- Read back over a direct TLS client: exactly what was sent, in order.
    local direct = link:direct_client():basin(basin_name)
    local n = ROUNDS * PER_ROUND
    for _, tag in ipairs { "s", "p" } do
      local stream = direct:stream(tag == "s" and "session" or "producer")
      local bodies, tail = L.read_all(stream, n)
      assert.are.equal(n, tail, tag .. ": records in the stream")
      assert.are.equal(n, #bodies, tag .. ": records read back")
      local want, got
      for i = 1, n do
        local expected = L.body(tag, i, SIZE)
        if expected:sub(1, 24) ~= bodies[i]:sub(1, 24) then
          error(("%s: record %d is %q"):format(tag, i - 1, bodies[i]:sub(1, 24)))
        end
        want = L.digest(want, expected)
        got = L.digest(got, bodies[i])
      end
      assert.are.equal(want, got, tag .. ": digest of the contents")
    end
  end)
end)
