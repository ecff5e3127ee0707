-- Runs real nginx (Debian nginx-light + libnginx-mod-http-lua, the LuaJIT build of s2.core in
-- build-jit/) for the OpenResty specs.
--
--   local N = require "support.nginx"
--   assert(N.available())                          -- or: nil, "what is missing"
--   local srv = N.start{ conf = "examples/openresty/nginx.conf", env = { S2_BASIN = "b" } }
--   srv.port, srv.prefix, srv:url("/ping")
--   srv:get("/ping")                               -- body, http_code (curl, bounded by -m)
--   srv:errors()                                   -- the [error]/[alert]/[crit] lines of error.log
--   srv:stop()                                     -- TERM, then KILL after 5 s; removes the prefix
--
-- The configuration is a template: @PREFIX@ (a fresh temporary directory: pid, logs, temp
-- paths), @REPO@ (the checkout) and @PORT@ (the listening port) are filled in. The master runs
-- in the foreground of a background shell (`daemon off`), started without this process's
-- LD_PRELOAD (the ASan suite preloads libasan, which nginx must not get).
local M = {}

local here = debug.getinfo(1, "S").source
local root = here:match("^@(.-)spec/support/nginx%.lua$") or ""
if root == "" then root = "./" end

local function q(s)
  return "'" .. (tostring(s):gsub("'", "'\\''")) .. "'"
end

local function sh(cmd)
  local p = assert(io.popen("unset LD_PRELOAD; " .. cmd))
  local out = p:read("a")
  p:close()
  return out
end
M.sh = sh

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return nil end
  local s = f:read("a")
  f:close()
  return s
end
M.slurp = slurp

local function abs_root()
  return (sh("cd " .. q(root) .. " && pwd"):gsub("%s+$", ""))
end

--- true, or nil and what is missing.
function M.available()
  local missing = {}
  if not os.execute("test -x /usr/sbin/nginx") then missing[#missing + 1] = "nginx-light" end
  if not os.execute("test -f /usr/lib/nginx/modules/ngx_http_lua_module.so") then
    missing[#missing + 1] = "libnginx-mod-http-lua"
  end
  if not os.execute("test -f " .. q(root .. "build-jit/s2/core.so")) then
    missing[#missing + 1] = "build-jit/s2/core.so (`make luajit`)"
  end
  if #missing > 0 then return nil, "needs " .. table.concat(missing, ", ") .. " (make test provides them)" end
  return true
end

local Srv = {}
Srv.__index = Srv

local function alive(pid)
  return pid and os.execute(("[ -r /proc/%d/status ] && ! grep -q '^State:[[:space:]]*Z' /proc/%d/status")
    :format(pid, pid))
end

-- The pids of the master's children (the workers).
function Srv:workers()
  local pids = {}
  local list = slurp(("/proc/%d/task/%d/children"):format(self.pid, self.pid)) or ""
  for p in list:gmatch("%d+") do pids[#pids + 1] = tonumber(p) end
  return pids
end

function Srv:url(path)
  return ("http://127.0.0.1:%d%s"):format(self.port, path)
end

--- GET (or, with `body`, POST) path; returns the body and the HTTP code (0 when curl failed).
function Srv:get(path, opts)
  opts = opts or {}
  local out = os.tmpname()
  local data = opts.body and ("--data-binary " .. q(opts.body)) or ""
  local code = sh(("curl -s -m %d %s -o %s -w '%%{http_code}' %s")
    :format(opts.timeout or 15, data, q(out), q(self:url(path))))
  local body = slurp(out) or ""
  os.remove(out)
  return body, tonumber(code) or 0
end

--- error.log lines at level error or worse, as one string ("" when there are none).
function Srv:errors()
  local log = slurp(self.prefix .. "/error.log") or ""
  local bad = {}
  for line in log:gmatch("[^\n]+") do
    if line:match("%[error%]") or line:match("%[alert%]") or line:match("%[crit%]") or line:match("%[emerg%]") then
      bad[#bad + 1] = line
    end
  end
  return table.concat(bad, "\n")
end

function Srv:log()
  return (slurp(self.prefix .. "/error.log") or "") .. (slurp(self.prefix .. "/stdout.log") or "")
end

function Srv:stop()
  if self._stopped then return end
  self._stopped = true
  if self.pid then
    local pids = self:workers()
    os.execute(("kill -TERM %d 2>/dev/null"):format(self.pid))
    -- A worker stuck in a blocking call exits only when the call returns: bounded wait, then KILL.
    local all = { self.pid }
    for _, p in ipairs(pids) do all[#all + 1] = p end
    for _, p in ipairs(all) do
      os.execute(("timeout 5 sh -c 'while [ -r /proc/%d/status ] && ! grep -q \"^State:[[:space:]]*Z\" /proc/%d/status; do sleep 0.02; done' || kill -KILL %d 2>/dev/null")
        :format(p, p, p))
    end
  end
  if self.prefix and self.prefix:match("^/tmp/") then os.execute("rm -rf " .. q(self.prefix)) end
end
Srv.__gc = Srv.stop

--- Starts nginx. opts: conf (template path, relative to the checkout) or conf_text; env (table
-- of environment variables for nginx; they must also be listed with `env` in the conf);
-- port (default: a random free one, retried when taken).
function M.start(opts)
  assert(M.available())
  local repo = abs_root()
  local template = opts.conf_text or assert(slurp(repo .. "/" .. opts.conf), "no conf " .. tostring(opts.conf))
  local env = {}
  for k, v in pairs(opts.env or {}) do env[#env + 1] = k .. "=" .. q(v) end
  table.sort(env)
  local root_user = sh("id -u"):match("^0%s*$")
  local last_log
  for _ = 1, 5 do
    local prefix = sh("mktemp -d /tmp/s2-nginx.XXXXXX"):gsub("%s+$", "")
    local port = opts.port or math.random(20000, 50000)
    local conf = template:gsub("@PREFIX@", prefix):gsub("@REPO@", repo):gsub("@PORT@", tostring(port))
    -- root runs the specs; the worker stays root too so that it can read the checkout
    if root_user then conf = "user root;\n" .. conf end
    local f = assert(io.open(prefix .. "/nginx.conf", "w"))
    f:write(conf)
    f:close()
    local srv = setmetatable({ prefix = prefix, port = port }, Srv)
    os.execute(("unset LD_PRELOAD; cd %s && env %s /usr/sbin/nginx -p %s -c %s/nginx.conf >%s/stdout.log 2>&1 & echo $! > %s/master.pid")
      :format(q(prefix), table.concat(env, " "), q(prefix), q(prefix), q(prefix), q(prefix)))
    srv.pid = tonumber((slurp(prefix .. "/master.pid") or ""):match("%d+"))
    for _ = 1, 200 do
      local _, code = srv:get("/ping", { timeout = 1 })
      if code == 200 then return srv end
      if not alive(srv.pid) then break end
      os.execute("sleep 0.05")
    end
    last_log = srv:log()
    srv:stop()
    if opts.port or not last_log:match("Address already in use") then break end
  end
  error("nginx did not start: " .. tostring(last_log))
end

return M
