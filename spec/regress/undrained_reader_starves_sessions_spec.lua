-- Regression (issue 12, item 2): one slow reader stalled every session of its client. The
-- stream and connection windows were both 10 MiB and a read session gave bytes back only as
-- Lua drained them, so an undrained read session zeroed the *connection* window and no ack
-- could reach the client's append sessions (a 1-record batch timed out while a second client
-- acked at once). Now the connection window is given back as data arrives; the reader's own
-- stream window bounds its buffer.
local H = require "helper"

local WINDOW = 10 * 1024 * 1024

-- ~12 MiB in the stream: more than one window.
local function fill(stream)
  local session = assert(stream:append_session())
  local body = ("r"):rep(60 * 1024)
  local last
  for _ = 1, 24 do
    local batch = {}
    for j = 1, 8 do batch[j] = body end
    last = assert(session:submit(batch))
  end
  assert(last:ack(60))
  assert(session:close(60))
  return 24 * 8
end

-- Waits until the reader holds a window's worth (what the server may send before it must
-- wait for the reader). `buffered_bytes` came with the fix; before it the wait is a plain
-- pause, long enough on loopback for the window to fill.
local function wait_filled(reader)
  local deadline = os.time() + 30
  if reader:status().buffered_bytes == nil then
    os.execute "sleep 2"
    return
  end
  while reader:status().buffered_bytes < WINDOW - 1024 * 1024 do
    assert(os.time() < deadline, "the reader never buffered a window")
    os.execute "sleep 0.05"
  end
end

describe("an undrained read session (regress)", function()
  it("does not hold up acks of the client's other sessions, and bounds its own buffer", function()
    local client = H.client { request_timeout = 3, retry = { max_attempts = 1 } }
    local basin = H.new_basin(client, "starve")
    local big = H.new_stream(basin, "big")
    local total = fill(big)

    local reader = assert(big:read_session { seq_num = 0 })
    local first = assert(reader:next(30))
    assert.are.equal(0, first.seq_num)
    wait_filled(reader)

    -- Same client, same connection: an append session and a producer must be acked.
    local other = H.new_stream(basin, "other")
    local session = assert(other:append_session())
    local ack, err = session:submit({ "while the reader sleeps" }):ack(20)
    assert.is_nil(err, err and tostring(err))
    assert.are.equal(0, ack.start.seq_num)
    local producer = assert(other:producer { linger = 0.01 })
    local pack, perr = assert(producer:submit("from the producer")):ack(20)
    assert.is_nil(perr, perr and tostring(perr))
    assert.are.equal(1, pack.seq_num)

    -- The reader's buffer stays within its window (plus a batch in decoding).
    assert.is_true(reader:status().buffered_bytes <= WINDOW + 1024 * 1024,
      "buffered " .. tostring(reader:status().buffered_bytes))

    -- Then everything is still delivered, in order, once drained.
    for i = 1, total - 1 do
      local r = assert(reader:next(30))
      assert.are.equal(i, r.seq_num)
    end
    reader:close()
    assert(session:close(30))
    assert(producer:close(30))
    client:close()
  end)
end)
