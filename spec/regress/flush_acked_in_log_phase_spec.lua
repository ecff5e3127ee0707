-- Regression: producer:flush in a phase where nginx forbids yielding (log_by_lua) returned
-- true when the acks happened to be in already, and 'invalid' otherwise: the outcome of a
-- call depended on a race with the I/O thread (seen as a flaky openresty_never_block case).
-- Now flush refuses before sealing, whatever has been acked. Real nginx; the log-phase calls
-- are those of spec/support/openresty/never_block.lua (key log:producer_flush_acked).
local H = require "helper"
local N = require "support.nginx"

describe("regress: producer:flush in log_by_lua once everything is acked", function()
  local srv, basin_name
  lazy_setup(function()
    assert(N.available())
    local direct = H.client()
    basin_name = H.unique_name("flushlog")
    assert(direct:create_basin(basin_name, { create_stream_on_append = true, create_stream_on_read = true }))
    assert(direct:basin(basin_name):stream("inlog"):append { "one" })
    srv = N.start {
      conf = "spec/support/openresty/never_block.conf",
      env = { S2_BASIN = basin_name, S2_SLOW_ENDPOINT = H.endpoint() },
    }
  end)
  lazy_teardown(function() if srv then srv:stop() end end)

  it("fails with 'invalid' naming the phase, not true", function()
    local _, code = srv:get("/in_log?stream=inlog")
    assert.are.equal(200, code)
    local done
    for _ = 1, 1500 do -- the log phase runs after the response: up to 15 s
      done = srv:get("/dict?key=log:done") == "yes"
      if done then break end
      os.execute("sleep 0.01")
    end
    assert.is_true(done, "the log phase did not finish")
    local got = srv:get("/dict?key=log:producer_flush_acked")
    local rc, message = got:match("^([^|]*)|(.*)$")
    assert.are.equal("invalid", rc, got)
    assert.is_truthy(message:find("'log' phase", 1, true), message)
  end)
end)
