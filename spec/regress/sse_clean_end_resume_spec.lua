-- Regression (issue 12, item 7b): a following read over HTTP/1.1 (SSE) whose response ended
-- cleanly without a `[DONE]` event (the last chunk of a chunked body, or the close of a
-- close-delimited one: what a proxy or load balancer does to a long response) took that as
-- the end of the read and stopped silently: reader:next() returned nil, nothing more came.
--
-- Only [DONE] ends a read. A clean end is a failed attempt like a cut: the reader resumes
-- after the last record it delivered (Last-Event-ID "seq_num,count,bytes" of the last batch;
-- or, when only a heartbeat came, the seq_num its tail gave), keeps delivering the records
-- written later, in order and once each, and gives up only by the retry policy.
--
-- tools/fault_server.c serves the SSE reads from the records appended to it and ends a
-- response on `sse_end_after N [close]`. No s2-lite is needed.
local H = require "helper"
local F = require "support.fault_server"

local WAIT = 10 -- seconds: the bound of every wait on the reader

describe("SSE follower whose response ends cleanly without [DONE]", function()
  local server

  lazy_setup(function() server = F.start() end)
  lazy_teardown(function() if server then server:stop() end end)
  before_each(function() server:command("reset") end)
  after_each(function()
    assert.are.equal("ok pong", server:command("ping"))
    assert.are.equal(0, server:stats().queued, server:command("faults"))
  end)

  local function clients(retry)
    local function make(h1)
      return H.client {
        account_endpoint = server.endpoint, basin_endpoint = server.endpoint, force_http1 = h1,
        retry = retry or { max_attempts = 3, min_base_delay = 0.01, max_base_delay = 0.02 },
      }
    end
    return make(true), make(false)
  end

  local function append(stream, from, to)
    for i = from, to do assert(stream:append({ "rec-" .. i })) end
  end

  -- Reads n records; each must be the next one: seq_num first, first + 1, ... and its body.
  local function expect(reader, first, n)
    for seq = first, first + n - 1 do
      local rec, err = reader:next(WAIT)
      assert.is_nil(err, err and tostring(err))
      -- before the fix: nil, nil here (the read had "ended")
      assert.is_table(rec, ("record %d: the reader stopped (ended = %s)"):format(seq,
        tostring(reader:status().ended)))
      assert.are.equal(seq, rec.seq_num)
      assert.are.equal("rec-" .. (seq + 1), rec.body)
    end
  end

  for _, mode in ipairs { "", " close" } do
    local how = mode == "" and "the last chunk" or "the close of a close-delimited body"
    it("resumes after " .. how .. " with Last-Event-ID and delivers what is written later, once each", function()
      local reader_client, writer_client = clients()
      local name = H.unique_name("sseend")
      local writer = writer_client:basin("fault-basin"):stream(name)
      append(writer, 1, 3)
      server:command("sse_end_after 3" .. mode)
      local before = server:stats().reads
      local reader = assert(reader_client:basin("fault-basin"):stream(name):read_session { seq_num = 0 })
      expect(reader, 0, 3)
      append(writer, 4, 6) -- written after the first response ended
      expect(reader, 3, 3)
      local rec, err = reader:next(0.3) -- nothing more: no duplicate came after them
      assert.is_nil(rec, rec and ("duplicate or extra record " .. rec.seq_num))
      assert.are.equal("timeout", err and err.code)
      local stats = server:stats()
      assert.are.equal(2, stats.reads - before, "one resumed request")
      -- 3 records of 8 + 5 metered bytes each
      assert.are.equal("2,3,39", stats.last_event_id)
      assert.is_true(reader:status().reconnects >= 1)
      reader:close()
    end)
  end

  it("resumes from a heartbeat's tail when no record came before the end (no gap)", function()
    -- The backoff (2 s or more) leaves time to write records between the end and the
    -- resume: a resume from the original start (the tail) would skip them.
    local reader_client, writer_client = clients { max_attempts = 3, min_base_delay = 2, max_base_delay = 2 }
    local name = H.unique_name("ssehb")
    local writer = writer_client:basin("fault-basin"):stream(name)
    append(writer, 1, 2)
    server:command("sse_end_after 0") -- a ping with tail 2, then the end
    local reader = assert(reader_client:basin("fault-basin"):stream(name):read_session { tail_offset = 0 })
    local deadline = os.time() + WAIT
    while reader:status().reconnects == 0 and not reader:status().ended and os.time() < deadline do
      local rec, err = reader:next(0.05)
      assert.is_nil(rec)
      if err and err.code ~= "timeout" then error(err) end
    end
    assert.is_false(reader:status().ended, "the read ended at the clean end")
    assert.are.equal(1, reader:status().reconnects)
    append(writer, 3, 4) -- during the backoff
    expect(reader, 2, 2)
    reader:close()
  end)

  it("counts a clean end as a failed attempt: bounded by max_attempts", function()
    local reader_client = clients { max_attempts = 2, min_base_delay = 0.01, max_base_delay = 0.02 }
    local name = H.unique_name("ssebound")
    server:command("sse_end_after 0")
    server:command("sse_end_after 0")
    local reader = assert(reader_client:basin("fault-basin"):stream(name):read_session { seq_num = 0 })
    local rec, err = reader:next(WAIT)
    assert.is_nil(rec)
    assert.is_not_nil(err, "the read ended silently")
    assert.are.equal("connection_failed", err.code, tostring(err))
    assert.truthy(err.message:find("without [DONE]", 1, true), err.message)
    assert.truthy(err.message:find("after 2 attempts", 1, true), err.message)
    reader:close()
  end)
end)
