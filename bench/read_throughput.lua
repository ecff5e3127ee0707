-- Benchmark (not a test): the Lua client reading, one JSON line per run (issue 15), in the
-- shape of bench/peers/* (see bench/README-peers.md) so bench/run_peers.sh can run it under
-- bench/peers/measure.py beside the official SDKs' read workloads.
--
--   lua5.4 bench/read_throughput.lua --workload read_session|read_session_batch|read_session_columns|read_unary --record-size N \
--          --records N [--target sink|s2-lite] [--basin B --stream S] [--prepare|--prepare-only]
--
-- Endpoints and token come from the S2_* environment (scripts/with-s2-lite.sh, or
-- bench/with_sink.sh for tools/null_sink.c).
--
--   read_session  stream:read_session{ seq_num = 0, count = N }, every record taken with
--                 reader:next() (a table per record, what an application sees), until the
--                 session ends; N records must come, with consecutive seq_nums.
--   read_session_batch  the same session, records taken with reader:next_batch() (lists of
--                 up to 1000 records per call, or --batch-max N; the fastest documented way).
--   read_session_columns  the same session, records taken with reader:next_columns()
--                 (seq_nums, timestamps and bodies as lists: no table per record).
--   read_unary    stream:read{ seq_num = s, count = 1000 } pages (1000 records or 1 MiB
--                 metered, whichever is smaller: 127 records of 8 KiB), until N records came.
--
-- The stream: with --target sink, `gen-SIZE-N` (the sink generates it; bodies are checked
-- against tools/null_sink.c's documented pattern on the first and last record). With
-- --target s2-lite it must hold N records of SIZE bytes: --prepare first appends them through
-- an append session of 1000-record batches (not timed; --prepare-only: then exits without
-- output); bench/run_peers.sh prepares one
-- stream per case and lets every client read it. Without --stream: `read-SIZE-N`. Without
-- --basin (s2-lite) a fresh basin is made.
--
-- Measured: seconds from opening the session (or the first read) until the last record;
-- cpu_window_s = os.clock() over that window, which in Lua 5.4 on Linux is clock(3), the
-- CPU time of the whole process: the client's I/O thread is included (as in the peers,
-- whose runtimes' threads are in their process CPU too); cpu_window_us_per_record from it;
-- peak_rss_mb = VmHWM of /proc/self/status at the end. bench/peers/measure.py overwrites
-- cpu_user_s / cpu_sys_s / peak_rss_mb / cpu_us_per_record with the kernel's rusage of the
-- whole process (start-up included) when it runs this.
local s2 = require "s2"
local core = require "s2.core"

local ONE_MIB = 1024 * 1024

-- Lua 5.1 / LuaJIT too (no // nor math.tointeger there).
local function int(v)
  v = tonumber(v)
  if v and v == math.floor(v) then return v end
  return nil
end
local function per_mib(size) return math.floor(ONE_MIB / (size + 8)) end

local function die(msg)
  io.stderr:write("read bench: ", msg, "\n")
  os.exit(1)
end

local args = { workload = "read_session", record_size = 128, records = 100000, target = "s2-lite" }
do
  local i = 1
  while i <= #arg do
    local k, v = arg[i], arg[i + 1]
    if k == "--prepare" or k == "--prepare-only" then
      args.prepare = true
      args.prepare_only = k == "--prepare-only"
      i = i + 1
    else
      if v == nil then die(k .. " needs a value") end
      if k == "--workload" then args.workload = v
      elseif k == "--record-size" then args.record_size = int(v) or die("bad --record-size")
      elseif k == "--records" then args.records = int(v) or die("bad --records")
      elseif k == "--target" then args.target = v
      elseif k == "--basin" then args.basin = v
      elseif k == "--stream" then args.stream = v
      elseif k == "--batch-max" then args.batch_max = int(v) or die("bad --batch-max")
      else die("unknown argument " .. k) end
      i = i + 2
    end
  end
end
local size, n = args.record_size, args.records
if n < 1 or size < 0 then die("bad arguments") end
if args.target ~= "sink" and args.target ~= "s2-lite" then die("--target is sink or s2-lite") end
if args.workload ~= "read_session" and args.workload ~= "read_session_batch"
  and args.workload ~= "read_session_columns" and args.workload ~= "read_unary" then
  die("unknown workload " .. args.workload)
end

local client = s2.client()
local basin_name = args.basin
if not basin_name then
  basin_name = ("readbench-%d-%d"):format(os.time(), math.random(1e6))
  if args.target ~= "sink" or args.prepare then
    local ok, err = client:create_basin(basin_name, { create_stream_on_append = true })
    if not ok then die("create_basin: " .. tostring(err)) end
  end
end
local stream_name = args.stream or (args.target == "sink" and ("gen-%d-%d"):format(size, n)
  or ("read-%d-%d"):format(size, n))
local stream = client:basin(basin_name):stream(stream_name)

-- The sink's generated body of record i (tools/null_sink.c).
local function sink_body(i)
  local hex = ("%016x"):format(i)
  if size < 16 then return hex:sub(17 - size) end
  return hex .. ("x"):rep(size - 16)
end

if args.prepare then
  local session, err = stream:append_session()
  if not session then die("append_session: " .. tostring(err)) end
  local per = math.max(1, math.min(1000, per_mib(size)))
  local body = ("x"):rep(size)
  local full = {}
  for j = 1, per do full[j] = body end
  local left = n
  while left > 0 do
    local k = math.min(left, per)
    local batch = full
    if k < per then batch = {}; for j = 1, k do batch[j] = body end end
    local t, serr = session:submit(batch)
    if not t then die("prepare submit: " .. tostring(serr)) end
    left = left - k
  end
  local ok, cerr = session:close()
  if not ok then die("prepare close: " .. tostring(cerr)) end
  if args.prepare_only then
    local t = assert(stream:check_tail())
    if t.seq_num < n then die(("prepared %d records, not %d"):format(t.seq_num, n)) end
    client:close()
    os.exit(0)
  end
end

local tail, terr = stream:check_tail()
if not tail then die("check_tail: " .. tostring(terr)) end
if tail.seq_num < n then die(("stream %s holds %d records, not %d"):format(stream_name, tail.seq_num, n)) end

local now = core.now
local got, batches = 0, 0
local first_body, last_body
local cpu0 = os.clock()
local start = now()
if args.workload == "read_session" then
  local reader, err = stream:read_session { seq_num = 0, count = n }
  if not reader then die("read_session: " .. tostring(err)) end
  local next = reader.next
  while true do
    local r, rerr = next(reader)
    if not r then
      if rerr then die("read: " .. tostring(rerr)) end
      break
    end
    if r.seq_num ~= got then die(("seq_num %d, expected %d"):format(r.seq_num, got)) end
    if got == 0 then first_body = r.body end
    last_body = r.body
    got = got + 1
  end
  reader:close()
elseif args.workload == "read_session_batch" then
  local reader, err = stream:read_session { seq_num = 0, count = n }
  if not reader then die("read_session: " .. tostring(err)) end
  local next_batch = reader.next_batch
  while true do
    local list, rerr = next_batch(reader, args.batch_max)
    if not list then
      if rerr then die("read: " .. tostring(rerr)) end
      break
    end
    for j = 1, #list do
      local r = list[j]
      if r.seq_num ~= got then die(("seq_num %d, expected %d"):format(r.seq_num, got)) end
      got = got + 1
    end
    if first_body == nil then first_body = list[1].body end
    last_body = list[#list].body
    batches = batches + 1
  end
  reader:close()
elseif args.workload == "read_session_columns" then
  local reader, err = stream:read_session { seq_num = 0, count = n }
  if not reader then die("read_session: " .. tostring(err)) end
  local next_columns = reader.next_columns
  while true do
    local cols, rerr = next_columns(reader, args.batch_max)
    if not cols then
      if rerr then die("read: " .. tostring(rerr)) end
      break
    end
    local seq_nums = cols.seq_nums
    for j = 1, cols.n do
      if seq_nums[j] ~= got then die(("seq_num %d, expected %d"):format(seq_nums[j], got)) end
      got = got + 1
    end
    if first_body == nil then first_body = cols.bodies[1] end
    last_body = cols.bodies[cols.n]
    batches = batches + 1
  end
  reader:close()
else
  while got < n do
    local batch, err = stream:read { seq_num = got, count = math.min(1000, n - got) }
    if not batch then die("read: " .. tostring(err)) end
    local recs = batch.records
    if #recs == 0 then die("empty page at " .. got) end
    for j = 1, #recs do
      if recs[j].seq_num ~= got then die(("seq_num %d, expected %d"):format(recs[j].seq_num, got)) end
      got = got + 1
    end
    if batches == 0 then first_body = recs[1].body end
    last_body = recs[#recs].body
    batches = batches + 1
  end
end
local seconds = now() - start
local cpu_window = os.clock() - cpu0
if got ~= n then die(("read %d records, expected %d"):format(got, n)) end
if #last_body ~= size then die(("a body of %d bytes, expected %d"):format(#last_body, size)) end
if args.target == "sink" and (first_body ~= sink_body(0) or last_body ~= sink_body(n - 1)) then
  die("bodies differ from the sink's generated pattern")
end
client:close()

local function peak_rss_mb()
  local f = io.open("/proc/self/status")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  local kb = s:match("VmHWM:%s*(%d+)")
  return kb and tonumber(kb) / 1024
end

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
  { "target", str(args.target) },
  { "record_size", ("%d"):format(size) },
  { "records", ("%d"):format(n) },
  { "batch_records", args.workload == "read_unary" and tostring(math.min(1000, per_mib(size))) or "null" },
  { "requests", args.workload == "read_unary" and tostring(batches) or "1" },
  { "seconds", num(seconds, "%.4f") },
  { "records_per_s", num(n / seconds, "%.1f") },
  { "mib_per_s", num(n * size / seconds / ONE_MIB) },
  { "ack_p50_ms", "null" },
  { "ack_p99_ms", "null" },
  { "cpu_window_s", num(cpu_window, "%.3f") },
  { "cpu_window_us_per_record", num(cpu_window / n * 1e6, "%.3f") },
  { "cpu_user_s", "null" },
  { "cpu_sys_s", "null" },
  { "peak_rss_mb", num(peak_rss_mb(), "%.1f") },
}
local parts = {}
for i, f in ipairs(fields) do parts[i] = str(f[1]) .. ":" .. f[2] end
io.stdout:write("{", table.concat(parts, ","), "}\n")
io.stdout:flush()
