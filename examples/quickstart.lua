-- Quickstart: append two records to a stream, read them back, print where they landed.
--
--   make demo     (starts s2-lite, then runs this with S2_* pointing at it)
--
-- Against S2 itself: set S2_ACCESS_TOKEN (and leave the endpoints unset), then
--   LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='build/?.so;;' lua5.4 examples/quickstart.lua
local s2 = require "s2"

local client = s2.client() -- S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT
local basin_name = os.getenv "S2_BASIN" or ("quickstart-" .. os.time())
local stream_name = os.getenv "S2_STREAM" or "events"

-- Basins are never created implicitly; ensure_basin is safe to run again.
local _, err = client:ensure_basin(basin_name, { create_stream_on_append = true })
assert(not err, err and tostring(err))
local basin = client:basin(basin_name)
assert(basin:ensure_stream(stream_name))
local stream = basin:stream(stream_name)

-- One batch of two records, appended atomically.
local ack
ack, err = stream:append({
  "first event",
  { body = "second event", headers = { { "source", "quickstart" } } },
})
if not ack then
  io.stderr:write("append failed: ", tostring(err), "\n")
  os.exit(1)
end
print(("Wrote records %d through %d"):format(ack.start.seq_num, ack["end"].seq_num - 1))

-- Read them back from where they landed.
local batch
batch, err = stream:read { seq_num = ack.start.seq_num, count = 2 }
if not batch then
  io.stderr:write("read failed: ", tostring(err), "\n")
  os.exit(1)
end
for _, record in ipairs(batch.records) do
  local headers = {}
  for _, h in ipairs(record.headers) do headers[#headers + 1] = h[1] .. "=" .. h[2] end
  print(("  seq_num %d  timestamp %d  %-16s %s"):format(record.seq_num, record.timestamp,
    ("%q"):format(record.body), table.concat(headers, " ")))
end

local tail = assert(stream:check_tail())
print(("Tail of %s/%s is now %d"):format(basin_name, stream_name, tail.seq_num))
client:close()
