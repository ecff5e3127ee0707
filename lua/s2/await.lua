--- Waiting for tickets the right way for where the code runs. Strategy, first match wins:
--   1. a hook installed with s2.set_scheduler(fn) (adapters: s2.adapters.luv, .copas);
--   2. inside OpenResty, in a phase that may sleep: ngx.sleep in a loop, never blocking the
--      worker; in a phase that may not: an error, not a stall;
--   3. inside a cqueues controller: cqueues.poll on the ticket (it is pollable);
--   4. otherwise: block this thread on the ticket (C condition variable).
-- A timeout never cancels the append: the ticket still resolves later.
local core = require "s2.core"
local errors = require "s2.error"

local M = {}
local hook

-- nginx phases in which ngx.sleep is allowed.
local YIELDABLE = {
  rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
  ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

local function timeout_error(timeout)
  return errors.new("timeout", ("no ack within %.3f s (the append is not cancelled and may still land)")
    :format(timeout), { retryable = true })
end

--- Installs (or, with nil, removes) the scheduler hook: fn(waitable, timeout) must return
-- once waitable:ready() is true (true) or the timeout passed (nil, err); it may return
-- "block" to let the caller block the thread instead.
function M.set_scheduler(fn)
  if fn ~= nil and type(fn) ~= "function" then
    error("s2.set_scheduler: expected a function or nil, got " .. type(fn), 2)
  end
  hook = fn
end

local function in_ngx()
  local ngx = rawget(_G, "ngx")
  if type(ngx) ~= "table" or type(ngx.get_phase) ~= "function" then return nil end
  return ngx
end

local function cqueues_running()
  local cqueues = package.loaded.cqueues
  if type(cqueues) ~= "table" or type(cqueues.running) ~= "function" then return nil end
  local cq, yieldable = cqueues.running()
  if cq and yieldable ~= false then return cqueues end
  return nil
end

--- Waits until w:ready() (w: a ticket, or any object with ready/pollfd/events/timeout).
-- Returns true, nil, err (timeout or a phase that cannot wait), or "block" when the caller
-- should block the thread itself.
function M.wait(w, timeout)
  if w:ready() then return true end
  if hook then
    local ok, err = hook(w, timeout)
    if ok ~= "block" then return ok, err end
  end
  local ngx = in_ngx()
  if ngx then
    local phase = ngx.get_phase()
    if not YIELDABLE[phase] then
      return nil, errors.new("invalid", ("cannot wait in the nginx '%s' phase without blocking the worker; wait in a content, access, rewrite or timer phase")
        :format(phase))
    end
    local deadline = timeout and ngx.now() + timeout
    local delay = 0.001
    while not w:ready() do
      if deadline and ngx.now() >= deadline then return nil, timeout_error(timeout) end
      ngx.sleep(delay)
      delay = math.min(delay * 2, 0.05)
    end
    return true
  end
  local cqueues = cqueues_running()
  if cqueues then
    local deadline = timeout and core.now() + timeout
    while not w:ready() do
      local left = deadline and deadline - core.now()
      if left and left <= 0 then return nil, timeout_error(timeout) end
      cqueues.poll(w, left)
    end
    return true
  end
  return "block"
end

--- Backpressure the same way: `try()` submits without waiting and returns false when there
-- is no room; between tries we wait for the client's progress (capacity freed, a failure)
-- the scheduler's way. In a plain script, `blocking()` does the waiting in C instead.
function M.submit(client_core, try, blocking)
  while true do
    -- `seen` before the drain: a bump between the two then makes the waiter ready at once,
    -- so whenever the fd is readable every waiter on it is ready (schedulers rely on it:
    -- they never spin on a readable fd, and the first thread woken can wake the others).
    local seen = client_core:progress()
    local fd = client_core:progress_fd() -- drained: readable again at the next progress
    local r, err = try()
    if r ~= false then return r, err end
    local waiter = {
      ready = function() return client_core:progress() ~= seen end,
      pollfd = function() return fd end,
      events = function() return "r" end,
      timeout = function() return nil end,
    }
    local ok, werr = M.wait(waiter, nil)
    if ok == "block" then return blocking() end
    if not ok then return nil, werr end
  end
end

-- A timeout argument: nil (or anything over a year) waits forever.
local function check_timeout(fname, timeout)
  if timeout == nil then return nil end
  if type(timeout) ~= "number" or timeout ~= timeout or timeout < 0 then
    error(("%s: timeout must be a number of seconds >= 0, got %s"):format(fname,
      tostring(timeout)), 3)
  end
  if timeout > 31536000 then return nil end
  return timeout
end
M.check_timeout = check_timeout

local function ack(ticket, timeout)
  timeout = check_timeout("ticket:ack", timeout)
  local ok, err = M.wait(ticket, timeout)
  if ok == "block" then return ticket:wait(timeout) end
  if not ok then return nil, err end
  return ticket:result()
end

-- One ticket class serves sessions' batch tickets and producers' record tickets. Its ack()
-- goes through the strategy above; wait() stays the blocking one.
local ticket_methods = core.methods("ticket")
ticket_methods.ack = ack

--- ticket:seq_num([timeout]) -> seq_num | nil, err (record tickets): waits like ack() but
-- returns only the record's position, without building ack tables (the cheap path).
ticket_methods.seq_num = function(ticket, timeout)
  timeout = check_timeout("ticket:seq_num", timeout)
  -- Also raises at once, before any wait, for a session's (batch) ticket: it has no seq_num.
  local done, rerr = ticket:result_seq_num()
  if done ~= false then return done, rerr end
  local ok, err = M.wait(ticket, timeout)
  if ok == "block" then
    ok, err = ticket:wait(timeout) -- blocks; the ack it returns is not needed
    if not ok then return nil, err end
  elseif not ok then
    return nil, err
  end
  return ticket:result_seq_num()
end

M.timeout_error = timeout_error
return M
