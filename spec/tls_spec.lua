-- TLS: s2-lite with a certificate made here by openssl. Verification passes with the CA
-- file and fails, clearly and without retrying, without it.
local s2 = require "s2"
local S = require "support.s2lite"

local must = require("helper").must

describe("TLS", function()
  local certs, server
  lazy_setup(function()
    certs = S.make_certs()
    server = S.start { tls_cert = certs.cert, tls_key = certs.key }
  end)
  lazy_teardown(function()
    if server then server:stop() end
    if certs then os.execute("rm -rf " .. certs.dir) end
  end)

  local function client(ca_file)
    return s2.client { access_token = "ignored", account_endpoint = server.endpoint,
                       basin_endpoint = server.endpoint, ca_file = ca_file,
                       retry = { max_attempts = 2, min_base_delay = 0.01, max_base_delay = 0.02 } }
  end

  it("verifies the server with the CA file, for unary calls and sessions", function()
    local c = client(certs.ca)
    local name = ("tls-%d-%d"):format(os.time(), math.random(1e6))
    must(c:create_basin(name, { create_stream_on_append = true }))
    local stream = c:basin(name):stream("secure")
    assert.are.equal(0, must(stream:append({ "unary" })).start.seq_num)
    local session = must(stream:append_session())
    local ack = must(must(session:submit({ "over h2 + TLS" })):ack())
    assert.are.equal(1, ack.start.seq_num)
    must(session:close())
    local batch = must(stream:read { seq_num = 0, count = 2 })
    assert.are.equal("over h2 + TLS", batch.records[2].body)
  end)

  it("fails without the CA file: a certificate error, not retried", function()
    local c = client(nil)
    local _, err = c:list_basins()
    assert.are.equal("connection_failed", err.code)
    assert.is_false(err.retryable)
    assert.truthy(err.message:lower():find("certificate", 1, true), err.message)

    local session = must(c:basin("whatever-basin"):stream("s"):append_session())
    local _, serr = must(session:submit({ "x" })):ack()
    assert.are.equal("connection_failed", serr.code)
    assert.truthy(serr.message:find("certificate verification failed", 1, true), serr.message)
  end)
end)
