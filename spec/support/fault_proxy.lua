-- Drives tools/fault_proxy.c (a loopback TCP proxy that injects faults) from specs.
--
--   local P = require "support.fault_proxy"
--   local proxy = P.start{ target = "127.0.0.1:" .. port }  -- binary = "build/fault-proxy"
--   proxy.port, proxy.endpoint                -- 49152, "http://127.0.0.1:49152"
--   proxy:command("cut_after 1000")           -- "ok cut_after 1000"; raises on "err ..."
--   proxy:show()                              -- { rate_up = 0, stop_reading = "off", ... }
--   proxy:stats()                             -- { conns = 3, open = 1, cuts = 1, ... }
--   proxy:stop()                              -- SIGTERM, wait for exit (idempotent)
--
-- P.start_echo{} starts the same binary as an echo server (for the proxy's own specs),
-- P.build(binary) compiles it when it is missing or older than tools/fault_proxy.c.
--
-- Only the Lua standard library, sh, bash and coreutils are used. The process is spawned with
-- io.popen(cmd, "w"): it is a direct child of this Lua process (the shell execs into it), so
-- closing the handle reaps it, and it runs with --exit-on-stdin-eof, so it also exits if this
-- process dies without calling stop(). Lua has no sockets: each control command is one short
-- bash connection through /dev/tcp, bounded by `timeout`.
local M = {}

local START_TIMEOUT = 5     -- seconds to wait for "listening <port>"
local COMMAND_TIMEOUT = 5   -- seconds for one control command

-- Paths relative to the repository root, wherever busted runs from.
local here = debug.getinfo(1, "S").source
local root = here:match("^@(.-)spec/support/fault_proxy%.lua$") or ""
M.source = root .. "tools/fault_proxy.c"
M.default_binary = root .. "build/fault-proxy"
M.cflags = "-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -pthread"

local function q(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end
M.quote = q

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end

-- Runs a shell command, returns its stdout and its exit code.
local function capture(cmd)
  local h = assert(io.popen(cmd, "r"))
  local out = h:read("a")
  local _, how, code = h:close()
  if how == "signal" then code = 128 + code end
  return out, code
end
M.capture = capture

local built = {}

-- Compiles `binary` from tools/fault_proxy.c unless it is present and not older than it.
function M.build(binary)
  binary = binary or M.default_binary
  if built[binary] then return binary end
  local fresh = os.execute(("[ -x %s ] && ! [ %s -nt %s ]"):format(q(binary), q(M.source), q(binary)))
  if not fresh then
    local dir = binary:match("^(.*)/[^/]*$") or "."
    local tmp = ("%s.tmp.%d%d"):format(binary, os.time(), math.random(1, 1e6))
    local out, code = capture(("mkdir -p %s && ${CC:-cc} %s -o %s %s 2>&1 && mv -f %s %s 2>&1 || { rm -f %s; exit 1; }")
      :format(q(dir), M.cflags, q(tmp), q(M.source), q(tmp), q(binary), q(tmp)))
    if code ~= 0 then
      error(("fault_proxy: building %s from %s failed:\n%s"):format(binary, M.source, out), 2)
    end
  end
  built[binary] = true
  return binary
end

local Proc = {}
Proc.__index = Proc

local function alive_test(pid)
  return ("[ -r /proc/%d/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/%d/status"):format(pid, pid)
end

-- Spawns `binary args` in the background and waits until it prints "listening <port>".
local function spawn(binary, args, what)
  local base = os.tmpname()
  local p = setmetatable({
    what = what, binary = binary,
    _base = base, _out = base .. ".out", _err = base .. ".err", _pidf = base .. ".pid",
  }, Proc)
  local cmd = ("echo $$ > %s; exec %s %s --exit-on-stdin-eof > %s 2> %s")
    :format(q(p._pidf), q(binary), args, q(p._out), q(p._err))
  p._handle = assert(io.popen(cmd, "w"))
  local _, code = capture(([=[timeout %d sh -c '
    while :; do
      grep -q "^listening " "$1" 2>/dev/null && exit 0
      if [ -s "$2" ]; then
        pid=$(cat "$2")
        { [ -r /proc/$pid/status ] && ! grep -q "^State:[[:space:]]*Z" /proc/$pid/status; } || exit 3
      fi
      sleep 0.02
    done' _ %s %s]=]):format(START_TIMEOUT, q(p._out), q(p._pidf)))
  p.pid = tonumber((slurp(p._pidf) or ""):match("%d+"))
  if code ~= 0 then
    local stderr = slurp(p._err) or ""
    p:stop()
    if code == 3 then
      error(("fault_proxy: %s exited before it was ready: %s"):format(what, stderr), 3)
    end
    error(("fault_proxy: %s did not print 'listening <port>' within %d s (%s %s)%s")
      :format(what, START_TIMEOUT, binary, args, stderr ~= "" and (": " .. stderr) or ""), 3)
  end
  local out = slurp(p._out) or ""
  p.port = tonumber(out:match("listening (%d+)"))
  p.control_port = tonumber(out:match("control (%d+)"))
  p.endpoint = "http://127.0.0.1:" .. p.port
  return p
end

-- Shaping options of start{} and the command-line flags they become (see the header of
-- tools/fault_proxy.c): rates in bytes per second, latencies in ms, sizes in bytes.
local SHAPING = {
  rate_up = "--rate-up", rate_down = "--rate-down", latency_up = "--latency-up",
  latency_down = "--latency-down", delay = "--delay", queue_cap = "--queue-cap",
  rcvbuf = "--rcvbuf", mss = "--mss",
}

-- Starts a proxy. opts: target ("127.0.0.1:PORT", required), binary, listen (port, default 0
-- = any), seed, verbose (log connections and commands to the stderr file, see :log()), and
-- the shaping options above (e.g. rate_up = 2500000, latency_up = 25, rcvbuf = 65536), so
-- that the proxy is shaped from its first connection. `reset` clears those too.
function M.start(opts)
  opts = opts or {}
  assert(type(opts.target) == "string" and opts.target:match("^[%w.]+:%d+$"),
    "fault_proxy.start: target must be \"127.0.0.1:PORT\"")
  local binary = M.build(opts.binary)
  local args = ("--listen %d --target %s --control 0"):format(opts.listen or 0, q(opts.target))
  if opts.seed then args = args .. (" --seed %d"):format(opts.seed) end
  local names = {}
  for k in pairs(SHAPING) do names[#names + 1] = k end
  table.sort(names)
  for _, k in ipairs(names) do
    local v = opts[k]
    if v ~= nil then
      assert(type(v) == "number" and v >= 0 and v % 1 == 0,
        ("fault_proxy.start: %s must be a non-negative integer"):format(k))
      args = args .. (" %s %d"):format(SHAPING[k], v)
    end
  end
  if opts.verbose then args = args .. " -v" end
  local p = spawn(binary, args, "proxy")
  if not p.control_port then
    p:stop()
    error("fault_proxy: the proxy printed no control port", 2)
  end
  return p
end

-- Starts the binary as an echo server on 127.0.0.1 (for testing the proxy itself).
function M.start_echo(opts)
  opts = opts or {}
  local binary = M.build(opts.binary)
  return spawn(binary, ("--echo-server %d"):format(opts.port or 0), "echo server")
end

-- Sends one control command; returns the answer line ("ok ..."), raises on "err ..." or when
-- no answer comes within COMMAND_TIMEOUT seconds.
function Proc:command(cmd)
  assert(self.control_port, "fault_proxy: no control port")
  assert(not self._stopped, "fault_proxy: the proxy was stopped")
  assert(type(cmd) == "string" and not cmd:find("[\r\n]"), "fault_proxy: one command, one line")
  local out, code = capture(([[timeout %d bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 9
printf "%%s\n" "$2" >&3
IFS= read -r line <&3 || exit 8
printf "%%s\n" "$line"' _ %d %s 2>&1]]):format(COMMAND_TIMEOUT, self.control_port, q(cmd)))
  local line = out:match("^(ok[^\n]*)") or out:match("^(err[^\n]*)")
  if not line then
    error(("fault_proxy: no answer to %q from control port %d (exit %s): %s")
      :format(cmd, self.control_port, tostring(code), out), 2)
  end
  if line:sub(1, 3) == "err" then
    error(("fault_proxy: %q -> %s"):format(cmd, line), 2)
  end
  return line
end

-- { conns = N, open = N, cuts = N, bytes_up = N, bytes_down = N, refused = N,
--   queued_up = N, queued_down = N }
function Proc:stats()
  local t = {}
  for k, v in self:command("stats"):gmatch("(%w[%w_]*)=(%d+)") do t[k] = tonumber(v) end
  return t
end

-- The current settings: numbers as numbers, the rest ("on", "0.5,1,10") as strings.
function Proc:show()
  local t = {}
  for k, v in self:command("show"):gmatch("(%w[%w_]*)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

-- What the process wrote on stderr so far (with verbose = true: one line per event).
function Proc:log()
  return slurp(self._err) or ""
end

-- Stops the process (SIGTERM, then SIGKILL after 3 s) and reaps it. Safe to call twice.
function Proc:stop()
  if self._stopped then return end
  self._stopped = true
  if self.pid then
    os.execute(("kill -TERM %d 2>/dev/null; timeout 3 sh -c %s || kill -KILL %d 2>/dev/null")
      :format(self.pid, q(("while %s; do sleep 0.01; done"):format(alive_test(self.pid))), self.pid))
  end
  for _, f in ipairs { self._out, self._err, self._pidf, self._base } do os.remove(f) end
  if self._handle then
    -- Closes its stdin (it exits on EOF too) and waits for it. At exit the handle may have
    -- been finalized already, hence the pcall.
    pcall(self._handle.close, self._handle)
    self._handle = nil
  end
end

Proc.__gc = Proc.stop
Proc.__close = Proc.stop

-- Shared with support/fault_server.lua, whose processes have the same fields and lifecycle.
M.Proc = Proc
M.slurp = slurp
M.alive_test = alive_test

return M
