-- Specs for the fault-injecting proxy (tools/fault_proxy.c) itself; no s2-lite needed.
-- Upstream is the same binary in --echo-server mode; clients are bash /dev/tcp or the
-- binary's --client mode (which half-closes at stdin EOF and tells FIN from RST by its exit
-- status: 0 = FIN, 2 = reset). Every shell call is wrapped in `timeout`.
local P = require "support.fault_proxy"

local q, capture = P.quote, P.capture

local tmpdir
local function tmp(name) return tmpdir .. "/" .. name end

local function write_random(path, n)
  assert(os.execute(("head -c %d /dev/urandom > %s"):format(n, q(path))))
end

local function size(path)
  local f = assert(io.open(path, "rb"))
  local n = f:seek("end")
  f:close()
  return n
end

local function sha256(path)
  return (capture("sha256sum " .. q(path)):match("^(%x+)"))
end

local function same_prefix(a, b, n)
  return os.execute(("cmp -s -n %d %s %s"):format(n, q(a), q(b))) == true
end

local function stats_delta(proxy, before)
  local now = proxy:stats()
  local d = {}
  for k, v in pairs(now) do d[k] = v - (before[k] or 0) end
  return d
end

-- Runs `fault-proxy --client PORT < input > output`; returns exit status, ms taken, summary.
local function client(port, input, output, seconds)
  local out = capture(([[
s=$(date +%%s%%N)
timeout %d %s --client %d < %s > %s 2> %s
rc=$?
e=$(date +%%s%%N)
echo "$rc $(( (e - s) / 1000000 ))"]]):format(seconds or 5, q(P.default_binary), port,
    q(input), q(output), q(output .. ".err")))
  local rc, ms = out:match("(%d+) (%d+)")
  local f = io.open(output .. ".err")
  local summary = f and f:read("a") or ""
  if f then f:close() end
  return tonumber(rc), tonumber(ms), summary
end

-- Starts a client in the background; the returned function waits (<= 5 s) for its status.
local function client_bg(port, input, output, hold_open_s)
  local rcfile = output .. ".rc"
  os.remove(rcfile)
  local holdfile = output .. ".hold"   -- pid of the sleep that keeps stdin open
  os.remove(holdfile)
  local feed = hold_open_s
    and ("{ cat %s; sleep %g & echo $! > %s; wait; }"):format(q(input), hold_open_s, q(holdfile))
    or ("cat %s"):format(q(input))
  os.execute(("( %s | { timeout 10 %s --client %d > %s 2>/dev/null; echo $? > %s; } ) >/dev/null 2>&1 &")
    :format(feed, q(P.default_binary), port, q(output), q(rcfile)))
  return function()
    capture(("timeout 5 sh -c 'until [ -s \"$1\" ]; do sleep 0.02; done' _ %s"):format(q(rcfile)))
    local f = io.open(rcfile)
    if not f then return nil end
    local rc = tonumber(f:read("a"):match("%d+"))
    f:close()
    local h = io.open(holdfile)
    if h then
      local pid = tonumber(h:read("a"):match("%d+"))
      h:close()
      if pid then os.execute(("kill %d 2>/dev/null"):format(pid)) end
    end
    return rc
  end
end

local function sleep(s) os.execute(("sleep %g"):format(s)) end

-- Monotonic-enough wall clock in ms (for lower bounds on durations only).
local function now_ms()
  return math.floor(tonumber((capture("date +%s%N"):match("%d+"))) / 1000000)
end

local function size_or_0(path)
  local f = io.open(path, "rb")
  if not f then return 0 end
  local n = f:seek("end")
  f:close()
  return n
end

-- Polls `fn` every 20 ms for at most `seconds`; true once it returned true.
local function wait_until(fn, seconds)
  for _ = 1, math.ceil(seconds / 0.02) do
    if fn() then return true end
    sleep(0.02)
  end
  return fn() and true or false
end

