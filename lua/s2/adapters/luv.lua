--- s2 scheduler hook for luv (libuv): a coroutine waiting for a ticket yields to the loop
-- and is resumed by a uv poll handle on the ticket's fd (or a timer).
--   local s2 = require "s2"
--   s2.set_scheduler(require("s2.adapters.luv")())
-- Outside a coroutine it lets the caller block ("block").
--
-- Several waiters can share one fd: the record tickets of one producer batch share the
-- batch's eventfd, and every coroutine held up by backpressure waits on the client's
-- progress fd. libuv allows one poll handle per fd, so the hook keeps one poll per fd with
-- the list of its waiters: when the fd turns readable every waiter listed at that moment is
-- resumed once; a waiter whose own timeout fires leaves the list and the others keep
-- waiting; the poll is stopped and closed as soon as no waiter is left.
return function(uv)
  uv = uv or require "luv"
  local watched = {} -- fd -> { poll = handle, head = waiter, tail = waiter }

  -- Takes w out of its fd's list; the last one out stops and closes the poll.
  local function unlink(w)
    local entry = w.entry
    if w.prev then w.prev.next = w.next else entry.head = w.next end
    if w.next then w.next.prev = w.prev else entry.tail = w.prev end
    w.prev, w.next = nil, nil
    if not entry.head then
      watched[w.fd] = nil
      entry.poll:stop() -- synchronous: the fd may get a new poll at once
      entry.poll:close()
    end
  end

  -- Ends w's wait (once) and resumes its coroutine with how it ended.
  local function wake(w, how, detail)
    if w.done then return true end
    w.done = true
    unlink(w)
    if w.timer then
      w.timer:stop()
      w.timer:close()
      w.timer = nil
    end
    if coroutine.status(w.co) ~= "suspended" then return true end
    return coroutine.resume(w.co, how, detail)
  end

  local function on_readable(entry, err)
    -- Only the waiters listed now: one resumed here may wait again on the same fd, and it
    -- must not be woken again by this event (the progress fd was drained meanwhile).
    local list = {}
    local w = entry.head
    while w do
      list[#list + 1] = w
      w = w.next
    end
    local failure
    for i = 1, #list do
      local ok, rerr = wake(list[i], err and "error" or "ready", err)
      if not ok and failure == nil then failure = rerr end
    end
    if failure ~= nil then error(failure, 0) end -- after every waiter had its turn
  end

  return function(w, timeout)
    local co, main = coroutine.running() -- LuaJIT: nil in the main thread, no `main`
    if not co or main or (coroutine.isyieldable and not coroutine.isyieldable()) then
      return "block"
    end
    local fd = w:pollfd()
    local entry = watched[fd]
    if not entry then
      local poll, perr = uv.new_poll(fd)
      if not poll then
        return nil, require("s2.error").new("io", "cannot poll the ticket's fd: " .. tostring(perr))
      end
      entry = { poll = poll }
      local ok, serr = poll:start("r", function(err) on_readable(entry, err) end)
      if not ok then
        poll:close()
        return nil, require("s2.error").new("io", "cannot poll the ticket's fd: " .. tostring(serr))
      end
      watched[fd] = entry
    end
    local waiter = { co = co, fd = fd, entry = entry, prev = entry.tail }
    if entry.tail then entry.tail.next = waiter else entry.head = waiter end
    entry.tail = waiter
    if timeout then
      -- The loop's clock is cached: it stands still while the host runs outside the loop (or
      -- blocks in a callback), and a timer started from it would fire that much too early.
      uv.update_time()
      waiter.timer = uv.new_timer()
      waiter.timer:start(math.floor(timeout * 1000), 0, function()
        local ok, err = wake(waiter, "timeout")
        if not ok then error(err, 0) end
      end)
    end
    local how, detail = coroutine.yield()
    if not waiter.done then -- resumed by someone else: leave the list all the same
      wake(waiter)
    end
    if w:ready() then return true end
    if how == "ready" then return true end -- readable: the caller checks (submit's loop)
    if how == "error" then
      return nil, require("s2.error").new("io", "polling the ticket's fd failed: " .. tostring(detail))
    end
    return nil, require("s2.await").timeout_error(timeout)
  end
end
