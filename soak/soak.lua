-- Chaos soak: writers append hash-chained records through the fault proxy (random cuts in
-- both directions) to s2-lite; then every stream is read back straight from s2-lite and
-- checked: no gap, order kept, every ack points at its own record, and no duplicate where
-- the writer is an idempotent producer.
--
--   scripts/with-s2-lite.sh lua5.4 soak/soak.lua      (soak/run.sh builds first, then this)
--
-- Bounded in time and count (environment, defaults in brackets):
--   SOAK_SECONDS [180]       writing stops after this many seconds
--   SOAK_RECORDS [3000000]   ... or after this many records in all
--   SOAK_WRITERS [6]         writers, each with its own client (so its own connections);
--                            kinds rotate: idempotent producer, producer, append session
--   SOAK_CUT_MIN [20000]     each proxied connection is cut after T bytes (both directions
--   SOAK_CUT_MAX [200000]    together), T uniform in [MIN, MAX]
--   SOAK_CUT_P [1]           probability that a connection is cut at all
--   SOAK_SEED [1]            seeds the proxy's draws and the writers' choices
--   SOAK_VERBOSE             print a progress line every 10 s
--
-- Record body: "<writer> <index> <prev hash> <hash> <payload>", where hash is FNV-1a 64 of
-- "<prev hash>|<index>|<payload>" (pure Lua, 64-bit integer arithmetic) and the payload is
-- derived from the index (50..500 bytes). The first record's prev hash is 0. Reading back, a
-- record is accepted when its index is the next one, its prev hash is the hash of the last
-- accepted record and its own hash is right; an index already seen with the same hash is a
-- duplicate (a resent batch that had landed); a higher index is a gap; anything else breaks
-- the chain.
--
-- A writer whose session fails (retries exhausted) resumes: it reads its stream's last
-- record from s2-lite and continues the chain after it (counted as a resume, not an error).
--
-- Prints one summary line ("soak: ...") and exits 1 on a gap, a broken chain or a misplaced
-- ack (any writer), or a duplicate from an idempotent producer.
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local s2 = require "s2"
local core = require "s2.core"
local P = require "support.fault_proxy"

local function env_num(name, dflt)
  local v = tonumber(os.getenv(name) or "")
  return v or dflt
end

local SECONDS = env_num("SOAK_SECONDS", 180)
local MAX_RECORDS = env_num("SOAK_RECORDS", 3000000)
local WRITERS = env_num("SOAK_WRITERS", 6)
local CUT_MIN = env_num("SOAK_CUT_MIN", 20000)
local CUT_MAX = env_num("SOAK_CUT_MAX", 200000)
local CUT_P = env_num("SOAK_CUT_P", 1)
local SEED = env_num("SOAK_SEED", 1)
local VERBOSE = os.getenv("SOAK_VERBOSE")
local ENDPOINT = os.getenv("S2_TEST_ENDPOINT")
if not ENDPOINT or ENDPOINT == "" then
  io.stderr:write("soak: S2_TEST_ENDPOINT is not set (run it through scripts/with-s2-lite.sh)\n")
  os.exit(2)
end
math.randomseed(SEED)

-- ---- FNV-1a 64 ------------------------------------------------------------------------------
local FNV_OFFSET = -3750763034362895579 -- 0xcbf29ce484222325 as a signed 64-bit integer
local FNV_PRIME = 0x100000001b3
local byte = string.byte

local function fnv1a(s)
  local h = FNV_OFFSET
  local n = #s
  local i = 1
  while i + 7 <= n do
    local a, b, c, d, e, f, g, k = byte(s, i, i + 7)
    h = (h ~ a) * FNV_PRIME; h = (h ~ b) * FNV_PRIME; h = (h ~ c) * FNV_PRIME
    h = (h ~ d) * FNV_PRIME; h = (h ~ e) * FNV_PRIME; h = (h ~ f) * FNV_PRIME
    h = (h ~ g) * FNV_PRIME; h = (h ~ k) * FNV_PRIME
    i = i + 8
  end
  while i <= n do
    h = (h ~ byte(s, i)) * FNV_PRIME
    i = i + 1
  end
  return h
end

-- Payloads: slices of one random block, 50..500 bytes, chosen by the index.
local BLOCK
do
  local t = {}
  for i = 1, 4096 do t[i] = string.char(math.random(33, 126)) end
  BLOCK = table.concat(t)
