-- Producer: submit single records, get a ticket per record; the producer batches them.
-- (The "Producer" example of the S2 guide "Appending".)
local s2 = require "s2"

local function check(v, err)
  if v == nil then
    io.stderr:write("producer.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return v
end

local client = s2.client()
math.randomseed(os.time())
local basin_name = ("ex-producer-%d-%04x"):format(os.time(), math.random(0, 0xffff))
check(client:ensure_basin(basin_name, { create_stream_on_append = true }))
local stream = client:basin(basin_name):stream("events")

-- A batch goes out after 5 ms (linger), or at 1000 records or 1 MiB, whichever comes first.
local producer = check(stream:producer { linger = 0.005 })

-- Submit an individual record.
local ticket = check(producer:submit("my event"))

-- Get the exact sequence number of this record.
local ack = check(ticket:ack())
print(("Record durable at seq_num %d"):format(ack.seq_num))

-- Many records: each ticket knows its own record's seq_num; ack.batch is its batch's ack.
local tickets = {}
for i = 1, 5000 do
  tickets[i] = check(producer:submit({ body = "event " .. i, headers = { { "n", tostring(i) } } }))
end
check(producer:flush()) -- everything submitted so far is durable now
local a1, a5000 = check(tickets[1]:result()), check(tickets[5000]:result())
local stats = producer:stats()
print(("5000 records durable at seq_num %d..%d (%d records in %d batches so far)")
  :format(a1.seq_num, a5000.seq_num, stats.records_submitted, stats.batches_acked))

check(producer:close())
client:close()
