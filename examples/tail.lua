-- Following a stream: a read session at the tail sees records as a producer appends them,
-- and stops after N records (count).
local s2 = require "s2"

local N = tonumber(os.getenv "N") or 1000

local function check(v, err)
  if v == nil then
    io.stderr:write("tail.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return v
end

local client = s2.client()
math.randomseed(os.time())
local basin_name = ("ex-tail-%d-%04x"):format(os.time(), math.random(0, 0xffff))
check(client:ensure_basin(basin_name))
local basin = client:basin(basin_name)
check(basin:ensure_stream("events")) -- created up front: the reader starts at its tail
local stream = basin:stream("events")

-- Start at the current tail and stop after N records. (The tail is read first: a session
-- opens asynchronously, so `tail_offset = 0` would be resolved whenever its request
-- reaches the server, possibly after the writes below began.) Without count, bytes or
-- until a read session follows the stream until it is closed; with one of them the server
-- stops at the tail unless `wait` says how long to wait for more (at most this long
-- between two records).
local tail = check(stream:check_tail())
local reader = check(stream:read_session { seq_num = tail.seq_num, count = N, wait = 30 })

-- Something to follow: a producer appends N records. submit does not wait for acks, and
-- the I/O thread sends them while this script reads.
local producer = check(stream:producer {})
for i = 1, N do check(producer:submit("event " .. i)) end

local seen, first, last = 0, nil, nil
for record in reader:records() do -- raises the error object if the session fails
  seen = seen + 1
  first = first or record.seq_num
  last = record.seq_num
  if record.body ~= "event " .. seen then
    io.stderr:write(("tail.lua: record %d is %q\n"):format(seen, record.body))
    os.exit(1)
  end
end
print(("followed %d records, seq_num %d..%d; caught up: %s"):format(seen, first, last,
  tostring(reader:is_caught_up())))
reader:close()
check(producer:close())
client:close()
if seen ~= N then os.exit(1) end
