-- Single-batch append: two records, appended atomically in one request.
-- (The "Single-batch append" example of the S2 guide "Appending".)
--
--   scripts/with-s2-lite.sh scripts/run-examples.sh      (or: make examples)
local s2 = require "s2"

local client = s2.client() -- S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT

-- A basin of its own; ensure_basin is safe to run again.
math.randomseed(os.time())
local basin_name = ("ex-append-%d-%04x"):format(os.time(), math.random(0, 0xffff))
assert(client:ensure_basin(basin_name, { create_stream_on_append = true }))
local stream = client:basin(basin_name):stream("events")

-- A record is a string (its body) or a table with body, headers and timestamp.
local ack, err = stream:append({
  "first event",
  { body = "second event", headers = { { "source", "example" } } },
})
if not ack then
  io.stderr:write("append failed: ", tostring(err), "\n")
  os.exit(1)
end

-- ack tells us where the records landed: [start, end) and the stream's tail.
print(("Wrote records %d through %d"):format(ack.start.seq_num, ack["end"].seq_num - 1))
client:close()
