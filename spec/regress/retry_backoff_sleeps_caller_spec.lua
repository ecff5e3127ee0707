-- Regression (issue 13): a unary call's retries ran on the caller's thread, backoff included
-- (a sleep there): inside a cqueues controller a ticker coroutine ran 0 times through the
-- backoff. Here the fault server answers the first attempt of an append with a retryable 503
-- and retry-after-ms 400 (the backoff is at least that), then takes the retry: the ticker must
-- run through the backoff, and the call still returns the retry's ack. Retries and backoff now
-- run as timers on the client's I/O thread.
local H = require "helper"
local F = require "support.fault_server"
local T = require "support.ticker"

describe("a unary call's retry backoff in a cqueues controller (regress)", function()
  local server
  setup(function() server = F.start() end)
  teardown(function()
    if server then server:stop() end
  end)

  it("lets a ticker coroutine run through the backoff, and the retry's ack comes back", function()
    local client = H.client { account_endpoint = server.endpoint, basin_endpoint = server.endpoint,
                              retry = { max_attempts = 3, min_base_delay = 0.01, max_base_delay = 0.02 } }
    local stream = client:basin("backoff-basin"):stream("s")
    server:command("status 503 retry_after_ms=400 times=1 on=unary")
    local rep = T.run("cqueues", function(measure)
      local r = measure(stream.append, stream, { "after a retry" })
      local ack = r[1]
      if not ack then return "nil, " .. tostring(r[2]) end
      if ack.start.seq_num ~= 0 then return "ack at " .. tostring(ack.start.seq_num) .. ", expected 0" end
    end)
    client:close()
    T.assert_yielded(rep, "stream:append (retried after a 400 ms backoff)", "cqueues")
    local stats = server:stats()
    assert.are.equal(1, stats.faults_taken) -- the first attempt was the 503
    assert.are.equal(1, server:records("s").count)
  end)
end)
