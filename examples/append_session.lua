-- Append session: batches pipelined on one connection, acknowledged in order.
-- (The "Append session" example of the S2 guide "Appending".)
local s2 = require "s2"

local function check(v, err)
  if v == nil then
    io.stderr:write("append_session.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return v
end

local client = s2.client()
math.randomseed(os.time())
local basin_name = ("ex-session-%d-%04x"):format(os.time(), math.random(0, 0xffff))
check(client:ensure_basin(basin_name, { create_stream_on_append = true }))
local stream = client:basin(basin_name):stream("events")

local session = check(stream:append_session { max_inflight_bytes = 5 * 1024 * 1024 })

-- Submit a batch: this queues it (waiting only when max_inflight_bytes are in flight) and
-- returns a ticket.
local ticket = check(session:submit({ "event-1", "event-2" }))

-- The ticket resolves when the batch is durable.
local ack = check(ticket:ack())
print(("Durable at seq_num %d"):format(ack.start.seq_num))

-- Pipelining: submit many batches without waiting; acks come back in submission order, so
-- when the last ticket resolves, every batch before it is durable too.
local last
for i = 1, 100 do
  local batch = {}
  for j = 1, 10 do batch[j] = ("batch %d record %d"):format(i, j) end
  last = check(session:submit(batch))
end
ack = check(last:ack())
print(("100 more batches durable, the last at seq_num %d..%d"):format(ack.start.seq_num,
  ack["end"].seq_num - 1))

local stats = session:stats()
print(("batches acked: %d, peak in flight: %d batches"):format(stats.batches_acked,
  stats.peak_inflight_batches))

-- close waits for every submitted batch, then ends the session.
check(session:close())
client:close()
