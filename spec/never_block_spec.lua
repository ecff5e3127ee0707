-- Issue 13: no public call that waits blocks a scheduler. For every scheduler (cqueues, luv
-- through s2.adapters.luv, copas through s2.adapters.copas under LuaJIT) and every waiting
-- call of spec/support/never_block_calls.lua, a ticker runs next to the call while the call
-- waits on a slowed server (a fault proxy adding latency, a long poll, a stalled link), and
-- the ticker must have run at least once between the call's start and its return: a call
-- that blocks the thread gives exactly 0 ticks (no speed threshold anywhere). Each call must
-- also still return its normal result. A plain script runs the same calls: it blocks, and
-- gets the same results.
--
-- OpenResty has its own suite (spec/openresty_never_block_spec.lua).
local H = require "helper"
local P = require "support.fault_proxy"
local T = require "support.ticker"
local calls = require "support.never_block_calls"

local proxy, basin_name

-- Shapes the proxy for `call` and returns the endpoint its client uses.
local function link_for(call)
  proxy:command("reset")
  if call.link == "direct" then return H.endpoint() end
  if call.link == "slow" then
    proxy:command("latency_up " .. calls.LATENCY)
    proxy:command("latency_down " .. calls.LATENCY)
  elseif call.link == "stalled" then
    proxy:command("stop_reading on")
  else
    error("unknown link " .. tostring(call.link))
  end
  return proxy.endpoint
end

local function prefix(scheduler)
  return H.unique_name(scheduler)
end

local function run_here(scheduler, call)
  local ctx = calls.context {
    link = link_for(call), direct = H.endpoint(), basin = basin_name, proxy = proxy,
    prefix = prefix(scheduler), client_opts = call.client_opts,
  }
  local body, on_tick = calls.body(call, ctx)
  return T.run(scheduler, body, on_tick)
end

-- The copas runner in a LuaJIT child; its report has the same fields.
local function run_copas(call)
  local f = io.open("build-jit/s2/core.so")
  if not f then error("build-jit/s2/core.so is missing: run `make luajit` first", 2) end
  f:close()
  local q = P.quote
  local cmd = ("unset LD_PRELOAD; S2_TEST_ENDPOINT=%s NB_LINK=%s NB_BASIN=%s NB_PREFIX=%s NB_PROXY_CONTROL=%d luajit spec/jit/never_block_copas.lua %s 2>&1")
    :format(q(H.endpoint()), q(link_for(call)), q(basin_name), q(prefix("copas")),
      proxy.control_port, q(call.name))
  local out = P.capture(cmd)
  local rep, finished = {}, false
  for line in out:gmatch("[^\n]+") do
    local k, v = line:match("^(%a+) ?(.*)$")
    v = v and v:gsub("\\n", "\n"):gsub("\\\\", "\\")
    if k == "ticks" then rep.ticks = tonumber(v)
    elseif k == "waited" then rep.waited = tonumber(v)
    elseif k == "value" then rep.value = v
    elseif k == "error" then rep.error = v
    elseif k == "done" then finished = true
    end
  end
  if not finished then rep.error = rep.error or ("the copas runner died:\n" .. out) end
  return rep
end

describe("no waiting call blocks", function()
  setup(function()
    proxy = P.start { target = H.endpoint():gsub("^http://", "") }
    local _
    _, basin_name = H.new_basin(H.client(), "neverblock")
  end)
  teardown(function()
    if proxy then proxy:stop() end
  end)
  after_each(function()
    require("s2").set_scheduler(nil)
    proxy:command("reset")
  end)

  describe("a cqueues controller", function()
    for _, call in ipairs(calls.calls) do
      it(call.name .. ": a ticker coroutine runs while it waits", function()
        T.assert_yielded(run_here("cqueues", call), call.name, "cqueues")
      end)
    end
  end)

  describe("luv (s2.adapters.luv)", function()
    for _, call in ipairs(calls.calls) do
      it(call.name .. ": a uv timer runs while it waits", function()
        T.assert_yielded(run_here("luv", call), call.name, "luv")
      end)
    end
  end)

  describe("copas (s2.adapters.copas, LuaJIT)", function()
    for _, call in ipairs(calls.calls) do
      it(call.name .. ": another copas thread runs while it waits", function()
        T.assert_yielded(run_copas(call), call.name, "copas")
      end)
    end
  end)

  describe("a plain script", function()
    for _, call in ipairs(calls.calls) do
      it(call.name .. ": blocks and returns its normal result", function()
        local rep = run_here("plain", call)
        assert(rep.error == nil, rep.error)
        assert(rep.value == nil, call.name .. ": " .. tostring(rep.value))
      end)
    end
  end)
end)
