-- A production-like link for specs: a TLS s2-lite of its own (certificates made here) with
-- the fault proxy in front, shaped like a WAN. The proxy forwards raw TCP, so TLS runs end
-- to end between the client and s2-lite, and the client's kernel sees the slow link.
--
--   local L = require "support.shaped_tls"
--   local link = L.start{ rate_up = 2500000, latency_up = 25, mss = 1460, ... }
--   local c = link:client{ request_timeout = 10 }   -- through the shaped proxy
--   local d = link:direct_client()                  -- TLS straight to s2-lite (fast checks)
--   link.proxy:command("stop_reading on")           -- the proxy, as support.fault_proxy
--   link:stop()                                     -- idempotent
--
-- Options: every shaping option of support.fault_proxy.start (rate_up, rate_down,
-- latency_up, latency_down, queue_cap, rcvbuf, mss), passed on as they are.
--
-- mss matters: on loopback the MSS is ~64 KiB and the client's kernel sizes its send buffer
-- at ~4 MB from the connect on, more than s2-lite's 1 MiB HTTP/2 window lets it write, so
-- its socket never fills. With a WAN MSS (1460) the send buffer starts small and grows with
-- what the link carries, as over a real network, and the client's writes do find it full.
local S = require "support.s2lite"
local P = require "support.fault_proxy"

local M = {}

local Link = {}
Link.__index = Link

local SHAPING = { "rate_up", "rate_down", "latency_up", "latency_down", "queue_cap", "rcvbuf",
                  "mss" }

function M.start(opts)
  opts = opts or {}
  local link = setmetatable({}, Link)
  local ok, err = pcall(function()
    link.certs = S.make_certs()
    link.server = S.start { tls_cert = link.certs.cert, tls_key = link.certs.key }
    local popts = { target = "127.0.0.1:" .. link.server.port }
    for _, k in ipairs(SHAPING) do popts[k] = opts[k] end
    link.proxy = P.start(popts)
  end)
  if not ok then
    link:stop()
    error(err, 2)
  end
  -- The certificate names localhost; the proxy listens on 127.0.0.1.
  link.endpoint = "https://localhost:" .. link.proxy.port
  link.direct_endpoint = link.server.endpoint
  link.ca = link.certs.ca
  return link
end

local function make_client(endpoint, ca, opts)
  local s2 = require "s2"
  local cfg = { access_token = "ignored", account_endpoint = endpoint,
                basin_endpoint = endpoint, ca_file = ca }
  for k, v in pairs(opts or {}) do cfg[k] = v end
  return s2.client(cfg)
end

-- A client whose every connection goes through the shaped proxy.
function Link:client(opts) return make_client(self.endpoint, self.ca, opts) end

-- A client that talks TLS to s2-lite directly (setup and read-back, at loopback speed).
function Link:direct_client(opts) return make_client(self.direct_endpoint, self.ca, opts) end

function Link:stop()
  if self.proxy then self.proxy:stop() end
  if self.server then self.server:stop() end
  if self.certs and self.certs.dir:match("^/tmp/") then os.execute("rm -rf " .. self.certs.dir) end
  self.proxy, self.server, self.certs = nil, nil, nil
end

-- Record bodies that say where they belong: "<tag>-<index>|" and a filler to `size` bytes.
function M.body(tag, i, size)
  local head = ("%s-%08d|"):format(tag, i)
  return head .. string.char(97 + i % 26):rep(size - #head)
end

-- FNV-1a over the bodies in order, with their lengths (a digest that order, loss and
-- duplication all change). Pure Lua, 32 bits; bodies are sampled every 97 bytes to stay
-- fast on tens of MB (the head with the index is always included).
function M.digest(acc, body)
  local h = acc or 2166136261
  local function mix(b)
    h = ((h ~ b) * 16777619) & 0xffffffff
  end
  local n = #body
  mix(n & 0xff); mix((n >> 8) & 0xff); mix((n >> 16) & 0xff)
  for i = 1, math.min(n, 24) do mix(body:byte(i)) end
  for i = 25, n, 97 do mix(body:byte(i)) end
  return h
end

-- Reads stream records [0, count) with unary reads; returns the list of bodies (in seq_num
-- order, checked contiguous) and the tail, or raises.
function M.read_all(stream, count)
  local bodies = {}
  local at = 0
  while at < count do
    local batch, err = stream:read { seq_num = at, count = math.min(1000, count - at) }
    if not batch then error("read at " .. at .. " failed: " .. tostring(err), 2) end
    if #batch.records == 0 then break end
    for _, r in ipairs(batch.records) do
      if r.seq_num ~= at then error(("read: seq_num %d where %d was due"):format(r.seq_num, at), 2) end
      bodies[#bodies + 1] = r.body
      at = at + 1
    end
  end
  local tail, err = stream:check_tail()
  if not tail then error("check_tail failed: " .. tostring(err), 2) end
  return bodies, tail.seq_num
end

return M
