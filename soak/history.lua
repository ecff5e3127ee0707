-- History check (make history): concurrent clients, several of them through a proxy that cuts
-- connections, mix unary appends (plain, with match_seq_num, with fencing_token), fences,
-- session batches, producer records, unary reads and check_tail on ONE stream. Every
-- operation is written to a history (invoke and complete times on the machine's monotonic
-- clock, the result: ok, or the error with its code and status). After the run the whole
-- stream is read back and the history is checked against a model of the stream (its
-- contents, its tail, its fencing token):
--
--   lost_ack           an acked record is not in the stream
--   misplaced_ack      an acked record is in the stream, not at the position its ack gives
--   duplicate          a record (every record carries a unique tag) stored twice by a client
--                      whose policy is no_side_effects (under `all` counted, allowed)
--   definite_landed    an append that failed definitely (a 4xx but 408/429: seq_num_mismatch,
--                      fencing_token_mismatch, ...; on its only attempt, or under
--                      no_side_effects where a retry only follows a failure without effect)
--                      whose records are in the stream
--   condition_violated an acked match_seq_num append not at that seq_num; an acked append or
--                      fence with fencing_token where the model's token (from the fences before
--                      it in the stream) differs
--   bad_expected       a 412's expected_fencing_token that the stream never had, or an
--                      expected_seq_num beyond the final tail
--   ack_order          an append acked before another was invoked, ending after its start;
--                      an append starting below a tail observed before it was invoked
--   stale_tail         check_tail below the end of an append acked before it was invoked,
--                      below an earlier check_tail, or above the final tail
--   stale_read         a read returning a record that is not the stream's at that seq_num,
--                      a non-contiguous read, an empty read or a 416 below the end of an
--                      append acked before it was invoked
--   unresolved_ticket  a session or producer ticket still pending after the bounded drain
--   wait_over_bound    a unary call, ack or close that took longer than its bound
--   unknown_record     a record in the stream that no operation wrote
--
-- Not a linearizability search: the properties above are checked directly, which is enough
-- because every record is unique-tagged ("H<worker>.<op>.<k>"; fence tokens "f<worker>.<op>").
--
--   soak/run.sh history       (builds, then runs this)
--
-- Settings (environment, defaults in brackets):
--   HIST_SECONDS [60]  HIST_OPS [50000] (per worker)  HIST_SEED [1]  HIST_TLS [0]
--   HIST_WORKERS ["proxy:no_side_effects:1,proxy:no_side_effects:3,proxy:all:3,proxy:no_side_effects:5,direct:no_side_effects:3"]
--                 one worker process (one client) per entry: via:policy:max_attempts
--   HIST_REQUEST_TIMEOUT [2]  HIST_CUT_P [1] HIST_CUT_MIN [200] HIST_CUT_MAX [8000]
--   HIST_STALL_EVERY [12] HIST_STALL_MIN [500] HIST_STALL_MAX [3000] (ms)
--   HIST_ANSWER_CUT_EVERY [0.5]  `cut_next_answer K` (K in 0, 40, 300) about that often, when
--                 the proxy has the command (0 = never)
--   HIST_KEEP ["" = remove the history files; a directory = keep them there]
package.path = "lua/?.lua;lua/?/init.lua;spec/?.lua;soak/?.lua;" .. package.path
package.cpath = "build/?.so;" .. package.cpath

local s2 = require "s2"
local core = require "s2.core"
local L = require "lib"
local now = core.now
local env_num, env_str = L.env_num, L.env_str

local STREAM = "h"
local INIT_TOKEN = "f-init"

