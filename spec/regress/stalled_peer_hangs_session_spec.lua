-- Regression (issue 12, item 3): a server (or middlebox) that stops reading hung append
-- sessions forever. The ack deadline started only once a batch was fully written, which never
-- happens when the peer's window stays shut; the retry reused the same stalled connection;
-- there was no HTTP/2 PING. (request_timeout = 2, max_attempts = 2: still pending after 15 s,
-- and close() without a timeout never returned.) Now the ack clock starts with a batch's
-- first byte, an ack timeout retires the connection, and a connection that stops answering
-- PINGs or taking bytes is retired.
local H = require "helper"
local P = require "support.fault_proxy"

describe("a peer that stops reading (regress)", function()
  local proxy
  setup(function()
    proxy = P.start { target = H.endpoint():gsub("^http://", "") }
  end)
  teardown(function()
    if proxy then proxy:stop() end
  end)
  before_each(function() proxy:command("reset") end)

  local function client()
    return H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                      request_timeout = 2, retry = { max_attempts = 2, min_base_delay = 0.05,
                                                     max_base_delay = 0.1 } }
  end

  -- 3 batches of 800 KB: more than s2-lite's 1 MiB window, so the writes stall mid-batch.
  local function big_batches(session, n)
    local body = ("s"):rep(100 * 1000)
    local tickets = {}
    for i = 1, n do
      local batch = {}
      for j = 1, 8 do batch[j] = body end
      tickets[i] = assert(session:submit(batch))
    end
    return tickets
  end

  it("fails its tickets within the retry budget, and close returns", function()
    local c = client()
    local direct = H.client()
    local basin = H.new_basin(direct, "stall")
    local stream = c:basin(basin.name):stream("s")
    local session = assert(stream:append_session())
    assert(session:submit({ "before the stall" }):ack(30)) -- the connection is up
    proxy:command("stop_reading on")
    local tickets = big_batches(session, 3)
    for i, t in ipairs(tickets) do
      local ack, err = t:ack(40)
      assert.is_nil(ack)
      assert.is_true(t:ready(), "ticket " .. i .. " still pending: " .. tostring(err))
      assert.are.equal("timeout", err.code, tostring(err))
    end
    local ok, err = session:close(30)
    assert.is_nil(ok)
    assert.are_not.equal("close: not every batch was acked", (tostring(err):match("close: [^%(]+acked")))
    proxy:command("stop_reading off")
    c:close()
  end)

  it("a producer's flush ends too", function()
    local c = client()
    local direct = H.client()
    local basin = H.new_basin(direct, "stallp")
    local producer = assert(c:basin(basin.name):stream("p"):producer { linger = 0.005 })
    assert(producer:submit("before"):ack(30))
    proxy:command("stop_reading on")
    local body = ("p"):rep(100 * 1000)
    for _ = 1, 24 do assert(producer:submit(body)) end
    local ok, err = producer:flush(40)
    assert.is_nil(ok)
    assert.are.equal("timeout", err.code)
    assert.is_nil(tostring(err):match("^timeout: flush:"), "flush gave up waiting: " .. tostring(err))
    proxy:command("stop_reading off")
    producer:close(30)
    c:close()
  end)
end)
