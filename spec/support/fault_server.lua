-- Drives tools/fault_server.c (a scriptable S2 test server that injects faults) from specs.
--
--   local F = require "support.fault_server"
--   local server = F.start()                   -- binary = "build/fault-server", verbose = true
--   server.port, server.endpoint               -- 49152, "http://127.0.0.1:49152"
--   server:command("rst_after 2")              -- "ok queued #3 rst_after 2 ..."; raises on "err"
--   server:stats()                             -- { requests = 3, sessions = 1, acks = 2, reads = 1,
--                                              --   last_event_id = "2,3,39" or "-", ... }
--   server:records("s")                        -- { count = 10, next_seq = 10, hash = "..." }
--   server:bodies("s")                         -- { [0] = "body0", [1] = "body1", ... }, count
--   server:last_request()                      -- { n = 4, method = "GET", body = "",
--                                              --   path = "/v1/access-tokens?prefix=a" }
--   server:stop()                              -- SIGTERM, wait for exit (idempotent)
--
-- F.build(binary) compiles the server (tools/fault_server.c with the core's codec sources)
-- when the binary is missing or older than any of its sources; `make build/fault-server`
-- does the same.
--
-- Like support/fault_proxy.lua: only the Lua standard library, sh, bash and coreutils. The
-- process is a direct child of this Lua process (io.popen(cmd, "w"), the shell execs into
-- it) running with --exit-on-stdin-eof, so it exits with us even without stop(). Each
-- control command is one short bash connection through /dev/tcp, bounded by `timeout`.
local P = require "support.fault_proxy" -- its shell helpers (quote, capture)

local M = {}

local START_TIMEOUT = 5     -- seconds to wait for "listening <port>"
local COMMAND_TIMEOUT = 10  -- seconds for one control command (a dump can be long)

local here = debug.getinfo(1, "S").source
local root = here:match("^@(.-)spec/support/fault_server%.lua$") or ""
M.sources = {
  root .. "tools/fault_server.c", root .. "csrc/s2_buf.c", root .. "csrc/s2_json.c", root .. "csrc/s2_error.c",
  root .. "csrc/s2_proto.c", root .. "csrc/s2_frame.c",
}
M.header = root .. "csrc/s2.h"
M.default_binary = root .. "build/fault-server"
M.cflags = "-std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -O2"

local q, capture, slurp, alive_test = P.quote, P.capture, P.slurp, P.alive_test

local built = {}

-- Compiles `binary` unless it exists and is not older than any source.
function M.build(binary)
  binary = binary or M.default_binary
  if built[binary] then return binary end
  local checks = { ("[ -x %s ]"):format(q(binary)) }
  for _, src in ipairs(M.sources) do checks[#checks + 1] = ("! [ %s -nt %s ]"):format(q(src), q(binary)) end
  checks[#checks + 1] = ("! [ %s -nt %s ]"):format(q(M.header), q(binary))
  if not os.execute(table.concat(checks, " && ")) then
    local dir = binary:match("^(.*)/[^/]*$") or "."
    local tmp = ("%s.tmp.%d%d"):format(binary, os.time(), math.random(1, 1e6))
    local srcs = {}
    for i, src in ipairs(M.sources) do srcs[i] = q(src) end
    local cmd = ([[mkdir -p %s && PC=${PKG_CONFIG:-pkg-config} && ${CC:-cc} %s -I%s $($PC --cflags libnghttp2 libzstd zlib) -o %s %s $($PC --libs libnghttp2 libzstd zlib) 2>&1 && mv -f %s %s 2>&1 || { rm -f %s; exit 1; }]])
      :format(q(dir), M.cflags, q(root .. "csrc"), q(tmp), table.concat(srcs, " "), q(tmp),
        q(binary), q(tmp))
    local out, code = capture(cmd)
    if code ~= 0 then
      error(("fault_server: building %s failed:\n%s"):format(binary, out), 2)
    end
  end
  built[binary] = true
  return binary
end

local Server = {}
Server.__index = Server

-- Starts a server. opts: binary, port (default 0 = any), verbose (log requests, frames and
-- commands to the stderr file, see :log()).
function M.start(opts)
  opts = opts or {}
  local binary = M.build(opts.binary)
  local args = ("--port %d --control 0"):format(opts.port or 0)
  if opts.verbose then args = args .. " -v" end
  local base = os.tmpname()
  local s = setmetatable({
    binary = binary,
    _base = base, _out = base .. ".out", _err = base .. ".err", _pidf = base .. ".pid",
  }, Server)
  local cmd = ("echo $$ > %s; exec %s %s --exit-on-stdin-eof > %s 2> %s")
    :format(q(s._pidf), q(binary), args, q(s._out), q(s._err))
  s._handle = assert(io.popen(cmd, "w"))
  local _, code = capture(([=[timeout %d sh -c '
    while :; do
      grep -q "^listening " "$1" 2>/dev/null && exit 0
      if [ -s "$2" ]; then
        pid=$(cat "$2")
        { [ -r /proc/$pid/status ] && ! grep -q "^State:[[:space:]]*Z" /proc/$pid/status; } || exit 3
      fi
      sleep 0.02
    done' _ %s %s]=]):format(START_TIMEOUT, q(s._out), q(s._pidf)))
  s.pid = tonumber((slurp(s._pidf) or ""):match("%d+"))
  if code ~= 0 then
    local stderr = slurp(s._err) or ""
    s:stop()
    error(("fault_server: %s did not start (exit %s)%s"):format(binary, tostring(code),
      stderr ~= "" and (": " .. stderr) or ""), 2)
  end
  local out = slurp(s._out) or ""
  s.port = tonumber(out:match("listening (%d+)"))
  s.control_port = tonumber(out:match("control (%d+)"))
  s.endpoint = "http://127.0.0.1:" .. s.port
  return s
end

-- Sends one control command. Returns the answer line ("ok ..."), and for `dump` also the
-- lines before it (a table); raises on "err ..." or when no answer comes in time.
function Server:command(cmd)
  assert(not self._stopped, "fault_server: the server was stopped")
  assert(type(cmd) == "string" and not cmd:find("[\r\n]"), "fault_server: one command, one line")
  local out, code = capture(([[timeout %d bash -c 'exec 3<>"/dev/tcp/127.0.0.1/$1" || exit 9
printf "%%s\n" "$2" >&3
while IFS= read -r line <&3; do
  printf "%%s\n" "$line"
  case $line in ok*|err*) exit 0;; esac
done
exit 8' _ %d %s 2>&1]]):format(COMMAND_TIMEOUT, self.control_port, q(cmd)))
  local lines = {}
  for l in out:gmatch("[^\n]+") do lines[#lines + 1] = l end
  local last = lines[#lines] or ""
  if code ~= 0 or not (last:match("^ok") or last:match("^err")) then
    error(("fault_server: no answer to %q from control port %d (exit %s): %s")
      :format(cmd, self.control_port, tostring(code), out:sub(1, 500)), 2)
  end
  if last:sub(1, 3) == "err" then
    error(("fault_server: %q -> %s"):format(cmd, last), 2)
  end
  lines[#lines] = nil
  return last, lines
end

local function fields(line)
  local t = {}
  for k, v in line:gmatch("([%w_]+)=(%S+)") do t[k] = tonumber(v) or v end
  return t
end

-- { connections =, requests =, sessions =, unary =, tail =, health =, other =, frames =,
--   acks =, records =, terminal =, faults_taken =, queued =, gap_ms =, reads =,
--   last_event_id = (a string, "-" for none), read_sessions =, read_conns =, read_batches =,
--   heartbeats = }
function Server:stats()
  return fields(self:command("stats"))
end

-- { count =, next_seq =, hash = } of the records the server accepted on `stream`.
function Server:records(stream)
  return fields(self:command("records " .. stream))
end

-- The accepted bodies of `stream` by seq num (from 0), and their count.
function Server:bodies(stream)
  local _, lines = self:command("dump " .. stream)
  local t = {}
  for _, l in ipairs(lines) do
    local seq, hex = l:match("^(%d+) ?(%x*)$")
    assert(seq, "fault_server: bad dump line " .. l)
    t[tonumber(seq)] = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end)
  end
  return t, #lines
end

-- What the last request that ended sent: { n = requests ended so far (not /health),
-- method =, path = (query string included, as received), body = (the raw bytes) }; method
-- and path are nil before the first request.
function Server:last_request()
  local line = self:command("last_request")
  local n, method, path, hex = line:match("^ok n=(%d+) method=(%S+) path=(%S+) body=(%x*)$")
  assert(n, "fault_server: bad last_request answer " .. line)
  n = tonumber(n)
  return {
    n = n, method = n > 0 and method or nil, path = n > 0 and path or nil,
    body = hex:gsub("%x%x", function(h) return string.char(tonumber(h, 16)) end),
  }
end

-- log() and stop() as for the proxy: the same process fields and lifecycle.
Server.log = P.Proc.log
Server.stop = P.Proc.stop
Server.__gc = Server.stop
Server.__close = Server.stop

return M
