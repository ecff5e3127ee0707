-- Concurrency control: a fencing token and match_seq_num, and the 412 errors they give.
local s2 = require "s2"

local function check(v, err)
  if v == nil then
    io.stderr:write("fencing.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return v
end

-- An append that must fail with this code (HTTP 412); returns the error.
local function must_fail(code, ack, err)
  if ack or not err or err.code ~= code or err.status ~= 412 then
    io.stderr:write(("fencing.lua: expected %s, got %s\n"):format(code,
      ack and "an ack" or tostring(err)))
    os.exit(1)
  end
  print("  refused: " .. tostring(err))
  return err
end

local client = s2.client()
math.randomseed(os.time())
local basin_name = ("ex-fencing-%d-%04x"):format(os.time(), math.random(0, 0xffff))
check(client:ensure_basin(basin_name, { create_stream_on_append = true }))
local stream = client:basin(basin_name):stream("ledger")

-- Writer 1 takes the stream: a fence command record sets the token.
check(stream:append({ s2.fence("writer-1") }))
print("writer-1 holds the fence")

-- Writer 1 appends with its token, and with match_seq_num: "only if the stream's next
-- seq_num is this one" (so nobody wrote since writer 1 last looked).
local tail = check(stream:check_tail())
local ack = check(stream:append({ "debit 10" }, { fencing_token = "writer-1",
                                                 match_seq_num = tail.seq_num }))
print(("writer-1 appended at seq_num %d"):format(ack.start.seq_num))

-- A stale writer with another token is refused; the error says which token is current.
local err = must_fail("fencing_token_mismatch",
  stream:append({ "debit 99" }, { fencing_token = "writer-0" }))
assert(err.expected_fencing_token == "writer-1")

-- A match_seq_num that is not the tail is refused; the error says what the tail is.
err = must_fail("seq_num_mismatch",
  stream:append({ "debit 10" }, { fencing_token = "writer-1", match_seq_num = tail.seq_num }))
assert(err.expected_seq_num == ack["end"].seq_num)

-- Writer 2 takes over: a new fence (carrying the current token) replaces the old one...
check(stream:append({ s2.fence("writer-2") }, { fencing_token = "writer-1" }))
print("writer-2 holds the fence")
-- ...and writer 1 is fenced out from now on.
must_fail("fencing_token_mismatch", stream:append({ "late debit" }, { fencing_token = "writer-1" }))

-- An append session (or producer) takes the same options; its tickets fail the same way,
-- and so does the session.
local session = check(stream:append_session())
local ticket = check(session:submit({ "late again" }, { fencing_token = "writer-1" }))
must_fail("fencing_token_mismatch", ticket:ack())
session:close()

-- An empty token clears the fence.
check(stream:append({ s2.fence("") }, { fencing_token = "writer-2" }))
print("fence cleared")
client:close()
