-- Regression (issue 14): a read session over HTTP/1.1 (server-sent events) reported the
-- client's retry budget in its "retry" events, not its own.
--
-- A read session can override the client's retry policy (`read_session{ retry = ... }`); the
-- HTTP/2 path reported the session's budget, but the SSE worker passed the client's
-- max_attempts to the event (and, before that, backed off with the client's delays). A handler
-- deciding from `max_attempts` saw "3" for a session that retries forever. Now both paths
-- report the budget the session actually retries under. Here: an SSE read session through
-- tools/fault_proxy, its connections cut, under a client budget of 3 and its own of math.huge.
local H = require "helper"
local P = require "support.fault_proxy"

local must = H.must

describe("regression: SSE read sessions report their own retry budget", function()
  it("retry events of a cut SSE read session carry the session's max_attempts", function()
    local direct = H.client()
    local basin = H.new_basin(direct, "sseretryev")
    local name = H.unique_name("s")
    local p = must(basin:stream(name):producer())
    local n = 4000
    for i = 1, n do must(p:submit(("%06d"):format(i) .. ("s"):rep(100))) end
    must(p:close())

    local proxy = P.start { target = H.endpoint():gsub("^https?://", "") }
    -- every connection cut after 300 KB: one SSE event carries a whole batch (~150 KB here),
    -- so a cut much below that would never let one through
    proxy:command("cut_after_down 300000")
    local events = {}
    local c = H.client { force_http1 = true, account_endpoint = proxy.endpoint,
                         basin_endpoint = proxy.endpoint,
                         retry = { max_attempts = 3, min_base_delay = 0.01, max_base_delay = 0.02 },
                         on_event = function(e) events[#events + 1] = e end }
    local r = must(c:basin(basin.name):stream(name):read_session {
      seq_num = 0, count = n,
      retry = { max_attempts = math.huge, min_base_delay = 0.01, max_base_delay = 0.02 },
    })
    local got = 0
    for rec in r:records() do
      got = got + 1
      assert.are.equal(got - 1, rec.seq_num)
    end
    c:poll_events()
    proxy:stop()
    assert.are.equal(n, got)
    local retries = {}
    for _, e in ipairs(events) do if e.type == "retry" then retries[#retries + 1] = e end end
    assert.is_true(#retries >= 1, "no retry event although the proxy cut the connection")
    for _, e in ipairs(retries) do
      assert.are.equal("read_session", e.what)
      assert.are.equal(math.huge, e.max_attempts)
    end
    c:close()
  end)
end)
