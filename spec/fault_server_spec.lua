-- The client against tools/fault_server.c, a scriptable S2 server (spec/support/fault_server.lua)
-- for what s2-lite cannot do: error statuses with retry-after-ms, terminal frames mid-session,
-- stalled acks, RST_STREAM, GOAWAY, dropped connections, reconnect advice, malformed frames.
--
-- Each case scripts one fault, runs the client, and checks the documented behaviour: what
-- every ticket resolves to, what the server saw (requests, sessions, the records it accepted,
-- in order), never wall-clock time. Every wait is bounded (ticket:ack(WAIT), close(WAIT)), so
-- a client that hangs fails the spec instead of stalling it. No s2-lite is needed.
local H = require "helper"
local F = require "support.fault_server"
local s2 = require "s2"

local WAIT = 10 -- seconds: the bound of every wait on the client

local RATE_LIMITED = '{"code":"rate_limited","message":"slow down"}'
local UNAVAILABLE = '{"code":"unavailable","message":"streamer missing in action"}'
local DRAINING = '{"code":"server_draining","message":"this frontend is going away"}'

describe("client against the fault server", function()
  local server

  lazy_setup(function() server = F.start() end)
  lazy_teardown(function() if server then server:stop() end end)
  before_each(function() server:command("reset") end)
  after_each(function()
    -- whatever the client did, the server is still up and no scripted fault was left over
    assert.are.equal("ok pong", server:command("ping"))
    assert.are.equal(0, server:stats().queued, server:command("faults"))
  end)

  local function client(o)
    o = o or {}
    return H.client {
      account_endpoint = server.endpoint, basin_endpoint = server.endpoint,
      request_timeout = o.request_timeout or 5,
      retry = { max_attempts = o.attempts or 3, min_base_delay = 0.01, max_base_delay = 0.02,
                append_retry_policy = o.policy or "all" },
    }
  end

  local function new_stream(c, tag)
    local name = H.unique_name(tag)
    return c:basin("fault-basin"):stream(name), name
  end

  local function stat_delta(before, key)
    return server:stats()[key] - before[key]
  end

  -- An error from ticket:ack(WAIT) running out, as opposed to an error of the append.
  local function is_wait_timeout(err)
    return err ~= nil and err.code == "timeout" and err.message:find("not cancelled", 1, true) ~= nil
  end

  -- Submits n one-record batches ("<name>-<i>") and waits (bounded) for every ticket.
  -- Returns acks[i] and errs[i] (a submit refused once the session failed counts as errs[i]).
  local function run(session, name, n, first)
    local tickets, acks, errs = {}, {}, {}
    for i = first or 1, n do
      local t, err = session:submit({ name .. "-" .. i })
      if t then tickets[i] = t else errs[i] = err end
    end
    for i = first or 1, n do
      if tickets[i] then
        local ack, err = tickets[i]:ack(WAIT)
        assert.is_false(is_wait_timeout(err), "ticket " .. i .. " still pending after " .. WAIT .. " s")
        if ack then acks[i] = ack else errs[i] = err end
      end
    end
    return acks, errs
  end

  local function count(t)
    local n = 0
    for _ in pairs(t) do n = n + 1 end
    return n
  end

  -- Every record 1..n is in the server's log, every ack points at its own record; returns
  -- how many records the server accepted (more than n when batches were written twice).
  local function check_log(name, n, acks)
    local bodies, total = server:bodies(name)
    local seen = {}
    for seq = 0, total - 1 do seen[bodies[seq]] = (seen[bodies[seq]] or 0) + 1 end
    for i = 1, n do
      assert.is_true((seen[name .. "-" .. i] or 0) >= 1, "record " .. i .. " is not in the log")
    end
    for i, ack in pairs(acks) do
      assert.are.equal(name .. "-" .. i, bodies[ack.start.seq_num], "ack of batch " .. i)
      assert.are.equal(ack.start.seq_num + 1, ack["end"].seq_num)
    end
    return total
  end

  -- ---------------------------------------------------------------- unary appends

  describe("unary appends", function()
    it("retries a 429 after the server's retry-after-ms, then succeeds", function()
      local st, name = new_stream(client(), "u429")
      local before = server:stats()
      server:command("status 429 " .. RATE_LIMITED .. " retry_after_ms=300 on=unary")
      local ack, err = st:append({ "x" })
      assert.is_nil(err)
      assert.are.equal(0, ack.start.seq_num)
      local after = server:stats()
      assert.are.equal(2, after.unary - before.unary, "one refusal, one retry")
      -- the backoff is 10..40 ms; the retry came at least 300 ms after the refusal
      assert.is_true(after.gap_ms >= 295, "retry came after " .. after.gap_ms .. " ms")
      assert.are.equal(1, server:records(name).count)
    end)

    it("retries 503 unavailable up to max_attempts", function()
      local st, name = new_stream(client { attempts = 3 }, "u503")
      local before = server:stats()
      server:command("status 503 " .. UNAVAILABLE .. " times=2 on=unary")
      local ack, err = st:append({ "x" })
      assert.is_nil(err)
      assert.is_table(ack)
      assert.are.equal(3, stat_delta(before, "unary"))
      assert.are.equal(1, server:records(name).count)

      local st2, name2 = new_stream(client { attempts = 2 }, "u503b")
      before = server:stats()
      server:command("status 503 " .. UNAVAILABLE .. " times=2 on=unary")
      local ack2, err2 = st2:append({ "y" })
      assert.is_nil(ack2)
      assert.are.equal("unavailable", err2.code)
      assert.are.equal(503, err2.status)
      assert.is_true(err2.retryable)
      assert.truthy(err2.message:find("after 2 attempts", 1, true), err2.message)
      assert.are.equal(2, stat_delta(before, "unary"))
      assert.are.equal(0, server:records(name2).count)
    end)

    it("does not retry 400 / 404 / 409 / 422 and passes the code through", function()
      local st, name = new_stream(client(), "u4xx")
      for _, case in ipairs {
        { 400, "bad_frame" }, { 404, "stream_not_found" }, { 409, "resource_already_exists" },
        { 422, "invalid" },
      } do
        local status, code = case[1], case[2]
        local before = server:stats()
        server:command(("status %d {\"code\":\"%s\",\"message\":\"scripted %s\"}"):format(status, code, code))
        local ack, err = st:append({ "x" })
        assert.is_nil(ack)
        assert.are.equal(code, err.code)
        assert.are.equal(status, err.status)
        assert.are.equal("scripted " .. code, err.message)
        assert.is_false(err.retryable)
        assert.are.equal(1, stat_delta(before, "unary"), code .. " was retried")
        assert.are.equal(0, server:stats().queued)
      end
      assert.are.equal(0, server:records(name).count)
    end)

    it("under no_side_effects retries 429 but not 503", function()
      local st, name = new_stream(client { policy = "no_side_effects" }, "unse")
      local before = server:stats()
      server:command("status 503 " .. UNAVAILABLE .. " on=unary")
      local _, err = st:append({ "x" })
      assert.are.equal("unavailable", err.code)
      assert.are.equal(1, stat_delta(before, "unary"))

      before = server:stats()
      server:command("status 429 " .. RATE_LIMITED .. " on=unary")
      local ack, err2 = st:append({ "y" })
      assert.is_nil(err2)
      assert.are.equal(0, ack.start.seq_num)
      assert.are.equal(2, stat_delta(before, "unary"))
      assert.are.equal(1, server:records(name).count)
    end)

    it("reports failed append conditions (412) with what the server expected", function()
      local st = new_stream(client(), "ucond")
      assert.is_table((st:append({ "a", "b" })))
      local _, err = st:append({ "c" }, { match_seq_num = 5 })
      assert.are.equal("seq_num_mismatch", err.code)
      assert.are.equal(412, err.status)
      assert.are.equal(2, err.expected_seq_num)
      assert.is_false(err.retryable)
      assert.is_table((st:append({ s2.fence("tok") })))
      local _, err2 = st:append({ "d" }, { fencing_token = "other" })
      assert.are.equal("fencing_token_mismatch", err2.code)
      assert.are.equal("tok", err2.expected_fencing_token)
      local ack = st:append({ "e" }, { fencing_token = "tok", match_seq_num = 3 })
      assert.are.equal(3, ack.start.seq_num)
    end)
  end)

  -- ---------------------------------------------------------------- append sessions

  describe("append sessions", function()
    it("fail the refused ticket and every later one on a terminal 412", function()
      local st, name = new_stream(client(), "t412")
      local session = assert(st:append_session())
      server:command('terminal_after 2 412 {"seq_num_mismatch":7}')
      local acks, errs = run(session, name, 6)
      assert.are.equal(2, count(acks))
      assert.is_table(acks[1])
      assert.is_table(acks[2])
      for i = 3, 6 do
        assert.are.equal("seq_num_mismatch", errs[i].code, "ticket " .. i)
        assert.are.equal(7, errs[i].expected_seq_num)
        assert.are.equal(412, errs[i].status)
      end
      local t, err = session:submit({ "late" })
      assert.is_nil(t)
      assert.are.equal("seq_num_mismatch", err.code)
      local ok, cerr = session:close(WAIT)
      assert.is_nil(ok)
      assert.are.equal("seq_num_mismatch", cerr.code)
      assert.are.equal(2, server:records(name).count)
    end)

    it("honour match_seq_num and fencing tokens in the stream (terminal 412)", function()
      local c = client()
      local st, name = new_stream(c, "tcond")
      local session = assert(st:append_session())
      assert.is_table(session:submit({ "a" }):ack(WAIT))
      local _, err = session:submit({ "b" }, { match_seq_num = 9 }):ack(WAIT)
      assert.are.equal("seq_num_mismatch", err.code)
      assert.are.equal(1, err.expected_seq_num)
      session:close(WAIT)

      local session2 = assert(st:append_session())
      local _, err2 = session2:submit({ "c" }, { fencing_token = "nope" }):ack(WAIT)
      assert.are.equal("fencing_token_mismatch", err2.code)
      assert.are.equal("", err2.expected_fencing_token)
      session2:close(WAIT)
      assert.are.equal(1, server:records(name).count)
    end)

    it("reconnect and resend after a terminal 503, under 'all'", function()
      local st, name = new_stream(client(), "t503")
      local session = assert(st:append_session())
      local before = server:stats()
      server:command("terminal_after 2 503 " .. UNAVAILABLE)
      local acks, errs = run(session, name, 8)
      assert.are.same({}, errs)
      assert.are.equal(8, count(acks))
      local stats = session:stats()
      assert.is_true(stats.reconnects >= 1)
      assert.is_true(stats.batches_resent >= 1)
      assert.is_true(session:close(WAIT))
      assert.are.equal(2, stat_delta(before, "sessions"))
      -- the refused batch was not applied, acked ones were not resent: no duplicate
      assert.are.equal(8, check_log(name, 8, acks))
      for i = 2, 8 do assert.is_true(acks[i].start.seq_num > acks[i - 1].start.seq_num) end
    end)

    it("fail on a terminal 503 under 'no_side_effects' (the batches may have landed)", function()
      local st, name = new_stream(client { policy = "no_side_effects" }, "t503n")
      local session = assert(st:append_session())
      server:command("terminal_after 2 503 " .. UNAVAILABLE)
      local acks, errs = run(session, name, 6)
      assert.are.equal(2, count(acks))
      for i = 3, 6 do assert.are.equal("unavailable", errs[i].code, "ticket " .. i) end
      assert.is_nil((session:close(WAIT)))
      assert.are.equal(2, server:records(name).count)
    end)

    it("treat a terminal server_draining as a handover that uses no attempt", function()
      local st, name = new_stream(client { attempts = 1 }, "tdrain")
      local session = assert(st:append_session())
      server:command("terminal_after 2 503 " .. DRAINING)
      local acks, errs = run(session, name, 6)
      assert.are.same({}, errs)
      assert.are.equal(6, count(acks))
      assert.is_true(session:stats().reconnects >= 1)
      assert.is_true(session:close(WAIT))
      assert.are.equal(6, check_log(name, 6, acks))
    end)

    it("time out a stalled ack (request_timeout), reconnect and resend under 'all'", function()
      local st, name = new_stream(client { request_timeout = 0.5 }, "stall")
      local session = assert(st:append_session())
      local before = server:stats()
      server:command("stall_acks 3000")
      local acks, errs = run(session, name, 5)
      assert.are.same({}, errs)
      assert.are.equal(5, count(acks))
      assert.is_true(session:stats().reconnects >= 1)
      assert.is_true(session:stats().batches_resent >= 1)
      assert.is_true(session:close(WAIT))
      assert.are.equal(2, stat_delta(before, "sessions"))
      -- the stalled session had applied what it got: those records are there twice
      assert.is_true(check_log(name, 5, acks) > 5)
    end)

    it("fail stalled tickets with a timeout under 'no_side_effects'", function()
      local st, name = new_stream(client { request_timeout = 0.5, policy = "no_side_effects" }, "stalln")
      local session = assert(st:append_session())
      server:command("stall_acks 3000")
      local acks, errs = run(session, name, 3)
      assert.are.equal(0, count(acks))
      for i = 1, 3 do
        assert.are.equal("timeout", errs[i].code)
        assert.truthy(errs[i].message:find("request timeout", 1, true), errs[i].message)
      end
      assert.is_nil((session:close(WAIT)))
      assert.are.equal(3, server:records(name).count) -- landed, unacked: why no resend
    end)

    it("reconnect and resend after RST_STREAM", function()
      local st, name = new_stream(client(), "rst")
      local session = assert(st:append_session())
      server:command("rst_after 2")
      local acks, errs = run(session, name, 8)
      assert.are.same({}, errs)
      assert.is_true(session:stats().reconnects >= 1)
      assert.is_true(session:close(WAIT))
      assert.are.equal(8, check_log(name, 8, acks))
    end)

    it("resend after RST_STREAM(REFUSED_STREAM) even under 'no_side_effects', not after INTERNAL_ERROR", function()
      local c = client { policy = "no_side_effects" }
      local st, name = new_stream(c, "rstr")
      local session = assert(st:append_session())
      server:command("rst_after 2 error=7")
      local acks, errs = run(session, name, 6)
      assert.are.same({}, errs)
      assert.is_true(session:close(WAIT))
      assert.are.equal(6, check_log(name, 6, acks))

      -- at_next_batch: the reset comes when batch 3 arrives, so it surely was written
      local st2, name2 = new_stream(c, "rsti")
      local session2 = assert(st2:append_session())
      server:command("rst_after 2 at_next_batch")
      local acks2, errs2 = run(session2, name2, 6)
      assert.are.equal(2, count(acks2))
      for i = 3, 6 do assert.are.equal("connection_failed", errs2[i].code, "ticket " .. i) end
      assert.is_nil((session2:close(WAIT)))
    end)

    it("reconnect on a new connection after GOAWAY and a close", function()
      local c = client()
      local st, name = new_stream(c, "goaway")
      local session = assert(st:append_session())
      local before = server:stats()
      server:command("goaway_after 2")
      local acks, errs = run(session, name, 8)
      assert.are.same({}, errs)
      assert.is_true(session:stats().reconnects >= 1)
      assert.is_true(session:close(WAIT))
      assert.is_true(stat_delta(before, "connections") >= 2)
      assert.is_true(c:stats().connections_opened >= 2)
      assert.are.equal(8, check_log(name, 8, acks))
    end)

    it("finish on the old connection after a graceful GOAWAY, open the next session elsewhere", function()
      local c = client()
      local st, name = new_stream(c, "goawayg")
      local session = assert(st:append_session())
      server:command("goaway_after 2 graceful")
      local acks, errs = run(session, name, 6)
      assert.are.same({}, errs)
      assert.are.equal(0, session:stats().reconnects)
      assert.is_true(session:close(WAIT))
      assert.are.equal(1, c:stats().connections_opened)
      local session2 = assert(st:append_session())
      local acks2, errs2 = run(session2, name, 8, 7)
      assert.are.same({}, errs2)
      assert.is_true(session2:close(WAIT))
      assert.are.equal(2, c:stats().connections_opened, "a connection that sent GOAWAY is not reused")
      for i, a in pairs(acks2) do acks[i] = a end
      assert.are.equal(8, check_log(name, 8, acks))
    end)

    it("reconnect and resend after the connection is dropped", function()
      local st, name = new_stream(client(), "drop")
      local session = assert(st:append_session())
      local before = server:stats()
      server:command("drop_after 2")
      local acks, errs = run(session, name, 8)
      assert.are.same({}, errs)
      assert.is_true(session:stats().reconnects >= 1)
      assert.is_true(session:close(WAIT))
      assert.is_true(stat_delta(before, "connections") >= 2)
      assert.are.equal(8, check_log(name, 8, acks))
    end)

    it("reconnect and resend when refused at the start (status 503), not on 404", function()
      local c = client()
      local st, name = new_stream(c, "open503")
      local session = assert(st:append_session())
      local before = server:stats()
      server:command("status 503 " .. UNAVAILABLE .. " on=session")
      local acks, errs = run(session, name, 4)
      assert.are.same({}, errs)
      assert.is_true(session:close(WAIT))
      assert.are.equal(2, stat_delta(before, "sessions"))
      assert.are.equal(4, check_log(name, 4, acks))

      local st2, name2 = new_stream(c, "open404")
      local session2 = assert(st2:append_session())
      before = server:stats()
      server:command('status 404 {"code":"stream_not_found","message":"no such stream"} on=session')
      local acks2, errs2 = run(session2, name2, 4)
      assert.are.equal(0, count(acks2))
      for i = 1, 4 do
        assert.are.equal("stream_not_found", errs2[i].code)
        assert.are.equal(404, errs2[i].status)
      end
      assert.is_nil((session2:close(WAIT)))
      assert.are.equal(1, stat_delta(before, "sessions"))
    end)

    it("treat a clean end with batches unacked as truncation: resend under 'all'", function()
      local st, name = new_stream(client(), "end")
      local session = assert(st:append_session())
      server:command("end_after 2")
      local acks, errs = run(session, name, 6)
      assert.are.same({}, errs)
      assert.is_true(session:stats().reconnects >= 1)
      assert.is_true(session:close(WAIT))
      assert.are.equal(6, check_log(name, 6, acks))
    end)

    it("fail a truncated session under 'no_side_effects'", function()
      local st, name = new_stream(client { policy = "no_side_effects" }, "endn")
      local session = assert(st:append_session())
      server:command("end_after 2 at_next_batch")
      local acks, errs = run(session, name, 6)
      assert.are.equal(2, count(acks))
      for i = 3, 6 do assert.are.equal("connection_failed", errs[i].code, "ticket " .. i) end
      assert.is_nil((session:close(WAIT)))
      assert.are.equal(2, server:records(name).count)
    end)

    it("resend everything after a fault before the first ack (GOAWAY, RST, drop)", function()
      local c = client()
      for _, fault in ipairs { "goaway_after 0", "rst_after 0", "drop_after 0" } do
        local st, name = new_stream(c, "zero")
        local session = assert(st:append_session())
        server:command(fault)
        local acks, errs = run(session, name, 5)
        assert.are.same({}, errs, fault)
        assert.is_true(session:stats().reconnects >= 1, fault)
        assert.is_true(session:close(WAIT))
        assert.are.equal(5, check_log(name, 5, acks), fault)
      end
    end)

    it("give up once max_attempts are used without progress", function()
      local c = client { attempts = 3, request_timeout = 0.5 }
      local st, name = new_stream(c, "budget")
      local session = assert(st:append_session())
      local before = server:stats()
      for _ = 1, 3 do server:command("rst_after 0") end
      local acks, errs = run(session, name, 4)
      assert.are.equal(0, count(acks))
      for i = 1, 4 do
        assert.are.equal("connection_failed", errs[i].code)
        assert.truthy(errs[i].message:find("after 3 attempts", 1, true), errs[i].message)
      end
      assert.is_nil((session:close(WAIT)))
      assert.are.equal(3, stat_delta(before, "sessions"))
      assert.are.equal(0, server:records(name).count)

      local st2, name2 = new_stream(client { attempts = 2, request_timeout = 0.5 }, "budget2")
      local session2 = assert(st2:append_session())
      for _ = 1, 2 do server:command("stall_acks 3000") end
      local acks2, errs2 = run(session2, name2, 3)
      assert.are.equal(0, count(acks2))
      for i = 1, 3 do
        assert.are.equal("timeout", errs2[i].code)
        assert.truthy(errs2[i].message:find("after 2 attempts", 1, true), errs2[i].message)
      end
      assert.is_nil((session2:close(WAIT)))
    end)

    -- The HTTP/2 session path never reads the retry-after-ms header of a refused session
    -- (s2_runtime.c on_header keeps only :status), though attempt_failed passes
    -- err->retry_after_ms to the backoff; unary calls honour it. Sessions rarely get a 429
    -- (S2 applies backpressure there), so this is recorded, not asserted.
    it("wait for retry-after-ms when a session is refused with 429 at the start", function()
      local st = new_stream(client(), "open429")
      local session = assert(st:append_session())
      server:command("status 429 " .. RATE_LIMITED .. " retry_after_ms=300 on=session")
      assert.is_table((session:submit({ "x" }):ack(WAIT)))
      assert.is_true(server:stats().gap_ms >= 295)
      assert.is_true(session:close(WAIT))
    end)

    describe("over HTTP/1.1 (force_http1: one unary append per batch)", function()
      local function h1_client()
        return H.client {
          account_endpoint = server.endpoint, basin_endpoint = server.endpoint, force_http1 = true,
          retry = { max_attempts = 3, min_base_delay = 0.01, max_base_delay = 0.02 },
        }
      end

      it("retry a 503 like a unary append", function()
        local st, name = new_stream(h1_client(), "h1503")
        local session = assert(st:append_session())
        local before = server:stats()
        server:command("status 503 " .. UNAVAILABLE .. " on=unary")
        local acks, errs = run(session, name, 4)
        assert.are.same({}, errs)
        assert.is_true(session:close(WAIT))
        assert.are.equal(0, stat_delta(before, "sessions"))
        assert.are.equal(5, stat_delta(before, "unary"))
        assert.are.equal(4, check_log(name, 4, acks))
      end)

      it("fail the batch and every later one on a 404", function()
        local st, name = new_stream(h1_client(), "h1404")
        local session = assert(st:append_session())
        server:command('status 404 {"code":"stream_not_found","message":"gone"} on=unary')
        local acks, errs = run(session, name, 4)
        assert.are.equal(0, count(acks))
        for i = 1, 4 do assert.are.equal("stream_not_found", errs[i].code) end
        assert.is_nil((session:close(WAIT)))
        assert.are.equal(0, server:records(name).count)
      end)
    end)

    describe("with reconnect advice (flag 0x10)", function()
      it("end the body, let the server ack, resend the rest on a new connection, using no attempt", function()
        local c = client { attempts = 1 }
        local st, name = new_stream(c, "advice")
        local session = assert(st:append_session())
        local before = server:stats()
        -- the server takes 1 s to end the advised response, so the batches submitted
        -- meanwhile are still unacked when it does: they must go out on a new session
        server:command("reconnect_flag_after 1 end_delay=1000")
        local acks, errs = run(session, name, 1)
        assert.are.same({}, errs)
        local acks2, errs2 = run(session, name, 6, 2)
        assert.are.same({}, errs2)
        for i, a in pairs(acks2) do acks[i] = a end
        local stats = session:stats()
        assert.is_true(stats.reconnects >= 1, "reconnects " .. stats.reconnects)
        assert.is_true(session:close(WAIT))
        assert.are.equal(2, stat_delta(before, "sessions"))
        assert.are.equal(2, c:stats().connections_opened, "the advised connection was retired")
        assert.are.equal(6, check_log(name, 6, acks), "nothing written twice")
      end)

      it("lose and duplicate nothing with many batches in flight", function()
        local c = client { attempts = 1 }
        local st, name = new_stream(c, "advice2")
        local session = assert(st:append_session())
        server:command("reconnect_flag_after 3")
        local acks, errs = run(session, name, 40)
        assert.are.same({}, errs)
        assert.is_true(session:close(WAIT))
        assert.are.equal(40, check_log(name, 40, acks))
      end)

      it("still fail on an ordinary fault with max_attempts = 1 (the contrast)", function()
        local st, name = new_stream(client { attempts = 1 }, "advice3")
        local session = assert(st:append_session())
        server:command("rst_after 1")
        local acks, errs = run(session, name, 4)
        assert.are.equal(1, count(acks))
        for i = 2, 4 do assert.are.equal("connection_failed", errs[i].code) end
        assert.is_nil((session:close(WAIT)))
      end)
    end)

    describe("with a malformed ack", function()
      for _, case in ipairs {
        { "zero_length", "bad_frame" },
        { "over_2mib", "bad_frame" },
        { "bad_compression", "bad_frame" },
        { "truncated_proto", "protocol_error" },
        { "garbage_proto", "protocol_error" },
        { "wrong_count", "protocol_error" },
        { "decreasing", "protocol_error" },
      } do
        local kind, code = case[1], case[2]
        it(("fail every outstanding ticket with %s on %s, and carry on"):format(code, kind), function()
          local c = client()
          local st, name = new_stream(c, kind)
          -- five records first, so that a decreasing end is a real seq num
          assert.is_table((st:append({ "p1", "p2", "p3", "p4", "p5" })))
          local session = assert(st:append_session())
          local before = server:stats()
          server:command("malformed " .. kind)
          local good = kind == "decreasing" and 1 or 0 -- acks before the broken one
          local acks, errs = run(session, name, 5)
          assert.are.equal(good, count(acks))
          for i = good + 1, 5 do
            assert.is_table(errs[i], "ticket " .. i)
            assert.are.equal(code, errs[i].code, "ticket " .. i .. ": " .. tostring(errs[i]))
          end
          local ok, cerr = session:close(WAIT)
          assert.is_nil(ok)
          assert.are.equal(code, cerr.code)
          assert.are.equal(1, stat_delta(before, "sessions"), "a broken server is not retried")
          -- the client is still usable
          local session2 = assert(st:append_session())
          local acks2, errs2 = run(session2, name, 2)
          assert.are.same({}, errs2)
          assert.are.equal(2, count(acks2))
          assert.is_true(session2:close(WAIT))
        end)
      end
    end)
  end)

  -- ---------------------------------------------------------------- producers

  describe("producers", function()
    local function produce(producer, name, n)
      local tickets, acks, errs = {}, {}, {}
      for i = 1, n do
        local t, err = producer:submit(name .. "-" .. i)
        if t then tickets[i] = t else errs[i] = err end
      end
      for i = 1, n do
        if tickets[i] then
          local ack, err = tickets[i]:ack(WAIT)
          assert.is_false(is_wait_timeout(err), "record " .. i .. " still pending")
          if ack then acks[i] = ack else errs[i] = err end
        end
      end
      return acks, errs
    end

    it("resend after a dropped connection; every ack points at its record", function()
      local st, name = new_stream(client(), "pdrop")
      local producer = assert(st:producer { linger = 0.001, max_batch_records = 5 })
      server:command("drop_after 2")
      local acks, errs = produce(producer, name, 40)
      assert.are.same({}, errs)
      assert.is_true(producer:close(WAIT))
      local bodies, total = server:bodies(name)
      assert.are.equal(40, total)
      for i, ack in pairs(acks) do assert.are.equal(name .. "-" .. i, bodies[ack.seq_num]) end
    end)

    it("idempotent: a stalled session's batches are not written twice", function()
      local st, name = new_stream(client { request_timeout = 0.5 }, "pidem")
      local producer = assert(st:producer { linger = 0.001, max_batch_records = 5, idempotent = true })
      local before = server:stats()
      server:command("stall_acks 3000")
      local acks, errs = produce(producer, name, 30)
      assert.are.same({}, errs)
      assert.is_true(producer:close(WAIT))
      assert.is_true(stat_delta(before, "sessions") >= 2)
      assert.is_true(stat_delta(before, "terminal") >= 1, "the resend met seq_num_mismatch")
      local bodies, total = server:bodies(name)
      assert.are.equal(30, total, "no duplicate")
      for i, ack in pairs(acks) do assert.are.equal(name .. "-" .. i, bodies[ack.seq_num]) end
    end)

    it("fail every record on a terminal 412", function()
      local st, name = new_stream(client(), "p412")
      local producer = assert(st:producer { linger = 0.001, max_batch_records = 5 })
      server:command('terminal_after 0 412 {"seq_num_mismatch":3}')
      local acks, errs = produce(producer, name, 10)
      assert.are.equal(0, count(acks))
      for i = 1, 10 do
        assert.are.equal("seq_num_mismatch", errs[i].code, "record " .. i)
        assert.are.equal(3, errs[i].expected_seq_num)
      end
      assert.is_nil((producer:close(WAIT)))
      assert.are.equal(0, server:records(name).count)
    end)
  end)
end)
