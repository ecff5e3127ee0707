-- The I/O thread runs only the operations a wake-up concerns (issue 15, "Scale": 0 CPU when
-- idle). With hundreds of idle sessions on one client, a record for one read session, a batch
-- of one append session, or a server heartbeat costs that session's run, not a walk of all of
-- them. Measured through client:stats().op_runs (operations run) and loop_turns; before the
-- loop kept a ready list and a deadline heap every turn ran every operation (op_runs grew by
-- the number of sessions per turn). Over TLS (s2-lite with certificates of its own), since
-- that is where production runs.
local L = require "support.shaped_tls"

local must = require("helper").must

describe("I/O loop turns", function()
  local link, client, basin
  local N = 150

  lazy_setup(function()
    link = L.start {}
    client = link:direct_client()
    local name = ("loopturns-%x-%d"):format(os.time(), math.random(1e6))
    must(client:create_basin(name, { create_stream_on_append = true }))
    basin = client:basin(name)
  end)
  lazy_teardown(function()
    if client then client:close() end
    if link then link:stop() end
  end)

  it("runs only the session a record or an ack concerns, among many idle ones", function()
    local sessions, readers = {}, {}
    for i = 1, N do
      sessions[i] = must(basin:stream("s" .. i):append_session())
      must(must(sessions[i]:submit { "first " .. i }):ack(20))
    end
    for i = 1, N do
      readers[i] = must(basin:stream("s" .. i):read_session { seq_num = 0 })
      assert.are.equal("first " .. i, must(readers[i]:next(20)).body)
    end
    local connections = client:stats().connections_open
    assert.is_true(connections >= 3, connections .. " connections") -- 300 streams, <= 100 each

    -- One append and its read-back on one stream, among 2N idle sessions. What runs: that
    -- session (submit, write, ack) and that reader (record, drain), plus whatever heartbeats
    -- s2-lite sends the others meanwhile (one per reader every 5-15 s, each running one).
    local rounds = 20
    local before = client:stats()
    for r = 1, rounds do
      local k = (r % N) + 1
      must(must(sessions[k]:submit { ("r%d"):format(r) }):ack(20))
      local rec = must(readers[k]:next(20))
      assert.are.equal(("r%d"):format(r), rec.body)
    end
    local after = client:stats()
    local runs = after.op_runs - before.op_runs
    local turns = after.loop_turns - before.loop_turns
    assert.is_true(turns >= rounds, turns .. " turns")
    -- A walk of every operation per turn would be >= 2N runs per turn.
    assert.is_true(runs < turns * 10,
      ("%d operation runs in %d turns with %d sessions open"):format(runs, turns, 2 * N))
    assert.is_true(runs < 2 * N * 2, runs .. " runs for " .. rounds .. " round trips")

    -- Every session still works after being left alone (none missed a wake-up).
    local tickets = {}
    for i = 1, N do tickets[i] = must(sessions[i]:submit { "last " .. i }) end
    for i = 1, N do
      must(tickets[i]:ack(20))
      assert.are.equal("last " .. i, must(readers[i]:next(20)).body)
    end
    for i = 1, N do
      readers[i]:close()
      must(sessions[i]:close(20))
    end
  end)
end)
