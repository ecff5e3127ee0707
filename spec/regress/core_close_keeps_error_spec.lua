-- Regression: the core append session's and producer's __close was their close(timeout), and
-- Lua 5.4 passes the error unwinding a `<close>` scope as __close's second argument: it was
-- taken for the close timeout, so `error("boom")` in the scope surfaced as "timeout: expected
-- a number of seconds, got string" instead of "boom". __close must close the default way
-- (drain, then end) and let the scope's error through unchanged. (The Lua wrappers' own
-- __close is covered by close_on_error_spec.lua; this is the core objects of s2.core.)
local H = require "helper"
local s2 = require "s2"

-- Runs f in a scope, returns what pcall gives.
local function raise_in_scope(f)
  return pcall(f)
end

describe("core objects closed by a scope that raises", function()
  local client, basin, core
  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "coreclose")
    core = client.core
  end)

  it("let the error through and still drain an append session", function()
    local stream = H.new_stream(basin, "session")
    local ok, err = raise_in_scope(function()
      local s <close> = assert(core:append_session(basin.name, stream.name, {}))
      assert(s:submit({ "one", "two" }))
      assert(s:submit({ "three" }))
      error("boom")
    end)
    assert.is_false(ok)
    assert.are.equal("boom", (tostring(err):gsub("^.-:%d+: ", "")))
    assert.are.equal(3, assert(stream:check_tail()).seq_num) -- drained before ending
  end)

  it("let the error through and still flush a producer (its batch lingering)", function()
    local stream = H.new_stream(basin, "producer")
    local sentinel = setmetatable({}, { __tostring = function() return "a table error" end })
    local ok, err = raise_in_scope(function()
      local p <close> = assert(core:producer(basin.name, stream.name, { linger = 30 }))
      for i = 1, 5 do assert(p:submit("r" .. i)) end
      error(sentinel)
    end)
    assert.is_false(ok)
    assert.are.equal(sentinel, err) -- the very object raised
    assert.are.equal(5, assert(stream:check_tail()).seq_num)
  end)

  it("let the error through for a read session and a client", function()
    local stream = H.new_stream(basin, "reader")
    assert(stream:append({ "x" }))
    local ok, err = raise_in_scope(function()
      local c <close> = H.client().core
      local r <close> = assert(c:read_session(basin.name, stream.name, { seq_num = 0 }))
      assert.are.equal("x", assert(r:next(20)).body)
      error("boom")
    end)
    assert.is_false(ok)
    assert.are.equal("boom", (tostring(err):gsub("^.-:%d+: ", "")))
  end)

  it("let the error through when no server answers", function()
    local dead = s2.client {
      access_token = "ignored",
      account_endpoint = "http://127.0.0.1:9", basin_endpoint = "http://127.0.0.1:9", -- discard: closed
      request_timeout = 1, connection_timeout = 1, retry = { max_attempts = 1 },
    }
    for _, open in ipairs {
      function(c) return assert(c:append_session("nobasin1", "s", {})), { "lost" } end,
      function(c) return assert(c:producer("nobasin1", "s", { linger = 30 })), "lost" end,
    } do
      local ok, err = raise_in_scope(function()
        local obj <close>, record = open(dead.core)
        obj:submit(record)
        error("boom")
      end)
      assert.is_false(ok)
      assert.are.equal("boom", (tostring(err):gsub("^.-:%d+: ", "")))
    end
    dead:close()
  end)
end)
