-- Issue 12, bug 1: TLS writes that find the socket full.
--
-- When SSL_write returned WANT_WRITE, conn_flush (csrc/s2_runtime.c) kept the unwritten
-- bytes in c->out and retried SSL_write from that copy, a different pointer, while the
-- SSL_CTX lacked SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER: OpenSSL failed the connection ("bad
-- write retry"), every reconnect met the same fate, and every ticket failed ("write failed
-- (after N attempts)"). Loopback specs never saw it: there the client's send buffer is
-- ~4 MB, more than s2-lite's 1 MiB HTTP/2 window lets it write, so SSL_write never finds
-- the socket full. Here the client talks TLS to s2-lite through the fault proxy shaped as a
-- slow WAN link (3 MB/s up, a 1460-byte MSS, a 64 KiB receive buffer), so its socket does
-- fill, as it does for every user of S2 at any real throughput over a WAN.
local L = require "support.shaped_tls"

local MB = 1000 * 1000

describe("regress: TLS writes retried after WANT_WRITE (issue 12)", function()
  local link, basin_name

  lazy_setup(function()
    link = L.start { rate_up = 3 * MB, rcvbuf = 65536, mss = 1460 }
    basin_name = ("tlswr-%x-%d"):format(os.time(), math.random(1e6))
    local _, err = link:direct_client():create_basin(basin_name, { create_stream_on_append = true })
    assert(not err, err and tostring(err))
  end)
  lazy_teardown(function()
    if link then link:stop() end
  end)

  local function client()
    return link:client { request_timeout = 20,
                         retry = { max_attempts = 5, min_base_delay = 0.05, max_base_delay = 0.2 } }
  end

  -- Waits for every ticket; returns the count of failures and one message per error kind.
  local function settle(tickets)
    local failed, seen = 0, {}
    for _, t in ipairs(tickets) do
      local ack, err = t:ack(120)
      if not ack then
        failed = failed + 1
        seen[tostring(err)] = true
      end
    end
    local msgs = {}
    for m in pairs(seen) do msgs[#msgs + 1] = m end
    return failed, table.concat(msgs, " | ")
  end

  -- The stream holds exactly the `n` records of `tag`, in order, with the right contents.
  local function check_stream(stream_name, tag, n, size)
    local stream = link:direct_client():basin(basin_name):stream(stream_name)
    local bodies, tail = L.read_all(stream, n)
    assert.are.equal(n, tail, "records in the stream")
    assert.are.equal(n, #bodies)
    local want, got = nil, nil
    for i = 1, n do
      local expected = L.body(tag, i, size)
      assert.are.equal(expected:sub(1, 24), bodies[i]:sub(1, 24), "record " .. (i - 1))
      want = L.digest(want, expected)
      got = L.digest(got, bodies[i])
    end
    assert.are.equal(want, got, "digest of the stream's contents")
  end

  it("acks 24 batches of 1 MB sent through an append session to a slow receiver", function()
    local c = client()
    local session = assert(c:basin(basin_name):stream("session"):append_session {
      max_inflight_bytes = 32 * 1024 * 1024 })
    local size, per_batch, batches = 100000, 10, 24
    local tickets = {}
    for b = 1, batches do
      local records = {}
      for j = 1, per_batch do records[j] = L.body("s", (b - 1) * per_batch + j, size) end
      tickets[b] = assert(session:submit(records))
    end
    local failed, msgs = settle(tickets)
    session:close(30)
    assert.are.equal(0, failed, ("%d of %d batches failed: %s"):format(failed, batches, msgs))
    check_stream("session", "s", batches * per_batch, size)
  end)

  it("acks every record of a producer's 8 MB over the same kind of link", function()
    local c = client()
    local producer = c:basin(basin_name):stream("producer"):producer {
      max_inflight_bytes = 16 * 1024 * 1024 }
    local size, n = 2000, 4000
    local tickets = {}
    for i = 1, n do tickets[i] = assert(producer:submit(L.body("p", i, size))) end
    local failed, msgs = settle(tickets)
    producer:close(30)
    assert.are.equal(0, failed, ("%d of %d records failed: %s"):format(failed, n, msgs))
    check_stream("producer", "p", n, size)
  end)
end)
