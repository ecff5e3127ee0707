-- Starts tools/null_sink.c (the benchmarks' null S2 server) from specs.
--
--   local N = require "support.null_sink"
--   local sink = N.start{ read_record_size = 128 }   -- binary = "build/null-sink", verbose = true
--   sink.port, sink.endpoint                          -- 49152, "http://127.0.0.1:49152"
--   sink:stats()                                      -- GET /sink/stats, decoded
--   sink:stop()                                       -- SIGTERM, wait for exit (idempotent)
--
-- N.build(binary) runs `make build/null-sink` when the binary is missing or older than one
-- of its sources. The process is a direct child of this Lua process (io.popen(cmd, "w"))
-- running with --exit-on-stdin-eof, so it exits with us even without stop(); the process
-- fields and stop() are support/fault_proxy.lua's.
local P = require "support.fault_proxy"
local cjson = require "cjson"

local M = {}

local START_TIMEOUT = 5

local here = debug.getinfo(1, "S").source
local root = here:match("^@(.-)spec/support/null_sink%.lua$") or ""
M.sources = {
  root .. "tools/null_sink.c", root .. "csrc/s2_buf.c", root .. "csrc/s2_json.c", root .. "csrc/s2_error.c",
  root .. "csrc/s2_proto.c", root .. "csrc/s2_frame.c", root .. "csrc/s2.h", root .. "csrc/s2_internal.h",
}
M.default_binary = os.getenv "NULL_SINK_BINARY" or (root .. "build/null-sink")

local q, capture, slurp = P.quote, P.capture, P.slurp

function M.build(binary)
  binary = binary or M.default_binary
  local checks = { ("[ -x %s ]"):format(q(binary)) }
  for _, src in ipairs(M.sources) do checks[#checks + 1] = ("! [ %s -nt %s ]"):format(q(src), q(binary)) end
  if not os.execute(table.concat(checks, " && ")) then
    local out, code = capture(("make -s -C %s NULL_SINK=%s %s 2>&1"):format(q(root ~= "" and root or "."),
      q(binary), q(binary)))
    if code ~= 0 then error(("null_sink: building %s failed:\n%s"):format(binary, out), 2) end
  end
  return binary
end

local Sink = setmetatable({}, { __index = P.Proc })
Sink.__index = Sink
Sink.__gc = P.Proc.stop
Sink.__close = P.Proc.stop

-- opts: binary, port (0 = any), read_record_size, verbose.
function M.start(opts)
  opts = opts or {}
  local binary = M.build(opts.binary)
  local args = ("--port %d"):format(opts.port or 0)
  if opts.read_record_size then args = args .. (" --read-record-size %d"):format(opts.read_record_size) end
  if opts.verbose then args = args .. " -v" end
  local base = os.tmpname()
  local s = setmetatable({
    what = "null_sink", binary = binary,
    _base = base, _out = base .. ".out", _err = base .. ".err", _pidf = base .. ".pid",
  }, Sink)
  -- Without the ASan suite's LD_PRELOAD: the sink and curl are not instrumented (curl hung
  -- in a futex at start with libasan preloaded, past its own --max-time).
  s._handle = assert(io.popen(("unset LD_PRELOAD; echo $$ > %s; exec %s %s --exit-on-stdin-eof > %s 2> %s")
    :format(q(s._pidf), q(binary), args, q(s._out), q(s._err)), "w"))
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
    error(("null_sink: %s did not start (exit %s)%s"):format(binary, tostring(code),
      stderr ~= "" and (": " .. stderr) or ""), 2)
  end
  s.port = tonumber((slurp(s._out) or ""):match("listening (%d+)"))
  s.endpoint = "http://127.0.0.1:" .. s.port
  return s
end

-- The server's counters (GET /sink/stats through curl).
function Sink:stats()
  local out, code = capture(("unset LD_PRELOAD; timeout -s KILL 10 curl -fsS --max-time 5 %s/sink/stats"):format(q(self.endpoint)))
  if code ~= 0 then error("null_sink: stats failed: " .. out, 2) end
  return cjson.decode(out)
end

return M
