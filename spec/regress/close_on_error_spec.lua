-- Regression: leaving a `local x <close>` scope by an error must close the session or
-- producer and let the original error through (Lua passes that error to __close as a
-- second argument, which close() once took for a timeout).
local H = require "helper"

describe("to-be-closed sessions on an error exit", function()
  it("keep the original error and still drain", function()
    local client = H.client()
    local basin = H.new_basin(client, "tbcerr")
    local stream = H.new_stream(basin, "s")
    local ok, err = pcall(function()
      local producer <close> = assert(stream:producer { linger = 5 })
      local session <close> = assert(stream:append_session())
      assert(session:submit({ "from the session" }))
      assert(producer:submit("from the producer"))
      error("the original error")
    end)
    assert.is_false(ok)
    assert.truthy(tostring(err):find("the original error", 1, true), tostring(err))
    assert.are.equal(2, assert(stream:check_tail()).seq_num)
  end)
end)
