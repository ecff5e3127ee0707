-- Issue 15, "Scale": many append and read sessions on one client, multiplexed over its HTTP/2
-- connections (at most 100 streams each). Correctness only (bench/scale.lua has the numbers):
-- every append session's batches are acked with the right seq nums, and every read session
-- following a stream gets that stream's records, in order. 1000 + 1000 against the null sink
-- (tools/null_sink.c, which serves reads of any stream with generated bodies: the hex seq_num
-- first), 200 + 200 against s2-lite (to keep the suite's time low), where the bodies are
-- checked too.
local H = require "helper"
local N = require "support.null_sink"

local WAIT = 30
local BATCH = 5

local function body(i, r, k) return ("s%d r%d k%d"):format(i, r, k) end

-- n append sessions and n readers on one client; `sink`: bodies are the sink's.
local function run(client, b, n, rounds, sink)
  local sessions, readers, tickets = {}, {}, {}
  for i = 1, n do sessions[i] = assert(b:stream("s" .. i):append_session()) end
  for r = 1, rounds do
    for i = 1, n do
      local batch = {}
      for k = 1, BATCH do batch[k] = body(i, r, k) end
      tickets[i] = assert(sessions[i]:submit(batch))
    end
    local first = (r - 1) * BATCH
    for i = 1, n do
      local ack = assert(tickets[i]:ack(WAIT))
      assert.are.same({ first, first + BATCH }, { ack.start.seq_num, ack["end"].seq_num })
    end
    if r == 1 then -- the streams exist now: readers follow them from the start
      for i = 1, n do readers[i] = assert(b:stream("s" .. i):read_session { seq_num = 0 }) end
    end
    for i = 1, n do
      for k = 1, BATCH do
        local rec = assert(readers[i]:next(WAIT))
        local seq = first + k - 1
        assert.are.equal(seq, rec.seq_num)
        if sink then assert.are.equal(("%016x"):format(seq), rec.body:sub(1, 16))
        else assert.are.equal(body(i, r, k), rec.body) end
      end
    end
  end
  assert.is_true(client:stats().connections_open >= (2 * n) // 100) -- <= 100 streams each
  for i = 1, n do
    readers[i]:close()
    assert(sessions[i]:close(WAIT))
  end
end

describe("scale", function()
  it("1000 append sessions and 1000 read sessions on one client (null sink)", function()
    local sink = N.start { read_record_size = 40 }
    local client = require("s2").client { access_token = "ignored", account_endpoint = sink.endpoint,
                                          basin_endpoint = sink.endpoint, request_timeout = WAIT }
    local ok, err = pcall(run, client, client:basin("scale-basin"), 1000, 3, true)
    client:close()
    local stats = sink:stats()
    sink:stop()
    assert(ok, err)
    assert.are.equal(2000, stats.sessions + stats.read_sessions)
  end)

  it("200 append sessions and 200 read sessions on one client (s2-lite)", function()
    local client = H.client { request_timeout = WAIT }
    local basin = H.new_basin(client, "scale")
    local ok, err = pcall(run, client, client:basin(basin.name), 200, 2, false)
    client:close()
    assert(ok, err)
  end)
end)
