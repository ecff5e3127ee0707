--- s2 scheduler hook for copas: a copas thread waiting for a ticket yields to the other
-- copas threads until the ticket is ready.
--   s2.set_scheduler(require("s2.adapters.copas")())
-- copas 2+ (copas.pause): a pause loop, with the timeout. copas 1.x (Debian's 1.1.7, which
-- can only wait on sockets): the ticket's fd is handed to copas as a readable "socket"; the
-- timeout is then not enforced (the ack arrives or fails within the client's own deadlines).
-- Outside a copas thread it lets the caller block ("block").
return function(copas)
  copas = copas or require "copas"
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
    copas.receive(pseudo, 1)
    return true
  end
end
