--- Observability events (see "Observability / events" in docs/api.md). The core's threads
-- queue events per client (csrc/s2_events.c) only while a handler exists; this module takes
-- them out and calls the handler at safe points on the Lua side: every public call that
-- goes through lua/s2/await.lua (each wait, each wake), the session, producer and reader
-- calls, and client:poll_events(). Never from a finalizer, never from C.
--
-- Precedence: a client's own on_event handler; else the module-wide logger (s2.set_logger),
-- which covers every client without on_event, made before or after it was set.
local M = {}

local clients = setmetatable({}, { __mode = "k" }) -- client -> true (every live client)
local logger            -- s2.set_logger's function, or nil
local any_handler = false -- some client has (or had) an on_event: deliver() looks
-- Coroutines (MAIN for the main thread) running a handler: no nested delivery there. Per
-- coroutine, not one flag: a handler may yield (it waits under a scheduler) in a coroutine
-- that is never resumed (killed by a timeout, an aborted request), and a module-wide flag
-- left set then would stop every later delivery. Weak: such a coroutine goes with its entry.
local delivering = setmetatable({}, { __mode = "k" })
local MAIN = {}
local function current()
  return coroutine.running() or MAIN -- (Lua 5.1 / LuaJIT: nil in the main thread)
end
local reported = setmetatable({}, { __mode = "k" }) -- handler -> true: its error was told

local function handler_of(client)
  return client._on_event or logger
end

--- A new client (Client.new): registered, and its queue enabled when it has a handler.
function M.register(client, on_event)
  client._on_event = on_event
  clients[client] = true
  if on_event then any_handler = true end
  if handler_of(client) then client.core:events_enable(true) end
end

--- s2.set_logger(fn | nil)
function M.set_logger(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("s2.set_logger: expected a function or nil, got " .. type(fn), 2)
  end
  logger = fn
  for client in pairs(clients) do
    if not client._on_event then
      client.core:events_enable(fn ~= nil)
    end
  end
end

local function report(fn, err)
  if reported[fn] then return end
  reported[fn] = true
  io.stderr:write(("s2: an event handler raised (further errors of this handler are not "
    .. "reported): %s\n"):format(tostring(err)))
end

-- Calls the handler with each event of one client. A handler that raises does not stop
-- the others, nor the call that delivered them: the error goes to stderr, once per handler.
local function deliver_client(client)
  local list = client.core:take_events()
  if not list then return 0 end
  local fn = handler_of(client)
  if not fn then return 0 end -- the handler went meanwhile: nobody wants them
  for i = 1, #list do
    local ok, err = pcall(fn, list[i])
    if not ok then report(fn, err) end
  end
  return #list
end

local function deliver_all()
  for client in pairs(clients) do deliver_client(client) end
end

-- Runs f(...) as this coroutine's delivery, unless one is already running in it (a handler
-- that waits, or calls back into the client): then nothing, 0. Returns what f returns.
local function guarded(f, ...)
  local co = current()
  if delivering[co] then return 0 end
  delivering[co] = true
  local ok, r = pcall(f, ...)
  delivering[co] = nil
  if not ok then error(r, 0) end -- only a take_events failure (no memory) gets here
  return r
end

--- Delivers what every client has queued. Cheap when nobody has a handler.
function M.deliver()
  if not logger and not any_handler then return end
  guarded(deliver_all)
end

--- client:poll_events() -> n: delivers the client's queued events now.
function M.poll(client)
  return guarded(deliver_client, client)
end

return M
