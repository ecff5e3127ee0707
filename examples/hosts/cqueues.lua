-- s2 under cqueues: every waiting call yields to the controller (docs/hosts/cqueues.md).
-- Four tasks append through one producer and await their tickets while a fifth keeps
-- ticking: the loop is never blocked. Then a task reads the records back.
--
--   scripts/with-s2-lite.sh env LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 examples/hosts/cqueues.lua
local cqueues = require "cqueues"
local s2 = require "s2"

local TASKS, PER_TASK = 4, 25

local client = s2.client() -- S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT
local basin_name = ("host-cqueues-%d-%04x"):format(os.time(), math.random(0, 0xffff))
local stream -- made inside the loop: the management calls yield there too
local producer

local cq = cqueues.new()
local done, ticks, acked = false, 0, 0

cq:wrap(function()
  assert(client:ensure_basin(basin_name, { create_stream_on_append = true }))
  stream = client:basin(basin_name):stream("events")
  producer = assert(stream:producer { linger = 0.01 })
  local left = TASKS
  for t = 1, TASKS do
    cq:wrap(function()
      for i = 1, PER_TASK do
        local ticket = assert(producer:submit(("task %d record %d"):format(t, i)))
        assert(ticket:ack()) -- yields to the controller until the record is durable
        acked = acked + 1
      end
      left = left - 1
      if left == 0 then
        assert(producer:close()) -- yields while the last batch is acked
        local batch = assert(stream:read { seq_num = 0, count = TASKS * PER_TASK })
        print(("read back %d records; first: %q"):format(#batch.records, batch.records[1].body))
        done = true
      end
    end)
  end
end)

cq:wrap(function() -- the rest of the program: keeps running while the others wait
  while not done do
    ticks = ticks + 1
    cqueues.sleep(0.002)
  end
end)

assert(cq:loop())
assert(acked == TASKS * PER_TASK, "not every record was acked")
assert(ticks > 1, "the controller did not run other tasks while appends waited")
print(("%d records acked by %d cqueues tasks; the ticker ran %d times meanwhile"):format(acked, TASKS, ticks))
client:close()
