-- Starts extra s2-lite servers for specs that need one of their own (TLS, a server to stop).
-- The suite's shared server comes from scripts/with-s2-lite.sh; this is for the others.
local M = {}

-- Shell commands run without LD_PRELOAD: under `make asan` the sanitizer runtime is
-- preloaded for the Lua process only (curl, for one, hangs with it).
local function sh(cmd)
  local p = assert(io.popen("unset LD_PRELOAD; " .. cmd))
  local out = p:read("a")
  p:close()
  return (out:gsub("%s+$", ""))
end

local function binary()
  return sh("scripts/install-s2-lite.sh")
end

local function free_port()
  for _ = 1, 50 do
    local port = math.random(20000, 50000)
    if sh(("(exec 3<>/dev/tcp/127.0.0.1/%d) 2>/dev/null && echo busy || echo free"):format(port))
        == "free" then
      return port
    end
  end
  error("no free port")
end

local function read_log(path)
  local f = io.open(path)
  local text = f and f:read("a") or ""
  if f then f:close() end
  return text
end

-- One try on a free port: the server, or nil when the port was taken between the check and
-- the bind (another process on this shared machine), or an error.
local function try_start(opts)
  local port = free_port()
  local args = ("--port %d"):format(port)
  local scheme = "http"
  if opts.tls_cert then
    args = args .. (" --tls-cert %s --tls-key %s"):format(opts.tls_cert, opts.tls_key)
    scheme = "https"
  end
  local log = os.tmpname()
  local pid = sh(("RUST_LOG=warn %s %s >%s 2>&1 & echo $!"):format(binary(), args, log))
  local server = { port = port, pid = pid, log = log,
                   endpoint = ("%s://localhost:%d"):format(scheme, port) }
  function server:stop()
    os.execute(("kill %s 2>/dev/null; for i in $(seq 1 20); do kill -0 %s 2>/dev/null || break; sleep 0.1; done; kill -9 %s 2>/dev/null")
      :format(self.pid, self.pid, self.pid))
    os.remove(self.log)
  end
  for _ = 1, 300 do
    local ok = sh(("curl -ks -m 1 -o /dev/null -w '%%{http_code}' %s://127.0.0.1:%d/health")
      :format(scheme, port))
    if ok == "200" then return server end
    if sh(("kill -0 %s 2>/dev/null && echo up || echo gone"):format(pid)) == "gone"
        and read_log(log):find("Address already in use", 1, true) then
      server:stop()
      return nil
    end
    os.execute "sleep 0.1"
  end
  local text = read_log(log)
  server:stop()
  error("s2-lite did not come up: " .. text)
end

--- start{ tls_cert =, tls_key = } -> server with .port, .endpoint, :stop()
function M.start(opts)
  opts = opts or {}
  for _ = 1, 5 do
    local server = try_start(opts)
    if server then return server end
  end
  error("s2-lite did not come up: every port tried was taken")
end

--- A CA and a server certificate for localhost/127.0.0.1, made with the openssl CLI.
-- Returns { dir =, ca =, cert =, key = }.
function M.make_certs()
  local dir = sh("mktemp -d")
  local script = ([[
set -e
cd %s
openssl req -x509 -newkey rsa:2048 -nodes -keyout ca.key -out ca.pem -days 2 -subj /CN=s2-test-ca 2>/dev/null
openssl req -newkey rsa:2048 -nodes -keyout server.key -out server.csr -subj /CN=localhost 2>/dev/null
printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\nbasicConstraints=CA:FALSE\nkeyUsage=digitalSignature,keyEncipherment\nextendedKeyUsage=serverAuth\n' > ext.cnf
openssl x509 -req -in server.csr -CA ca.pem -CAkey ca.key -CAcreateserial -out server.pem -days 2 -extfile ext.cnf 2>/dev/null
echo ok
]]):format(dir)
  assert(sh(script) == "ok", "openssl failed")
  return { dir = dir, ca = dir .. "/ca.pem", cert = dir .. "/server.pem", key = dir .. "/server.key" }
end

return M
