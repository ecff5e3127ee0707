-- Regression (issue 12, item 9): name lookups ran on the I/O thread (getaddrinfo blocking every
-- session's timers), only the first address of a name was tried, and connection_timeout did
-- not cover the lookup. A preloaded shim (tools/dns_shim.c) makes the name slow and gives it
-- chosen addresses: s2-lite listens on IPv4 only, so ::1 refuses and 127.0.0.1 answers.
local H = require "helper"
local child = require "support.child"

local SHIM = "build/dns-shim.so"

local function script(port, basin, opts)
  return ([[
local s2 = require "s2"
local client = s2.client { access_token = "x", account_endpoint = %q,
  basin_endpoint = "http://s2.test:%d", connection_timeout = %s, request_timeout = 5,
  retry = { max_attempts = 1 } }
local session = assert(client:basin(%q):stream("dns"):append_session())
local ticket = assert(session:submit({ "one" }))
local ack, err = ticket:ack(30)
if ack then print("acked " .. ack.start.seq_num) else print("failed " .. err.code .. " " .. err.message) end
]]):format(H.endpoint(), port, opts.connection_timeout or 3, basin)
end

describe("name lookups (regress)", function()
  local client, basin_name, port
  setup(function()
    assert(io.open(SHIM), "build the shim first: make " .. SHIM)
    client = H.client()
    local _
    _, basin_name = H.new_basin(client, "dns")
    port = assert(tonumber(H.endpoint():match(":(%d+)$")))
  end)

  it("try every address of the name: the first refuses, the second serves", function()
    local r = child.run(script(port, basin_name, {}), { preload = SHIM, env = {
      S2_TEST_DNS_NAME = "s2.test", S2_TEST_DNS_ADDRS = "::1,127.0.0.1" } })
    assert.are.equal(0, r.status, r.stderr)
    assert.are.equal("acked 0", r.stdout:match("[^\n]+"), r.stdout .. r.stderr)
  end)

  it("connection_timeout covers a slow lookup, which does not hold up the I/O thread", function()
    -- The lookup takes 6 s, the connection timeout is 1 s: the attempt must fail as a
    -- timeout of the lookup (before the fix the lookup blocked the I/O thread, no timer ran,
    -- and the append went through once the name resolved).
    local r = child.run(script(port, basin_name, { connection_timeout = 1 }), { preload = SHIM,
      env = { S2_TEST_DNS_NAME = "s2.test", S2_TEST_DNS_ADDRS = "127.0.0.1",
              S2_TEST_DNS_DELAY_MS = "6000" } })
    assert.are.equal(0, r.status, r.stderr)
    local line = r.stdout:match("[^\n]+") or ""
    assert.truthy(line:match("^failed timeout resolving s2%.test timed out"), r.stdout .. r.stderr)
  end)
end)
