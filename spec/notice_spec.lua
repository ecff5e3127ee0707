-- The core's completion notices (csrc/s2_notice.c), read the way OpenResty's dispatcher reads
-- them, but from a plain unix socket: each armed waitable's id arrives once when it is done,
-- a heartbeat (id 0) comes after a second of silence, the socket accepts one peer at a time
-- and a new peer gets what was posted while none was connected.
local H = require "helper"
local unix = require "socket.unix"

local ZERO = ("0"):rep(16)

local function connect(path)
  local sock = assert(unix())
  assert(sock:connect(path))
  sock:settimeout(5)
  return sock
end

-- Reads notices until `want` (an id) arrives; returns every id read on the way.
local function read_until(sock, want)
  local seen = {}
  while true do
    local id, err = sock:receive(16)
    assert(id, "no notice: " .. tostring(err))
    seen[#seen + 1] = id
    if id == want then return seen end
  end
end

describe("completion notices", function()
  local client, stream

  lazy_setup(function()
    client = H.client()
    local basin = H.unique_name("notice")
    assert(client:create_basin(basin, { create_stream_on_append = true }))
    stream = client:basin(basin):stream("s")
  end)

  lazy_teardown(function()
    if client then client:close() end
  end)

  it("posts a ticket's id once it resolves, and a resolved one at once", function()
    local producer = assert(stream:producer { linger = 0.2 })
    local ticket = assert(producer:submit("a"))
    local id, path = ticket:notice()
    assert.is_string(path)
    assert.are.equal(16, #id)
    assert.is_false(ticket:ready())
    local sock = connect(path)
    local seen = read_until(sock, id)
    assert.is_true(ticket:ready(), "the notice came before the ticket resolved")
    for i = 1, #seen - 1 do assert.are.equal(ZERO, seen[i]) end
    -- Armed after it resolved: posted at once, with a fresh id.
    local again = ticket:notice()
    assert.are_not.equal(id, again)
    read_until(sock, again)
    sock:close()
    assert(producer:close())
  end)

  it("names one id for every wait on the same ticket until it fires", function()
    local producer = assert(stream:producer { linger = 0.3 })
    local t1 = assert(producer:submit("x"))
    local t2 = assert(producer:submit("y")) -- the same batch: the same core ticket
    local a = t1:notice()
    assert.are.equal(a, t1:notice())
    assert.are.equal(a, t2:notice())
    local _, path = t1:notice()
    local sock = connect(path)
    read_until(sock, a)
    sock:close()
    assert(producer:close())
  end)

  it("keeps notices posted while no peer is connected for the next one", function()
    local producer = assert(stream:producer { linger = 0 })
    local ticket = assert(producer:submit("z"))
    local id, path = ticket:notice()
    assert(ticket:ack(10))
    local sock = connect(path)
    read_until(sock, id)
    sock:close()
    assert(producer:close())
  end)

  it("sends heartbeats to an idle peer", function()
    local producer = assert(stream:producer())
    local ticket = assert(producer:submit("h"))
    assert(ticket:ack(10))
    local _, path = ticket:notice() -- resolved: posted at once
    local sock = connect(path)
    sock:receive(16)
    local beat = assert(sock:receive(16)) -- nothing else is armed: only a heartbeat can come
    assert.are.equal(ZERO, beat)
    sock:close()
    assert(producer:close())
  end)

  it("posts a unary call's id when its answer is in", function()
    local call = assert(client.core:append(stream.basin.name, stream.name, { "u" }))
    local id, path = call:notice()
    local sock = connect(path)
    read_until(sock, id)
    assert.is_true(call:ready())
    local ack = assert(call:result())
    assert.are.equal(1, ack["end"].seq_num - ack.start.seq_num)
    sock:close()
  end)

  it("posts progress notices at the next progress", function()
    local id, path = client.core:progress_notice()
    local sock = connect(path)
    local producer = assert(stream:producer { linger = 0 })
    assert(producer:submit("p"))
    read_until(sock, id)
    sock:close()
    assert(producer:close())
  end)
end)
