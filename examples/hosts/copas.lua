-- s2 under copas: the shipped adapter makes every waiting call yield the copas thread
-- (docs/hosts/copas.md). Four threads append through one producer and await their tickets;
-- meanwhile the main loop keeps stepping copas (copas 1.x has no copas.sleep for a ticker
-- thread). Then the records are read back.
--
-- example-interpreter: luajit   (Debian's lua-copas is packaged for Lua 5.1/5.2 only; with a
-- copas for 5.4 (luarocks install copas) it runs on lua5.4 the same way)
--
--   make luajit
--   scripts/with-s2-lite.sh env LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build-jit/?.so;;' \
--     luajit examples/hosts/copas.lua
local copas = require "copas"
local s2 = require "s2"

s2.set_scheduler(require("s2.adapters.copas")(copas)) -- once, before any call that waits

local TASKS, PER_TASK = 4, 25

local client = s2.client() -- S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT
local basin_name = ("host-copas-%d-%04x"):format(os.time(), math.random(0, 0xffff))
local done, ticks, acked = false, 0, 0
local failure

-- copas reports an error in a thread and goes on: keep the first one for the end.
local function spawn(fn)
  copas.addthread(function()
    local ok, err = pcall(fn)
    if not ok then failure = failure or err; done = true end
  end)
end

spawn(function()
  assert(client:ensure_basin(basin_name, { create_stream_on_append = true })) -- yields
  local stream = client:basin(basin_name):stream("events")
  local producer = assert(stream:producer { linger = 0.01 })
  local left = TASKS
  for t = 1, TASKS do
    spawn(function()
      for i = 1, PER_TASK do
        local ticket = assert(producer:submit(("task %d record %d"):format(t, i)))
        assert(ticket:ack()) -- yields to the other copas threads until the record is durable
        acked = acked + 1
      end
      left = left - 1
      if left == 0 then
        assert(producer:close())
        local batch = assert(stream:read { seq_num = 0, count = TASKS * PER_TASK })
        print(("read back %d records; first: %q"):format(#batch.records, batch.records[1].body))
        done = true
      end
    end)
  end
end)

-- copas.loop() would do, but copas 1.x's loop never returns: step until the work is done.
local deadline = os.time() + 60
while not done and os.time() < deadline do
  copas.step(0.05)
  ticks = ticks + 1 -- the rest of the program runs here, between steps, while appends wait
end
if failure then error(failure, 0) end
assert(done, "timed out")
assert(acked == TASKS * PER_TASK, "not every record was acked")
assert(ticks > 1, "copas did not return to the loop while appends waited")
print(("%d records acked by %d copas threads; the loop stepped %d times meanwhile"):format(acked, TASKS, ticks))
client:close()
