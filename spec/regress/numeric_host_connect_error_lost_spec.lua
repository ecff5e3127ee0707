-- Regression: with a numeric host, conn_new starts the connect itself; when every address
-- fails at once (connect() returning ENETUNREACH, socket() hitting EMFILE, ...) the
-- connection died before the session was attached to it, so the session saw no conn_fail
-- and open_stream made up its own error: "connection to ... lost", not retryable. The
-- append (or read) failed on its first attempt with the cause lost, where it used to be a
-- retryable "could not connect ...: Network is unreachable" retried up to max_attempts.
-- 255.255.255.255 is a numeric address whose TCP connect fails synchronously on Linux.
local s2 = require "s2"

local function client()
  return s2.client { access_token = "x", account_endpoint = "http://127.0.0.1:1",
    basin_endpoint = "http://255.255.255.255:4243", connection_timeout = 2,
    request_timeout = 3, retry = { max_attempts = 3, min_base_delay = 0.01,
    max_base_delay = 0.05 } }
end

describe("numeric host whose connect fails at once (regress)", function()
  it("an append fails retryably with the connect error, after every attempt", function()
    local c = client()
    local session = assert(c:basin("basin-numeric"):stream("s"):append_session())
    local ticket = assert(session:submit({ "one" }))
    local ack, err = ticket:ack(30)
    assert.is_nil(ack)
    assert.are.equal("connection_failed", err.code)
    assert.truthy(err.message:match("could not connect to 255%.255%.255%.255:4243"), err.message)
    assert.truthy(err.message:match("after 3 attempts"), err.message)
    assert.is_true(err.retryable)
    session:close(5)
    c:close()
  end)

  it("a read session fails with the connect error, after every attempt", function()
    local c = client()
    local reader = assert(c:basin("basin-numeric"):stream("s"):read_session { seq_num = 0 })
    local rec, err
    for _ = 1, 60 do -- bounded: each next waits at most 1 s
      rec, err = reader:next(1)
      if rec or (err and err.code ~= "timeout") then break end
    end
    assert.is_nil(rec)
    assert.are.equal("connection_failed", err.code)
    assert.truthy(err.message:match("could not connect to 255%.255%.255%.255:4243"), err.message)
    reader:close()
    c:close()
  end)
end)
