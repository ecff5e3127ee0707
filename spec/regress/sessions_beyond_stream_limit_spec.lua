-- Regression (issue 15, "Scale"): 1000 append sessions opened at once on one client. Every
-- session opened while the first connection was still being set up chose that connection
-- (find_conn took any connection not yet ready, whatever it already carried), so once it was
-- ready some hundreds of request streams went out on it; nghttp2 held back those beyond the
-- server's concurrent-stream limit, and since append sessions keep their streams open, those
-- sessions never got a stream: their first batch was never acked (ticket:ack timed out).
-- Now a connection being set up takes at most 100 sessions (the per-connection cap), and a
-- session finding its connection full once ready goes to another one. On the old code this
-- spec failed with timeouts and with 3 connections where at least 10 are needed.
local H = require "helper"

describe("sessions beyond one connection's stream limit (regress)", function()
  it("1000 append sessions opened at once all get their first batch acked", function()
    local N = 1000
    local client = H.client { request_timeout = 20, drain_timeout = 0 }
    local core = require "s2.core"
    local basin = H.new_basin(client, "streamlimit")
    local b = client:basin(basin.name)
    local sessions, tickets = {}, {}
    for i = 1, N do
      sessions[i] = assert(b:stream("s" .. i):append_session())
      tickets[i] = assert(sessions[i]:submit { "r" .. i })
    end
    local failed = {}
    local deadline = core.now() + 15 -- one deadline for all: the old code fails in 15 s
    for i = 1, N do
      local ack, err = tickets[i]:ack(math.max(0.001, deadline - core.now()))
      if not ack then failed[#failed + 1] = ("%d: %s"):format(i, tostring(err))
      else assert.are.equal(0, ack.start.seq_num) end
    end
    if #failed > 0 then client:close() end
    assert.are.same({}, failed)
    -- at most 100 streams on each connection
    assert.is_true(client:stats().connections_open >= N // 100)
    for i = 1, N do assert(sessions[i]:close(15)) end
    client:close()
  end)
end)
