-- Benchmark (not a test): the Lua client on the peer workloads of bench/run_peers.sh, printing
-- the same JSON line as bench/peers/* (see bench/README-peers.md), so bench/run_all.sh can run
-- it under bench/peers/measure.py next to the official SDKs.
--
--   lua5.4 bench/lua_bench.lua --workload producer|session|append --record-size N --records N \
--          [--basin B --stream S] [--sample K] [--tag T]
--
-- Endpoints and token come from the S2_* environment (scripts/with-s2-lite.sh sets them).
-- Without --basin a fresh basin (create_stream_on_append) is made.
--
-- What is timed and measured, as in the peers:
--   producer  stream:producer{5 ms linger, 1000 records / 1 MiB batches, 5 MiB in flight},
--             one submit per record, from the first submit until close has returned and every
--             record is acked. ack latency: per record, submit to ack. Every K-th record
--             (--sample, default 1 = all of them, as the peers) keeps its ticket in a FIFO;
--             every 32 submits the resolved heads are stamped (acks come in order, so a
--             stamp is at most 32 submits late), and after the last submit the rest are
--             awaited in order, like the peers' consumer tasks. Stamped records also have
--             their seq_num checked (consecutive, from 0).
--   session   stream:append_session{5 MiB in flight}, batches of min(1000, 1 MiB/(size+8));
--             latency per batch, submit to ack (stamped the same way).
--   append    stream:append of one record at a time; latency per call.
-- Afterwards check_tail must equal --records, else exit 1.
-- Latencies go into a fixed histogram (10 us steps up to 100 ms, 1 ms steps above), so the
-- measurement itself adds no memory that grows with the record count (peak RSS matters).
local s2 = require "s2"
local core = require "s2.core"

local ONE_MIB = 1024 * 1024
local INFLIGHT = 5 * ONE_MIB

local function die(msg)
  io.stderr:write("lua bench: ", msg, "\n")
  os.exit(1)
end

-- ---------------------------------------------------------------- arguments
-- A whole number from an argument string, or nil (math.tointeger is not in LuaJIT).
local function toint(v)
  local n = tonumber(v)
  return n and n == math.floor(n) and n or nil
end
local args = { workload = "producer", record_size = 1024, records = 10000, sample = 1 }
do
  local i = 1
  while i <= #arg do
    local k, v = arg[i], arg[i + 1]
    if v == nil then die(k .. " needs a value") end
    if k == "--workload" then args.workload = v
    elseif k == "--record-size" then args.record_size = toint(v) or die("bad --record-size")
    elseif k == "--records" then args.records = toint(v) or die("bad --records")
    elseif k == "--basin" then args.basin = v
    elseif k == "--stream" then args.stream = v
    elseif k == "--sample" then args.sample = toint(v) or die("bad --sample")
    elseif k == "--tag" then args.tag = v
    else die("unknown argument " .. k) end
    i = i + 2
  end
end
local size, n = args.record_size, args.records
if n < 1 or size < 0 or args.sample < 1 then die("bad arguments") end

-- ---------------------------------------------------------------- latency histogram (ms)
local hist, hist_n = {}, 0
local function record_ms(ms)
  local key = ms < 100 and math.floor(ms * 100) or 10000 + math.floor(ms - 100)
  hist[key] = (hist[key] or 0) + 1
  hist_n = hist_n + 1
end
local function key_ms(key)  -- the bucket's upper edge, like a ceiling
  if key < 10000 then return (key + 1) / 100 end
  return 100 + (key - 10000) + 1
end
local function percentile(p)
  if hist_n == 0 then return nil end
  local keys = {}
  for k in pairs(hist) do keys[#keys + 1] = k end
  table.sort(keys)
  local want = math.max(1, math.ceil(p * hist_n))
  local seen = 0
  for _, k in ipairs(keys) do
    seen = seen + hist[k]
    if seen >= want then return key_ms(k) end
  end
  return key_ms(keys[#keys])
end

-- ---------------------------------------------------------------- setup
local client = s2.client()
local basin_name = args.basin
if not basin_name then
  basin_name = ("luabench-%d-%d"):format(os.time(), math.random(1e6))
  local ok, err = client:create_basin(basin_name, { create_stream_on_append = true })
  if not ok then die("create_basin: " .. tostring(err)) end
end
local stream = client:basin(basin_name):stream(args.stream or ("lua-" .. args.workload .. "-" .. size))
local body = ("x"):rep(size)
local now = core.now

-- ---------------------------------------------------------------- workloads
local batch_records -- nil: the producer decides
local seconds, cpu_window

-- FIFO ring of (submit time, ticket, expected seq_num) for acks that resolve in order.
local function fifo(capacity)
  return { t = {}, k = {}, s = {}, head = 1, tail = 0, cap = capacity }
end

local cpu0 = os.clock()
local start = now()
if args.workload == "producer" then
  local producer, err = stream:producer {
    linger = 0.005, max_batch_records = 1000, max_batch_bytes = ONE_MIB,
    max_inflight_bytes = INFLIGHT,
  }
  if not producer then die("producer: " .. tostring(err)) end
  local sample = args.sample
  -- At most INFLIGHT / (size + 8) records are unacked, plus the open batch.
  local q = fifo(math.floor(math.floor(INFLIGHT / (size + 8)) / sample) + 2000)
  local qt, qk, qs, cap = q.t, q.k, q.s, q.cap
  local head, tail = 0, 0 -- counts; slot = count % cap + 1
  -- Record tickets give their seq_num without building ack tables (the peers read
  -- IndexedAppendAck.seq_num the same way).
  local function stamp(sq, aerr, t0, seq)
    if not sq then die("record ack: " .. tostring(aerr)) end
    record_ms((now() - t0) * 1e3)
    if sq ~= seq then die(("seq_num %d != expected %d"):format(sq, seq)) end
  end
  -- Stamps what has resolved, oldest first; stops at the first pending ticket. Run every
  -- CHECK submits only: a stamp is then at most CHECK submits (tens of us) late, against
  -- latencies of milliseconds, and the harness stays out of the per-record CPU.
  local CHECK = 32
  local function drain()
    while head < tail do
      local slot = head % cap + 1
      local sq, aerr = qk[slot]:result_seq_num()
      if sq == false then return end
      stamp(sq, aerr, qt[slot], qs[slot]); qk[slot] = nil; head = head + 1
    end
  end
  local submit = producer.submit
  for i = 0, n - 1 do
    if i % sample == 0 then
      local t0 = now()
      local ticket, serr = submit(producer, body)
      if not ticket then die("submit: " .. tostring(serr)) end
      if tail - head == cap then -- ring full (should not happen): wait for the oldest
        local slot = head % cap + 1
        local sq, aerr = qk[slot]:seq_num()
        stamp(sq, aerr, qt[slot], qs[slot]); qk[slot] = nil; head = head + 1
      end
      local slot = tail % cap + 1
      qt[slot], qk[slot], qs[slot] = t0, ticket, i
      tail = tail + 1
    else
      local ticket, serr = submit(producer, body)
      if not ticket then die("submit: " .. tostring(serr)) end
    end
    if i % CHECK == 0 then drain() end
  end
  while head < tail do -- the rest, in order, as the peers' consumers await them
    local slot = head % cap + 1
    local sq, aerr = qk[slot]:seq_num()
    stamp(sq, aerr, qt[slot], qs[slot]); qk[slot] = nil; head = head + 1
  end
  local ok, cerr = producer:close()
  if not ok then die("producer close: " .. tostring(cerr)) end
elseif args.workload == "session" then
  batch_records = math.max(1, math.min(1000, math.floor(ONE_MIB / (size + 8))))
  local session, err = stream:append_session { max_inflight_bytes = INFLIGHT }
  if not session then die("append_session: " .. tostring(err)) end
  local full = {}
  for j = 1, batch_records do full[j] = body end
  local qt, qk, head, tail = {}, {}, 1, 0
  local function drain(block)
    while head <= tail do
      local tk = qk[head]
      if not block and not tk:ready() then break end
      local ack, aerr = tk:ack()
      if not ack then die("batch ack: " .. tostring(aerr)) end
      record_ms((now() - qt[head]) * 1e3)
      qk[head] = nil; head = head + 1
    end
  end
  local left = n
  while left > 0 do
    local k = math.min(left, batch_records)
    local batch = full
    if k < batch_records then batch = {}; for j = 1, k do batch[j] = body end end
    local t0 = now()
    local ticket, serr = session:submit(batch)
    if not ticket then die("session submit: " .. tostring(serr)) end
    tail = tail + 1; qt[tail], qk[tail] = t0, ticket
    left = left - k
    drain(false)
  end
  drain(true)
  local ok, cerr = session:close()
  if not ok then die("session close: " .. tostring(cerr)) end
elseif args.workload == "append" then
  batch_records = 1
  local one = { body }
  for _ = 1, n do
    local t0 = now()
    local ack, err = stream:append(one)
    if not ack then die("append: " .. tostring(err)) end
    record_ms((now() - t0) * 1e3)
  end
else
  die("unknown workload " .. args.workload)
end
seconds = now() - start
cpu_window = os.clock() - cpu0

local tail, terr = stream:check_tail()
if not tail then die("check_tail: " .. tostring(terr)) end
if tail.seq_num ~= n then
  die(("tail is %d after %d records: records did not land"):format(tail.seq_num, n))
end
client:close()

-- ---------------------------------------------------------------- output (one JSON line)
local function num(v, fmt)
  if v == nil then return "null" end
  return (fmt or "%.3f"):format(v)
end
local function str(v) return '"' .. tostring(v):gsub('[%c"\\]', function(c)
  return ("\\u%04x"):format(c:byte()) end) .. '"' end
local fields = {
  { "sdk", str(rawget(_G, "jit") and "luajit" or "lua") }, -- the LuaJIT build reports as its own client
  { "version", str(s2.VERSION) },
  { "workload", str(args.workload) },
  { "record_size", tostring(size) },
  { "records", tostring(n) },
  { "batch_records", batch_records and tostring(batch_records) or "null" },
  { "seconds", num(seconds, "%.4f") },
  { "records_per_s", num(n / seconds, "%.1f") },
  { "mib_per_s", num(n * size / seconds / ONE_MIB) },
  { "ack_p50_ms", num(percentile(0.50)) },
  { "ack_p99_ms", num(percentile(0.99)) },
  { "cpu_window_s", num(cpu_window, "%.2f") },
  { "cpu_user_s", "null" },
  { "cpu_sys_s", "null" },
  { "peak_rss_mb", "null" },
  { "latency_sample", tostring(args.sample) },
  { "acks_timed", tostring(hist_n) },
  { "max_inflight_bytes", tostring(INFLIGHT) },
}
if args.tag then fields[#fields + 1] = { "tag", str(args.tag) } end
local parts = {}
for i, f in ipairs(fields) do parts[i] = str(f[1]) .. ":" .. f[2] end
io.stdout:write("{", table.concat(parts, ","), "}\n")
io.stdout:flush()
