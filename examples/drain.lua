-- Draining a backlog with the least CPU per record: reader:next_columns() hands out up to
-- 1000 records per call as columns (seq_nums, timestamps, bodies, and headers where a record
-- has some) instead of a table per record. Here: N small records written by a producer, then
-- read back from seq_num 0 and checked in order.
local s2 = require "s2"
local core = require "s2.core"

local N = tonumber(os.getenv "N") or 100000

local function check(v, err)
  if v == nil then
    io.stderr:write("drain.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return v
end

local client = s2.client()
math.randomseed(os.time())
local basin_name = ("ex-drain-%d-%04x"):format(os.time(), math.random(0, 0xffff))
check(client:ensure_basin(basin_name, { create_stream_on_append = true }))
local stream = client:basin(basin_name):stream("backlog")

local producer = check(stream:producer {})
local last
for i = 1, N do last = check(producer:submit(("event %d"):format(i))) end
check(last:ack()) -- acks come in order: the last one covers the rest
check(producer:close())

local reader = check(stream:read_session { seq_num = 0, count = N })
local t0, got = core.now(), 0
while true do
  local cols, err = reader:next_columns()
  if not cols then
    if err then check(nil, err) end -- nil without an error: the count was reached
    break
  end
  for i = 1, cols.n do
    if cols.seq_nums[i] ~= got or cols.bodies[i] ~= ("event %d"):format(got + 1) then
      io.stderr:write(("drain.lua: record %d is %q\n"):format(got, cols.bodies[i]))
      os.exit(1)
    end
    got = got + 1
  end
end
reader:close()
local seconds = core.now() - t0
print(("drained %d records in %.2f s (%.0f records/s)"):format(got, seconds, got / seconds))
client:close()
if got ~= N then os.exit(1) end
