--- s2 scheduler hook for luv (libuv): a coroutine waiting for a ticket yields to the loop
-- and is resumed by a uv poll handle on the ticket's fd (or a timer).
--   local s2 = require "s2"
--   s2.set_scheduler(require("s2.adapters.luv")())
-- Outside a coroutine it lets the caller block ("block").
return function(uv)
  uv = uv or require "luv"
  return function(w, timeout)
    local co, main = coroutine.running() -- LuaJIT: nil in the main thread, no `main`
    if not co or main or (coroutine.isyieldable and not coroutine.isyieldable()) then
      return "block"
    end
    local poll = uv.new_poll(w:pollfd())
    local timer
    local function wake(ready)
      if coroutine.status(co) == "suspended" then
        local ok, err = coroutine.resume(co, ready)
        if not ok then error(err, 0) end
      end
    end
    poll:start("r", function() wake(true) end)
    if timeout then
      timer = uv.new_timer()
      timer:start(math.floor(timeout * 1000), 0, function() wake(false) end)
    end
    local ready = coroutine.yield()
    poll:stop()
    poll:close()
    if timer then
      timer:stop()
      timer:close()
    end
    if ready or w:ready() then return true end
    return nil, require("s2.await").timeout_error(timeout)
  end
end
