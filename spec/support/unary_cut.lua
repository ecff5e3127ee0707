-- Fixture for the specs of unary appends on a reused connection that dies: s2-lite (the
-- suite's own over http://, or one of its own with TLS) behind the fault proxy, a direct
-- client to set up and check the streams, and clients through the proxy.
--
--   local env = require("support.unary_cut").start { tls = true }
--   env:new_proxy()                                 -- a fresh proxy for each test
--   local c = env:client("no_side_effects", 1)      -- through the proxy
--   local stream, name = env:stream(c)              -- a fresh stream, seen by c
--   env:cut_next_answer(0)                          -- arms the one open connection
--   env:bodies(name)                                -- the stream's bodies, read directly
--   env:stop()
local H = require "helper"
local P = require "support.fault_proxy"
local S = require "support.s2lite"

local M = {}
local Env = {}
Env.__index = Env

local must = H.must
M.must = must

function M.start(opts)
  local env = setmetatable({ tls = opts.tls and true or false }, Env)
  local ok, err = pcall(function()
    local target
    if env.tls then
      env.certs = S.make_certs()
      -- s2lite picks a free port, which another process can take before s2-lite binds it
      for try = 1, 3 do
        local started, server = pcall(S.start, { tls_cert = env.certs.cert, tls_key = env.certs.key })
        if started then env.server = server break end
        if try == 3 or not tostring(server):find("Address already in use", 1, true) then
          error(server, 0)
        end
      end
      target = "127.0.0.1:" .. env.server.port
      env.direct = H.client { account_endpoint = env.server.endpoint,
                              basin_endpoint = env.server.endpoint, ca_file = env.certs.ca }
    else
      target = H.endpoint():gsub("^http://", ""):gsub("/.*$", "")
      env.direct = H.client()
    end
    env.target = target
    env.basin = select(2, H.new_basin(env.direct, env.tls and "cuttls" or "cut"))
  end)
  if not ok then
    env:stop()
    error(err, 2)
  end
  return env
end

-- A new proxy (the previous one stopped), so that the connections open through it are
-- those of the clients made after this call. Call it before each test.
function Env:new_proxy()
  if self.proxy then self.proxy:stop() end
  self.proxy = P.start { target = self.target }
  -- 127.0.0.1 is in the test certificate's names, and the proxy listens there only.
  self.endpoint = ("%s://127.0.0.1:%d"):format(self.tls and "https" or "http", self.proxy.port)
end

-- A client through the current proxy. Backoffs are short: the specs count copies, not time.
function Env:client(policy, attempts)
  return H.client { account_endpoint = self.endpoint, basin_endpoint = self.endpoint,
                    ca_file = self.certs and self.certs.ca, request_timeout = 10,
                    retry = { max_attempts = attempts, min_base_delay = 0.01,
                              max_base_delay = 0.05, append_retry_policy = policy } }
end

-- A fresh stream of the fixture's basin, as `client` sees it.
function Env:stream(client)
  local name = H.unique_name("s")
  must(self.direct:basin(self.basin):create_stream(name))
  return client:basin(self.basin):stream(name), name
end

-- Arms a cut of every connection open now after `k` more server->client bytes; returns how
-- many connections were armed.
function Env:cut_next_answer(k)
  local line = self.proxy:command("cut_next_answer " .. k)
  return tonumber(line:match("^ok cut_next_answer %d+ (%d+)"))
end

-- Every body in the stream, in order, read without the proxy.
function Env:bodies(name)
  local stream = self.direct:basin(self.basin):stream(name)
  local tail = must(stream:check_tail()).seq_num
  local out = {}
  while #out < tail do
    local batch = must(stream:read { seq_num = #out, count = 1000 })
    assert(#batch.records > 0, "an empty read below the tail")
    for _, r in ipairs(batch.records) do out[#out + 1] = r.body end
  end
  return out
end

function Env:stop()
  if self.proxy then self.proxy:stop() end
  if self.server then self.server:stop() end
  if self.certs then os.execute("rm -rf " .. P.quote(self.certs.dir)) end
  self.proxy, self.server, self.certs = nil, nil, nil
end

return M
