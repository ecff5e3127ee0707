-- A handler that yields (it waits under a scheduler: a log shipper on a cosocket, a copas or
-- cqueues sleep) inside a coroutine that is then abandoned (killed by a timeout, an aborted
-- OpenResty request) must not stop event delivery for good. It did: one module-wide
-- "delivering" flag stayed set, so every later deliver() and poll_events() of every client
-- returned at once and their events were never delivered.
-- No server: a client pointed at a closed port makes retry events on its own.
describe("regression: a handler yielding in an abandoned coroutine", function()
  it("does not stop later deliveries, for this client or another", function()
    local s2 = require "s2"
    local function cfg(handler)
      return {
        access_token = "tok", account_endpoint = "http://127.0.0.1:1",
        basin_endpoint = "http://127.0.0.1:1", request_timeout = 2,
        retry = { max_attempts = 2, min_base_delay = 0.001, max_base_delay = 0.002 },
        on_event = handler,
      }
    end
    local seen, other_seen = 0, 0
    local yield_now = false
    local c = s2.client(cfg(function()
      seen = seen + 1
      if yield_now then
        yield_now = false
        coroutine.yield("waiting in the handler")
      end
    end))
    local other = s2.client(cfg(function() other_seen = other_seen + 1 end))

    -- A coroutine whose call delivers the event to a handler that yields; then dropped.
    local co = coroutine.create(function()
      yield_now = true
      c:list_basins()     -- its retry event is delivered after the (blocking) wait
      c:list_basins()     -- ... or here, before this one's wait
    end)
    local ok, what = coroutine.resume(co)
    assert.is_true(ok, tostring(what))
    assert.are.equal("waiting in the handler", what)
    assert.are.equal("suspended", coroutine.status(co))
    co = nil -- abandoned, never resumed
    collectgarbage()

    local before, other_before = seen, other_seen
    local r = c:list_basins()
    assert.is_nil(r)
    c:poll_events()
    assert.is_true(seen > before, "no event of this client was delivered any more")
    assert.is_nil((other:list_basins()))
    other:poll_events()
    assert.is_true(other_seen > other_before, "no event of another client was delivered any more")
    c:close()
    other:close()
  end)
end)
