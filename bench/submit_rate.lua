-- Benchmark (not a test): how fast one Lua thread can hand records to producer:submit
-- (issue 15: the submit path alone; goal >= 2 M records/s), against the null sink
-- (tools/null_sink.c, bench/with_sink.sh), so the server costs (almost) nothing.
--
--   lua5.4 bench/submit_rate.lua [--tickets drop|keep|sample] [--records N] [--record-size N]
--                                [--target sink|s2-lite] [--basin B --stream S]
--
--   drop    every ticket is dropped at once (garbage)
--   keep    every ticket is kept in an array until the end (what an application that looks at
--           every ack later holds), then each is awaited in order and its seq_num checked
--   sample  every 100th ticket is awaited: kept in a FIFO, the resolved heads taken every 32
--           submits without blocking, the rest awaited in order after the last submit (as
--           bench/lua_bench.lua --sample 100); each one's seq_num is checked
-- Producer settings: 5 ms linger, 1000 records / 1 MiB batches, 5 MiB in flight (the peer
-- matrix's); bodies of --record-size (default 100) bytes of `x`.
--
-- One JSON line: submit_seconds / submit_records_per_s time the submit loop alone (first
-- submit to the last one's return); seconds / records_per_s go on until close() returned
-- (every record acked); cpu_window_s is os.clock() (the whole process: the I/O thread
-- included) over that whole window, cpu_window_us_per_record from it; peak_rss_mb is VmHWM.
-- Afterwards check_tail must equal the record count.
local s2 = require "s2"
local core = require "s2.core"

local ONE_MIB = 1024 * 1024

local function die(msg)
  io.stderr:write("submit bench: ", msg, "\n")
  os.exit(1)
end

-- A whole number from an argument string, or nil (math.tointeger is not in LuaJIT).
local function toint(v)
  local n = tonumber(v)
  return n and n == math.floor(n) and n or nil
end
local args = { tickets = "drop", records = 2000000, record_size = 100, target = "sink" }
do
  local i = 1
  while i <= #arg do
    local k, v = arg[i], arg[i + 1]
    if v == nil then die(k .. " needs a value") end
    if k == "--tickets" then args.tickets = v
    elseif k == "--records" then args.records = toint(v) or die("bad --records")
    elseif k == "--record-size" then args.record_size = toint(v) or die("bad --record-size")
    elseif k == "--target" then args.target = v
    elseif k == "--basin" then args.basin = v
    elseif k == "--stream" then args.stream = v
    else die("unknown argument " .. k) end
    i = i + 2
  end
end
local n, size, mode = args.records, args.record_size, args.tickets
if mode ~= "drop" and mode ~= "keep" and mode ~= "sample" then die("--tickets is drop, keep or sample") end
if n < 1 or size < 0 then die("bad arguments") end

local client = s2.client()
local basin_name = args.basin
if not basin_name then
  basin_name = ("submitbench-%d-%d"):format(os.time(), math.random(1e6))
  local ok, err = client:create_basin(basin_name, { create_stream_on_append = true })
  if not ok then die("create_basin: " .. tostring(err)) end
end
local stream = client:basin(basin_name):stream(args.stream or
  ("submit-%s-%d-%d"):format(mode, os.time(), math.random(1e6)))
local producer, perr = stream:producer {
  linger = 0.005, max_batch_records = 1000, max_batch_bytes = ONE_MIB, max_inflight_bytes = 5 * ONE_MIB,
}
if not producer then die("producer: " .. tostring(perr)) end
local body = ("x"):rep(size)
local submit = producer.submit
local now = core.now

local function check(sq, err, want)
  if not sq then die("ack: " .. tostring(err)) end
  if sq ~= want then die(("seq_num %d, expected %d"):format(sq, want)) end
end

local cpu0 = os.clock()
local start = now()
local kept, awaited = nil, 0
if mode == "drop" then
  for _ = 1, n do
    if not submit(producer, body) then die("submit failed") end
  end
elseif mode == "keep" then
  kept = {}
  for i = 1, n do
    local t, err = submit(producer, body)
    if not t then die("submit: " .. tostring(err)) end
    kept[i] = t
  end
else
  local SAMPLE, CHECK = 100, 32
  local q, qs, head, tail = {}, {}, 1, 0
  for i = 0, n - 1 do
    local t, err = submit(producer, body)
    if not t then die("submit: " .. tostring(err)) end
    if i % SAMPLE == 0 then tail = tail + 1; q[tail], qs[tail] = t, i end
    if i % CHECK == 0 then
      while head <= tail do
        local sq, aerr = q[head]:result_seq_num()
        if sq == false then break end
        check(sq, aerr, qs[head]); q[head] = nil; head = head + 1; awaited = awaited + 1
      end
    end
  end
  kept = { q = q, qs = qs, head = head, tail = tail }
end
local submit_seconds = now() - start
if mode == "keep" then
  for i = 1, n do
    local sq, err = kept[i]:seq_num()
    check(sq, err, i - 1)
    kept[i] = nil
  end
  awaited = n
elseif mode == "sample" then
  for j = kept.head, kept.tail do
    local sq, err = kept.q[j]:seq_num()
    check(sq, err, kept.qs[j]); awaited = awaited + 1
  end
end
local ok, cerr = producer:close()
if not ok then die("close: " .. tostring(cerr)) end
local seconds = now() - start
local cpu_window = os.clock() - cpu0
local tail, terr = stream:check_tail()
if not tail then die("check_tail: " .. tostring(terr)) end
if tail.seq_num ~= n then die(("tail is %d after %d records"):format(tail.seq_num, n)) end
client:close()

local function peak_rss_mb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local kb = s:match("VmHWM:%s*(%d+)")
  return kb and tonumber(kb) / 1024
end
local function num(v, fmt) return v == nil and "null" or (fmt or "%.3f"):format(v) end
local function str(v) return '"' .. tostring(v) .. '"' end
local fields = {
  { "sdk", str(rawget(_G, "jit") and "luajit" or "lua") }, { "version", str(s2.VERSION) }, { "workload", str "submit" },
  { "tickets", str(mode) }, { "target", str(args.target) }, { "record_size", tostring(size) },
  { "records", tostring(n) }, { "acks_awaited", tostring(awaited) },
  { "submit_seconds", num(submit_seconds, "%.4f") },
  { "submit_records_per_s", num(n / submit_seconds, "%.1f") },
  { "seconds", num(seconds, "%.4f") }, { "records_per_s", num(n / seconds, "%.1f") },
  { "mib_per_s", num(n * size / seconds / ONE_MIB) },
  { "ack_p50_ms", "null" }, { "ack_p99_ms", "null" },
  { "cpu_window_s", num(cpu_window, "%.3f") },
  { "cpu_window_us_per_record", num(cpu_window / n * 1e6, "%.3f") },
  { "cpu_user_s", "null" }, { "cpu_sys_s", "null" },
  { "peak_rss_mb", num(peak_rss_mb(), "%.1f") },
}
local parts = {}
for i, f in ipairs(fields) do parts[i] = str(f[1]) .. ":" .. f[2] end
io.stdout:write("{", table.concat(parts, ","), "}\n")
io.stdout:flush()
