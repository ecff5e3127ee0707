-- Unary reads and the tail: read a range of records, then the last few, then check_tail.
local s2 = require "s2"

local function check(v, err)
  if v == nil then
    io.stderr:write("read.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return v
end

local client = s2.client()
math.randomseed(os.time())
local basin_name = ("ex-read-%d-%04x"):format(os.time(), math.random(0, 0xffff))
check(client:ensure_basin(basin_name, { create_stream_on_append = true }))
local stream = client:basin(basin_name):stream("events")

local records = {}
for i = 1, 10 do records[i] = { body = "event " .. i, headers = { { "n", tostring(i) } } } end
check(stream:append(records))

-- Up to 3 records from seq_num 2 (also: timestamp = ms, tail_offset = n back from the tail;
-- limits count, bytes, until; wait = seconds to long-poll for records at the tail).
local batch = check(stream:read { seq_num = 2, count = 3 })
for _, r in ipairs(batch.records) do
  print(("seq_num %d  timestamp %d  %s  (n=%s)"):format(r.seq_num, r.timestamp, r.body,
    r.headers[1][2]))
end

-- The last two records.
batch = check(stream:read { tail_offset = 2 })
print(("last two: %s, %s"):format(batch.records[1].body, batch.records[2].body))

-- Reading at the tail is an error (416) carrying the tail...
local none, err = stream:read { seq_num = 10 }
assert(none == nil and err.code == "range_not_satisfiable", tostring(err))
print(("at the tail: %s (tail %d)"):format(err.code, err.tail.seq_num))
-- ...unless the read may wait for new records: then it is an empty batch.
batch = check(stream:read { seq_num = 10, wait = 0.5 })
print(("waited at the tail: %d records"):format(#batch.records))

-- The next seq_num to be assigned, and the timestamp of the last record.
local tail = check(stream:check_tail())
print(("tail: seq_num %d, timestamp %d"):format(tail.seq_num, tail.timestamp))
if tail.seq_num ~= 10 then os.exit(1) end
client:close()
