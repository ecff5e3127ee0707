-- Regression (issue 12, item 8): the HTTP/1.1 append fallback (http1_worker in
-- csrc/s2_session.c) failed the ticket of a batch whose POST succeeded when the session had
-- failed while the POST was out (`if (s->state == S2_SESSION_FAILED) ticket_fail(...)`, even
-- with rc == 0). The records had landed; a caller that retries a failed ticket writes them
-- twice. An acked batch resolves its ticket with the ack, always.
--
-- What fails an HTTP/1.1 session while a POST is out today: the runtime stopping
-- (client:close(), or the client collected), which fails every session with "closed" and
-- then waits for the workers' current requests. So: s2-lite behind tools/fault_proxy, which
-- holds the server's answers (`stall`); a force_http1 session submits a batch (its POST
-- lands, its answer is held) and a second one (pending behind it); the client is closed.
-- The first ticket must give its ack, the second must fail "closed" and never be posted, and
-- the stream must hold exactly one copy.
local H = require "helper"
local P = require "support.fault_proxy"

local WAIT = 10 -- seconds: the bound of every wait
local STALL_MS = 4000 -- the answer is held this long: close() must come within it

describe("HTTP/1.1 append whose POST lands while the client is closed", function()
  local basin, direct
  lazy_setup(function()
    direct = H.client()
    basin = H.new_basin(direct, "h1ack")
  end)

  -- Waits (bounded) until the stream's tail is n: the POST has landed on the server.
  local function await_tail(stream, n)
    local deadline = os.time() + WAIT
    local tail
    repeat
      tail = assert(stream:check_tail()).seq_num
      if tail >= n then break end
      os.execute("sleep 0.02")
    until os.time() > deadline
    assert.are.equal(n, tail, "the POST never landed")
  end

  local function bodies(stream)
    local batch = assert(stream:read { seq_num = 0, count = 100 })
    local out = {}
    for i, r in ipairs(batch.records) do out[i] = r.body end
    return out
  end

  local function with_stalled_client(fn)
    local proxy = P.start { target = H.endpoint():gsub("^http://", "") }
    local ok, err = pcall(function()
      local c = H.client {
        force_http1 = true, account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
        request_timeout = 20, retry = { max_attempts = 1 },
      }
      fn(c, proxy)
    end)
    proxy:stop()
    if not ok then error(err, 0) end
  end

  it("resolves the landed batch's ticket with its ack and posts nothing after", function()
    local stream, name = H.new_stream(basin, "s")
    with_stalled_client(function(c, proxy)
      local session = assert(c:basin(basin.name):stream(name):append_session())
      proxy:command("stall " .. STALL_MS)
      local landed = assert(session:submit({ "once" }))
      local queued = assert(session:submit({ "never" }))
      await_tail(stream, 1)
      assert.is_false(landed:ready(), "the answer came before close(): the stall was too short")
      c:close() -- fails the session; returns once the worker's POST has its (held) answer
      local ack, err = landed:ack(WAIT)
      -- before the fix: nil, "the client was closed" for a batch that is on the stream
      assert.is_nil(err, err and ("the landed batch's ticket failed: " .. tostring(err)))
      assert.are.equal(0, ack.start.seq_num)
      assert.are.equal(1, ack["end"].seq_num)
      local ack2, err2 = queued:ack(WAIT)
      assert.is_nil(ack2)
      assert.are.equal("closed", err2 and err2.code)
      local st = session:stats()
      assert.are.equal(1, st.batches_acked)
      assert.are.equal(0, st.inflight_batches)
      assert.are.equal(0, st.inflight_bytes)
    end)
    assert.are.same({ "once" }, bodies(stream), "exactly one copy, and the queued batch never posted")
  end)

  it("resolves a producer's landed records with their positions", function()
    local stream, name = H.new_stream(basin, "p")
    with_stalled_client(function(c, proxy)
      local producer = assert(c:basin(basin.name):stream(name):producer { linger = 5 })
      proxy:command("stall " .. STALL_MS)
      local t1 = assert(producer:submit("a"))
      local t2 = assert(producer:submit("b"))
      producer:flush(0) -- seals the batch (both records) now; its answer is held, so: timeout
      await_tail(stream, 2)
      assert.is_false(t1:ready(), "the answer came before close(): the stall was too short")
      c:close()
      local a, err = t1:ack(WAIT)
      assert.is_nil(err, err and tostring(err))
      local b = assert(t2:ack(WAIT))
      assert.are.equal(0, a.seq_num)
      assert.are.equal(1, b.seq_num)
    end)
    assert.are.same({ "a", "b" }, bodies(stream))
  end)
end)