local function concat_files(out, ...)
  local parts = {}
  for _, f in ipairs { ... } do parts[#parts + 1] = q(f) end
  assert(os.execute(("cat %s > %s"):format(table.concat(parts, " "), q(out))))
end

-- A --client connection fed in phases: parts[1] is sent at once, parts[i + 1] once
-- release(i) is called; stdin stays open until the last part is sent (so the connection
-- stays up between phases). Returns an object: release(i), wait() -> exit status (<= 10 s),
-- err() -> its stderr, close() (releases everything; for `finally`).
local function client_phased(port, parts, output)
  local rcfile, errfile = output .. ".rc", output .. ".err"
  os.remove(rcfile)
  os.remove(errfile)
  local gates, feed = {}, {}
  for i, part in ipairs(parts) do
    if i > 1 then
      local gate = ("%s.gate%d"):format(output, i - 1)
      os.remove(gate)
      gates[i - 1] = gate
      -- bounded: a test that never releases this phase does not leave the loop behind
      feed[#feed + 1] = ("n=0; until [ -e %s ] || [ $n -ge 1500 ]; do sleep 0.02; n=$((n+1)); done")
        :format(q(gate))
    end
    feed[#feed + 1] = "cat " .. q(part)
  end
  os.execute(("( { %s; } | { timeout 40 %s --client %d > %s 2> %s; echo $? > %s; } ) >/dev/null 2>&1 &")
    :format(table.concat(feed, "; "), q(P.default_binary), port, q(output), q(errfile), q(rcfile)))
  local c = {}
  function c.release(i) local f = assert(io.open(gates[i], "w")); f:close() end
  function c.err() return P.slurp(errfile) or "" end
  function c.wait()
    capture(("timeout 10 sh -c 'until [ -s \"$1\" ]; do sleep 0.02; done' _ %s"):format(q(rcfile)))
    local s = P.slurp(rcfile)
    return s and tonumber(s:match("%d+"))
  end
  function c.close() for i in pairs(gates) do c.release(i) end end
  return c
end

-- skmem of the proxy's accepted socket(s) (local port = the proxy's port): { rb =, tb = }
local function accepted_skmem(port)
  local out = capture(("ss -tmniH state established '( sport = :%d )'"):format(port))
  local rb, tb = out:match("skmem:%(r%d+,rb(%d+),t%d+,tb(%d+)")
  local mss = out:match(" mss:(%d+)")
  return { rb = tonumber(rb), tb = tonumber(tb), mss = tonumber(mss), raw = out }
end

describe("fault proxy", function()
  local echo, proxy

  lazy_setup(function()
    tmpdir = capture("mktemp -d"):gsub("%s+$", "")
    echo = P.start_echo{}
    proxy = P.start{ target = "127.0.0.1:" .. echo.port, seed = 1 }
  end)

  lazy_teardown(function()
    if proxy then proxy:stop() end
    if echo then echo:stop() end
    if tmpdir and tmpdir:match("^/tmp/") then os.execute("rm -rf " .. q(tmpdir)) end
  end)

  before_each(function()
    proxy:command("reset")
  end)

  it("starts and tells its ports", function()
    assert.is_number(proxy.port)
    assert.is_number(proxy.control_port)
    assert.equal("http://127.0.0.1:" .. proxy.port, proxy.endpoint)
    assert.equal("ok pong", proxy:command("ping"))
  end)

  it("rejects bad commands with an error", function()
    assert.has_error(function() proxy:command("frobnicate") end)
    assert.has_error(function() proxy:command("cut_after x") end)
    assert.has_error(function() proxy:command("cut_random 2 0 0") end)
    assert.has_error(function() proxy:command("cut_random 0.5 10 1") end)
    assert.has_error(function() proxy:command("refuse maybe") end)
    assert.equal("ok cut_after 1000", proxy:command("cut_after 1000"))
  end)

  it("forwards 1 MiB both ways intact (bash /dev/tcp)", function()
    local input, output = tmp("mib.in"), tmp("mib.out")
    write_random(input, 1048576)
    local before = proxy:stats()
    local _, code = capture(([[timeout 10 bash -c '
      exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 9
      cat "$2" >&3 &
      head -c 1048576 <&3 > "$3"
      wait' _ %d %s %s]]):format(proxy.port, q(input), q(output)))
    assert.equal(0, code)
    assert.equal(1048576, size(output))
    assert.equal(sha256(input), sha256(output))
    local d = stats_delta(proxy, before)
    assert.equal(1, d.conns)
    assert.equal(1048576, d.bytes_up)
    assert.equal(1048576, d.bytes_down)
    assert.equal(0, d.cuts)
  end)

  it("forwards a half-close both ways and closes the pair", function()
    local input, output = tmp("half.in"), tmp("half.out")
    write_random(input, 3 * 1048576 + 17)
    local before = proxy:stats()
    -- The client shuts down its sending side at stdin EOF; the echo server answers the FIN
    -- with one once all is echoed; the client ends only on that FIN (status 0).
    local rc, _, summary = client(proxy.port, input, output)
    assert.equal(0, rc, summary)
    assert.equal(sha256(input), sha256(output))
    local d = stats_delta(proxy, before)
    assert.equal(1, d.conns)
    assert.equal(0, proxy:stats().open)
  end)

  it("cut_after cuts a new connection after exactly N client->server bytes", function()
    local input, output = tmp("cut.in"), tmp("cut.out")
    write_random(input, 1048576)
    proxy:command("cut_after 100000")
    local before = proxy:stats()
    local rc, ms, summary = client(proxy.port, input, output)
    assert.equal(2, rc, summary)  -- reset, not a clean end
    assert.is_true(ms < 3000)
    local d = stats_delta(proxy, before)
    assert.equal(1, d.cuts)
    assert.equal(100000, d.bytes_up)
    assert.is_true(d.bytes_down <= 100000)
    assert.is_true(size(output) <= 100000)
    assert.is_true(same_prefix(input, output, size(output)))
    assert.equal(0, proxy:stats().open)

    proxy:command("cut_after 0")
    rc, _, summary = client(proxy.port, input, output)
    assert.equal(0, rc, summary)
    assert.equal(sha256(input), sha256(output))
  end)

  it("cut_after_down lets exactly N server->client bytes through, then resets", function()
    local input, output = tmp("cutd.in"), tmp("cutd.out")
    write_random(input, 1048576)
    proxy:command("cut_after_down 123457")
    local before = proxy:stats()
    local rc, _, summary = client(proxy.port, input, output)
    assert.equal(2, rc, summary)
    assert.equal(123457, size(output))
    assert.is_true(same_prefix(input, output, 123457))
    local d = stats_delta(proxy, before)
    assert.equal(1, d.cuts)
    assert.equal(123457, d.bytes_down)
  end)

  it("cut_all cuts every open connection now", function()
    local input = tmp("all.in")
    write_random(input, 1000)
    local waits = {}
    for i = 1, 3 do waits[i] = client_bg(proxy.port, input, tmp("all.out" .. i), 4) end
    for i = 1, 3 do   -- each client has had its 1000 bytes echoed: all three are open
      capture(("timeout 5 sh -c 'until [ \"$(stat -c %%s \"$1\" 2>/dev/null)\" = 1000 ]; do sleep 0.02; done' _ %s")
        :format(q(tmp("all.out" .. i))))
    end
    local before = proxy:stats()
    assert.equal(3, before.open)
    assert.equal("ok cut_all 3", proxy:command("cut_all"))
    for i = 1, 3 do assert.equal(2, waits[i]()) end
    local d = stats_delta(proxy, before)
    assert.equal(3, d.cuts)
    assert.equal(0, proxy:stats().open)
  end)

  it("cut_random cuts with probability P after MIN..MAX bytes, repeatably per seed", function()
    local input = tmp("rnd.in")
    write_random(input, 200000)
    proxy:command("cut_random 1 1000 1000")
    local before = proxy:stats()
    local rc = client(proxy.port, input, tmp("rnd.out"))
    assert.equal(2, rc)
    local d = stats_delta(proxy, before)
    assert.equal(1, d.cuts)
    assert.is_true(d.bytes_up + d.bytes_down <= 1000)

    local function pattern()
      local s = {}
      for i = 1, 12 do s[i] = client(proxy.port, input, tmp("rnd.out")) == 2 and "x" or "." end
      return table.concat(s)
    end
    proxy:command("seed 42")
    proxy:command("cut_random 0.5 1 50000")
    local first = pattern()
    proxy:command("seed 42")
    assert.equal(first, pattern())
    assert.truthy(first:find("x", 1, true))
    assert.truthy(first:find(".", 1, true))

    proxy:command("cut_random 0 0 0")
    assert.equal(0, (client(proxy.port, input, tmp("rnd.out"))))
  end)

  it("refuse on closes new connections at once, refuse off restores", function()
    local input, output = tmp("ref.in"), tmp("ref.out")
    write_random(input, 5000)
    proxy:command("refuse on")
    local before = proxy:stats()
    local rc = client(proxy.port, input, output)
    assert.equal(2, rc)
    assert.equal(0, size(output))
    local d = stats_delta(proxy, before)
    assert.equal(1, d.conns)
    assert.equal(1, d.refused)
    assert.equal(0, d.bytes_up)
    proxy:command("refuse off")
    rc = client(proxy.port, input, output)
    assert.equal(0, rc)
    assert.equal(sha256(input), sha256(output))
  end)

  it("stall holds server->client data for MS and then releases it", function()
    local input, output = tmp("stall.in"), tmp("stall.out")
    write_random(input, 200000)
    proxy:command("stall 700")
    local rc, ms = client(proxy.port, input, output)
    assert.equal(0, rc)
    assert.is_true(ms >= 600, "took only " .. ms .. " ms")
    assert.is_true(ms < 3000, "took " .. ms .. " ms")
    assert.equal(sha256(input), sha256(output))
  end)

  it("stall 0 ends a stall at once; nothing is dropped", function()
    local input, output = tmp("stall0.in"), tmp("stall0.out")
    write_random(input, 300000)
    proxy:command("stall 60000")
    local before = proxy:stats()
    local wait = client_bg(proxy.port, input, output)
    local mid
    for _ = 1, 150 do   -- <= 3 s for the upstream direction to pass everything
      mid = stats_delta(proxy, before)
      if mid.bytes_up == 300000 then break end
      sleep(0.02)
    end
    sleep(0.2)
    mid = stats_delta(proxy, before)
    assert.equal(300000, mid.bytes_up)   -- the upstream direction still flows
    assert.equal(0, mid.bytes_down)      -- the echo is held
    assert.equal(0, size(output))
    proxy:command("stall 0")
    assert.equal(0, wait())
    assert.equal(sha256(input), sha256(output))
  end)

  it("delay adds latency to each direction", function()
    local input, output = tmp("delay.in"), tmp("delay.out")
    write_random(input, 100)
    proxy:command("delay 300")
    local rc, ms = client(proxy.port, input, output)
    assert.equal(0, rc)
    assert.is_true(ms >= 550, "took only " .. ms .. " ms")
    assert.is_true(ms < 3000, "took " .. ms .. " ms")
    assert.equal(sha256(input), sha256(output))
    proxy:command("delay 0")
    rc, ms = client(proxy.port, input, output)
    assert.equal(0, rc)
    assert.is_true(ms < 300, "took " .. ms .. " ms")
  end)

  it("handles 150 concurrent connections", function()
    local input = tmp("many.in")
    write_random(input, 50000)
    local before = proxy:stats()
    local _, code = capture(([[timeout 20 bash -c '
      for i in $(seq 150); do
        { "$1" --client "$2" < "$3" 2>/dev/null | cmp -s - "$3" || echo bad; } &
      done; wait' _ %s %d %s]]):format(q(P.default_binary), proxy.port, q(input)))
    assert.equal(0, code)
    local d = stats_delta(proxy, before)
    assert.equal(150, d.conns)
    assert.equal(150 * 50000, d.bytes_up)
    assert.equal(150 * 50000, d.bytes_down)
    assert.equal(0, proxy:stats().open)
  end)

  describe("WAN shaping", function()
    it("takes the shaping commands, shows them, and reset clears them all", function()
      assert.equal("ok rate_up 100000", proxy:command("rate_up 100000"))
      assert.equal("ok rate_down 2500000", proxy:command("rate_down 2500000"))
      assert.equal("ok latency_up 3", proxy:command("latency_up 3"))
      assert.equal("ok latency_down 100", proxy:command("latency_down 100"))
      assert.equal("ok rcvbuf 16384", proxy:command("rcvbuf 16384"))
      assert.equal("ok mss 1460", proxy:command("mss 1460"))
      assert.equal("ok stop_reading on", proxy:command("stop_reading on"))
      local s = proxy:show()
      assert.equal(100000, s.rate_up)
      assert.equal(2500000, s.rate_down)
      assert.equal(3, s.latency_up)
      assert.equal(100, s.latency_down)
      assert.equal(65536, s.cap_up)        -- max(64 KiB, 100000 x 0.003)
      assert.equal(250000, s.cap_down)     -- 2.5 MB/s x 100 ms
      assert.equal(16384, s.rcvbuf)
      assert.equal(1460, s.mss)
      assert.equal("on", s.stop_reading)
      assert.equal("ok queue_cap 5000", proxy:command("queue_cap 5000"))
      s = proxy:show()
      assert.equal(5000, s.cap_up)
      assert.equal(5000, s.cap_down)
      assert.equal("ok delay 7", proxy:command("delay 7"))
      s = proxy:show()
      assert.equal(7, s.latency_up)
      assert.equal(7, s.latency_down)

      for _, bad in ipairs { "rate_up x", "rate_up -1", "rate_down", "latency_up 86400001",
                             "queue_cap 1 2", "rcvbuf -5", "mss 10", "stop_reading maybe",
                             "cut_next_answer", "cut_next_answer x" } do
        assert.has_error(function() proxy:command(bad) end, nil, bad)
      end

      proxy:command("reset")
      s = proxy:show()
      for _, k in ipairs { "rate_up", "rate_down", "latency_up", "latency_down", "queue_cap",
                           "rcvbuf", "mss" } do
        assert.equal(0, s[k], k)
      end
      assert.equal(1048576, s.cap_up)
      assert.equal(1048576, s.cap_down)
      assert.equal("off", s.stop_reading)
      -- and the proxy forwards as before (stop_reading and the re-created listener)
      local input, output = tmp("cmds.in"), tmp("cmds.out")
      write_random(input, 300000)
      local rc, _, summary = client(proxy.port, input, output)
      assert.equal(0, rc, summary)
      assert.equal(sha256(input), sha256(output))
    end)

    it("rate_up and rate_down bound the transfer time from below", function()
      local input, output = tmp("rate.in"), tmp("rate.out")
      write_random(input, 200000)
      proxy:command("rate_up 100000")
      local rc, ms, summary = client(proxy.port, input, output, 20)
      assert.equal(0, rc, summary)
      assert.is_true(ms >= 1500, "200 KB at 100 KB/s up took only " .. ms .. " ms")
      assert.equal(sha256(input), sha256(output))

      proxy:command("reset")
      proxy:command("rate_down 100000")
      rc, ms, summary = client(proxy.port, input, output, 20)
      assert.equal(0, rc, summary)
      assert.is_true(ms >= 1500, "200 KB at 100 KB/s down took only " .. ms .. " ms")
      assert.equal(sha256(input), sha256(output))
    end)

    it("starts shaped from its command-line flags", function()
      local p = P.start{ target = "127.0.0.1:" .. echo.port, rate_up = 100000,
                         latency_down = 50, queue_cap = 70000, rcvbuf = 65536, mss = 1460 }
      finally(function() p:stop() end)
      local s = p:show()
      assert.equal(100000, s.rate_up)
      assert.equal(50, s.latency_down)
      assert.equal(70000, s.queue_cap)
      assert.equal(65536, s.rcvbuf)
      assert.equal(1460, s.mss)
      local input, output = tmp("flags.in"), tmp("flags.out")
      write_random(input, 200000)
      local rc, ms, summary = client(p.port, input, output, 20)
      assert.equal(0, rc, summary)
      assert.is_true(ms >= 1500, "took only " .. ms .. " ms")
      assert.equal(sha256(input), sha256(output))
      -- a value the proxy refuses stops it from starting
      local ok, err = pcall(P.start, { target = "127.0.0.1:" .. echo.port, mss = 10 })
      assert.is_false(ok)
      assert.matches("exited before it was ready", err)
    end)

    it("a rate applies to an open connection at once", function()
      local a, b, output = tmp("open.a"), tmp("open.b"), tmp("open.out")
      write_random(a, 100000)
      write_random(b, 200000)
      local c = client_phased(proxy.port, { a, b }, output)
      finally(c.close)
      assert.is_true(wait_until(function() return size_or_0(output) == 100000 end, 5))
      proxy:command("rate_down 100000")
      local t0 = now_ms()
      c.release(1)
      assert.equal(0, c.wait(), c.err())
      local ms = now_ms() - t0
      assert.is_true(ms >= 1500, "200 KB at 100 KB/s took only " .. ms .. " ms")
      local whole = tmp("open.ab")
      concat_files(whole, a, b)
      assert.equal(sha256(whole), sha256(output))
    end)

    it("with a rate it reads little ahead, so backpressure reaches the sender", function()
      local input, output = tmp("bp.in"), tmp("bp.out")
      write_random(input, 3000000)
      proxy:command("rate_up 300000")     -- auto cap: 64 KiB
      proxy:command("rcvbuf 65536")
      proxy:command("mss 1460")
      local c = client_phased(proxy.port, { input }, output)
      finally(c.close)
      -- the sender's socket fills early: its non-blocking writes hit EAGAIN well before
      -- 2 MiB has left it, although the proxy reads on (with the unrated 1 MiB read-ahead
      -- the sender got ~2.9 MB out; a loaded machine drains ~1.2 MB at most before)
      assert.is_true(wait_until(function() return c.err():find("first EAGAIN", 1, true) end, 10),
        c.err())
      local at = tonumber(c.err():match("first EAGAIN at sent=(%d+)"))
      assert.is_true(at < 2 * 1048576, "the sender wrote " .. at .. " bytes before its socket filled")
      local max_queued, samples = 0, 0
      for _ = 1, 20 do
        local st = proxy:stats()
        if st.queued_up > max_queued then max_queued = st.queued_up end
        samples = samples + 1
        sleep(0.03)
      end
      assert.is_true(max_queued > 0, "nothing was queued while the link was busy")
      assert.is_true(max_queued <= 65536, "the proxy held " .. max_queued .. " bytes")
      -- reset lifts the rate on the open connection: the rest goes through at once, intact
      proxy:command("reset")
      assert.equal(0, c.wait(), c.err())
      assert.equal(sha256(input), sha256(output))
    end)

    it("latency adds at least the configured delay to a round trip", function()
      local input, output = tmp("lat.in"), tmp("lat.out")
      write_random(input, 100)
      for _, case in ipairs {
        { "latency_up 250", 250 }, { "latency_down 300", 300 }, { "delay 200", 400 },
      } do
        proxy:command("reset")
        proxy:command(case[1])
        local rc, ms = client(proxy.port, input, output)
        assert.equal(0, rc)
        assert.is_true(ms >= case[2], ("%s: a round trip took only %d ms"):format(case[1], ms))
        assert.equal(sha256(input), sha256(output))
      end
      -- latency with a rate: a chunk goes at the later of arrival + latency and the pacing
      proxy:command("reset")
      proxy:command("latency_up 300")
      proxy:command("rate_up 100000")
      write_random(input, 100000)
      local rc, ms = client(proxy.port, input, output, 20)
      assert.equal(0, rc)
      assert.is_true(ms >= 1200, "100 KB at 100 KB/s + 300 ms took only " .. ms .. " ms")
      assert.equal(sha256(input), sha256(output))
    end)

    it("stop_reading: clients' writes block, answers still flow, off resumes intact", function()
      local a, b, output = tmp("stop.a"), tmp("stop.b"), tmp("stop.out")
      write_random(a, 1000000)
      write_random(b, 4000000)
      proxy:command("rcvbuf 65536")   -- small kernel buffers, so the writer blocks soon
      proxy:command("mss 1460")
      proxy:command("stall 60000")    -- the echo of part a waits in the proxy
      local before = proxy:stats()
      local c = client_phased(proxy.port, { a, b }, output)
      finally(c.close)
      assert.is_true(wait_until(function()
        return stats_delta(proxy, before).bytes_up == 1000000 end, 5))
      assert.equal("ok stop_reading on", proxy:command("stop_reading on"))
      proxy:command("stall 0")
      -- server -> client keeps flowing while nothing is read from clients
      assert.is_true(wait_until(function() return size_or_0(output) == 1000000 end, 5))
      c.release(1)
      assert.is_true(wait_until(function() return c.err():find("send blocked", 1, true) end, 10),
        c.err())
      -- a new connection is not read either
      local small, small_out = tmp("stop.small"), tmp("stop.small.out")
      write_random(small, 1000)
      local wait2 = client_bg(proxy.port, small, small_out)
      sleep(0.3)   -- an observation window: nothing may move in it
      local d = stats_delta(proxy, before)
      assert.equal(1000000, d.bytes_up)
      assert.equal(1000000, d.bytes_down)
      assert.equal(1000000, size_or_0(output))
      assert.equal(0, size_or_0(small_out))
      assert.equal(2, proxy:stats().open)   -- both connections stay open
      assert.equal("ok stop_reading off", proxy:command("stop_reading off"))
      assert.equal(0, c.wait(), c.err())
      assert.equal(0, wait2())
      local whole = tmp("stop.ab")
      concat_files(whole, a, b)
      assert.equal(sha256(whole), sha256(output))
      assert.equal(sha256(small), sha256(small_out))
    end)

    it("cut_next_answer K passes exactly K bytes of the next answer, then resets", function()
      local a, b, output = tmp("cna.a"), tmp("cna.b"), tmp("cna.out")
      write_random(a, 1000)
      write_random(b, 5000)
      local whole = tmp("cna.ab")
      concat_files(whole, a, b)
      for _, k in ipairs { 700, 0 } do
        local before = proxy:stats()
        local c = client_phased(proxy.port, { a, b }, output)
        finally(c.close)
        assert.is_true(wait_until(function() return size_or_0(output) == 1000 end, 5))
        assert.equal(1, proxy:stats().open)
        assert.equal(("ok cut_next_answer %d 1"):format(k), proxy:command("cut_next_answer " .. k))
        -- connections opened after the command are not armed
        local other = tmp("cna.other")
        local rc, _, summary = client(proxy.port, b, other)
        assert.equal(0, rc, summary)
        assert.equal(sha256(b), sha256(other))
        c.release(1)     -- the next request goes up; its answer is cut after K bytes
        assert.equal(2, c.wait(), c.err())
        assert.equal(1000 + k, size_or_0(output))
        assert.is_true(same_prefix(whole, output, 1000 + k))
        local d = stats_delta(proxy, before)
        assert.equal(1, d.cuts)
        assert.is_true(d.bytes_up > 1000 + 5000, "the request was not forwarded")
        c.close()
      end
    end)

    it("cut_next_answer counts bytes the proxy already holds and drops the rest", function()
      local a, b, output = tmp("cnq.a"), tmp("cnq.b"), tmp("cnq.out")
      write_random(a, 1000)
      write_random(b, 5000)
      local c = client_phased(proxy.port, { a, b }, output)
      finally(c.close)
      assert.is_true(wait_until(function() return size_or_0(output) == 1000 end, 5))
      proxy:command("stall 60000")
      c.release(1)
      assert.is_true(wait_until(function() return proxy:stats().queued_down == 5000 end, 5))
      proxy:command("cut_next_answer 100")
      proxy:command("stall 0")
      assert.equal(2, c.wait(), c.err())
      assert.equal(1100, size_or_0(output))
      local whole = tmp("cnq.ab")
      concat_files(whole, a, b)
      assert.is_true(same_prefix(whole, output, 1100))
    end)

    it("reset disarms cut_next_answer and resumes reading on open connections", function()
      local a, b, output = tmp("rst.a"), tmp("rst.b"), tmp("rst.out")
      write_random(a, 1000)
      write_random(b, 200000)
      local c = client_phased(proxy.port, { a, b }, output)
      finally(c.close)
      assert.is_true(wait_until(function() return size_or_0(output) == 1000 end, 5))
      proxy:command("cut_next_answer 0")
      proxy:command("stop_reading on")
      local before = proxy:stats()
      c.release(1)
      sleep(0.2)   -- an observation window: nothing may be read
      assert.equal(0, stats_delta(proxy, before).bytes_up)
      proxy:command("reset")
      assert.equal(0, c.wait(), c.err())
      local whole = tmp("rst.ab")
      concat_files(whole, a, b)
      assert.equal(sha256(whole), sha256(output))
      assert.equal(0, stats_delta(proxy, before).cuts)
    end)

    it("rcvbuf and mss set the buffers and segment size of new client sockets only", function()
      local input = tmp("buf.in")
      write_random(input, 1000)
      proxy:command("rcvbuf 32768")
      proxy:command("mss 1200")
      local c1 = client_phased(proxy.port, { input, input }, tmp("buf.out1"))
      finally(c1.close)
      assert.is_true(wait_until(function() return size_or_0(tmp("buf.out1")) == 1000 end, 5))
      local m = accepted_skmem(proxy.port)
      assert.equal(65536, m.rb, m.raw)   -- Linux doubles SO_RCVBUF / SO_SNDBUF
      assert.equal(65536, m.tb, m.raw)
      assert.is_true(m.mss <= 1200, m.raw)
      c1.close()
      assert.equal(0, c1.wait())
      -- off again: the next connection gets the kernel's defaults
      proxy:command("rcvbuf 0")
      proxy:command("mss 0")
      local c2 = client_phased(proxy.port, { input, input }, tmp("buf.out2"))
      finally(c2.close)
      assert.is_true(wait_until(function() return size_or_0(tmp("buf.out2")) == 1000 end, 5))
      m = accepted_skmem(proxy.port)
      assert.is_true(m.rb ~= 65536 and m.mss > 1200, m.raw)
      c2.close()
      assert.equal(0, c2.wait())
    end)

    it("shaping never reorders, drops or duplicates bytes", function()
      local input, output = tmp("hash.in"), tmp("hash.out")
      write_random(input, 4 * 1048576 + 4321)
      proxy:command("rate_up 4000000")
      proxy:command("rate_down 3000000")
      proxy:command("latency_up 5")
      proxy:command("latency_down 12")
      proxy:command("rcvbuf 65536")
      proxy:command("mss 1460")
      local before = proxy:stats()
      local rc, _, summary = client(proxy.port, input, output, 30)
      assert.equal(0, rc, summary)
      assert.equal(size(input), size(output))
      assert.equal(sha256(input), sha256(output))
      local d = stats_delta(proxy, before)
      assert.equal(size(input), d.bytes_up)
      assert.equal(size(input), d.bytes_down)
      -- an odd tiny queue cap chops the stream into odd pieces: still intact
      proxy:command("queue_cap 3001")
      proxy:command("rate_up 2000000")
      write_random(input, 1048576 + 7)
      rc, _, summary = client(proxy.port, input, output, 30)
      assert.equal(0, rc, summary)
      assert.equal(sha256(input), sha256(output))
    end)
  end)

  it("fails clearly when it cannot start", function()
    local ok, err = pcall(P.start, { target = "127.0.0.1:" .. echo.port, listen = proxy.port })
    assert.is_false(ok)
    assert.matches("exited before it was ready", err)
  end)

  it("stop() ends the process and is idempotent", function()
    local p = P.start{ target = "127.0.0.1:" .. echo.port }
    local pid = p.pid
    p:stop()
    p:stop()
    assert.is_nil(io.open("/proc/" .. pid .. "/status"))
  end)
end)
