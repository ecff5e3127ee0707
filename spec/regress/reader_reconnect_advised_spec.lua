-- Regression (issue 12, item 10): read sessions ignored the connection semantics of the
-- server's hand-over signals.
--
-- * A ReadBatch frame with the "reconnect advised" flag (0x10): the reader delivered it and
--   reopened its read on the SAME connection, the one the server asked it to leave (the
--   append path retires it). Now it retires the connection (no new streams on it) and
--   resumes on a fresh one.
-- * A `server_draining` terminal (503): the reader spent a retry attempt on it, so with
--   max_attempts = 1 a planned hand-over failed the read. Now it resumes at once on a fresh
--   connection without spending an attempt, once per 60 s; a second draining within 60 s
--   counts like any failure.
--
-- In every case the reader keeps delivering each record once, in order, no gap: records
-- written before and after the hand-over. tools/fault_server.c serves the S2S read sessions
-- over HTTP/2 from the records appended to it; `read_reconnect_flag_after N` and
-- `read_terminal_after N STATUS JSON` script the signals, and its `read_sessions` /
-- `read_conns` stats count the read requests and the connections that carried them. No
-- s2-lite is needed.
local H = require "helper"
local F = require "support.fault_server"

local WAIT = 10 -- seconds: the bound of every wait on the reader

local DRAINING = '{"code":"server_draining","message":"this frontend is going away"}'

describe("read session told to move (reconnect advised, server_draining)", function()
  local server

  lazy_setup(function() server = F.start() end)
  lazy_teardown(function() if server then server:stop() end end)
  before_each(function() server:command("reset") end)
  after_each(function()
    assert.are.equal("ok pong", server:command("ping"))
    assert.are.equal(0, server:stats().queued, server:command("faults"))
  end)

  -- A reader client (HTTP/2 read sessions, retry as given) and a separate writer client, so
  -- the reader's connections are its own.
  local function clients(attempts)
    local function make()
      return H.client {
        account_endpoint = server.endpoint, basin_endpoint = server.endpoint,
        retry = { max_attempts = attempts, min_base_delay = 0.01, max_base_delay = 0.02 },
      }
    end
    return make(), make()
  end

  local function append(stream, from, to)
    for i = from, to do assert(stream:append({ "rec-" .. i })) end
  end

  -- Reads n records; each must be the next one: seq_num first, first + 1, ... and its body.
  local function expect(reader, first, n)
    for seq = first, first + n - 1 do
      local rec, err = reader:next(WAIT)
      assert.is_nil(err, err and ("record " .. seq .. ": " .. tostring(err)))
      assert.is_table(rec, ("record %d: the reader ended"):format(seq))
      assert.are.equal(seq, rec.seq_num)
      assert.are.equal("rec-" .. (seq + 1), rec.body)
    end
  end

  local function nothing_more(reader)
    local rec, err = reader:next(0.3)
    assert.is_nil(rec, rec and ("duplicate or extra record " .. rec.seq_num))
    assert.are.equal("timeout", err and err.code, err and tostring(err))
  end

  local function delta(before, key) return server:stats()[key] - before[key] end

  it("moves to a fresh connection after a batch flagged reconnect-advised, no duplicate, no gap", function()
    local reader_client, writer_client = clients(3)
    local name = H.unique_name("advised")
    local writer = writer_client:basin("fault-basin"):stream(name)
    append(writer, 1, 5)
    server:command("read_reconnect_flag_after 1") -- batch 1 (records 0..4) carries the flag
    local before = server:stats()
    local reader <close> = assert(reader_client:basin("fault-basin"):stream(name):read_session { seq_num = 0 })
    expect(reader, 0, 5)
    append(writer, 6, 10) -- written after the hand-over
    expect(reader, 5, 5)
    nothing_more(reader)
    assert.are.equal(2, delta(before, "read_sessions"), "the read resumed once")
    -- before the fix: 1 (the resumed read went out on the connection told to go away)
    assert.are.equal(2, delta(before, "read_conns"), "the resumed read came on a new connection")
    assert.are.equal(1, reader:status().reconnects)
  end)

  it("resumes after server_draining without spending an attempt (max_attempts = 1), on a fresh connection", function()
    local reader_client, writer_client = clients(1)
    local name = H.unique_name("draining")
    local writer = writer_client:basin("fault-basin"):stream(name)
    append(writer, 1, 3)
    server:command("read_terminal_after 1 503 " .. DRAINING)
    local before = server:stats()
    local reader <close> = assert(reader_client:basin("fault-basin"):stream(name):read_session { seq_num = 0 })
    expect(reader, 0, 3)
    append(writer, 4, 6)
    -- before the fix: err server_draining here (the only attempt was spent on the hand-over)
    expect(reader, 3, 3)
    nothing_more(reader)
    assert.are.equal(1, delta(before, "terminal"))
    assert.are.equal(2, delta(before, "read_sessions"))
    assert.are.equal(2, delta(before, "read_conns"), "the resumed read came on a new connection")
    assert.are.equal(1, reader:status().reconnects)
  end)

  it("counts a second server_draining within 60 s as a failure", function()
    local reader_client, writer_client = clients(1)
    local name = H.unique_name("draining2")
    local writer = writer_client:basin("fault-basin"):stream(name)
    append(writer, 1, 3)
    server:command("read_terminal_after 1 503 " .. DRAINING)
    server:command("read_terminal_after 0 503 " .. DRAINING) -- the resumed read: at once
    local before = server:stats()
    local reader <close> = assert(reader_client:basin("fault-basin"):stream(name):read_session { seq_num = 0 })
    expect(reader, 0, 3)
    local rec, err = reader:next(WAIT)
    assert.is_nil(rec, rec and ("unexpected record " .. rec.seq_num))
    assert.is_not_nil(err)
    assert.are.equal("server_draining", err.code, tostring(err))
    -- the first draining resumed (before the fix the read failed there: 1 read session)
    assert.are.equal(2, delta(before, "read_sessions"))
    assert.are.equal(2, delta(before, "terminal"))
  end)
end)
