--- The one place that decides how a call waits. Every public call that can wait (unary
-- calls, ticket:ack, submit backpressure, flush, close, reader:next, client:close) hands a
-- waitable to M.wait. Strategy, first match wins:
--   1. a hook installed with s2.set_scheduler(fn) (adapters: s2.adapters.luv, .copas);
--   2. inside OpenResty, in a phase that may yield: the request's coroutine waits on an
--      ngx.semaphore that the worker's dispatcher posts when the core's notice for the
--      waitable arrives (no polling); in a phase that may not: an error, not a stall;
--   3. inside a cqueues controller: cqueues.poll on the waitable (it is pollable);
--   4. otherwise: "block", and the caller blocks this thread in C (condition variable).
-- A waitable has ready(), pollfd(), events(), timeout() (the cqueues protocol) and, for
-- OpenResty, notice() -> id, path (arms the core's notice; see s2_wait.h). A timeout never
-- cancels what is awaited: a ticket still resolves later.
local core = require "s2.core"
local errors = require "s2.error"
local events = require "s2.events"
local deliver = events.deliver -- observability events: delivered at every wait and wake

local M = {}
local hook

-- Counters of this Lua state (an nginx worker): waits that had to suspend, suspended waits
-- resumed by a notice, and ngx.sleep polling rounds (the fallback when notices cannot work).
local stats = { waits = 0, wakes = 0, polls = 0 }

function M.stats()
  return { waits = stats.waits, wakes = stats.wakes, polls = stats.polls }
end

-- nginx phases in which a request may yield.
local YIELDABLE = {
  rewrite = true, access = true, content = true, timer = true, ssl_cert = true,
  ssl_session_fetch = true, ssl_client_hello = true, preread = true,
}

local function timeout_error(timeout)
  return errors.new("timeout", ("no ack within %.3f s (the append is not cancelled and may still land)")
    :format(timeout), { retryable = true })
end
M.timeout_error = timeout_error

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

---------------------------------------------------------------------------------------------
-- OpenResty: one dispatcher per notice socket (per client) and worker. It is a light thread
-- of an ngx.timer that reads the core's notices (16 hex digits each) over a unix-socket
-- cosocket and posts the semaphore of the waitable each names. Many requests awaiting one
-- waitable (the record tickets of one batch) share one semaphore: one notice, one post of
-- as many as wait. A notice that never comes (the dispatcher reconnecting) costs a waiter
-- one SLICE, after which it looks again.
---------------------------------------------------------------------------------------------
local SLICE = 1.0
local NOTICE_LEN = 16
local dispatchers = {} -- path -> { waiters = { [id] = { sema =, n = } }, failed = }
local semaphore -- ngx.semaphore, or false when lua-resty-core is missing

local function wake_all(d)
  for id, entry in pairs(d.waiters) do
    d.waiters[id] = nil
    if entry.n > 0 then entry.sema:post(entry.n) end
  end
end

local function dispatch(d, data)
  for i = 1, #data - NOTICE_LEN + 1, NOTICE_LEN do
    local id = data:sub(i, i + NOTICE_LEN - 1)
    local entry = d.waiters[id]
    if entry then
      d.waiters[id] = nil
      if entry.n > 0 then entry.sema:post(entry.n) end
    end
  end
end

local function run_dispatcher(premature, ngx, d)
  if premature then
    dispatchers[d.path] = nil
    wake_all(d)
    return
  end
  local sock = ngx.socket.tcp()
  local ok, err = sock:connect("unix:" .. d.path)
  if not ok then
    d.failed = err
    dispatchers[d.path] = nil
    wake_all(d)
    return
  end
  d.connected = true
  -- The core writes a heartbeat (id 0) every second, so a read times out only when the
  -- runtime is gone; the worker's exit is noticed at the next heartbeat.
  sock:settimeout(5000)
  local carry = ""
  while not ngx.worker.exiting() do
    local data, rerr = sock:receiveany(65536)
    if not data then
      if rerr ~= "timeout" then break end
    else
      if carry ~= "" then data = carry .. data end
      local whole = #data - #data % NOTICE_LEN
      carry = data:sub(whole + 1)
      dispatch(d, whole == #data and data or data:sub(1, whole))
    end
  end
  sock:close()
  dispatchers[d.path] = nil
  wake_all(d) -- they look again, and the next wait starts a new dispatcher
end

local function dispatcher_for(ngx, path)
  local d = dispatchers[path]
  if d then return d end
  d = { path = path, waiters = {} }
  local ok, err = ngx.timer.at(0, run_dispatcher, ngx, d)
  if not ok then return nil, err end
  dispatchers[path] = d
  return d
end

local function ngx_poll(ngx, w, deadline, timeout)
  local delay = 0.001
  while not w:ready() do
    if deadline and ngx.now() >= deadline then return nil, timeout_error(timeout) end
    stats.polls = stats.polls + 1
    ngx.sleep(delay)
    delay = math.min(delay * 2, 0.05)
  end
  return true
end

local function ngx_wait(ngx, w, timeout)
  ngx.update_time()
  local deadline = timeout and ngx.now() + timeout
  if semaphore == nil then
    local ok, mod = pcall(require, "ngx.semaphore")
    semaphore = ok and mod or false
  end
  if not semaphore or not w.notice then return ngx_poll(ngx, w, deadline, timeout) end
  stats.waits = stats.waits + 1
  while true do
    local id, path = w:notice()
    if not id then return ngx_poll(ngx, w, deadline, timeout) end
    local d = dispatcher_for(ngx, path)
    if not d then return ngx_poll(ngx, w, deadline, timeout) end
    if w:ready() then return true end
    local slice = SLICE
    if deadline then
      ngx.update_time()
      local left = deadline - ngx.now()
      if left <= 0 then return nil, timeout_error(timeout) end
      if left < slice then slice = left end
    end
    local entry = d.waiters[id]
    if not entry then
      entry = { sema = semaphore.new(), n = 0 }
      d.waiters[id] = entry
    end
    entry.n = entry.n + 1
    local woken = entry.sema:wait(slice)
    entry.n = entry.n - 1
    if not woken and entry.n == 0 and d.waiters[id] == entry then d.waiters[id] = nil end
    if woken then stats.wakes = stats.wakes + 1 end
    if w:ready() then return true end
    if d.failed then return ngx_poll(ngx, w, deadline, timeout) end
  end
end

local function wait(w, timeout)
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
    return ngx_wait(ngx, w, timeout)
  end
  local cqueues = cqueues_running()
  if cqueues then
    local deadline = timeout and core.now() + timeout
    local ok, err = true, nil
    while not w:ready() do
      local left = deadline and deadline - core.now()
      if left and left <= 0 then
        ok, err = nil, timeout_error(timeout)
        break
      end
      cqueues.poll(w, left)
      deliver()
    end
    -- The fd may be closed soon (a call's, a ticket's): cqueues must forget it first, or a
    -- new fd with the same number trips over its stale registration.
    cqueues.cancel(w:pollfd())
    return ok, err
  end
  return "block"
end

--- Waits until w:ready(). Returns true, nil, err (timeout, or a phase that cannot wait), or
-- "block" when the caller should block the thread itself. Queued events are delivered
-- before and after (a caller that blocks delivers them once its wait returns).
function M.wait(w, timeout)
  deliver()
  local ok, err = wait(w, timeout)
  if ok ~= "block" then deliver() end
  return ok, err
end

--- A waitable for "the client made progress" (capacity freed, a session ended, the I/O
-- thread stopped): ready once done() is true or the progress counter moved past `seen`.
-- `seen` is read before the fd is drained, so whenever the fd is readable every such waiter
-- is ready (schedulers rely on it: they never spin on a readable fd).
local function progress_waitable(client_core, done)
  local seen = client_core:progress()
  local fd = client_core:progress_fd() -- drained: readable again at the next progress
  return {
    ready = function() return (done and done()) or client_core:progress() ~= seen end,
    pollfd = function() return fd end,
    events = function() return "r" end,
    timeout = function() return nil end,
    notice = function() return client_core:progress_notice() end,
  }
end

--- Backpressure: `try()` submits without waiting and returns false when there is no room;
-- between tries we wait for the client's progress the scheduler's way. In a plain script,
-- `blocking()` does the waiting in C instead.
function M.submit(client_core, try, blocking)
  while true do
    local waiter = progress_waitable(client_core)
    local r, err = try()
    if r ~= false then return r, err end
    local ok, werr = M.wait(waiter, nil)
    if ok == "block" then
      local r2, e2 = blocking()
      deliver()
      return r2, e2
    end
    if not ok then return nil, werr end
  end
end

--- Waits until done() (a session finished, the I/O thread stopped), up to timeout; on a
-- timeout the error says `late` (a format taking the timeout).
-- true | nil, err | "block"
function M.until_done(client_core, done, timeout, late)
  local deadline = timeout and core.now() + timeout
  while not done() do
    local left = deadline and deadline - core.now()
    if left and left <= 0 then
      return nil, errors.new("timeout", late:format(timeout), { retryable = true })
    end
    local ok, err = M.wait(progress_waitable(client_core, done), left)
    if ok == "block" then return "block" end
    if not ok then return nil, err end
  end
  return true
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

--- nil, err where no wait is possible (a non-yieldable nginx phase), checked before a
-- call starts anything it could not see through; else true.
function M.can_wait()
  local ngx = in_ngx()
  if ngx and not hook then
    local phase = ngx.get_phase()
    if not YIELDABLE[phase] then
      return nil, errors.new("invalid", ("cannot wait in the nginx '%s' phase without blocking the worker; wait in a content, access, rewrite or timer phase")
        :format(phase))
    end
  end
  return true
end

--- Closes an append session or producer core handle `h`: starts closing, then waits until
-- it has finished (every batch acked, or failed). true | nil, err
function M.close_session(client_core, h, timeout, fname)
  timeout = check_timeout(fname, timeout)
  local ok, err = h:close(0) -- starts closing; true or the failure once finished
  if h:finished() then return h:close(0) end -- (it may have finished since: ask again)
  local r, werr = M.until_done(client_core, function() return h:finished() end, timeout,
    "close: not every batch was acked within %.3f s (still draining)")
  if r == "block" then
    local ok2, err2 = h:close(timeout)
    deliver()
    return ok2, err2
  end
  if not r then return nil, werr end
  return h:close(0)
end

--- A unary call started in the core (a call object): waits for it the scheduler's way and
-- returns what call:result() gives (the decoded answer, or nil, err).
function M.call(call)
  local ok, err = M.wait(call, nil)
  if ok == "block" then
    ok, err = call:wait()
    deliver()
  end
  if not ok then
    call:abandon()
    return nil, err
  end
  return call:result()
end

M.deliver = deliver

local function ack(ticket, timeout)
  timeout = check_timeout("ticket:ack", timeout)
  local ok, err = M.wait(ticket, timeout)
  if ok == "block" then
    local a, aerr = ticket:wait(timeout)
    deliver()
    return a, aerr
  end
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
    deliver()
    if not ok then return nil, err end
  elseif not ok then
    return nil, err
  end
  return ticket:result_seq_num()
end

return M