end
local function payload(i)
  local len = 50 + (i * 7919) % 451
  local off = 1 + (i * 104729) % (#BLOCK - len)
  return BLOCK:sub(off, off + len - 1)
end

local function hash_of(prev, i, p)
  return fnv1a(("%016x|%d|%s"):format(prev, i, p))
end

local function make_record(w, i, prev)
  local p = payload(i)
  local h = hash_of(prev, i, p)
  return ("%d %d %016x %016x %s"):format(w, i, prev, h, p), h
end

-- Parses a body: writer, index, prev, hash, payload (nil when it is not one of ours).
-- Hashes are 16 hex digits: tonumber(s, 16) would overflow to a float for the top half, while
-- "0x..." + 0 wraps to the same signed 64-bit integer as the arithmetic above.
local function hex64(s) return math.tointeger(("0x" .. s) + 0) end
local function parse(body)
  local w, i, prev, h, p = body:match("^(%d+) (%d+) (%x+) (%x+) (.*)$")
  if not w then return nil end
  return tonumber(w), tonumber(i), hex64(prev), hex64(h), p
end

-- ---- setup ------------------------------------------------------------------------------------
local direct = s2.client { access_token = "ignored", account_endpoint = ENDPOINT,
                           basin_endpoint = ENDPOINT, request_timeout = 30 }
local basin_name = ("soak-%x%04x"):format(os.time() % 0xffffff, math.random(0, 0xffff))
assert(direct:create_basin(basin_name, { create_stream_on_append = true, create_stream_on_read = true }))
local basin = direct:basin(basin_name)

local proxy = P.start { target = ENDPOINT:gsub("^http://", ""), seed = SEED }
proxy:command(("cut_random %g %d %d"):format(CUT_P, CUT_MIN, CUT_MAX))

local KINDS = { "idempotent", "producer", "session" }

local writers = {}
for w = 1, WRITERS do
  local kind = KINDS[(w - 1) % #KINDS + 1]
  local c = s2.client {
    access_token = "ignored", account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
    request_timeout = 10,
    retry = { max_attempts = 100, min_base_delay = 0.002, max_base_delay = 0.05,
              append_retry_policy = "all" },
  }
  local name = ("w%02d-%s"):format(w, kind)
  writers[w] = {
    id = w, kind = kind, client = c, name = name, stream = c:basin(basin_name):stream(name),
    next_index = 1, prev = 0,
    pending = {}, phead = 1, ptail = 0, -- FIFO of { ticket, first index, count }
    acked_seq = {},                       -- index -> seq_num from its ack
    max_acked = 0, submitted = 0, failures = 0, resumes = 0, reopens = 0,
    reconnects = 0, resent = 0,
  }
end

local function open(wr)
  local h, err
  if wr.kind == "session" then
    h, err = wr.stream:append_session { max_inflight_bytes = 1024 * 1024 }
  else
    h, err = wr.stream:producer { idempotent = wr.kind == "idempotent", linger = 0.002,
                                  max_batch_bytes = 64 * 1024, max_inflight_bytes = 256 * 1024 }
  end
  if not h then error(("soak: %s cannot open: %s"):format(wr.name, tostring(err))) end
  wr.handle = h
  wr.until_reopen = math.random(2000, 10000)
end

-- The writer's stream as s2-lite has it: continue the chain after its last record.
local function resume(wr)
  local st = basin:stream(wr.name)
  local tail = assert(st:check_tail()).seq_num
  wr.resumes = wr.resumes + 1
  if tail == 0 then
    wr.next_index, wr.prev = 1, 0
    return
  end
  local batch = assert(st:read { seq_num = tail - 1, count = 1 })
  local _, i, _, h = parse(batch.records[1].body)
  wr.next_index, wr.prev = i + 1, h
end

local function add_stats(wr)
  local ok, st = pcall(wr.handle.stats, wr.handle)
  if ok and st then
    wr.reconnects = wr.reconnects + (st.reconnects or 0)
    wr.resent = wr.resent + (st.batches_resent or 0)
  end
end

-- Takes resolved tickets off the front of the FIFO (all of them, waiting, when `all`).
-- Returns false once a ticket failed.
local function harvest(wr, all)
  local ok = true
  while wr.phead <= wr.ptail do
    local e = wr.pending[wr.phead]
    if not all and not e.t:ready() then break end
    local ack, err = e.t:ack(all and 120 or nil)
    if ack then
      local seq = ack.seq_num or ack.start.seq_num
      for k = 0, e.n - 1 do wr.acked_seq[e.i + k] = seq + k end
      if e.i + e.n - 1 > wr.max_acked then wr.max_acked = e.i + e.n - 1 end
    else
      wr.failures = wr.failures + 1
      wr.last_error = tostring(err)
      ok = false
    end
    wr.pending[wr.phead] = nil
    wr.phead = wr.phead + 1
  end
  return ok
end

-- Closes the writer's handle (waiting for every ack); after a failure, resumes the chain.
local function close(wr)
  local okc, cerr = wr.handle:close(120)
  add_stats(wr)
  local okh = harvest(wr, true)
  wr.handle = nil
  if not okc or not okh then
    if VERBOSE then print(("  %s failed (%s); resuming"):format(wr.name, tostring(cerr or wr.last_error))) end
    resume(wr)
    return false
  end
  return true
end

-- One turn: up to n records, then take what has been acked.
local function turn(wr, n)
  if not wr.handle then open(wr) end
  local failed = false
  if wr.kind == "session" then
    local left = n
    while left > 0 do
      local b = math.min(left, math.random(1, 50))
      local recs = {}
      local first = wr.next_index
      for k = 0, b - 1 do
        local body, h = make_record(wr.id, first + k, wr.prev)
        recs[k + 1] = body
        wr.prev = h
      end
      local t = wr.handle:submit(recs)
      if not t then failed = true; break end
      wr.ptail = wr.ptail + 1
      wr.pending[wr.ptail] = { t = t, i = first, n = b }
      wr.next_index = first + b
      wr.submitted = wr.submitted + b
      left = left - b
    end
  else
    for _ = 1, n do
      local i = wr.next_index
      local body, h = make_record(wr.id, i, wr.prev)
      local t = wr.handle:submit(body)
      if not t then failed = true; break end
      wr.prev = h
      wr.ptail = wr.ptail + 1
      wr.pending[wr.ptail] = { t = t, i = i, n = 1 }
      wr.next_index = i + 1
      wr.submitted = wr.submitted + 1
    end
  end
  if not harvest(wr, false) then failed = true end
  wr.until_reopen = wr.until_reopen - n
  if failed then
    close(wr)
  elseif wr.until_reopen <= 0 then
    wr.reopens = wr.reopens + 1
    close(wr)
  end
end

-- ---- write --------------------------------------------------------------------------------------
local t0 = core.now()
local total, last_report = 0, t0
while core.now() - t0 < SECONDS and total < MAX_RECORDS do
  for _, wr in ipairs(writers) do
    turn(wr, 200)
    total = total + 200
  end
  if VERBOSE and core.now() - last_report >= 10 then
    last_report = core.now()
    local st = proxy:stats()
    print(("  %5.0fs  submitted %d  conns %d  cuts %d  up %.1f MB  down %.1f MB"):format(
      last_report - t0, total, st.conns, st.cuts, st.bytes_up / 1e6, st.bytes_down / 1e6))
  end
end
for _, wr in ipairs(writers) do
  if wr.handle then close(wr) end
end
local write_seconds = core.now() - t0
local pstats = proxy:stats()
proxy:stop()

-- ---- verify -------------------------------------------------------------------------------------
local R = { written = 0, acked = 0, duplicates = 0, idem_duplicates = 0, gaps = 0, breaks = 0,
            misplaced = 0, foreign = 0, unacked_landed = 0, failures = 0, resumes = 0,
            reconnects = 0, resent = 0, reopens = 0, stored = 0, kinds = {} }
local problems = {}
local function problem(fmt, ...)
  if #problems < 20 then problems[#problems + 1] = fmt:format(...) end
end

for _, wr in ipairs(writers) do
  local st = basin:stream(wr.name)
  local tail = assert(st:check_tail()).seq_num
  local hashes, index_at = {}, {}
  local expected, last_h = 1, 0
  local at = 0
  while at < tail do
    local batch, err = st:read { seq_num = at, count = 1000 }
    if not batch then error("soak: read back failed: " .. tostring(err)) end
    if #batch.records == 0 then break end
    for _, r in ipairs(batch.records) do
      local w, i, prev, h, p = parse(r.body)
      if w ~= wr.id then
        R.foreign = R.foreign + 1
        problem("%s: foreign record at %d", wr.name, r.seq_num)
      else
        index_at[r.seq_num] = i
        local good_hash = hash_of(prev, i, p) == h
        if i == expected then
          if prev ~= last_h or not good_hash then
            R.breaks = R.breaks + 1
            problem("%s: chain broken at index %d (seq %d)", wr.name, i, r.seq_num)
          end
          hashes[i] = h
          last_h, expected = h, i + 1
        elseif i < expected then
          if hashes[i] == h then
            R.duplicates = R.duplicates + 1
            if wr.kind == "idempotent" then
              R.idem_duplicates = R.idem_duplicates + 1
              problem("%s: duplicate of index %d at seq %d", wr.name, i, r.seq_num)
            end
          else
            R.breaks = R.breaks + 1
            problem("%s: index %d again (seq %d) with another hash", wr.name, i, r.seq_num)
          end
        else
          R.gaps = R.gaps + (i - expected)
          problem("%s: gap: indices %d..%d missing before seq %d", wr.name, expected, i - 1, r.seq_num)
          if not good_hash then R.breaks = R.breaks + 1 end
          hashes[i] = h
          last_h, expected = h, i + 1
        end
      end
    end
    at = at + #batch.records
  end
  R.stored = R.stored + tail
  local highest = expected - 1
  if highest < wr.max_acked then
    R.gaps = R.gaps + (wr.max_acked - highest)
    problem("%s: acked up to index %d, stream ends at %d", wr.name, wr.max_acked, highest)
  end
  R.unacked_landed = R.unacked_landed + math.max(0, highest - wr.max_acked)
  for i, seq in pairs(wr.acked_seq) do
    R.acked = R.acked + 1
    if index_at[seq] ~= i then
      R.misplaced = R.misplaced + 1
      problem("%s: index %d acked at seq %d, which holds %s", wr.name, i, seq, tostring(index_at[seq]))
    end
  end
  local K = R.kinds[wr.kind] or { written = 0, duplicates = 0, reconnects = 0, resent = 0, failures = 0, writers = 0 }
  R.kinds[wr.kind] = K
  K.writers = K.writers + 1
  K.written = K.written + highest
  K.duplicates = K.duplicates + (tail - highest)
  K.reconnects = K.reconnects + wr.reconnects
  K.resent = K.resent + wr.resent
  K.failures = K.failures + wr.failures
  R.written = R.written + highest
  R.failures = R.failures + wr.failures
  R.resumes = R.resumes + wr.resumes
  R.reconnects = R.reconnects + wr.reconnects
  R.resent = R.resent + wr.resent
  R.reopens = R.reopens + wr.reopens
end

for _, kind in ipairs(KINDS) do
  local K = R.kinds[kind]
  if K then
    print(("  %-10s writers=%d records=%d duplicates=%d reconnects=%d batches_resent=%d ticket_failures=%d")
      :format(kind, K.writers, K.written, K.duplicates, K.reconnects, K.resent, K.failures))
  end
end
local bad = R.gaps > 0 or R.breaks > 0 or R.misplaced > 0 or R.idem_duplicates > 0 or R.foreign > 0
for _, p in ipairs(problems) do print("  problem: " .. p) end
print(("soak: %.0fs writers=%d records_written=%d acked=%d stored=%d faults=%d (proxy cuts; conns=%d, %.0f MB up, %.0f MB down) reconnects=%d batches_resent=%d reopens=%d ticket_failures=%d resumes=%d duplicates=%d (idempotent: %d) gaps=%d chain_breaks=%d misplaced_acks=%d unacked_landed=%d result=%s")
  :format(write_seconds, WRITERS, R.written, R.acked, R.stored, pstats.cuts, pstats.conns,
    pstats.bytes_up / 1e6, pstats.bytes_down / 1e6, R.reconnects, R.resent, R.reopens, R.failures,
    R.resumes, R.duplicates, R.idem_duplicates, R.gaps, R.breaks, R.misplaced, R.unacked_landed,
    bad and "FAIL" or "OK"))
direct:delete_basin(basin_name)
os.exit(bad and 1 or 0)
