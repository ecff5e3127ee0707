-- Run by spec/copas_spec.lua under LuaJIT (Debian packages copas for Lua 5.1 only): while one
-- copas thread awaits a ticket, another runs. Prints the events, one per line; exits 1 on
-- any failure.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build-jit/?.so;" .. package.cpath
local copas = require "copas"
local s2 = require "s2"

s2.set_scheduler(require("s2.adapters.copas")(copas))
local client = s2.client()
local basin = assert(os.getenv("COPAS_BASIN"), "COPAS_BASIN")
local stream = client:basin(basin):stream("copas")
local producer = assert(stream:producer { linger = 0.2 })

local events = {}
local ticket
copas.addthread(function()
  ticket = assert(producer:submit("from copas"))
  events[#events + 1] = "submitted"
  local ack, err = ticket:ack(10)
  events[#events + 1] = ack and ("acked " .. ack.seq_num) or ("failed " .. tostring(err))
end)
copas.addthread(function()
  -- copas 1.x has no sleep: this thread simply runs once the first one yields
  events[#events + 1] = (ticket and not ticket:ready()) and "other ran while pending" or "other ran late"
end)
for _ = 1, 400 do -- copas 1.x's loop() never returns; step until the first thread is done
  copas.step(0.05)
  if #events >= 3 then break end
end
assert(producer:close())
for _, e in ipairs(events) do print(e) end
os.exit(table.concat(events, ",") == "submitted,other ran while pending,acked 0" and 0 or 1)
