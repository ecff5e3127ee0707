-- Regression: an append session whose server advised a reconnect ends its request body
-- (draining) and waits for the server to end the response before the batches it held back
-- go out on a fresh connection. eof_deadline bounds that wait, but its timer acted only when
-- nothing at all was inflight, while s2_session_next_deadline reported it whenever a stream
-- was open. A batch submitted after the advice (held back, never written) therefore made the
-- deadline pass unhandled: epoll_wait(0) in a loop (the I/O thread at 100 % CPU), and the
-- batch waited for the server however long it took (here 30 s) instead of request_timeout.
local s2 = require "s2"
local F = require "support.fault_server"

describe("a drained stream the server never ends (regress)", function()
  local server
  before_each(function() server = F.start() end)
  after_each(function() if server then server:stop() end end)

  it("moves the held-back batch to a new connection after request_timeout, without spinning", function()
    local c = s2.client { access_token = "x", account_endpoint = server.endpoint,
      basin_endpoint = server.endpoint, request_timeout = 2, retry = { max_attempts = 3 } }
    local session = assert(c:basin("basin-drain"):stream("s"):append_session())
    -- ack 1 advises a reconnect; the server then ends the response only 30 s after our EOF
    server:command("reconnect_flag_after 1 end_delay=30000")
    local t1 = assert(session:submit({ "one" }))
    assert.are.equal(0, assert(t1:ack(20)).start.seq_num)
    local wall0, cpu0 = os.time(), os.clock()
    local t2 = assert(session:submit({ "two" })) -- held back: the stream is draining
    local ack, err = t2:ack(20)
    local wall, cpu = os.time() - wall0, os.clock() - cpu0
    assert.is_nil(err and err.message)
    assert.are.equal(1, ack.start.seq_num)
    -- a spinning I/O thread burns a core for the whole wait; an idle one next to nothing
    assert.is_true(cpu < 0.5 * math.max(wall, 1), ("%.2f s CPU in %d s"):format(cpu, wall))
    assert.is_true(session:close(20))
    assert.are.equal(2, c:stats().connections_opened)
    local bodies, count = server:bodies("s")
    assert.are.equal(2, count)
    assert.are.same({ [0] = "one", [1] = "two" }, bodies)
    c:close()
  end)
end)