-- =====================================================================================
-- Worker: one client, one stream; writes one line per operation to HIST_W_OUT.
-- =====================================================================================
local function worker()
  local id = assert(tonumber(os.getenv("HIST_W_ID")))
  local endpoint = assert(os.getenv("HIST_W_ENDPOINT"))
  local policy = assert(os.getenv("HIST_W_POLICY"))
  local attempts = assert(tonumber(os.getenv("HIST_W_ATTEMPTS")))
  local via = env_str("HIST_W_VIA", "?")
  local basin_name = assert(os.getenv("HIST_BASIN"))
  local deadline = now() + env_num("HIST_SECONDS", 60)
  local max_ops = env_num("HIST_OPS", 50000)
  local rt = env_num("HIST_REQUEST_TIMEOUT", 2)
  local ca = env_str("HIST_CA", nil)
  math.randomseed(env_num("HIST_SEED", 1) * 1000 + id)
  local out = assert(io.open(assert(os.getenv("HIST_W_OUT")), "w"))
  out:setvbuf("line")
  local function emit(op) out:write(L.line(op), "\n") end

  local CONNECT = 2
  local client = s2.client {
    access_token = "ignored", account_endpoint = endpoint, basin_endpoint = endpoint,
    ca_file = ca, request_timeout = rt, connection_timeout = CONNECT,
    retry = { max_attempts = attempts, min_base_delay = 0.01, max_base_delay = 0.2,
              append_retry_policy = policy },
  }
  local stream = client:basin(basin_name):stream(STREAM)
  -- A unary call's bound: every attempt within connect + request timeout, plus backoffs.
  local UNARY_BOUND = attempts * (CONNECT + rt) + attempts * 0.4 + 1
  emit { kind = "meta", w = id, policy = policy, attempts = attempts, via = via,
         unary_bound = UNARY_BOUND }

  local known_tail, known_token = 0, INIT_TOKEN
  local seq_op = 0
  local function next_id() seq_op = seq_op + 1; return seq_op end
  local function tags_for(opid, n)
    local t = {}
    for k = 1, n do t[k] = ("H%d.%d.%d"):format(id, opid, k) end
    return t
  end
  local function fill_err(op, err)
    op.ok = false
    op.code = L.code(err)
    if type(err) == "table" then
      op.status = err.status
      op.msg = tostring(err.message)
      op.exp_seq = err.expected_seq_num
      op.exp_tok = err.expected_fencing_token
      op.attempts = tonumber(tostring(err.message):match("after (%d+) attempts")) or 1
      if err.expected_seq_num and err.expected_seq_num > known_tail then
        known_tail = err.expected_seq_num
      end
      if err.expected_fencing_token then known_token = err.expected_fencing_token end
    end
  end
  local function fill_ack(op, ack)
    op.ok = true
    op.start, op.stop, op.tail = ack.start.seq_num, ack["end"].seq_num, ack.tail and ack.tail.seq_num
    local t = op.tail or op.stop
    if t > known_tail then known_tail = t end
  end

  -- Unary append of `records` (tags) with opts; kind "append" or "fence".
  local function unary_append(kind, tags, records, opts)
    local op = { kind = kind, w = id, id = next_id(), tags = tags,
                 mseq = opts and opts.match_seq_num, ftok = opts and opts.fencing_token }
    op.inv = now()
    local ack, err = stream:append(records, opts)
    op.cmp = now()
    op.dur = op.cmp - op.inv
    if ack then fill_ack(op, ack) else fill_err(op, err) end
    emit(op)
    return op
  end

  local function op_append(cond)
    local opid = seq_op + 1
    local n = math.random(1, 4)
    local tags = tags_for(opid, n)
    local opts
    if cond == "mseq" then opts = { match_seq_num = known_tail }
    elseif cond == "ftok" then opts = { fencing_token = known_token } end
    return unary_append("append", tags, tags, opts)
  end

  local function op_fence()
    local opid = seq_op + 1
    local token = ("f%d.%d"):format(id, opid)
    local opts
    if math.random() < 0.7 then opts = { fencing_token = known_token } end
    local op = unary_append("fence", { token }, { s2.fence(token) }, opts)
    if op.ok then known_token = token end
  end

  local function op_tail()
    local op = { kind = "tail", w = id, id = next_id() }
    op.inv = now()
    local tail, err = stream:check_tail()
    op.cmp = now()
    op.dur = op.cmp - op.inv
    if tail then
      op.ok, op.tail = true, tail.seq_num
      if tail.seq_num > known_tail then known_tail = tail.seq_num end
    else
      fill_err(op, err)
    end
    emit(op)
    return op
  end

  local function op_read()
    local from = math.random(0, known_tail)
    local op = { kind = "read", w = id, id = next_id(), from = from, count = 20 }
    op.inv = now()
    local batch, err = stream:read { seq_num = from, count = 20 }
    op.cmp = now()
    op.dur = op.cmp - op.inv
    if batch then
      op.ok = true
      local seqs, bodies = {}, {}
      for k, r in ipairs(batch.records) do seqs[k], bodies[k] = r.seq_num, r.body end
      op.seqs, op.bodies = seqs, bodies
    else
      fill_err(op, err)
    end
    emit(op)
  end

  -- Sessions and producers: tickets polled with ready(); an op is written when its ticket
  -- resolves (complete = when that was seen, later than the real completion: safe for the
  -- real-time checks).
  local async = {} -- { kind, t, op, producer }
  local session, producer
  local function resolve(a, t_now)
    local op = a.op
    op.cmp = t_now
    if a.kind == "producer" then
      local seq, err = a.t:result_seq_num()
      if seq then op.ok, op.start, op.stop = true, seq, seq + 1
      else fill_err(op, err) end
    else
      local ack, err = a.t:result()
      if ack then fill_ack(op, ack) else fill_err(op, err) end
    end
    emit(op)
  end
  local function poll_async()
    local t_now = now()
    local keep = {}
    for _, a in ipairs(async) do
      if a.t:ready() then resolve(a, t_now) else keep[#keep + 1] = a end
    end
    async = keep
  end
  local function drop_handle(kind)
    local h = kind == "session" and session or producer
    if kind == "session" then session = nil else producer = nil end
    if h then
      local t0 = now()
      h:close(rt * 2)
      local dt = now() - t0
      if dt > rt * 2 + 2 then
        emit { kind = "wait", w = id, what = kind .. " close", dur = dt, bound = rt * 2 }
      end
    end
  end
  local function op_async(kind)
    local h
    if kind == "session" then
      session = session or assert(stream:append_session { max_inflight_bytes = 1024 * 1024 })
      h = session
    else
      producer = producer or assert(stream:producer { linger = 0.002 })
      h = producer
    end
    local opid = seq_op + 1
    local n = kind == "session" and math.random(1, 4) or 1
    local tags = tags_for(opid, n)
    local op = { kind = kind, w = id, id = opid, tags = tags }
    op.inv = now()
    local ticket, err
    if kind == "session" then ticket, err = h._core:submit(tags, nil, true)
    else ticket, err = h._core:submit(tags[1], true) end
    if ticket == false then return end -- full: nothing submitted, no op
    next_id()
    if not ticket then
      -- The handle failed earlier: nothing was submitted; replace it.
      drop_handle(kind)
      return
    end
    async[#async + 1] = { kind = kind, t = ticket, op = op }
  end

  local WEIGHTS = {
    { 22, function() op_append(nil) end },
    { 14, function()
        if math.random() < 0.5 then op_tail() end
        op_append("mseq")
      end },
    { 12, function() op_append("ftok") end },
    { 6, op_fence },
    { 12, function() op_async("session") end },
    { 12, function() op_async("producer") end },
    { 12, op_read },
    { 10, op_tail },
  }
  local total_w = 0
  for _, x in ipairs(WEIGHTS) do total_w = total_w + x[1] end

  local ops = 0
  while now() < deadline and ops < max_ops do
    ops = ops + 1
    local r = math.random() * total_w
    for _, x in ipairs(WEIGHTS) do
      r = r - x[1]
      if r <= 0 then x[2](); break end
    end
    poll_async()
  end

  -- Drain: close both handles (bounded), then every ticket (bounded); what is still pending
  -- is written as unresolved.
  local DRAIN = rt * attempts + 10
  for _, kind in ipairs { "session", "producer" } do
    local h = kind == "session" and session or producer
    if h then
      local t0 = now()
      h:close(DRAIN)
      local dt = now() - t0
      if dt > DRAIN * 1.5 + 2 then
        emit { kind = "wait", w = id, what = kind .. " close", dur = dt, bound = DRAIN }
      end
    end
  end
  for _, a in ipairs(async) do
    local t0 = now()
    if a.kind == "producer" then a.t:seq_num(5) else a.t:ack(5) end
    local dt = now() - t0
    if dt > 5 * 1.5 + 2 then
      emit { kind = "wait", w = id, what = "ticket", dur = dt, bound = 5 }
    end
    if a.t:ready() then
      resolve(a, now())
    else
      a.op.unresolved = true
      emit(a.op)
    end
  end
  emit { kind = "done", w = id, ops = ops }
  out:close()
  print(("history worker %d: %d ops"):format(id, ops))
  os.exit(0) -- without closing the state: a stuck client must not hold the exit up
end

if arg[1] == "worker" then
  local ok, err = xpcall(worker, debug.traceback)
  if not ok then
    io.stderr:write("history worker: " .. tostring(err) .. "\n")
    os.exit(2)
  end
  return
end

-- =====================================================================================
-- Driver: servers, proxy, workers, faults; then the check.
-- =====================================================================================
local P = require "support.fault_proxy"
local S = require "support.s2lite"

local SECONDS = env_num("HIST_SECONDS", 60)
local SEED = env_num("HIST_SEED", 1)
local TLS = env_num("HIST_TLS", 0) ~= 0
local WORKERS = env_str("HIST_WORKERS",
  "proxy:no_side_effects:1,proxy:no_side_effects:3,proxy:all:3,proxy:no_side_effects:5,direct:no_side_effects:3")
local CUT_P = env_num("HIST_CUT_P", 1)
local CUT_MIN = env_num("HIST_CUT_MIN", 200)
local CUT_MAX = env_num("HIST_CUT_MAX", 8000)
local STALL_EVERY = env_num("HIST_STALL_EVERY", 12)
local STALL_MIN = env_num("HIST_STALL_MIN", 500)
local STALL_MAX = env_num("HIST_STALL_MAX", 3000)
local ANSWER_CUT_EVERY = env_num("HIST_ANSWER_CUT_EVERY", 0.5)
local KEEP = env_str("HIST_KEEP", nil)
local LUA = env_str("LUA", "lua5.4")
math.randomseed(SEED)

local problems = L.problems(6)
local q = P.quote

local certs, server, proxy, tmpdir
local function cleanup()
  if proxy then proxy:stop(); proxy = nil end
  if server then server:stop(); server = nil end
  if certs then os.execute("rm -rf " .. q(certs.dir)); certs = nil end
  if tmpdir and not KEEP then os.execute("rm -rf " .. q(tmpdir)) end
end

local function sleep(s) os.execute(("sleep %.3f"):format(s)) end

local function driver()
  if TLS then
    certs = S.make_certs()
    server = S.start { tls_cert = certs.cert, tls_key = certs.key }
  else
    server = S.start {}
  end
  proxy = P.start { target = "127.0.0.1:" .. server.port, seed = SEED }
  proxy:command(("cut_random %g %d %d"):format(CUT_P, CUT_MIN, CUT_MAX))
  local scheme = TLS and "https" or "http"
  local proxy_ep = ("%s://127.0.0.1:%d"):format(scheme, proxy.port)
  local direct_ep = ("%s://127.0.0.1:%d"):format(scheme, server.port)
  local ca = certs and certs.ca or nil
  local has_answer_cut = ANSWER_CUT_EVERY > 0 and pcall(proxy.command, proxy, "cut_next_answer 100000000")

  local direct = s2.client { access_token = "ignored", account_endpoint = direct_ep,
                             basin_endpoint = direct_ep, ca_file = ca, request_timeout = 30 }
  local basin_name = ("hist-%x%04x"):format(os.time() % 0xffffff, math.random(0, 0xffff))
  assert(direct:create_basin(basin_name, {}))
  local dbasin = direct:basin(basin_name)
  assert(dbasin:create_stream(STREAM))
  local dstream = dbasin:stream(STREAM)
  -- The first fence, so that fencing_token appends have a token to carry.
  local init = { kind = "fence", w = 0, id = 0, tags = { INIT_TOKEN }, inv = now() }
  local iack = assert(dstream:append({ s2.fence(INIT_TOKEN) }))
  init.cmp, init.ok, init.start, init.stop = now(), true, iack.start.seq_num, iack["end"].seq_num

  if KEEP then
    tmpdir = KEEP
  else
    local base = os.tmpname() -- makes an empty file: use its unique name, remove the file
    os.remove(base)
    tmpdir = base .. ".hist"
  end
  os.execute("mkdir -p " .. q(tmpdir))
  local specs = {}
  for entry in WORKERS:gmatch("[^,]+") do
    local via, policy, attempts = entry:match("^(%a+):([%a_]+):(%d+)$")
    assert(via == "proxy" or via == "direct", "HIST_WORKERS: via must be proxy or direct: " .. entry)
    specs[#specs + 1] = { via = via, policy = policy, attempts = tonumber(attempts) }
  end
  local handles = {}
  local limit = SECONDS * 3 + 120
  for i, sp in ipairs(specs) do
    sp.out = ("%s/w%d.hist"):format(tmpdir, i)
    sp.err = ("%s/w%d.err"):format(tmpdir, i)
    local envs = {
      HIST_W_ID = i, HIST_W_ENDPOINT = sp.via == "proxy" and proxy_ep or direct_ep,
      HIST_W_POLICY = sp.policy, HIST_W_ATTEMPTS = sp.attempts, HIST_W_VIA = sp.via,
      HIST_W_OUT = sp.out, HIST_BASIN = basin_name, HIST_CA = ca or "",
    }
    local parts = {}
    for k, v in pairs(envs) do parts[#parts + 1] = k .. "=" .. q(v) end
    local cmd = ("env %s timeout -k 5 %d %s soak/history.lua worker 2>%s")
      :format(table.concat(parts, " "), limit, q(LUA), q(sp.err))
    handles[i] = assert(io.popen(cmd, "r"))
  end
  print(("history: %d workers (%s), %d s, cuts %g %d..%d, stalls %d..%d ms every ~%g s, answer cuts %s, %s")
    :format(#specs, WORKERS, SECONDS, CUT_P, CUT_MIN, CUT_MAX, STALL_MIN, STALL_MAX, STALL_EVERY,
      has_answer_cut and ("every ~" .. ANSWER_CUT_EVERY .. " s") or "off", TLS and "TLS" or "h2c"))

  -- Faults while the workers run.
  local faults = { stalls = 0, answer_cuts = 0, armed = 0 }
  local t0 = now()
  local next_stall = t0 + STALL_EVERY * (0.5 + math.random())
  while now() - t0 < SECONDS do
    local t = now()
    if STALL_EVERY > 0 and t >= next_stall then
      proxy:command("stall " .. math.random(STALL_MIN, STALL_MAX))
      faults.stalls = faults.stalls + 1
      next_stall = t + STALL_EVERY * (0.5 + math.random())
    end
    if has_answer_cut then
      local ks = { 0, 40, 300 }
      local line = proxy:command("cut_next_answer " .. ks[math.random(1, 3)])
      faults.answer_cuts = faults.answer_cuts + 1
      faults.armed = faults.armed + (tonumber(line:match("(%d+)%s*$")) or 0)
      sleep(ANSWER_CUT_EVERY * (0.5 + math.random()))
    else
      sleep(0.5)
    end
  end
  proxy:command("reset")
  local worker_failed = 0
  for i, h in ipairs(handles) do
    local text = h:read("a")
    local ok, how, code = h:close()
    if not ok then
      worker_failed = worker_failed + 1
      local f = io.open(specs[i].err)
      local err = f and f:read("a") or ""
      if f then f:close() end
      problems.add("worker_failed", "worker %d exited (%s %s): %s %s", i, tostring(how),
        tostring(code), text, err:sub(1, 600))
    end
  end
  local pstats = proxy:stats()

  -- ---- load the history ------------------------------------------------------------------------
  local ops = { init }
  local meta = { [0] = { policy = "all", attempts = 1, via = "direct" } }
  local done = {}
  for i, sp in ipairs(specs) do
    local f = io.open(sp.out)
    if f then
      for line in f:lines() do
        local op, err = L.unline(line)
        if not op then
          problems.add("bad_history", "worker %d: %s", i, tostring(err))
        elseif op.kind == "meta" then meta[op.w] = op
        elseif op.kind == "done" then done[op.w] = op.ops
        elseif op.kind == "wait" then
          problems.add("wait_over_bound", "worker %d: %s took %.1f s (bound %.1f s)", op.w,
            op.what, op.dur, op.bound)
        else ops[#ops + 1] = op end
      end
      f:close()
    end
    if not done[i] then problems.add("worker_incomplete", "worker %d wrote no end mark", i) end
  end

  -- ---- the stream as it ended --------------------------------------------------------------------
  local final_tail = assert(dstream:check_tail()).seq_num
  local body, is_fence = {}, {}
  local at = 0
  while at < final_tail do
    local batch = assert(dstream:read { seq_num = at, count = 1000 })
    if #batch.records == 0 then break end
    for _, r in ipairs(batch.records) do
      body[r.seq_num] = r.body
      local h = r.headers[1]
      is_fence[r.seq_num] = (#r.headers == 1 and h[1] == "" and h[2] == "fence") or nil
    end
    at = at + #batch.records
  end
  local where = {}     -- tag -> { seq, ... }
  local token_at = {}  -- seq -> token in effect before the record at seq
  local tokens_ever = { [""] = true }
  local tok = ""
  for s = 0, final_tail - 1 do
    token_at[s] = tok
    local b = body[s]
    if b then
      local w = where[b]
      if w then w[#w + 1] = s else where[b] = { s } end
      if is_fence[s] then tok = b; tokens_ever[b] = true end
    end
  end

  -- ---- per-operation checks ----------------------------------------------------------------------
  local owner = {}
  local C = { ops = 0, by = {}, records = final_tail, tags = 0, dup_allowed = 0,
              indefinite_landed = 0, indefinite_absent = 0, definite = 0, unary_max = 0,
              bad_by_kind = {}, bad_by_worker = {} }
  local function outcome(op)
    if op.unresolved then return "unresolved" end
    if op.ok then return "ok" end
    local st = op.status
    local pol = meta[op.w] and meta[op.w].policy or "all"
    if (op.kind == "append" or op.kind == "fence") and st and st >= 400 and st < 500
        and st ~= 408 and st ~= 429 and (pol == "no_side_effects" or (op.attempts or 1) == 1) then
      return "definite"
    end
    if op.kind == "read" or op.kind == "tail" then return "failed" end
    return "indefinite"
  end
  local function desc(op)
    return ("w%d op %d %s%s%s"):format(op.w, op.id, op.kind,
      op.mseq and (" match_seq_num=" .. op.mseq) or "", op.ftok and (" fencing_token=" .. op.ftok) or "")
  end

  for _, op in ipairs(ops) do
    C.ops = C.ops + 1
    local oc = outcome(op)
    op.outcome = oc
    local bk = op.kind .. ":" .. (oc == "ok" and "ok" or (oc .. ":" .. tostring(op.code)))
    L.count_into(C.by, bk)
    local m = meta[op.w]
    if op.dur and m and m.unary_bound then
      if op.dur > C.unary_max then C.unary_max = op.dur end
      if op.dur > m.unary_bound then
        problems.add("wait_over_bound", "%s took %.1f s, bound %.1f s", desc(op), op.dur, m.unary_bound)
      end
    end
    if op.tags then
      for _, tag in ipairs(op.tags) do owner[tag] = op; C.tags = C.tags + 1 end
    end
    if oc == "unresolved" then
      problems.add("unresolved_ticket", "%s: ticket still pending after the drain", desc(op))
    elseif op.tags and oc == "ok" then
      local n = #op.tags
      if op.stop - op.start ~= n then
        problems.add("misplaced_ack", "%s: ack covers [%d, %d) for %d records", desc(op), op.start, op.stop, n)
      end
      for k, tag in ipairs(op.tags) do
        local s = op.start + k - 1
        if body[s] ~= tag then
          if where[tag] then
            problems.add("misplaced_ack", "%s: %s acked at seq %d, stored at %s (seq %d holds %s)",
              desc(op), tag, s, table.concat(where[tag], "/"), s, tostring(body[s]))
          else
            problems.add("lost_ack", "%s: %s acked at seq %d is not in the stream", desc(op), tag, s)
          end
        end
      end
      if op.mseq and op.start ~= op.mseq then
        problems.add("condition_violated", "%s acked at %d", desc(op), op.start)
      end
      if op.ftok and token_at[op.start] ~= op.ftok then
        problems.add("condition_violated", "%s acked at %d where the token is %q", desc(op),
          op.start, tostring(token_at[op.start]))
      end
    elseif op.tags and oc == "definite" then
      C.definite = C.definite + 1
      for _, tag in ipairs(op.tags) do
        if where[tag] then
          L.count_into(C.bad_by_kind, "definite_landed:" .. op.kind)
          L.count_into(C.bad_by_worker, "w" .. op.w)
          problems.add("definite_landed", "%s failed with %s (%s; expected_seq_num=%s) but %s is at seq %s",
            desc(op), op.code, op.msg or "", tostring(op.exp_seq), tag, table.concat(where[tag], "/"))
          break
        end
      end
      if op.code == "fencing_token_mismatch" and not tokens_ever[op.exp_tok or false] then
        problems.add("bad_expected", "%s: expected_fencing_token %q was never the stream's",
          desc(op), tostring(op.exp_tok))
      end
      if op.code == "seq_num_mismatch" and (op.exp_seq or math.huge) > final_tail then
        problems.add("bad_expected", "%s: expected_seq_num %s beyond the final tail %d",
          desc(op), tostring(op.exp_seq), final_tail)
      end
    elseif op.tags and oc == "indefinite" then
      local landed = false
      for _, tag in ipairs(op.tags) do if where[tag] then landed = true end end
      if landed then C.indefinite_landed = C.indefinite_landed + 1
      else C.indefinite_absent = C.indefinite_absent + 1 end
    end
    if op.kind == "tail" and op.ok and op.tail > final_tail then
      problems.add("stale_tail", "w%d op %d: check_tail %d above the final tail %d", op.w, op.id,
        op.tail, final_tail)
    end
    if op.kind == "read" and op.ok then
      for k, s in ipairs(op.seqs) do
        if s ~= op.from + k - 1 then
          problems.add("stale_read", "w%d op %d: read from %d returned seq %d at position %d",
            op.w, op.id, op.from, s, k)
          break
        end
        if body[s] ~= op.bodies[k] then
          problems.add("stale_read", "w%d op %d: seq %d read as %q, the stream holds %q", op.w,
            op.id, s, op.bodies[k], tostring(body[s]))
          break
        end
      end
    end
  end

  -- Tags stored more than once; records nobody wrote.
  -- One duplicate per operation (all its records are usually stored again together).
  local dup_seen = {}
  for tag, seqs in pairs(where) do
    local op = owner[tag]
    if not op then
      problems.add("unknown_record", "%q at seq %d", tag, seqs[1])
    elseif #seqs > 1 then
      local pol = meta[op.w] and meta[op.w].policy or "all"
      if pol ~= "no_side_effects" then
        C.dup_allowed = C.dup_allowed + #seqs - 1
      elseif not dup_seen[op] then
        dup_seen[op] = true
        L.count_into(C.bad_by_kind, "duplicate:" .. op.kind)
        L.count_into(C.bad_by_worker, "w" .. op.w)
        problems.add("duplicate", "%s, %s%s, policy no_side_effects: %s stored at %s",
          desc(op), op.outcome == "ok" and "acked" or op.outcome, op.code and (" " .. op.code
          .. " after " .. tostring(op.attempts) .. " attempts") or "", tag, table.concat(seqs, "/"))
      end
    end
  end

  -- Real-time order: what completed before an operation was invoked.
  local acked = {}
  local tails = {}
  for _, op in ipairs(ops) do
    if op.tags and op.outcome == "ok" then acked[#acked + 1] = op end
    if op.kind == "tail" and op.ok then tails[#tails + 1] = op end
  end
  -- Sorted by completion; prefix maxima of ack ends / tails; for an invoke time, the max over
  -- everything completed before it.
  local function prefix(list, field)
    table.sort(list, function(a, b) return a.cmp < b.cmp end)
    local times, maxv, who = {}, {}, {}
    local mx, mw = -1, nil
    for k, op in ipairs(list) do
      if op[field] > mx then mx, mw = op[field], op end
      times[k], maxv[k], who[k] = op.cmp, mx, mw
    end
    return function(t) -- max value over ops with cmp < t
      local lo, hi = 1, #times
      local ans = 0
      while lo <= hi do
        local mid = (lo + hi) // 2
        if times[mid] < t then ans = mid; lo = mid + 1 else hi = mid - 1 end
      end
      if ans == 0 then return -1, nil end
      return maxv[ans], who[ans]
    end
  end
  local end_before = prefix(acked, "stop")
  local tail_before = prefix(tails, "tail")
  for _, op in ipairs(ops) do
    if op.inv then
      local e, ew = end_before(op.inv)
      local tv, tw = tail_before(op.inv)
      if op.kind == "tail" and op.ok then
        if op.tail < e then
          problems.add("stale_tail", "w%d op %d: check_tail %d, but %s ended at %d before it was invoked",
            op.w, op.id, op.tail, desc(ew), e)
        end
        if op.tail < tv then
          problems.add("stale_tail", "w%d op %d: check_tail %d after w%d op %d saw %d", op.w, op.id,
            op.tail, tw.w, tw.id, tv)
        end
      elseif op.tags and op.outcome == "ok" then
        if op.start < e then
          problems.add("ack_order", "%s acked at [%d, %d), but %s ended at %d before it was invoked",
            desc(op), op.start, op.stop, desc(ew), e)
        end
        if op.start < tv then
          problems.add("ack_order", "%s acked at %d, below the tail %d seen before it was invoked",
            desc(op), op.start, tv)
        end
      elseif op.kind == "read" then
        if op.ok and #op.seqs == 0 and op.from < e then
          problems.add("stale_read", "w%d op %d: empty read from %d, but %s ended at %d before", op.w,
            op.id, op.from, desc(ew), e)
        elseif not op.ok and op.code == "range_not_satisfiable" and op.from < e then
          problems.add("stale_read", "w%d op %d: 416 from %d, but %s ended at %d before", op.w,
            op.id, op.from, desc(ew), e)
        end
      end
    end
  end

  -- ---- report ------------------------------------------------------------------------------------
  local keys = {}
  for k in pairs(C.by) do keys[#keys + 1] = k end
  table.sort(keys)
  for i, sp in ipairs(specs) do
    print(("  worker %d: %s, %s, max_attempts %d: %s ops"):format(i, sp.via, sp.policy,
      sp.attempts, tostring(done[i] or "?")))
  end
  local line = {}
  for _, k in ipairs(keys) do line[#line + 1] = ("%s=%d"):format(k, C.by[k]) end
  print("  operations: " .. table.concat(line, " "))
  print("  duplicates / landed definite failures by operation kind: " .. L.format_counts(C.bad_by_kind)
    .. "; by worker: " .. L.format_counts(C.bad_by_worker))
  problems.report("  ")
  print(("history: %.0fs ops=%d records=%d tags=%d definite_failures=%d indefinite_landed=%d indefinite_absent=%d duplicates_allowed(all)=%d faults: cuts=%d conns=%d stalls=%d answer_cuts=%d (armed %d) max_unary=%.1fs violations=%d result=%s")
    :format(now() - t0, C.ops, final_tail, C.tags, C.definite, C.indefinite_landed,
      C.indefinite_absent, C.dup_allowed, pstats.cuts or 0, pstats.conns or 0, faults.stalls,
      faults.answer_cuts, faults.armed, C.unary_max, problems.total(),
      problems.total() > 0 and "FAIL" or "OK"))
  if KEEP then print("  history files kept in " .. KEEP) end
  pcall(direct.delete_basin, direct, basin_name)
  return problems.total() > 0 and 1 or 0
end

local ok, rc = xpcall(driver, debug.traceback)
cleanup()
if not ok then
  io.stderr:write("history: " .. tostring(rc) .. "\n")
  os.exit(2)
end
os.exit(rc)
