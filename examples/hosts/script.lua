-- s2 in a plain script (no event loop): every waiting call blocks the thread, which is what
-- a script wants (docs/hosts/scripts.md). A producer for many small records, an append
-- session for whole batches, a read session that follows until it has them all.
--
--   scripts/with-s2-lite.sh env LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' \
--     lua5.4 examples/hosts/script.lua
local s2 = require "s2"

local function check(v, err)
  if v == nil then
    io.stderr:write("script.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return v
end

local client = s2.client() -- S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT
local basin_name = ("host-script-%d-%04x"):format(os.time(), math.random(0, 0xffff))
check(client:ensure_basin(basin_name, { create_stream_on_append = true }))
local stream = client:basin(basin_name):stream("events")

-- 1000 records through a producer: submit does not wait for the network; flush waits once.
local producer = check(stream:producer { linger = 0.005 })
local tickets = {}
for i = 1, 1000 do tickets[i] = check(producer:submit("record " .. i)) end
check(producer:close()) -- sends the open batch, waits for every ack
local last = check(tickets[1000]:ack())
print(("producer: 1000 records durable, the last at seq_num %d"):format(last.seq_num))

-- Two batches pipelined on one append session.
local session = check(stream:append_session())
local t1 = check(session:submit { "batch 1, record 1", "batch 1, record 2" })
local t2 = check(session:submit { "batch 2, record 1" })
check(session:close())
print(("session: batches at seq_num %d and %d"):format(check(t1:ack()).start.seq_num,
  check(t2:ack()).start.seq_num))

-- Read everything back with a read session (it stops after count records).
local reader = check(stream:read_session { seq_num = 0, count = 1003 })
local n = 0
for record in reader:records() do
  n = n + 1
  if record.seq_num ~= n - 1 then error(("record %d has seq_num %d"):format(n, record.seq_num)) end
end
reader:close()
print(("read session: %d records, in order"):format(n))
assert(n == 1003)
client:close()
