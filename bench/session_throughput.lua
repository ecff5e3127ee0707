-- Benchmark (not a test): one append session's throughput against s2-lite.
--   make bench-session      (starts s2-lite; prints one line per run)
-- Records of RECORD_SIZE bytes, BATCH records per batch, TOTAL_MIB in all.
local s2 = require "s2"

local record_size = tonumber(os.getenv "RECORD_SIZE") or 1024
local batch_records = tonumber(os.getenv "BATCH") or math.min(1000, 1048576 // (record_size + 8))
local total_mib = tonumber(os.getenv "TOTAL_MIB") or 256

local client = s2.client()
local basin_name = ("bench-%d-%d"):format(os.time(), math.random(1e6))
assert(client:create_basin(basin_name, { create_stream_on_append = true }))
local stream = client:basin(basin_name):stream("session")

local body = ("x"):rep(record_size)
local batch = {}
for i = 1, batch_records do batch[i] = body end
local batches = math.max(1, (total_mib * 1024 * 1024) // (record_size * batch_records))

local function cpu() return os.clock() end
local t0, c0 = os.time(), cpu()
local clock = require("s2.core").now or os.time
local start = clock()
local session = assert(stream:append_session())
local last
for _ = 1, batches do last = assert(session:submit(batch)) end
assert(last:ack())
assert(session:close())
local elapsed = clock() - start
local cpu_s = cpu() - c0
local records = batches * batch_records
local tail = assert(stream:check_tail()).seq_num
assert(tail == records, ("read back %d records, expected %d"):format(tail, records))
print(("session  record=%dB batch=%d  records=%d  %.0f records/s  %.1f MiB/s  client CPU %.2f s (%.2f us/record)  wall %.2f s")
  :format(record_size, batch_records, records, records / elapsed,
          records * record_size / elapsed / 1048576, cpu_s, cpu_s / records * 1e6, elapsed))
local _ = t0
