-- Benchmark (not a test): many sessions on one client (issue 15, "Scale").
--   make bench-scale       (the null sink, then s2-lite; one JSON line per target)
--   bench/with_sink.sh lua5.4 bench/scale.lua [--sessions N] ...   (LUA_PATH/LUA_CPATH as in make)
--
-- One client opens N append sessions, each on its own stream, and N read sessions following
-- those streams (all multiplexed over the client's HTTP/2 connections, at most 100 streams
-- each). Every append session has one batch acked and every reader has taken its record, so
-- that each session's state is set up. Then:
--   (a) RSS growth per session (VmRSS before and after opening, append and read apart; the
--       Lua heap's share alongside);
--   (b) the process's CPU per second while everything is idle for --idle-seconds (os.clock
--       of the whole process: the I/O thread included) and the I/O thread's own CPU and
--       context switches (/proc/self/task/*/: its wakeups), per session; the server's
--       heartbeats to the N readers (every 5 s at the sink, 5-15 s at s2-lite) are what
--       wakes an idle client;
--   (c) records/s with all active: --rounds times, a batch of --batch records submitted on
--       every session (non-blocking), then every ack taken (seq nums checked), then every
--       reader drained of its batch (seq nums and bodies checked).
-- Numbers are noisy on a shared machine: repeat a run before trusting a difference.
local s2 = require "s2"
local core = require "s2.core"

local opts = {
  sessions = 1000, batch = 10, rounds = 20, record_size = 100, idle_seconds = 10,
  target = os.getenv "S2_SINK" and "sink" or "s2-lite", readers = true,
}
do
  local i = 1
  while arg[i] do
    local k = arg[i]:match("^%-%-([%w-]+)$")
    local key = k and k:gsub("-", "_")
    if key == "no_readers" then opts.readers = false; i = i + 1
    elseif key and opts[key] ~= nil and arg[i + 1] then
      opts[key] = tonumber(arg[i + 1]) or arg[i + 1]; i = i + 2
    else
      io.stderr:write("usage: scale.lua [--sessions N] [--batch N] [--rounds N] [--record-size N]"
        .. " [--idle-seconds S] [--target sink|s2-lite] [--no-readers]\n")
      os.exit(2)
    end
  end
end
local N = opts.sessions
local TIMEOUT = 60

local function status()
  local f = assert(io.open("/proc/self/status"))
  local t = f:read("a")
  f:close()
  return t
end
local function rss_kib() return tonumber(status():match("VmRSS:%s*(%d+)")) end
local function settle()
  collectgarbage("collect")
  collectgarbage("collect")
end

-- Per thread: name, CPU seconds (utime + stime), context switches (voluntary + not).
local TICK = 100 -- USER_HZ on Linux
local function threads()
  local out = {}
  -- (/proc/self in the listing shell would be the shell's: our own pid instead)
  local pid = status():match("\nPid:%s*(%d+)")
  local p = assert(io.popen("ls /proc/" .. pid .. "/task"))
  for tid in p:lines() do
    local base = "/proc/" .. pid .. "/task/" .. tid .. "/"
    local fs, fc = io.open(base .. "stat"), io.open(base .. "status")
    if fs and fc then
      local st, ss = fs:read("a"), fc:read("a")
      local name = st:match("%((.-)%)")
      local rest = st:match("%) (.*)$")
      local fields = {}
      for w in rest:gmatch("%S+") do fields[#fields + 1] = w end
      -- fields[1] is state (field 3); utime is field 14, stime 15
      local cpu = (tonumber(fields[12]) + tonumber(fields[13])) / TICK
      local cs = tonumber(ss:match("voluntary_ctxt_switches:%s*(%d+)"))
        + tonumber(ss:match("nonvoluntary_ctxt_switches:%s*(%d+)"))
      out[#out + 1] = { tid = tid, name = name, cpu = cpu, cs = cs }
    end
    if fs then fs:close() end
    if fc then fc:close() end
  end
  p:close()
  return out
end
local function io_thread(ts)
  local cpu, cs, n = 0, 0, 0
  for _, t in ipairs(ts) do
    if t.name == "s2-io" then cpu, cs, n = cpu + t.cpu, cs + t.cs, n + 1 end
  end
  return { cpu = cpu, cs = cs, n = n }
end

local function sink_stats()
  if opts.target ~= "sink" then return nil end
  local ep = os.getenv "S2_ACCOUNT_ENDPOINT"
  local p = io.popen("curl -s " .. ep .. "/sink/stats")
  local t = p and p:read("a") or ""
  if p then p:close() end
  return { heartbeats = tonumber(t:match('"heartbeats":(%d+)')) }
end

local body_pad = ("x"):rep(math.max(0, opts.record_size - 24))
local function body(i, r, k) return ("%08d %06d %06d"):format(i, r, k) .. body_pad end
-- What a reader must get: what was appended; from the sink (which stores nothing) its
-- generated body of record seq (hex seq_num first; SINK_ARGS --read-record-size sets the size).
local function read_ok(rec, seq, i, r, k)
  if rec.seq_num ~= seq then return false end
  if opts.target == "sink" then return rec.body:sub(1, 16) == ("%016x"):format(seq) end
  return rec.body == body(i, r, k)
end

local client = s2.client { request_timeout = 30 }
local basin_name = ("bench-scale-%d-%d"):format(os.time(), math.random(1e6))
assert(client:create_basin(basin_name, { create_stream_on_append = true, create_stream_on_read = true }))
local basin = client:basin(basin_name)
local prefix = ("scale-%d-"):format(math.random(1e9))

settle()
local rss0, heap0 = rss_kib(), collectgarbage("count")
local t_open = core.now()

-- (a) append sessions, each with one batch of one record acked
local sessions, tickets = {}, {}
for i = 1, N do
  sessions[i] = assert(basin:stream(prefix .. i):append_session())
  tickets[i] = assert(sessions[i]:submit { body(i, 0, 0) })
end
for i = 1, N do
  local ack = assert(tickets[i]:ack(TIMEOUT))
  assert(ack.start.seq_num == 0 and ack["end"].seq_num == 1,
    ("session %d: first ack %d..%d, expected 0..1"):format(i, ack.start.seq_num, ack["end"].seq_num))
  tickets[i] = nil
end
settle()
local rss_append, heap_append = rss_kib(), collectgarbage("count")

-- read sessions following those streams, each having taken its first record
local readers = {}
if opts.readers then
  for i = 1, N do readers[i] = assert(basin:stream(prefix .. i):read_session { seq_num = 0 }) end
  for i = 1, N do
    local rec = assert(readers[i]:next(TIMEOUT))
    assert(read_ok(rec, 0, i, 0, 0), ("reader %d: wrong first record"):format(i))
  end
end
local open_s = core.now() - t_open
settle()
local rss_read, heap_read = rss_kib(), collectgarbage("count")
local cstats = client:stats()

-- (b) idle: the Lua thread sleeps in waitpid (os.execute); every CPU tick is the client's
local th0, c0, hb0, w0 = threads(), os.clock(), sink_stats(), core.now()
os.execute(("sleep %s"):format(opts.idle_seconds))
local th1, c1, hb1, w1 = threads(), os.clock(), sink_stats(), core.now()
local idle_s = w1 - w0
local io0, io1 = io_thread(th0), io_thread(th1)
local idle_cpu = (c1 - c0) / idle_s
local sessions_total = N * (opts.readers and 2 or 1)

-- (c) all active
local t_active, c_active = core.now(), os.clock()
local per = opts.batch
for r = 1, opts.rounds do
  for i = 1, N do
    local batch = {}
    for k = 1, per do batch[k] = body(i, r, k) end
    tickets[i] = assert(sessions[i]:submit(batch))
  end
  local want = 1 + (r - 1) * per
  for i = 1, N do
    local ack = assert(tickets[i]:ack(TIMEOUT))
    assert(ack.start.seq_num == want,
      ("session %d round %d: ack starts at %d, expected %d"):format(i, r, ack.start.seq_num, want))
  end
  if opts.readers then
    for i = 1, N do
      for k = 1, per do
        local rec = assert(readers[i]:next(TIMEOUT))
        assert(read_ok(rec, want + k - 1, i, r, k),
          ("reader %d round %d: record %d wrong"):format(i, r, k))
      end
    end
  end
end
local active_s = core.now() - t_active
local active_cpu = os.clock() - c_active
local records = N * per * opts.rounds
settle()
local rss_after, peak = rss_kib(), tonumber(status():match("VmHWM:%s*(%d+)"))

local t_close = core.now()
for i = 1, N do
  if opts.readers then readers[i]:close() end
  assert(sessions[i]:close(TIMEOUT))
end
local close_s = core.now() - t_close
client:close()

local function r(x, d) local m = 10 ^ (d or 1); return math.floor(x * m + 0.5) / m end
local out = {
  bench = "scale", target = opts.target, sessions_append = N, sessions_read = opts.readers and N or 0,
  connections = cstats.connections_open, open_s = r(open_s, 2),
  rss_base_kib = rss0,
  rss_per_append_session_kib = r((rss_append - rss0) / N, 2),
  rss_per_read_session_kib = opts.readers and r((rss_read - rss_append) / N, 2) or nil,
  heap_per_append_session_kib = r((heap_append - heap0) / N, 2),
  heap_per_read_session_kib = opts.readers and r((heap_read - heap_append) / N, 2) or nil,
  idle_seconds = r(idle_s, 2),
  idle_cpu_ms_per_s = r(idle_cpu * 1000, 2),
  idle_cpu_us_per_session_per_s = r(idle_cpu * 1e6 / sessions_total, 3),
  idle_io_thread_cpu_ms_per_s = r((io1.cpu - io0.cpu) * 1000 / idle_s, 1),
  idle_io_wakeups_per_s = r((io1.cs - io0.cs) / idle_s, 1),
  idle_heartbeats_per_s = hb0 and hb1 and hb0.heartbeats and r((hb1.heartbeats - hb0.heartbeats) / idle_s, 1) or nil,
  batch_records = per, rounds = opts.rounds, record_size = opts.record_size, records = records,
  active_seconds = r(active_s, 3), records_per_s = math.floor(records / active_s),
  active_cpu_us_per_record = r(active_cpu * 1e6 / records, 2),
  rss_after_active_kib = rss_after, peak_rss_kib = peak, close_s = r(close_s, 2),
}
local keys = {}
for k in pairs(out) do keys[#keys + 1] = k end
table.sort(keys)
local parts = {}
for _, k in ipairs(keys) do
  local v = out[k]
  parts[#parts + 1] = ("%q:%s"):format(k, type(v) == "string" and ("%q"):format(v) or tostring(v))
end
print("{" .. table.concat(parts, ",") .. "}")
