-- Runs a waiting call inside a scheduler next to a ticker, and counts how often the ticker
-- ran while the call waited: a call that blocks the scheduler's thread gives exactly 0 ticks,
-- one that yields gives at least 1 (the call is made to wait far longer than a tick).
--
--   local T = require "support.ticker"
--   local report = T.run("cqueues", function(measure)
--     local stream = ...                      -- set-up: may block, not measured
--     local r = measure(stream.append, stream, { "x" })   -- r = { n = 2, ack, err }
--     return r[1] and nil or "no ack"         -- the body's value: report.value
--   end, on_tick)
--   report.ticks, report.waited, report.value, report.error (a raised error, traceback)
--   assert(report.ticks > 0, T.blocked_message(report, "stream:append"))
--
-- Schedulers: "cqueues" (a controller with a ticker coroutine and the caller's coroutine)
-- and "luv" (s2.set_scheduler with s2.adapters.luv, a uv timer as the ticker, the caller in
-- a coroutine started from the loop). copas runs under LuaJIT in a child process (see
-- spec/jit/never_block_copas.lua), with the same report fields. `on_tick`, if given, runs on
-- each tick while the measured call runs (it must not wait).
-- Written for Lua 5.1 too (the copas runner shares blocked_message).
local M = {}

M.TICK = 0.01  -- seconds between ticks
M.LIMIT = 20   -- seconds a whole run may take before it is abandoned (a hung call)

local function now() return require("s2.core").now() end

local function pack(...) return { n = select("#", ...), ... } end

-- measure(fn, ...) for a body: calls fn, records into rep the ticks counted meanwhile
-- (through get_ticks) and the seconds it took, sets measuring for on_tick.
local function measurer(rep, get_ticks, flags)
  return function(fn, ...)
    local t0, k0 = now(), get_ticks()
    flags.measuring = true
    local r = pack(fn(...))
    flags.measuring = false
    rep.ticks, rep.waited = get_ticks() - k0, now() - t0
    return r
  end
end

local function run_cqueues(body, on_tick)
  local cqueues = require "cqueues"
  local rep, flags, ticks, done = {}, {}, 0, false
  local cq = cqueues.new()
  cq:wrap(function()
    while not done do
      cqueues.sleep(M.TICK)
      ticks = ticks + 1
      if flags.measuring and on_tick then on_tick() end
    end
  end)
  cq:wrap(function()
    local ok, v = xpcall(body, debug.traceback, measurer(rep, function() return ticks end, flags))
    if ok then rep.value = v else rep.error = tostring(v) end
    done = true
  end)
  local ok, err = cq:loop(M.LIMIT)
  if not ok and not rep.error then rep.error = "cqueues loop: " .. tostring(err) end
  if not done and not rep.error then
    rep.error = ("the call did not return within %d s"):format(M.LIMIT)
  end
  return rep
end

local function run_luv(body, on_tick)
  local uv = require "luv"
  local s2 = require "s2"
  s2.set_scheduler(require("s2.adapters.luv")(uv))
  local rep, flags, ticks = {}, {}, 0
  local ticker, watchdog = uv.new_timer(), uv.new_timer()
  local function finish()
    for _, h in ipairs { ticker, watchdog } do
      if not h:is_closing() then
        h:stop()
        h:close()
      end
    end
  end
  ticker:start(math.floor(M.TICK * 1000), math.floor(M.TICK * 1000), function()
    ticks = ticks + 1
    if flags.measuring and on_tick then
      local ok, err = xpcall(on_tick, debug.traceback)
      if not ok and not rep.error then rep.error = "on_tick: " .. tostring(err) end
    end
  end)
  watchdog:start(M.LIMIT * 1000, 0, function()
    rep.error = rep.error or ("the call did not return within %d s"):format(M.LIMIT)
    finish()
    uv.stop()
  end)
  local co = coroutine.create(function()
    local ok, v = xpcall(body, debug.traceback, measurer(rep, function() return ticks end, flags))
    if ok then rep.value = v else rep.error = tostring(v) end
    finish()
  end)
  local kick = uv.new_timer()
  kick:start(0, 0, function()
    kick:close()
    local ok, err = coroutine.resume(co)
    if not ok then
      rep.error = rep.error or tostring(err)
      finish()
    end
  end)
  local ok, err = pcall(uv.run)
  s2.set_scheduler(nil)
  if not ok and not rep.error then rep.error = "uv.run: " .. tostring(err) end
  return rep
end

-- A plain script: no scheduler, nothing else can run; the body runs straight through.
local function run_plain(body, on_tick)
  local rep, flags = {}, {}
  local measure = measurer(rep, function() return 0 end, flags)
  local ok, v = xpcall(body, debug.traceback, function(fn, ...)
    -- nothing ticks here: what a ticker would have started happens just before the call
    if on_tick then on_tick() end
    return measure(fn, ...)
  end)
  if ok then rep.value = v else rep.error = tostring(v) end
  return rep
end

local RUNNERS = { cqueues = run_cqueues, luv = run_luv, plain = run_plain }

function M.run(scheduler, body, on_tick)
  local runner = RUNNERS[scheduler]
  if not runner then error("support.ticker: unknown scheduler " .. tostring(scheduler), 2) end
  return runner(body, on_tick)
end

-- The failure message of a call that did not let the ticker run.
function M.blocked_message(rep, what, scheduler)
  local msg = ("ticker ran %d times while %s waited %.2f s"):format(rep.ticks or 0, what,
    rep.waited or 0)
  if scheduler then msg = msg .. " (" .. scheduler .. ")" end
  if rep.value ~= nil then msg = msg .. "; and its result was wrong: " .. tostring(rep.value) end
  return msg
end

-- Busted-side check of a report (failures through luassert): no error, the ticker ran, the
-- body's check passed.
function M.assert_yielded(rep, what, scheduler)
  local luassert = require "luassert"
  local function check(ok, msg) luassert(ok, msg, luassert:level(3)) end
  check(rep.error == nil, ("%s (%s) raised: %s"):format(what, scheduler or "?", tostring(rep.error)))
  check(rep.ticks ~= nil, what .. ": the call was never measured")
  check(rep.ticks >= 1, M.blocked_message(rep, what, scheduler))
  check(rep.value == nil, ("%s (%s) yielded (%d ticks in %.2f s) but its result was wrong: %s")
    :format(what, scheduler or "?", rep.ticks, rep.waited or 0, tostring(rep.value)))
end

return M
