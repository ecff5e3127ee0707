-- s2 under luv (libuv): the shipped adapter makes every waiting call yield the coroutine to
-- the loop (docs/hosts/luv.md). Four coroutines append through one producer and await
-- their tickets while a timer keeps ticking. Then the records are read back.
--
--   scripts/with-s2-lite.sh env LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 examples/hosts/luv.lua
local uv = require "luv"
local s2 = require "s2"

s2.set_scheduler(require("s2.adapters.luv")(uv)) -- once, before any call that waits

local TASKS, PER_TASK = 4, 25

local client = s2.client() -- S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT
local basin_name = ("host-luv-%d-%04x"):format(os.time(), math.random(0, 0xffff))
local done, ticks, acked = false, 0, 0
local failure

-- Runs fn as a coroutine of the loop; an error stops the loop and is reported at the end.
local function spawn(fn)
  coroutine.wrap(function()
    local ok, err = pcall(fn)
    if not ok then failure = failure or err; uv.stop() end
  end)()
end

local ticker = uv.new_timer()
ticker:start(2, 2, function()
  ticks = ticks + 1
  if done then ticker:stop(); ticker:close() end
end)

spawn(function()
  assert(client:ensure_basin(basin_name, { create_stream_on_append = true })) -- yields
  local stream = client:basin(basin_name):stream("events")
  local producer = assert(stream:producer { linger = 0.01 })
  local left = TASKS
  for t = 1, TASKS do
    spawn(function()
      for i = 1, PER_TASK do
        local ticket = assert(producer:submit(("task %d record %d"):format(t, i)))
        assert(ticket:ack()) -- yields to the loop until the record is durable
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

uv.run()
if failure then error(failure, 0) end
assert(acked == TASKS * PER_TASK, "not every record was acked")
assert(ticks > 1, "the loop did not run the timer while appends waited")
print(("%d records acked by %d coroutines; the timer fired %d times meanwhile"):format(acked, TASKS, ticks))
client:close()
