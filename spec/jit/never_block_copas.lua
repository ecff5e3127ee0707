-- Run by spec/never_block_spec.lua under LuaJIT (Debian packages copas for Lua 5.1 only):
-- one call of spec/support/never_block_calls.lua inside a copas thread, next to a ticker
-- thread, with s2.adapters.copas installed.
--   luajit spec/jit/never_block_copas.lua "<call name>"
-- Environment: S2_TEST_ENDPOINT (s2-lite), NB_LINK (the endpoint ctx.client uses), NB_BASIN,
-- NB_PREFIX (stream names), NB_PROXY_CONTROL (the fault proxy's control port, optional).
-- Prints the report, one field a line: `ticks N`, `waited S`, `value TEXT` (the check's
-- complaint), `error TEXT` (newlines as \n); then `done`.
--
-- The ticker: copas 1.x has no sleep, so the ticker thread waits on a UDP socket to which the
-- main loop sends a datagram every tick. The main loop is copas's loop, so a call that blocks
-- the thread stops both; one that yields lets copas go on stepping and the ticker wake.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build-jit/?.so;" .. package.cpath
local copas = require "copas"
local socket = require "socket"
local s2 = require "s2"
local core = require "s2.core"
local P = require "support.fault_proxy"
local calls = require "support.never_block_calls"
local T = require "support.ticker"

local function emit(k, v)
  local text = tostring(v):gsub("\\", "\\\\"):gsub("\n", "\\n")
  print(k .. " " .. text)
end

local call = calls.by_name[arg[1] or ""]
if not call then
  emit("error", "no call named " .. tostring(arg[1]))
  print("done")
  os.exit(1)
end

s2.set_scheduler(require("s2.adapters.copas")(copas))
local proxy
local control = tonumber(os.getenv("NB_PROXY_CONTROL") or "")
if control then
  proxy = { control_port = control, command = P.Proc.command, stats = P.Proc.stats }
end
local ctx = calls.context {
  link = assert(os.getenv("NB_LINK"), "NB_LINK"), direct = assert(os.getenv("S2_TEST_ENDPOINT")),
  basin = assert(os.getenv("NB_BASIN"), "NB_BASIN"), prefix = assert(os.getenv("NB_PREFIX")),
  proxy = proxy, client_opts = call.client_opts,
}
local body, on_tick = calls.body(call, ctx)

local rep, ticks, measuring, done = {}, 0, false, false
local inbox = assert(socket.udp())
assert(inbox:setsockname("127.0.0.1", 0))
inbox:settimeout(0)
local outbox = assert(socket.udp())
local ip, port = inbox:getsockname()
assert(outbox:setpeername(ip, port))

copas.addthread(function()
  while not done do
    copas.receivefrom(inbox, 16)
    ticks = ticks + 1
    if measuring and on_tick then
      local ok, err = pcall(on_tick)
      if not ok and not rep.error then rep.error = "on_tick: " .. tostring(err) end
    end
  end
end)

local function measure(fn, ...)
  local t0, k0 = core.now(), ticks
  measuring = true
  local function pack(...) return { n = select("#", ...), ... } end
  local r = pack(fn(...))
  measuring = false
  rep.ticks, rep.waited = ticks - k0, core.now() - t0
  return r
end

copas.addthread(function()
  local ok, v = xpcall(body, debug.traceback, measure)
  if ok then rep.value = v else rep.error = tostring(v) end
  done = true
end)

local deadline, last = core.now() + T.LIMIT, 0
while not done and core.now() < deadline do
  local now = core.now()
  if now - last >= T.TICK then
    outbox:send("t")
    last = now
  end
  copas.step(T.TICK)
end
if not done then rep.error = rep.error or ("the call did not return within %d s"):format(T.LIMIT) end

if rep.ticks then emit("ticks", rep.ticks) end
if rep.waited then emit("waited", ("%.3f"):format(rep.waited)) end
if rep.value ~= nil then emit("value", rep.value) end
if rep.error then emit("error", rep.error) end
print("done")
io.stdout:flush()
os.exit(rep.error and 1 or 0)
