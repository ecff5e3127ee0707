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
