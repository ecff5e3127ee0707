-- Mixed-workload soak (make soak): producers, append sessions and read sessions (fast and slow
-- consumers) on ONE client, over TLS, through the fault proxy with WAN shaping (rate, latency,
-- a small receive buffer), random cuts and stalls; verified with hash chains.
--
--   soak/run.sh                  (builds, then runs this; the settings below from the environment)
--
-- It starts its own TLS s2-lite (spec/support/s2lite.lua, a test CA made with openssl) and a
-- fault proxy in front of it (spec/support/fault_proxy.lua). The workload client talks to the
-- proxy (https://127.0.0.1:<proxy port>, ca_file = the test CA); a second client, straight to
-- s2-lite, only sets up and verifies.
--
-- Workload (one stream per writer; every reader on one of those streams):
--   idem       idempotent producer, records of 100..1000 bytes
--   prod       plain producer, records of 50..600 bytes
--   sess       append session, batches of 1..20 records of 100..700 bytes
--   bulk       append session, batches of 40..200 records of 1..4 KiB (up to ~800 KB a batch)
--   a fast reader on every stream (drains whatever is there, every turn), and slow readers on
--   bulk and prod that read as fast as they can for SOAK_BURST seconds every SOAK_SLOW_PAUSE
--   seconds and nothing in between, so a large backlog waits on the shared connection.
-- All of it runs from one Lua thread: submits never block (the core's nowait submit: a full
-- session is skipped this turn), tickets are polled with ready(), readers with next(0); every
-- call that may wait has a timeout and is measured (see "bounded waits" below).
--
-- Faults: `cut_random SOAK_CUT_P SOAK_CUT_MIN SOAK_CUT_MAX` for every new connection (bytes of
-- both directions together), a `stall` of SOAK_STALL_MIN..SOAK_STALL_MAX ms about every
-- SOAK_STALL_EVERY s, a `cut_all` about every SOAK_CUTALL_EVERY s; shaping commands from
-- SOAK_SHAPE (";"-separated proxy commands, applied at the start; "none" = no shaping).
--
-- Records: "<writer> <epoch> <index> <prev hash> <hash> <payload>". hash = FNV-1a 64 of
-- "<prev hash>|<writer>|<epoch>|<index>|<payload length>", prev hash = the hash of the
-- writer's previous record in that epoch (0 for index 1); the payload is a slice of a random
-- block chosen by (writer, epoch, index), so its bytes are checked too. A writer whose
-- handle fails (a ticket or a submit returns an error) closes it, waits (bounded) for its
-- other tickets, and starts a new epoch (index 1 again) on a new handle.
--
-- Checks (each failure is a VIOLATION, and the exit status is 1):
--   lost_ack          an acked record is not in its stream at all
--   misplaced_ack     an acked record's seq_num holds another record
--   gap               an epoch's records in the stream skip an index (a later record landed,
--                     an earlier one did not)
--   chain_break       a record whose prev hash, hash, payload or writer is wrong
--   duplicate         a record stored twice, for the idempotent producer, or for any writer
--                     under SOAK_POLICY=no_side_effects (under `all` they are counted, allowed)
--   unresolved_ticket a ticket still pending after the drain (bounded waits for it)
--   ticket_failed     under `all`, any failed ticket (SOAK_ALLOW_FAILED=1 to allow them)
--   wait_over_bound   a call with a timeout (ack, next, close) that took more than its bound
--                     + SOAK_WAIT_SLACK s + 50 %
--   reader_*          a read session that skipped (gap) or repeated (dup) a seq_num, handed
--                     out a record that differs from the stream's, ended by itself, or did not
--                     reach the stream's final tail within SOAK_DRAIN s
--   definite_landed   a ticket failed with a definite error (4xx but 408/429) and landed
--   client_stalled    for more than SOAK_STALL_BOUND s (default: the longest proxy stall +
--                     request_timeout + 2 s) no ticket resolved and no fast reader got a record
--                     while tickets were pending: the client as a whole stopped (e.g. one
--                     undrained read session holding the shared connection's window)
--
-- Settings (environment, defaults in brackets):
--   SOAK_SECONDS [120]  SOAK_RATE [1500000] bytes/s of all writers together  SOAK_SEED [1]
--   SOAK_POLICY [all]   SOAK_MAX_ATTEMPTS [10]  SOAK_REQUEST_TIMEOUT [8]
--   SOAK_TLS [1]        (0: h2c to a plain s2-lite, for comparison)
--   SOAK_SHAPE ["rate_up 2500000;rate_down 4000000;latency_up 25;latency_down 25;rcvbuf 65536;mss 1460"]
--   SOAK_CUT_P [0.5] SOAK_CUT_MIN [4000000] SOAK_CUT_MAX [40000000]
--   SOAK_STALL_EVERY [20] SOAK_STALL_MIN [500] SOAK_STALL_MAX [5000] SOAK_CUTALL_EVERY [35]
--   SOAK_SLOW [2] slow readers (0, 1: bulk only, 2)  SOAK_SLOW_PAUSE [40] SOAK_BURST [3] (s)  SOAK_DRAIN [90]  SOAK_WAIT_SLACK [2]
--   SOAK_STALL_BOUND [see client_stalled]
--   SOAK_ALLOW_FAILED [0]  SOAK_VERBOSE (a progress line every 10 s instead of 30 s)
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;soak/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local s2 = require "s2"
local core = require "s2.core"
local P = require "support.fault_proxy"
local S = require "support.s2lite"
local L = require "lib"

local now = core.now
local env_num, env_str = L.env_num, L.env_str

local SECONDS = env_num("SOAK_SECONDS", 120)
local RATE = env_num("SOAK_RATE", 1500000)
local SEED = env_num("SOAK_SEED", 1)
local POLICY = env_str("SOAK_POLICY", "all")
local MAX_ATTEMPTS = env_num("SOAK_MAX_ATTEMPTS", 10)
local REQUEST_TIMEOUT = env_num("SOAK_REQUEST_TIMEOUT", 8)
local TLS = env_num("SOAK_TLS", 1) ~= 0
local SHAPE = env_str("SOAK_SHAPE",
  "rate_up 2500000;rate_down 4000000;latency_up 25;latency_down 25;rcvbuf 65536;mss 1460")
local CUT_P = env_num("SOAK_CUT_P", 0.5)
local CUT_MIN = env_num("SOAK_CUT_MIN", 4000000)
local CUT_MAX = env_num("SOAK_CUT_MAX", 40000000)
local STALL_EVERY = env_num("SOAK_STALL_EVERY", 20)
local STALL_MIN = env_num("SOAK_STALL_MIN", 500)
local STALL_MAX = env_num("SOAK_STALL_MAX", 5000)
local CUTALL_EVERY = env_num("SOAK_CUTALL_EVERY", 35)
local SLOW_PAUSE = env_num("SOAK_SLOW_PAUSE", 40)
local BURST = env_num("SOAK_BURST", 3)
local SLOW = env_num("SOAK_SLOW", 2)
local DRAIN = env_num("SOAK_DRAIN", 90)
local WAIT_SLACK = env_num("SOAK_WAIT_SLACK", 2)
local ALLOW_FAILED = env_num("SOAK_ALLOW_FAILED", 0) ~= 0
local STALL_BOUND = env_num("SOAK_STALL_BOUND", STALL_MAX / 1000 + REQUEST_TIMEOUT + 2)
local PROGRESS_EVERY = os.getenv("SOAK_VERBOSE") and 10 or 30
assert(POLICY == "all" or POLICY == "no_side_effects", "SOAK_POLICY: all or no_side_effects")
math.randomseed(SEED)

local problems = L.problems(5)
local t0_run
local waits = L.waits(now, problems, WAIT_SLACK)

-- ---- records ----------------------------------------------------------------------------------
local BLOCK
do
  local t = {}
  for i = 1, 8192 do t[i] = string.char(math.random(33, 126)) end
  BLOCK = table.concat(t)
end

-- Writer kinds: record sizes, batch sizes, share of SOAK_RATE.
local KINDS = {
  { name = "idem", producer = true, idempotent = true, min = 100, max = 1000, share = 0.15 },
  { name = "prod", producer = true, min = 50, max = 600, share = 0.15 },
  { name = "sess", min = 100, max = 700, bmin = 1, bmax = 20, share = 0.2 },
  { name = "bulk", min = 1024, max = 4096, bmin = 40, bmax = 200, share = 0.5 },
}

local function payload_len(kind, w, e, i)
  return kind.min + ((i * 7919 + e * 104729 + w * 13) % (kind.max - kind.min + 1))
end
local function payload(kind, w, e, i)
  local len = payload_len(kind, w, e, i)
  local off = 1 + (i * 104729 + e * 7 + w * 31) % (#BLOCK - len)
  return BLOCK:sub(off, off + len - 1)
end
local function hash_of(prev, w, e, i, len)
  return L.fnv1a(("%016x|%d|%d|%d|%d"):format(prev, w, e, i, len))
end
local function make_record(kind, w, e, i, prev)
  local p = payload(kind, w, e, i)
  local h = hash_of(prev, w, e, i, #p)
  return ("%d %d %d %016x %016x %s"):format(w, e, i, prev, h, p), h
end

-- Parses and checks one body against the writer table `writers`: returns w, e, i, prev, h,
-- and an error string when the record is not a well-formed record of ours.
local writers = {}
local function parse(body)
  local w, e, i, prev, h, pos = body:match("^(%d+) (%d+) (%d+) (%x+) (%x+) ()")
  if not w then return nil, nil, nil, nil, nil, "not a soak record" end
  w, e, i = tonumber(w), tonumber(e), tonumber(i)
  prev, h = L.hex64(prev), L.hex64(h)
  local wr = writers[w]
  if not wr then return w, e, i, prev, h, "unknown writer" end
  local len = #body - pos + 1
  if hash_of(prev, w, e, i, len) ~= h then return w, e, i, prev, h, "bad hash" end
  local want = payload(wr.kind, w, e, i)
  if #want ~= len or body:sub(pos) ~= want then return w, e, i, prev, h, "bad payload" end
  return w, e, i, prev, h, nil
end

local function key(e, i) return e * 4294967296 + i end

-- ---- servers, proxy, clients --------------------------------------------------------------------
local certs, server, proxy
local function cleanup()
  if proxy then proxy:stop(); proxy = nil end
  if server then server:stop(); server = nil end
  if certs then os.execute("rm -rf '" .. certs.dir .. "'"); certs = nil end
end

local function main()
  if TLS then
    certs = S.make_certs()
    server = S.start { tls_cert = certs.cert, tls_key = certs.key }
  else
    server = S.start {}
  end
  proxy = P.start { target = "127.0.0.1:" .. server.port, seed = SEED }
  local scheme = TLS and "https" or "http"
  local proxy_ep = ("%s://127.0.0.1:%d"):format(scheme, proxy.port)
  local direct_ep = ("%s://127.0.0.1:%d"):format(scheme, server.port)
  local ca = certs and certs.ca or nil

  local shaped = {}
  if SHAPE ~= "none" then
    for cmd in SHAPE:gmatch("[^;]+") do
      cmd = cmd:gsub("^%s+", ""):gsub("%s+$", "")
      local ok, err = pcall(proxy.command, proxy, cmd)
      if not ok then
        error(("soak: the fault proxy does not take %q (%s); set SOAK_SHAPE=none to run unshaped")
          :format(cmd, tostring(err)))
      end
      shaped[#shaped + 1] = cmd
    end
  end
  proxy:command(("cut_random %g %d %d"):format(CUT_P, CUT_MIN, CUT_MAX))

  local direct = s2.client { access_token = "ignored", account_endpoint = direct_ep,
                             basin_endpoint = direct_ep, ca_file = ca, request_timeout = 30 }
  local client = s2.client {
    access_token = "ignored", account_endpoint = proxy_ep, basin_endpoint = proxy_ep,
    ca_file = ca, request_timeout = REQUEST_TIMEOUT, connection_timeout = 5,
    retry = { max_attempts = MAX_ATTEMPTS, min_base_delay = 0.05, max_base_delay = 1,
              append_retry_policy = POLICY },
  }
  local basin_name = ("mixed-%x%04x"):format(os.time() % 0xffffff, math.random(0, 0xffff))
  assert(direct:create_basin(basin_name, { create_stream_on_append = true,
                                           create_stream_on_read = true }))
  local dbasin = direct:basin(basin_name)
  local wbasin = client:basin(basin_name)

  -- Unary bound: every attempt within connection_timeout + request_timeout, plus backoffs.
  local UNARY_BOUND = MAX_ATTEMPTS * (5 + REQUEST_TIMEOUT + 1)

  -- ---- writers ----------------------------------------------------------------------------------
  for w, kind in ipairs(KINDS) do
    assert(dbasin:create_stream(kind.name))
    writers[w] = {
      id = w, kind = kind, name = kind.name, stream = wbasin:stream(kind.name),
      rate = RATE * kind.share, allow = 0, last = now(),
      epoch = 1, index = 1, prev = 0, held = nil,
      q = {}, qh = 1, qt = 0,                 -- FIFO of { t, e, i, n, ts }
      ack_seq = {}, ack_key = {}, ack_n = {}, -- acked runs: seq, key(e, i), count
      fail_key = {}, fail_n = {}, fail_code = {}, -- failed runs
      submitted = 0, acked = 0, failed = 0, bytes = 0, epochs = 1, opens = 0,
      open_failures = 0, reconnects = 0, resent = 0, max_latency = 0, reopen_at = 0,
    }
  end

  local failures_by_code = {}
  local failure_example = {} -- code -> the first message seen
  local function failure(what, err, n)
    local c = what .. L.code(err)
    L.count_into(failures_by_code, c, n)
    if not failure_example[c] then failure_example[c] = tostring(err) end
  end

  -- Progress of the client as a whole: a resolved ticket or a record for a fast reader. A gap
  -- longer than STALL_BOUND while tickets were pending is a stall of the whole client.
  local last_progress_t = now()
  local longest_stall = 0
  local function pending_work()
    for _, wr in ipairs(writers) do
      if wr.qh <= wr.qt then return true end
    end
    return false
  end
  local function progressed(t, resolved)
    local d = t - last_progress_t
    if d > longest_stall then longest_stall = d end
    if d > STALL_BOUND and (resolved or pending_work()) then
      problems.add("client_stalled", "nothing resolved or read for %.1f s (bound %.1f s), from %.0f s into the run",
        d, STALL_BOUND, last_progress_t - (t0_run or t))
    end
    last_progress_t = t
  end

  local function add_stats(wr)
    if not wr.handle then return end
    local ok, st = pcall(wr.handle.stats, wr.handle)
    if ok and st then
      wr.reconnects = wr.reconnects + (st.reconnects or 0)
      wr.resent = wr.resent + (st.batches_resent or 0)
    end
  end

  local function open(wr)
    local h, err
    if wr.kind.producer then
      h, err = waits.call("producer open", UNARY_BOUND, wr.stream.producer, wr.stream, {
        idempotent = wr.kind.idempotent or false, linger = 0.005,
        max_batch_bytes = 256 * 1024, max_inflight_bytes = 2 * 1024 * 1024 })
    else
      h, err = wr.stream:append_session { max_inflight_bytes = 4 * 1024 * 1024 }
    end
    if not h then
      wr.open_failures = wr.open_failures + 1
      failure("open:", err)
      wr.reopen_at = now() + 1
      return false
    end
    wr.handle = h
    wr.opens = wr.opens + 1
    return true
  end

  local function record_ack(wr, e, i, n, seq)
    local k = key(e, i)
    local m = #wr.ack_seq
    if m > 0 and wr.ack_seq[m] + wr.ack_n[m] == seq and wr.ack_key[m] + wr.ack_n[m] == k then
      wr.ack_n[m] = wr.ack_n[m] + n
    else
      wr.ack_seq[m + 1], wr.ack_key[m + 1], wr.ack_n[m + 1] = seq, k, n
    end
    wr.acked = wr.acked + n
  end

  local function record_fail(wr, e, i, n, err)
    local c = #wr.fail_key + 1
    wr.fail_key[c], wr.fail_n[c], wr.fail_code[c] = key(e, i), n, err
    wr.failed = wr.failed + n
    failure("", err, n)
  end

  -- Takes resolved tickets off the FIFO. wait_bound: nil = only those already resolved;
  -- else each is waited for with ack(wait_bound) (measured), and one still pending after
  -- that is an unresolved ticket.
  local function harvest(wr, wait_bound)
    while wr.qh <= wr.qt do
      local it = wr.q[wr.qh]
      local t = it.t
      local seq, err
      if wait_bound then
        if wr.kind.producer then
          seq, err = waits.call("ticket seq_num", wait_bound, t.seq_num, t, wait_bound)
        else
          local ack
          ack, err = waits.call("ticket ack", wait_bound, t.ack, t, wait_bound)
          seq = ack and ack.start.seq_num
        end
        if not seq and err and err.code == "timeout" and not t:ready() then
          problems.add("unresolved_ticket", "%s: epoch %d index %d (%d records) still pending",
            wr.name, it.e, it.i, it.n)
          seq, err = nil, "unresolved"
        end
      else
        if not t:ready() then break end
        if wr.kind.producer then
          seq, err = t:result_seq_num()
        else
          local ack
          ack, err = t:result()
          seq = ack and ack.start.seq_num
        end
      end
      local tn = now()
      local lat = tn - it.ts
      if lat > wr.max_latency then wr.max_latency = lat end
      progressed(tn, true)
      if seq then
        record_ack(wr, it.e, it.i, it.n, seq)
      elseif err == "unresolved" then
        wr.unresolved = (wr.unresolved or 0) + it.n
      else
        record_fail(wr, it.e, it.i, it.n, err)
        wr.broken = wr.broken or err
      end
      wr.q[wr.qh] = nil
      wr.qh = wr.qh + 1
    end
  end

  -- Ends the writer's handle after a failure: close (bounded), take every ticket (bounded),
  -- then the next epoch starts on a new handle.
  local function recover(wr)
    if wr.handle then
      local bound = REQUEST_TIMEOUT * 2
      waits.call("close after failure", bound, wr.handle.close, wr.handle, bound)
      add_stats(wr)
    end
    harvest(wr, 5)
    wr.handle = nil
    wr.broken = nil
    wr.held = nil
    wr.epoch = wr.epoch + 1
    wr.epochs = wr.epochs + 1
    wr.index, wr.prev = 1, 0
    wr.reopen_at = now() + 0.5
  end

  -- Builds (or reuses the held) next submission: a batch for a session, a record for a
  -- producer. Returns the item and its byte count.
  local function next_item(wr)
    if wr.held then return wr.held end
    local kind = wr.kind
    local item = { e = wr.epoch, i = wr.index }
    if kind.producer then
      local body, h = make_record(kind, wr.id, wr.epoch, wr.index, wr.prev)
      item.rec, item.n, item.bytes, item.last_h = body, 1, #body, h
    else
      local n = math.random(kind.bmin, kind.bmax)
      local recs, bytes, prev = {}, 0, wr.prev
      for k = 0, n - 1 do
        local body, h = make_record(kind, wr.id, wr.epoch, wr.index + k, prev)
        recs[k + 1] = body
        bytes = bytes + #body
        prev = h
      end
      item.rec, item.n, item.bytes, item.last_h = recs, n, bytes, prev
    end
    wr.held = item
    return item
  end

  local function writer_turn(wr, t)
    if not wr.handle then
      if t < wr.reopen_at then return end
      if not open(wr) then return end
      wr.last = t
    end
    wr.allow = math.min(wr.allow + wr.rate * (t - wr.last), wr.rate * 0.2 + 300000)
    wr.last = t
    local core_h = wr.handle._core
    while wr.allow > 0 and not wr.broken do
      local item = next_item(wr)
      local ticket, err
      if wr.kind.producer then
        ticket, err = core_h:submit(item.rec, true)
      else
        ticket, err = core_h:submit(item.rec, nil, true)
      end
      if ticket == false then break end -- full: try again next turn
      if not ticket then
        failure("submit:", err)
        wr.broken = err
        break
      end
      wr.held = nil
      wr.qt = wr.qt + 1
      wr.q[wr.qt] = { t = ticket, e = item.e, i = item.i, n = item.n, ts = t }
      wr.index = item.i + item.n
      wr.prev = item.last_h
      wr.submitted = wr.submitted + item.n
      wr.bytes = wr.bytes + item.bytes
      wr.allow = wr.allow - item.bytes
    end
    harvest(wr, nil)
    if wr.broken then recover(wr) end
  end

  -- ---- readers ----------------------------------------------------------------------------------
  local readers = {}
  local function add_reader(wr, slow)
    readers[#readers + 1] = {
      wr = wr, slow = slow, name = wr.name .. (slow and "/slow" or "/fast"),
      stream = wbasin:stream(wr.name), next_seq = 0, fp = {}, delivered = 0,
      failures = {}, opens = 0, reconnects = 0, next_burst = now() + SLOW_PAUSE,
      reopen_at = 0, bad = 0,
    }
  end
  for _, wr in ipairs(writers) do add_reader(wr, false) end
  if SLOW >= 1 then add_reader(writers[4], true) end
  if SLOW >= 2 then add_reader(writers[2], true) end

  local function reader_close(r)
    if r.handle then
      local ok, st = pcall(r.handle.status, r.handle)
      if ok and st then r.reconnects = r.reconnects + (st.reconnects or 0) end
      r.handle:close()
      r.handle = nil
    end
  end

  local function reader_open(r)
    local h, err = r.stream:read_session { seq_num = r.next_seq }
    if not h then
      L.count_into(r.failures, "open:" .. L.code(err))
      r.reopen_at = now() + 1
      return false
    end
    r.handle = h
    r.opens = r.opens + 1
    return true
  end

  local function take(r, rec)
    local seq = rec.seq_num
    if seq ~= r.next_seq then
      if seq > r.next_seq then
        problems.add("reader_gap", "%s: expected seq %d, got %d", r.name, r.next_seq, seq)
      else
        problems.add("reader_dup", "%s: expected seq %d, got %d again", r.name, r.next_seq, seq)
        return
      end
    end
    local _, _, _, _, h, perr = parse(rec.body)
    if perr then
      r.bad = r.bad + 1
      h = 0
    end
    r.fp[seq + 1] = h
    r.next_seq = seq + 1
    r.delivered = r.delivered + 1
    if not r.slow then progressed(now()) end
  end

  -- Takes up to `max` records; `timeout` for the first next() (0: never waits). Returns the
  -- number taken.
  local function reader_poll(r, max, timeout)
    if not r.handle then
      if now() < r.reopen_at or not reader_open(r) then return 0 end
    end
    local got = 0
    local to = timeout
    while got < max do
      local rec, err
      if to > 0 then
        rec, err = waits.call("reader next", to, r.handle.next, r.handle, to)
      else
        rec, err = r.handle:next(0)
      end
      to = 0
      if rec then
        take(r, rec)
        got = got + 1
      elseif err and err.code == "timeout" then
        break
      else
        if err then
          L.count_into(r.failures, L.code(err))
          failure("read:", err)
        else
          problems.add("reader_ended", "%s: ended by itself at seq %d", r.name, r.next_seq)
        end
        reader_close(r)
        r.reopen_at = now() + 0.5
        break
      end
    end
    return got
  end

  local function reader_turn(r, t)
    if not r.slow then return reader_poll(r, 2000, 0) end
    if t < r.next_burst then
      if not r.handle then reader_poll(r, 0, 0) end -- open it so it has a backlog
      return 0
    end
    local got, t_end = 0, t + BURST
    while now() < t_end do
      local n = reader_poll(r, 500, 0)
      if n == 0 then break end
      got = got + n
    end
    r.next_burst = now() + SLOW_PAUSE
    return got
  end

  -- ---- faults -----------------------------------------------------------------------------------
  local faults = { stalls = 0, stall_ms = 0, cut_alls = 0, cut_all_conns = 0 }
  local t0 = now()
  t0_run = t0
  local function jitter(mean) return mean * (0.5 + math.random()) end
  local next_stall = t0 + jitter(STALL_EVERY)
  local next_cutall = t0 + jitter(CUTALL_EVERY)
  local function faults_turn(t)
    if STALL_EVERY > 0 and t >= next_stall then
      local ms = math.random(STALL_MIN, STALL_MAX)
      proxy:command("stall " .. ms)
      faults.stalls, faults.stall_ms = faults.stalls + 1, faults.stall_ms + ms
      next_stall = t + ms / 1000 + jitter(STALL_EVERY)
    end
    if CUTALL_EVERY > 0 and t >= next_cutall then
      local line = proxy:command("cut_all")
      faults.cut_alls = faults.cut_alls + 1
      faults.cut_all_conns = faults.cut_all_conns + (tonumber(line:match("(%d+)%s*$")) or 0)
      next_cutall = t + jitter(CUTALL_EVERY)
    end
  end

  -- ---- run --------------------------------------------------------------------------------------
  print(("soak: %d s, %.1f MB/s offered, policy %s, %s through the proxy (%s), cuts %g %d..%d, stalls %d..%d ms every ~%g s, cut_all every ~%g s")
    :format(SECONDS, RATE / 1e6, POLICY, TLS and "TLS" or "h2c",
      #shaped > 0 and table.concat(shaped, ", ") or "unshaped", CUT_P, CUT_MIN, CUT_MAX,
      STALL_MIN, STALL_MAX, STALL_EVERY, CUTALL_EVERY))
  local last_progress = t0
  local function progress(t, phase)
    local st = proxy:stats()
    local sub, ack, fail, mb = 0, 0, 0, 0
    for _, wr in ipairs(writers) do
      sub, ack, fail, mb = sub + wr.submitted, ack + wr.acked, fail + wr.failed, mb + wr.bytes / 1e6
    end
    local rd = {}
    for _, r in ipairs(readers) do rd[#rd + 1] = ("%s=%d"):format(r.name, r.next_seq) end
    print(("  %5.0fs %s submitted=%d acked=%d failed=%d %.1f MB  conns=%d cuts=%d up=%.1f MB down=%.1f MB  readers %s")
      :format(t - t0, phase, sub, ack, fail, mb, st.conns or 0, st.cuts or 0,
        (st.bytes_up or 0) / 1e6, (st.bytes_down or 0) / 1e6, table.concat(rd, " ")))
  end

  local iterations = 0
  while now() - t0 < SECONDS do
    iterations = iterations + 1
    local t = now()
    faults_turn(t)
    for _, wr in ipairs(writers) do writer_turn(wr, t) end
    local got = 0
    for _, r in ipairs(readers) do got = got + reader_turn(r, t) end
    if got == 0 then
      -- Pace the loop on a reader (a bounded wait that does useful work).
      local r = readers[1]
      if r.handle then reader_poll(r, 1, 0.01) else os.execute("sleep 0.01") end
    end
    if now() - last_progress >= PROGRESS_EVERY then
      last_progress = now()
      progress(last_progress, "write")
    end
  end
  local write_seconds = now() - t0
  if pending_work() then progressed(now()) end

  -- ---- drain ------------------------------------------------------------------------------------
  proxy:command("stall 0")
  proxy:command("cut_random 0 0 0")
  local deadline = now() + DRAIN
  local function left() return math.max(1, deadline - now()) end
  for _, wr in ipairs(writers) do
    if wr.handle then
      local bound = math.min(left(), 60)
      local ok, err = waits.call("writer close", bound, wr.handle.close, wr.handle, bound)
      if not ok then failure("close:", err) end
      add_stats(wr)
    end
    harvest(wr, 5)
  end
  local tails = {}
  for w, wr in ipairs(writers) do
    tails[w] = assert(dbasin:stream(wr.name):check_tail()).seq_num
  end
  -- Round robin, so that the order of the readers does not matter: each gets up to 2000
  -- records a turn; a turn that got nothing anywhere waits (bounded) on one still behind.
  while now() < deadline do
    local behind, got = nil, 0
    for _, r in ipairs(readers) do
      if r.next_seq < tails[r.wr.id] then
        behind = behind or r
        got = got + reader_poll(r, 2000, 0)
      end
    end
    if not behind then break end
    if got == 0 then
      if behind.handle then reader_poll(behind, 1, math.min(1, left()))
      else os.execute("sleep 0.2") end
    end
  end
  for _, r in ipairs(readers) do
    local goal = tails[r.wr.id]
    if r.next_seq < goal then
      problems.add("reader_behind", "%s: at seq %d, the stream's tail is %d after the drain",
        r.name, r.next_seq, goal)
    end
    reader_close(r)
  end
  progress(now(), "drained")
  local pstats = proxy:stats()
  local cstats = client:stats()

  -- ---- verify -----------------------------------------------------------------------------------
  local R = { records = 0, bytes = 0, duplicates = 0, unacked_landed = 0, failed_landed = 0,
              late = 0, acked = 0, stored = 0 }
  local per = {}
  for w, wr in ipairs(writers) do
    local st = dbasin:stream(wr.name)
    local tail = tails[w]
    local fin_key, fin_hash = {}, {}
    local epochs = {} -- e -> { expected =, hashes = {i -> h}, max = }
    local max_epoch_seen = 0
    local dup = 0
    local at = 0
    while at < tail do
      local batch, err = st:read { seq_num = at, count = 1000 }
      if not batch then error("soak: read back failed: " .. tostring(err)) end
      if #batch.records == 0 then break end
      for _, rec in ipairs(batch.records) do
        local s = rec.seq_num
        local rw, e, i, prev, h, perr = parse(rec.body)
        R.bytes = R.bytes + #rec.body
        fin_hash[s + 1] = h or 0
        if perr or rw ~= w then
          problems.add("chain_break", "%s seq %d: %s", wr.name, s, perr or ("writer " .. tostring(rw)))
          fin_key[s + 1] = -1
        else
          fin_key[s + 1] = key(e, i)
          if e < max_epoch_seen then R.late = R.late + 1 end
          if e > max_epoch_seen then max_epoch_seen = e end
          local E = epochs[e]
          if not E then E = { expected = 1, hashes = {} }; epochs[e] = E end
          if i == E.expected then
            if prev ~= (i == 1 and 0 or E.hashes[i - 1]) then
              problems.add("chain_break", "%s seq %d: epoch %d index %d has the wrong prev hash",
                wr.name, s, e, i)
            end
            E.hashes[i] = h
            E.expected = i + 1
          elseif i < E.expected then
            if E.hashes[i] ~= h then
              problems.add("chain_break", "%s seq %d: epoch %d index %d again with another hash",
                wr.name, s, e, i)
            else
              dup = dup + 1
              if wr.kind.idempotent or POLICY == "no_side_effects" then
                problems.add("duplicate", "%s seq %d: epoch %d index %d stored again", wr.name, s, e, i)
              end
            end
          else
            problems.add("gap", "%s seq %d: epoch %d jumps from index %d to %d",
              wr.name, s, e, E.expected - 1, i)
            E.hashes[i] = h
            E.expected = i + 1
          end
        end
      end
      at = at + #batch.records
    end
    R.stored = R.stored + tail
    -- Acks: every acked record at its seq_num; a missing one is lost.
    local acked_keys = {}
    for m = 1, #wr.ack_seq do
      local seq, k, n = wr.ack_seq[m], wr.ack_key[m], wr.ack_n[m]
      for d = 0, n - 1 do
        acked_keys[k + d] = true
        if fin_key[seq + d + 1] ~= k + d then
          local e, i = (k + d) // 4294967296, (k + d) % 4294967296
          local E = epochs[e]
          if E and E.hashes[i] then
            problems.add("misplaced_ack", "%s: epoch %d index %d acked at seq %d, which holds %s",
              wr.name, e, i, seq + d, tostring(fin_key[seq + d + 1]))
          else
            problems.add("lost_ack", "%s: epoch %d index %d acked at seq %d is not in the stream",
              wr.name, e, i, seq + d)
          end
        end
      end
    end
    R.acked = R.acked + wr.acked
    -- Failed tickets whose records landed anyway; definite errors must not have landed.
    for c = 1, #wr.fail_key do
      local k, n, err = wr.fail_key[c], wr.fail_n[c], wr.fail_code[c]
      local e, i = k // 4294967296, k % 4294967296
      local E = epochs[e]
      local landed = 0
      for d = 0, n - 1 do
        if E and E.hashes[i + d] then landed = landed + 1 end
      end
      R.failed_landed = R.failed_landed + landed
      local status = type(err) == "table" and err.status
      if landed > 0 and status and status >= 400 and status < 500 and status ~= 408
          and status ~= 429 and (POLICY == "no_side_effects" or not tostring(err.message):find("after %d+ attempts")) then
        problems.add("definite_landed", "%s: epoch %d index %d failed with %s and landed",
          wr.name, e, i, tostring(err))
      end
    end
    local landed_total = 0
    for e, E in pairs(epochs) do
      landed_total = landed_total + (E.expected - 1)
      for i = 1, E.expected - 1 do
        if not acked_keys[key(e, i)] then R.unacked_landed = R.unacked_landed + 1 end
      end
    end
    R.records = R.records + landed_total
    R.duplicates = R.duplicates + dup
    per[w] = { records = landed_total, dup = dup }
    -- Readers of this stream: what they handed out is what the stream holds.
    for _, r in ipairs(readers) do
      if r.wr == wr then
        local mism = 0
        for s = 1, math.min(r.next_seq, tail) do
          if r.fp[s] ~= fin_hash[s] then
            mism = mism + 1
            if mism <= 3 then
              problems.add("reader_mismatch", "%s: seq %d differs from the stream", r.name, s - 1)
            end
          end
        end
        if mism > 3 then
          problems.counts.reader_mismatch = problems.counts.reader_mismatch + mism - 3
        end
        r.fp = nil
      end
    end
    if not ALLOW_FAILED and POLICY == "all" and wr.failed > 0 then
      problems.add("ticket_failed", "%s: %d records' tickets failed under `all` with %d attempts",
        wr.name, wr.failed, MAX_ATTEMPTS)
    end
  end

  -- ---- report -----------------------------------------------------------------------------------
  for w, wr in ipairs(writers) do
    print(("  writer %-5s records=%d stored_dups=%d submitted=%d acked=%d failed=%d epochs=%d opens=%d open_failures=%d reconnects=%d batches_resent=%d max_ticket_latency=%.1fs %.1f MB")
      :format(wr.name, per[w].records, per[w].dup, wr.submitted, wr.acked, wr.failed, wr.epochs,
        wr.opens, wr.open_failures, wr.reconnects, wr.resent, wr.max_latency, wr.bytes / 1e6))
  end
  for _, r in ipairs(readers) do
    print(("  reader %-10s delivered=%d opens=%d reconnects=%d failures: %s")
      :format(r.name, r.delivered, r.opens, r.reconnects, L.format_counts(r.failures)))
  end
  local wb = {}
  for what, b in pairs(waits.by) do wb[#wb + 1] = ("%s %d (max %.1fs)"):format(what, b.calls, b.max) end
  table.sort(wb)
  print("  bounded waits: " .. table.concat(wb, ", "))
  print(("  failures by code: %s"):format(L.format_counts(failures_by_code)))
  local fk = {}
  for c in pairs(failure_example) do fk[#fk + 1] = c end
  table.sort(fk)
  for _, c in ipairs(fk) do print(("    first %s: %s"):format(c, failure_example[c])) end
  local bad = problems.total() > 0
  problems.report("  ")
  print(("soak: %.0fs policy=%s %s records=%d (%.1f MB) longest_stall=%.1fs acked=%d stored=%d duplicates=%d unacked_landed=%d failed_landed=%d late_epoch_records=%d faults: cuts=%d (cut_all %d) stalls=%d (%.1f s) conns=%d proxy_up=%.0f MB proxy_down=%.0f MB client_connections=%d violations=%d result=%s")
    :format(write_seconds, POLICY, TLS and "tls" or "h2c", R.records, R.bytes / 1e6, longest_stall, R.acked,
      R.stored, R.duplicates, R.unacked_landed, R.failed_landed, R.late, pstats.cuts or 0,
      faults.cut_alls, faults.stalls, faults.stall_ms / 1000, pstats.conns or 0,
      (pstats.bytes_up or 0) / 1e6, (pstats.bytes_down or 0) / 1e6,
      cstats.connections_opened or 0, problems.total(), bad and "FAIL" or "OK"))
  pcall(direct.delete_basin, direct, basin_name)
  return bad and 1 or 0
end

local ok, rc = xpcall(main, debug.traceback)
cleanup()
if not ok then
  io.stderr:write("soak: " .. tostring(rc) .. "\n")
  os.exit(2)
end
-- Exit without closing the Lua state: a client stuck on a hung connection must not hold the
-- exit up (what is left is reported above).
os.exit(rc)
