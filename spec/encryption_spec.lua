-- Encrypted streams: basin:stream(name, { encryption_key = ... }) sends s2-encryption-key on
-- every append and read of that handle: unary (protobuf), append sessions and producers
-- (S2S over HTTP/2, and the HTTP/1.1 fallback), read sessions (S2S over HTTP/2, and SSE over
-- HTTP/1.1). Against s2-lite, whose basins with a stream_cipher encrypt every new stream:
-- without the key an append or read is refused (bad_header), with a wrong key a read fails
-- (decryption_failed). The key never shows in errors, nor in what a stream prints or holds.
local H = require "helper"
local s2 = require "s2"

local must = H.must

local function must_fail(v, err, code)
  assert.is_nil(v, "expected a failure, got a result")
  assert.is_table(err, "expected an error object")
  assert.are.equal(code, err.code, tostring(err))
  return err
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

local function base64(s)
  local out = {}
  for i = 1, #s, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    local chars = {}
    for k = 3, 0, -1 do
      local v = (n >> (6 * k)) & 63
      chars[#chars + 1] = B64:sub(v + 1, v + 1)
    end
    if not b then chars[3], chars[4] = "=", "=" elseif not c then chars[4] = "=" end
    out[#out + 1] = table.concat(chars)
  end
  return table.concat(out)
end

-- Both ciphers take a 256-bit key: 32 random bytes, base64 (44 characters).
local function new_key()
  local f = assert(io.open("/dev/urandom", "rb"))
  local raw = f:read(32)
  f:close()
  local key = base64(raw)
  assert(#key == 44)
  return key
end

-- True when the key occurs in any string reachable from v (fields, keys, metatables'
-- __index tables excepted), so a dump of the object cannot show it.
local function holds(v, key, seen)
  seen = seen or {}
  if type(v) == "string" then return v:find(key, 1, true) ~= nil end
  if type(v) ~= "table" or seen[v] then return false end
  seen[v] = true
  for k, x in pairs(v) do
    if holds(k, key, seen) or holds(x, key, seen) then return true end
  end
  return false
end

local function assert_secret(key, ...)
  for i = 1, select("#", ...) do
    local v = select(i, ...)
    if v ~= nil then
      assert.is_nil(tostring(v):find(key, 1, true), "the key shows in " .. tostring(v))
      if type(v) == "table" and v.message then
        assert.is_nil(v.message:find(key, 1, true), "the key shows in err.message")
      end
      assert.is_false(holds(v, key), "the key is held in a field")
    end
  end
end

for _, cipher in ipairs { "aegis-256", "aes-256-gcm" } do
  describe(("an encrypted stream (%s)"):format(cipher), function()
    local client, basin, key
    lazy_setup(function()
      client = H.client()
      basin = H.new_basin(client, "enc", { stream_cipher = cipher })
      key = new_key()
    end)

    local function new_stream(c, k)
      local name = H.unique_name("s")
      must(basin:create_stream(name))
      return (c or client):basin(basin.name):stream(name, { encryption_key = k or key }), name
    end

    it("is created with the basin's cipher", function()
      local _, name = new_stream()
      local info
      for s in basin:list_all_streams { prefix = name } do info = s end
      assert.are.equal(cipher, info.cipher)
    end)

    it("refuses appends and reads without the key (bad_header, 400)", function()
      local _, name = new_stream()
      local plain = basin:stream(name)
      local err = must_fail(nil, select(2, plain:append { "x" }), "bad_header")
      assert.are.equal(400, err.status)
      err = must_fail(nil, select(2, plain:read { seq_num = 0 }), "bad_header")
      assert.are.equal(400, err.status)
      local reader = must(plain:read_session { seq_num = 0 })
      local r, rerr = reader:next(10)
      must_fail(r, rerr, "bad_header")
      reader:close()
      local session = must(plain:append_session())
      local _, terr = must(session:submit { "x" }):ack(10)
      assert.are.equal("bad_header", terr and terr.code, tostring(terr))
      session:close(1)
    end)

    it("round-trips unary appends and reads with the key", function()
      local stream = new_stream()
      local ack = must(stream:append { "first", { body = "second\0\255", headers = { { "k", "v" } } } })
      assert.are.equal(2, ack["end"].seq_num)
      local batch = must(stream:read { seq_num = 0 })
      assert.are.equal(2, #batch.records)
      assert.are.equal("first", batch.records[1].body)
      assert.are.equal("second\0\255", batch.records[2].body)
      assert.are.same({ { "k", "v" } }, batch.records[2].headers)
    end)

    it("round-trips an append session, a producer and a read session (HTTP/2) with the key",
      function()
        local stream = new_stream()
        local session = must(stream:append_session())
        for i = 1, 5 do must(session:submit { "s" .. i }) end
        must(session:close(10))
        local producer = must(stream:producer())
        for i = 1, 5 do must(producer:submit("p" .. i)) end
        must(producer:close(10))
        local reader = must(stream:read_session { seq_num = 0, count = 10 })
        local got = {}
        for r in reader:records() do got[#got + 1] = r.body end
        assert.are.same({ "s1", "s2", "s3", "s4", "s5", "p1", "p2", "p3", "p4", "p5" }, got)
        assert.is_true(client:stats().connections_opened > 0) -- HTTP/2 it was
      end)

    it("sends the key on the HTTP/1.1 paths too (force_http1: unary, fallback, SSE)", function()
      local c = H.client { force_http1 = true }
      local stream = new_stream(c)
      must(stream:append { "u1" })
      local session = must(stream:append_session())
      must(session:submit { "s1", "s2" })
      must(session:close(10))
      local producer = must(stream:producer())
      must(producer:submit("p1"))
      must(producer:close(10))
      local reader = must(stream:read_session { seq_num = 0, count = 4 })
      local got = {}
      for r in reader:records() do got[#got + 1] = r.body end
      assert.are.same({ "u1", "s1", "s2", "p1" }, got)
      local batch = must(stream:read { seq_num = 0 })
      assert.are.equal(4, #batch.records)
      assert.are.equal(0, c:stats().connections_opened) -- no HTTP/2 connection was used
    end)

    it("fails reads with a wrong key (decryption_failed), keeping both keys out of errors",
      function()
        local stream, name = new_stream()
        must(stream:append { "secret" })
        local wrong_key = new_key()
        local wrong = basin:stream(name, { encryption_key = wrong_key })
        local batch, err = wrong:read { seq_num = 0 }
        must_fail(batch, err, "decryption_failed")
        assert_secret(wrong_key, err, wrong)
        assert_secret(key, err)
        local reader = must(wrong:read_session { seq_num = 0 })
        local r, rerr = reader:next(10)
        must_fail(r, rerr, "decryption_failed")
        assert_secret(wrong_key, rerr, reader)
        reader:close()
        local h1 = H.client { force_http1 = true }:basin(basin.name)
          :stream(name, { encryption_key = wrong_key })
        local sse = must(h1:read_session { seq_num = 0 })
        r, rerr = sse:next(10)
        must_fail(r, rerr, "decryption_failed")
        assert_secret(wrong_key, rerr)
        sse:close()
      end)

    it("keeps a key the server rejects out of its errors", function()
      -- valid base64, but 3 bytes: the server says the length is wrong
      local stream = select(1, new_stream(nil, "AAAA"))
      local ack, err = stream:append { "x" }
      must_fail(ack, err, "bad_header")
      assert_secret("AAAA", err)
      local session = must(stream:append_session())
      local ticket = must(session:submit { "x" })
      local _, terr = ticket:ack(10)
      assert.are.equal("bad_header", terr.code, tostring(terr))
      assert_secret("AAAA", terr, session)
      session:close(1)
    end)
  end)
end

describe("an encrypted stream through cut connections", function()
  local P = require "support.fault_proxy"
  local proxy, basin_name, key
  lazy_setup(function()
    basin_name = select(2, H.new_basin(H.client(), "enccut", { stream_cipher = "aes-256-gcm" }))
    key = new_key()
    proxy = P.start { target = H.endpoint():gsub("^http://", "") }
  end)
  lazy_teardown(function()
    if proxy then proxy:stop() end
  end)

  local function via_proxy(extra)
    local opts = { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                   retry = { max_attempts = 10, min_base_delay = 0.01, max_base_delay = 0.05 } }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return H.client(opts)
  end

  -- Every new connection is cut after so many bytes: sessions reconnect, and every new
  -- request must carry the key again.
  it("keeps sending the key when the append session and the read session reconnect",
    function()
      local name = H.unique_name("s")
      must(H.client():basin(basin_name):create_stream(name))
      local n = 5000 -- records of 100 bytes: a read batch (<= 1000 records) fits between cuts
      proxy:command("cut_after 150000")
      local session = must(via_proxy():basin(basin_name):stream(name, { encryption_key = key })
        :append_session())
      local tickets = {}
      for b = 1, n / 100 do
        local batch = {}
        for i = 1, 100 do batch[i] = ("%05d"):format((b - 1) * 100 + i) .. ("x"):rep(95) end
        tickets[b] = must(session:submit(batch))
      end
      for _, t in ipairs(tickets) do must(t:ack(30)) end
      assert.is_true(session:stats().reconnects >= 1, "reconnects " .. session:stats().reconnects)
      must(session:close(10))
      -- resent batches may have landed twice ("all" policy): read back whatever is there
      local tail = must(H.client():basin(basin_name):stream(name):check_tail()).seq_num
      assert.is_true(tail >= n)
      proxy:command("reset")
      proxy:command("cut_after_down 250000")
      for _, http1 in ipairs { false, true } do
        local stream = via_proxy { force_http1 = http1 }:basin(basin_name)
          :stream(name, { encryption_key = key })
        local reader = must(stream:read_session { seq_num = 0, count = tail })
        local got, bad, seen, distinct = 0, 0, {}, 0
        for r in reader:records() do
          got = got + 1
          if r.seq_num ~= got - 1 then bad = bad + 1 end
          local id = r.body:sub(1, 5)
          if not seen[id] then seen[id], distinct = true, distinct + 1 end
        end
        assert.are.equal(tail, got)
        assert.are.equal(0, bad)
        assert.are.equal(n, distinct)
        assert.is_true(reader:status().reconnects >= 1, "reconnects " .. reader:status().reconnects)
      end
    end)
end)

describe("basin:stream encryption_key", function()
  local basin
  lazy_setup(function() basin = H.client():basin("enc-arguments") end)

  it("is kept out of the stream's fields and of tostring(stream)", function()
    local key = new_key()
    local stream = basin:stream("s", { encryption_key = key })
    assert_secret(key, stream)
    assert.is_truthy(tostring(stream):find("encryption key", 1, true))
    assert.is_nil(tostring(basin:stream("s")):find("encryption key", 1, true))
  end)

  it("raises for keys that are not 1 to 44 base64 characters, without echoing them", function()
    for _, bad in ipairs { "", "   ", ("A"):rep(45), "AAAA\r\nx-injected: 1", "AA-_", "ké==" } do
      local ok, msg = pcall(basin.stream, basin, "s", { encryption_key = bad })
      assert.is_false(ok, ("accepted %q"):format(bad))
      assert.is_truthy(msg:find("basin:stream: encryption_key must be 1 to 44 characters", 1, true), msg)
      if #bad > 3 then assert.is_nil(msg:find(bad, 1, true), msg) end
    end
    local ok, msg = pcall(basin.stream, basin, "s", { encryption_key = 42 })
    assert.is_false(ok)
    assert.is_truthy(msg:find("encryption_key must be a string", 1, true), msg)
    ok, msg = pcall(basin.stream, basin, "s", { encryption_key_typo = "AAAA" })
    assert.is_false(ok)
    assert.is_truthy(msg:find("unknown option", 1, true), msg)
  end)

  it("takes the key trimmed of surrounding whitespace, as the SDKs do", function()
    local c = H.client()
    local b = H.new_basin(c, "enctrim", { stream_cipher = "aegis-256" })
    local key = new_key()
    local name = H.unique_name("s")
    must(b:create_stream(name))
    must(b:stream(name, { encryption_key = "  " .. key .. "\n" }):append { "x" })
    assert.are.equal("x", must(b:stream(name, { encryption_key = key }):read { seq_num = 0 })
      .records[1].body)
  end)

  it("is checked by the core too (the header cannot carry anything else)", function()
    local core = H.client().core
    local ok, msg = pcall(core.read, core, "enc-arguments", "s", { encryption_key = "a\r\nb: c" })
    assert.is_false(ok)
    assert.is_truthy(tostring(msg):find("encryption_key", 1, true), msg)
    assert.is_nil(tostring(msg):find("b: c", 1, true))
  end)
end)

-- Not a client option: the SDKs take the key per stream only.
describe("s2.client", function()
  it("has no encryption_key option", function()
    local ok, msg = pcall(s2.client, { access_token = "x", encryption_key = "AAAA" })
    assert.is_false(ok)
    assert.is_truthy(msg:find("unknown option 'encryption_key'", 1, true), msg)
  end)
end)

describe("s2.new_encryption_key", function()
  it("gives distinct 256-bit keys in base64 that s2-lite accepts", function()
    local a, b = s2.new_encryption_key(), s2.new_encryption_key()
    assert.are.equal(44, #a)
    assert.is_truthy(a:match("^[A-Za-z0-9+/]+=$"))
    assert.are_not.equal(a, b)
    local client = H.client()
    local basin = H.new_basin(client, "newkey", { stream_cipher = "aes-256-gcm" })
    local stream = basin:stream(H.new_stream(basin, "k").name, { encryption_key = a })
    assert.is_truthy(stream:append { "sealed" })
    assert.are.equal("sealed", assert(stream:read { seq_num = 0, count = 1 }).records[1].body)
  end)
end)
