-- Benchmark (not a test): a read session's memory while its consumer sleeps and the stream
-- grows. The HTTP/2 window is given back only as Lua drains records, so the buffered data
-- stays near the 10 MiB window however much the stream holds.
--   make bench-reader     (TOTAL_MIB, default 200)
local s2 = require "s2"
local core = require "s2.core"

local total_mib = tonumber(os.getenv "TOTAL_MIB") or 200
local function rss_mb()
  local f = io.open("/proc/self/status")
  local t = f:read("a")
  f:close()
  return tonumber(t:match("VmRSS:%s*(%d+)")) / 1024, tonumber(t:match("VmHWM:%s*(%d+)")) / 1024
end

local client = s2.client()
local name = ("bench-reader-%d-%d"):format(os.time(), math.random(1e6))
assert(client:create_basin(name, { create_stream_on_append = true, create_stream_on_read = true }))
local stream = client:basin(name):stream("grow")
local reader = assert(stream:read_session { seq_num = 0 })
local writer = s2.client():basin(name):stream("grow")
local p = assert(writer:producer())
local body = ("m"):rep(1024)
local n = total_mib * 1024
local base = rss_mb()
-- The consumer takes one record, then sleeps while the whole stream is written.
assert(p:submit(body):ack(30))
assert(reader:next(30))
for _ = 2, n do p:submit(body) end
assert(p:flush())
local t0 = core.now()
while core.now() - t0 < 2 do end -- let the reader's window fill
local rss_sleeping = rss_mb()
-- Then it drains everything.
local got = 1
while got < n do assert(reader:next(30)); got = got + 1 end
local rss_end, peak = rss_mb()
print(("reader: stream %d MiB; RSS before %.1f MiB, while the consumer slept %.1f MiB, after draining %.1f MiB, peak %.1f MiB")
  :format(total_mib, base, rss_sleeping, rss_end, peak))
reader:close()
p:close()
