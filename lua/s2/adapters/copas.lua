--- s2 scheduler hook for copas: a copas thread waiting for a ticket yields to the other
-- copas threads until the ticket is ready.
--   s2.set_scheduler(require("s2.adapters.copas")())
-- copas 2+ (copas.pause): a pause loop, with the timeout. copas 1.x (Debian's 1.1.7, which
-- can only wait on sockets): the ticket's fd is handed to copas as a readable "socket"; the
-- timeout is then not enforced (the ack arrives or fails within the client's own deadlines).
-- Outside a copas thread it lets the caller block ("block").
--
-- copas 1.x and a shared fd: the record tickets of one batch share an eventfd, and threads
-- held up by backpressure share the client's progress fd, which each retry drains. LuaSocket's
-- select reports one "socket" per fd, so of two threads on one fd only one would wake, and
-- the other could sleep on a drained fd for good. So one thread per fd waits in copas (the
-- first); the others park, and it resumes them all when the fd turns readable.
return function(copas)
  copas = copas or require "copas"
  local waiting = {} -- fd -> the threads parked behind the one waiting in copas (copas 1.x)
  -- What a parked thread yields: copas 1.x queues a yielded (socket, set) pair with
  -- set:insert(socket) and set:push(socket, thread); these do nothing, so the thread stays
  -- suspended until its fd's first waiter resumes it.
  local parking = { insert = function() end, push = function() end }
  local PARKED = {}

  return function(w, timeout)
    local co, main = coroutine.running() -- LuaJIT: nil in the main thread, no `main`
    if not co or main or (coroutine.isyieldable and not coroutine.isyieldable()) then
      return "block"
    end
    if copas.pause then
      local clock = copas.gettime or os.time
      local start = clock()
      local delay = 0.001
      while not w:ready() do
        if timeout and clock() - start >= timeout then
          return nil, require("s2.await").timeout_error(timeout)
        end
        copas.pause(delay)
        delay = math.min(delay * 2, 0.05)
      end
      return true
    end
    local fd = w:pollfd()
    local pseudo = {
      getfd = function() return fd end,
      dirty = function() return false end,
      settimeout = function() end,
      close = function() end, -- copas closes the "socket" of a finished thread: not ours to close
      receive = function()
        if w:ready() then return "x" end
        return nil, "timeout"
      end,
    }
    repeat
      local parked = waiting[fd]
      if parked then
        parked[#parked + 1] = co
        coroutine.yield(PARKED, parking)
      else
        parked = {}
        waiting[fd] = parked
        copas.receive(pseudo, 1) -- returns once w:ready()
        waiting[fd] = nil -- from here a new waiter on fd waits in copas itself
        for i = 1, #parked do
          copas.addthread(parked[i]) -- resumes it now, under copas (it may yield to copas again)
        end
      end
    until w:ready()
    return true
  end
end
