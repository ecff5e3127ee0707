-- Regression: a read session that reached its limit (count, bytes, until, wait) kept its last
-- batch's payload buffer for good.
--
-- Since 5d04bbb, the caller's next()/next_batch() keeps a drained batch's payload buffer as the
-- session's `spare`, for the I/O thread's next frame; only a heartbeat frees it. An ended
-- session gets no frame any more, and the caller drains its last batch after the stream
-- ended, so the buffer (about a megabyte after a full batch) stays until the reader is closed
-- or collected. Besides, the frame decoder keeps its input buffer (a frame large) after the
-- clean end. Here: 64 readers of 1000 records of 1000 bytes (one full batch each), each
-- drained to its end (nil) and kept open: the process grew by about 2 MiB per reader (124
-- MiB), where nothing of their reads has to stay.
local s2 = require "s2"
local N = require "support.null_sink"

local function rss_mib()
  for line in io.lines("/proc/self/status") do
    local kb = line:match("^VmRSS:%s+(%d+)")
    if kb then return tonumber(kb) / 1024 end
  end
end

local function drain(r)
  local n = 0
  while true do
    local list, err = r:next_batch(1000, 10)
    if list == nil then
      assert(err == nil, tostring(err))
      return n
    end
    n = n + #list
  end
end

-- Under a sanitizer (make asan, tsan-suite) freed memory stays resident (ASan's quarantine):
-- the resident size says nothing there.
local sanitized = (os.getenv "LD_PRELOAD" or ""):find("san", 1, true)

describe("regression: read sessions that reached their limit", function()
  (sanitized and pending or it)("keep none of their batches' buffers", function()
    local sink = N.start {}
    local client = s2.client { access_token = "ignored", account_endpoint = sink.endpoint,
                               basin_endpoint = sink.endpoint, request_timeout = 10 }
    local stream = client:basin("sink-basin"):stream("gen-1000-1000")
    local function open() return assert(stream:read_session { seq_num = 0, count = 1000 }) end
    local warm = open() -- the allocator's and the client's first-use growth
    assert.are.equal(1000, drain(warm))
    warm:close()
    collectgarbage()
    collectgarbage()
    local before = rss_mib()
    local readers = {}
    for k = 1, 64 do
      readers[k] = open()
      assert.are.equal(1000, drain(readers[k]))
      assert.is_true(readers[k]:status().ended)
    end
    collectgarbage()
    collectgarbage()
    local grown = rss_mib() - before
    for _, r in ipairs(readers) do r:close() end
    client:close()
    sink:stop()
    -- one megabyte kept per reader would be 64 MiB; their Lua strings are garbage by now
    assert.is_true(grown < 24, ("64 ended readers hold %.0f MiB"):format(grown))
  end)
end)
