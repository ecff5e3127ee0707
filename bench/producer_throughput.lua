-- Benchmark (not a test): the producer against s2-lite, as fast as possible.
-- Env: RECORD_SIZE (bytes, default 100), RECORDS (default by size). Prints one line, and
-- with JSON=1 one JSON object (for docs/benchmarks.md).
local s2 = require "s2"
local core = require "s2.core"

local size = tonumber(os.getenv "RECORD_SIZE") or 100
local n = tonumber(os.getenv "RECORDS") or (size <= 128 and 1000000 or size <= 1024 and 200000 or 40000)

local function peak_rss_mb()
  local f = io.open("/proc/self/status")
  if not f then return 0 end
  local kb = f:read("a"):match("VmHWM:%s*(%d+)")
  f:close()
  return (tonumber(kb) or 0) / 1024
end

local client = s2.client()
local basin_name = ("bench-%d-%d"):format(os.time(), math.random(1e6))
assert(client:create_basin(basin_name, { create_stream_on_append = true, create_stream_on_read = true }))
local stream = client:basin(basin_name):stream("producer")
local body = ("x"):rep(size)

local c0 = os.clock()
local t0 = core.now()
local producer = assert(stream:producer())
local last
-- Keep no ticket but the last: acks resolve in order, so the last one covers the rest.
for _ = 1, n do last = producer:submit(body) end
assert(last:ack())
assert(producer:close())
local seconds = core.now() - t0
local cpu = os.clock() - c0
local stats = producer:stats()
local tail = assert(stream:check_tail()).seq_num
assert(tail == n, ("read back %d records, expected %d"):format(tail, n))

local r = {
  sdk = "s2-lua", version = s2.VERSION, workload = "producer", record_size = size, records = n,
  seconds = seconds, records_per_s = n / seconds, mib_per_s = n * size / seconds / 1048576,
  cpu_s = cpu, cpu_us_per_record = cpu / n * 1e6, peak_rss_mb = peak_rss_mb(),
  records_per_batch = n / stats.batches_submitted,
}
if os.getenv "JSON" then
  print(require("cjson").encode(r))
else
  print(("producer record=%dB records=%d  %.0f records/s  %.1f MiB/s  CPU %.2f s (%.2f us/record)  RSS %.0f MiB  %.0f records/batch")
    :format(size, n, r.records_per_s, r.mib_per_s, cpu, r.cpu_us_per_record, r.peak_rss_mb,
            r.records_per_batch))
end
