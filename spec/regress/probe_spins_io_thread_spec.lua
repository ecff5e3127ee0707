-- Regression (review of 5c586a0, "a turn runs only the operations it concerns"): after a
-- reconnect, an append session with more than one batch unacked re-sends the oldest alone
-- and holds the rest back until that one is acked (probing, see resend_amplification_spec).
-- Meanwhile every turn its service resumes the stream (a cursor is set), nghttp2 asks the
-- data callback for bytes, the callback defers (probing) -- and read_body's touch() queued
-- the session for the next turn, so next_wait returned 0 and the I/O thread spun at 100% of
-- a core until the probe's ack came: for a server slow to ack, or a stalled link, up to the
-- request timeout. (Before 5c586a0 the deferral woke nothing: the thread slept in epoll.)
--
-- tools/fault_server.c: `blackhole_acks drop_after_batches=N times=1` takes N batches
-- without acking and resets the connection; `stall_acks MS` holds every ack of the next
-- session MS ms. The loop's turns (client:stats().loop_turns) during the held ack are
-- counted: a handful per ack is due, not one per spin (millions).
local H = require "helper"
local F = require "support.fault_server"

local N = 5        -- one-record batches in flight when the link is cut
local HOLD = 1500  -- ms each ack of the reconnected session is held

describe("append session probing after a reconnect (regress)", function()
  local server
  lazy_setup(function() server = F.start() end)
  lazy_teardown(function() if server then server:stop() end end)

  local function client()
    return H.client {
      account_endpoint = server.endpoint, basin_endpoint = server.endpoint,
      request_timeout = 20,
      retry = { max_attempts = 5, min_base_delay = 0.01, max_base_delay = 0.02,
                append_retry_policy = "all" },
    }
  end

  local function check(c, submit, close)
    server:command("blackhole_acks drop_after_batches=" .. N .. " times=1")
    server:command("stall_acks " .. HOLD)
    local before = c:stats()
    local tickets = {}
    for i = 1, N do tickets[i] = assert(submit(i)) end
    for i = 1, N do
      local ack, err = tickets[i]:ack(30)
      assert(ack, "ticket " .. i .. ": " .. tostring(err))
    end
    local turns = c:stats().loop_turns - before.loop_turns
    assert(close())
    c:close()
    -- N batches, a cut, a reconnect and N held acks: tens of turns. A spin: millions.
    assert.is_true(turns < 1000, turns .. " loop turns while the probe's ack was held")
  end

  it("does not spin the I/O thread while the oldest batch's ack is awaited", function()
    local c = client()
    local session = assert(c:basin("fault-basin"):stream(H.unique_name("probe")):append_session())
    check(c, function(i) return session:submit { "b" .. i } end,
      function() return session:close(10) end)
  end)

  it("nor for a producer with linger", function()
    local c = client()
    local p = assert(c:basin("fault-basin"):stream(H.unique_name("probep")):producer {
      linger = 0.001, max_batch_records = 1 })
    check(c, function(i) return p:submit("r" .. i) end, function() return p:close(10) end)
  end)
end)
