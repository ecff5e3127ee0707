-- The copas adapter, on the LuaJIT build (Debian has copas for Lua 5.1 only): runs
-- spec/jit/copas_check.lua under luajit and checks the order of its events.
local H = require "helper"

describe("copas adapter (LuaJIT)", function()
  it("lets another copas thread run while a ticket is awaited", function()
    local name = H.unique_name("copas")
    assert(H.client():create_basin(name, { create_stream_on_append = true }))
    local p = io.popen(("unset LD_PRELOAD; COPAS_BASIN=%s luajit spec/jit/copas_check.lua 2>&1; echo exit=$?")
      :format(name))
    local out = p:read("a")
    p:close()
    assert.are.equal("submitted\nother ran while pending\nacked 0\nexit=0\n", out)
  end)
end)
