-- Retries of unary calls: backoff shape, attempt counting, and the append retry policy.
-- Uses a loopback port with nothing listening (connection refused: retryable, and provably
-- without side effects). Faults that need a server (429, cut connections) are covered with
-- the fault proxy.
local core = require "s2.core"
local s2 = require "s2"

describe("backoff", function()
  it("doubles from min to max, with jitter in [base, 2 x base)", function()
    for retry, base in ipairs { 0.1, 0.2, 0.4, 0.8, 1, 1, 1 } do
      for _ = 1, 50 do
        local d = core.backoff_delay(0.1, 1, retry - 1)
        assert.is_true(d >= base - 1e-9 and d < 2 * base + 1e-9, ("retry %d: %f"):format(retry - 1, d))
      end
    end
  end)

  it("waits at least what retry-after-ms asks for", function()
    assert.is_true(core.backoff_delay(0.1, 1, 0, 3000) >= 3.0)
    assert.is_true(core.backoff_delay(0.1, 1, 0, 1) < 0.2)
  end)
end)

describe("unary retries", function()
  -- A port that refuses: bind nothing. 1 is privileged and unused on these machines.
  local function client(attempts, policy)
    return s2.client {
      access_token = "t",
      account_endpoint = "http://127.0.0.1:1",
      basin_endpoint = "http://127.0.0.1:1",
      retry = { max_attempts = attempts, min_base_delay = 0.001, max_base_delay = 0.002,
                append_retry_policy = policy },
    }
  end

  it("retries a refused connection up to max_attempts and says so", function()
    local _, err = client(3):list_basins()
    assert.are.equal("connection_failed", err.code)
    assert.is_true(err.retryable)
    assert.truthy(err.message:find("after 3 attempts", 1, true), err.message)
  end)

  it("does not retry with max_attempts = 1", function()
    local _, err = client(1):list_basins()
    assert.are.equal("connection_failed", err.code)
    assert.is_nil(err.message:find("attempts", 1, true))
  end)

  it("retries an append under no_side_effects when nothing can have been sent", function()
    local _, err = client(2, "no_side_effects"):basin("some-basin"):stream("s"):append({ "x" })
    assert.are.equal("connection_failed", err.code)
    assert.truthy(err.message:find("after 2 attempts", 1, true), err.message)
  end)
end)
