-- Regression (issue 12, item 3 and "keep-alive"): there was no HTTP/2 PING, so a connection
-- whose peer went silent (a middlebox holding every byte) was noticed only by a read
-- session's 20 s inactivity timeout, and even then the reader reopened on the same dead
-- connection. Now a connection with an open stream that receives nothing for half the
-- request timeout gets a PING; one unanswered within the request timeout retires the
-- connection and its sessions move to a fresh one.
local H = require "helper"
local P = require "support.fault_proxy"

describe("keep-alive PING (regress)", function()
  local proxy
  setup(function() proxy = P.start { target = H.endpoint():gsub("^http://", "") } end)
  teardown(function() if proxy then proxy:stop() end end)

  it("retires a connection that stops answering, and the reader resumes on a new one", function()
    local direct = H.client()
    local basin = H.new_basin(direct, "ping")
    local stream = H.new_stream(basin, "s")
    assert(stream:append({ "zero" }))
    local c = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                         request_timeout = 1, retry = { max_attempts = 20, max_base_delay = 0.2 } }
    local reader = assert(c:basin(basin.name):stream(stream.name):read_session { seq_num = 0 })
    assert.are.equal("zero", assert(reader:next(30)).body)
    assert.are.equal(1, c:stats().connections_opened)
    -- Hold every server->client byte for 8 s: shorter than the reader's 20 s inactivity
    -- timeout, far longer than a PING's deadline.
    proxy:command("stall 8000")
    assert(stream:append({ "one" }))
    local r = assert(reader:next(60))
    assert.are.equal("one", r.body)
    assert.are.equal(1, r.seq_num)
    assert.is_true(c:stats().connections_opened >= 2,
      "still on the first connection: " .. c:stats().connections_opened)
    reader:close()
    c:close()
  end)
end)
