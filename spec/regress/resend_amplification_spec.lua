-- Regression (issue 12, item 11): resend amplification. After every reconnect an append
-- session re-sent its whole in-flight window at once; when the new connection failed too
-- (no ack, or cut again), each attempt wrote every unacked batch once more: a server that
-- applies batches but whose acks are lost stored the window once per attempt.
--
-- Now a reconnected session re-sends only the oldest unacked batch, and pipelines the rest
-- once that one is acked; session:stats().batches_resent counts the batches actually
-- re-written.
--
-- tools/fault_server.c `blackhole_acks drop_after_batches=N times=K`: each of the next K
-- append sessions has every batch applied and none acked, and its connection is reset once N
-- batches arrived. With 40 one-record batches in flight: the first session stores all 40 and
-- is cut; each later faulted session gets the oldest batch only (it never reaches 40, so the
-- client's request timeout ends it). Before the fix each of them got (and stored) all 40.
-- What the server stored is exact, so the specs assert it. No s2-lite is needed.
local H = require "helper"
local F = require "support.fault_server"

local N = 40     -- one-record batches in flight
local WAIT = 30  -- seconds: the bound of every ticket wait (attempts time out after 2 s)

describe("append session reconnecting with a window in flight", function()
  local server

  lazy_setup(function() server = F.start() end)
  lazy_teardown(function() if server then server:stop() end end)
  before_each(function() server:command("reset") end)
  after_each(function()
    assert.are.equal("ok pong", server:command("ping"))
    assert.are.equal(0, server:stats().queued, server:command("faults"))
  end)

  local function stream(attempts)
    local c = H.client {
      account_endpoint = server.endpoint, basin_endpoint = server.endpoint,
      request_timeout = 2,
      retry = { max_attempts = attempts, min_base_delay = 0.01, max_base_delay = 0.02,
                append_retry_policy = "all" },
    }
    local name = H.unique_name("amplify")
    return c:basin("fault-basin"):stream(name), name
  end

  -- Submits N one-record batches ("<name>-<i>") and waits (bounded) for every ticket.
  local function run(session, name)
    local tickets, acks, errs = {}, {}, {}
    for i = 1, N do tickets[i] = assert(session:submit({ name .. "-" .. i })) end
    for i = 1, N do
      local ack, err = tickets[i]:ack(WAIT)
      assert.is_false(err ~= nil and err.code == "timeout" and err.message:find("not cancelled", 1, true) ~= nil,
        "ticket " .. i .. " still pending after " .. WAIT .. " s")
      acks[i], errs[i] = ack, err
    end
    return acks, errs
  end

  -- How many times the server stored each record i, and the total.
  local function copies(name)
    local bodies, total = server:bodies(name)
    local n = {}
    for i = 1, N do n[i] = 0 end
    for seq = 0, total - 1 do
      local i = tonumber(bodies[seq]:match("%-(%d+)$"))
      n[i] = n[i] + 1
    end
    return n, total
  end

  it("re-writes only the oldest batch on each attempt whose acks never come", function()
    local st, name = stream(3)
    server:command("blackhole_acks drop_after_batches=" .. N .. " times=3")
    local before = server:stats()
    local session = assert(st:append_session())
    local acks, errs = run(session, name)
    for i = 1, N do
      assert.is_nil(acks[i], "batch " .. i .. " was acked")
      assert.is_not_nil(errs[i], "batch " .. i .. " has no error")
    end
    assert.truthy(errs[1].message:find("after 3 attempts", 1, true), tostring(errs[1]))
    assert.are.equal(3, server:stats().sessions - before.sessions, "3 attempts, one session each")
    local n, total = copies(name)
    -- attempt 1 stored the window; attempts 2 and 3 the oldest batch only.
    -- Before the fix: 120 (every attempt re-wrote all 40).
    assert.are.equal(N + 2, total, "records stored")
    assert.are.equal(3, n[1])
    for i = 2, N do assert.are.equal(1, n[i], "copies of record " .. i) end
    assert.are.equal(2, session:stats().batches_resent)
    session:close(WAIT)
  end)

  it("pipelines the rest once the oldest is acked: every batch acked once, copies bounded", function()
    local st, name = stream(4)
    -- attempt 1: cut after the window arrived; attempt 2: no ack; attempt 3: clean
    server:command("blackhole_acks drop_after_batches=" .. N .. " times=2")
    local before = server:stats()
    local session = assert(st:append_session())
    local acks, errs = run(session, name)
    for i = 1, N do
      assert.is_nil(errs[i], errs[i] and ("batch " .. i .. ": " .. tostring(errs[i])))
    end
    local after = server:stats()
    assert.are.equal(3, after.sessions - before.sessions)
    assert.are.equal(N, after.acks - before.acks, "every batch acked exactly once")
    local n, total = copies(name)
    -- 40 (cut) + 1 (the oldest, not acked) + 40 (the clean attempt). Before the fix: 120.
    assert.are.equal(2 * N + 1, total, "records stored")
    assert.are.equal(3, n[1])
    for i = 2, N do assert.are.equal(2, n[i], "copies of record " .. i) end
    -- each ack points at its own record, in the clean attempt's copies, in order
    local bodies = server:bodies(name)
    for i = 1, N do
      assert.are.equal(name .. "-" .. i, bodies[acks[i].start.seq_num], "ack of batch " .. i)
      assert.are.equal(N + i, acks[i].start.seq_num)
    end
    assert.are.equal(N + 1, session:stats().batches_resent)
    assert(session:close(WAIT))
  end)
end)
