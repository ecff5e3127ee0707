-- Regression: the luv adapter started a waiter's timeout timer from libuv's cached loop clock,
-- which stands still while the host does anything outside the loop. After the host had spent
-- longer than the timeout outside uv.run (other work, a blocking call, a previous spec), the
-- timer was already due: ticket:ack(timeout) failed with "timeout" at once, the ack arriving
-- a moment later. A timeout must never end a wait before it has elapsed.
local H = require "helper"
local s2 = require "s2"
local core = require "s2.core"

describe("the luv adapter's timeout", function()
  after_each(function() s2.set_scheduler(nil) end)

  it("runs from the real clock, not from the loop's stale one", function()
    local uv = require "luv"
    s2.set_scheduler(require("s2.adapters.luv")(uv))
    local client = H.client()
    local stream = H.new_stream(H.new_basin(client, "luvclock"), "s")
    -- the batch is never sealed (linger 60, the record below is its first): only the timeout
    -- can end the first wait
    local p = assert(stream:producer { linger = 60 })
    local t = assert(p:submit("x"))
    uv.run("nowait") -- the loop's clock is now
    os.execute("sleep 2") -- the host works outside the loop for longer than the timeout
    local elapsed, err
    coroutine.wrap(function()
      local start = core.now()
      local ack
      ack, err = t:ack(1)
      elapsed = core.now() - start
      assert(ack == nil, "acked a batch that was never sealed")
    end)()
    uv.run()
    assert.are.equal("timeout", err and err.code)
    assert.is_true(elapsed >= 0.99, ("timed out after %.3f s of a 1 s timeout"):format(elapsed))
    assert(p:close(20))
    assert.are.equal(0, assert(t:ack(1)).seq_num)
  end)
end)
