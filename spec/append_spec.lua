-- Integration specs for single-batch appends (stream:append), command records and check_tail.
-- Runs against the s2-lite that `make test` starts (see spec/helper.lua).
local H = require "helper"
local s2 = require "s2"

local MiB = 1024 * 1024

-- A basin where nothing is created implicitly: every stream here is made with H.new_stream,
-- and a name that was never created must answer stream_not_found.
local NO_AUTO_CREATE = { create_stream_on_append = false, create_stream_on_read = false }

-- Unwraps `value, err`, failing the test with the error's one-line text.
local must = H.must

-- Expects `nil, err` and returns err.
local function must_fail(value, err)
  assert.is_nil(value, "expected a failure, got a result")
  assert.is_table(err, "expected an error object")
  assert.is_string(err.code)
  assert.is_string(err.message)
  assert.is_boolean(err.retryable)
  return err
end

-- Runs fn, expects it to raise, returns the message as a string.
local function raises(fn)
  local ok, msg = pcall(fn)
  assert.is_false(ok, "expected an error to be raised")
  return tostring(msg)
end

local function contains(haystack, needle)
  return string.find(haystack, needle, 1, true) ~= nil
end

local function assert_integer(v, what)
  assert.are.equal("integer", math.type(v), (what or "value") .. " must be a Lua integer")
end

-- Explicit timestamps an hour in the past (ms): client-prefer keeps them as given.
local function past_ms()
  return (os.time() - 3600) * 1000
end

-- All 256 byte values, repeated: a body that any encoding slip would corrupt.
local function binary_body(len)
  local bytes = {}
  for i = 0, 255 do bytes[#bytes + 1] = string.char(i) end
  local block = table.concat(bytes)
  return string.rep(block, len // 256 + 1):sub(1, len)
end

describe("stream:append", function()
  local client, basin

  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "append", NO_AUTO_CREATE)
  end)

  describe("the single-batch example", function()
    it("appends two records and acks start 0, end 2 on a fresh stream", function()
      local stream = H.new_stream(basin, "example")
      local ack = must(stream:append({ "first event", { body = "second event" } }))

      assert.are.equal(0, ack.start.seq_num)
      assert.are.equal(2, ack["end"].seq_num)
      assert.are.equal(2, ack.tail.seq_num)
      for _, pos in ipairs { ack.start, ack["end"], ack.tail } do
        assert_integer(pos.seq_num, "seq_num")
        assert_integer(pos.timestamp, "timestamp")
      end
      assert.are.equal("Wrote records 0 through 1",
        ("Wrote records %d through %d"):format(ack.start.seq_num, ack["end"].seq_num - 1))

      local batch = must(stream:read { seq_num = 0, count = 10 })
      assert.are.equal(2, #batch.records)
      assert.are.equal("first event", batch.records[1].body)
      assert.are.equal("second event", batch.records[2].body)
      assert.are.equal(0, batch.records[1].seq_num)
      assert.are.equal(1, batch.records[2].seq_num)
    end)

    it("continues numbering on the next append", function()
      local stream = H.new_stream(basin, "example2")
      must(stream:append({ "a", "b" }))
      local ack = must(stream:append({ "c" }))
      assert.are.equal(2, ack.start.seq_num)
      assert.are.equal(3, ack["end"].seq_num)
      assert.are.equal(3, ack.tail.seq_num)
    end)
  end)

  describe("read-back", function()
    it("returns bodies, headers (order, empty values, duplicates) and timestamps as written", function()
      local stream = H.new_stream(basin, "roundtrip")
      local t0 = past_ms()
      local records = {
        { body = "plain", timestamp = t0 },
        {
          body = "with headers",
          headers = { { "b", "1" }, { "a", "2" }, { "empty", "" }, { "b", "3" } },
          timestamp = t0 + 1,
        },
        {
          body = "nul\0inside\0and \255\254 high bytes\0",
          headers = { { "bin", "v\0\1\255" } },
          timestamp = t0 + 2,
        },
        { headers = { { "only", "headers" } }, timestamp = t0 + 3 },  -- no body
        { body = "", timestamp = t0 + 4 },                              -- empty body
      }
      local ack = must(stream:append(records))
      assert.are.equal(0, ack.start.seq_num)
      assert.are.equal(5, ack["end"].seq_num)
      assert.are.equal(t0, ack.start.timestamp)
      assert.are.equal(t0 + 4, ack["end"].timestamp)

      local batch = must(stream:read { seq_num = 0, count = 100 })
      assert.are.equal(5, #batch.records)
      for i, want in ipairs(records) do
        local got = batch.records[i]
        assert.are.equal(i - 1, got.seq_num)
        assert_integer(got.seq_num, "record seq_num")
        assert_integer(got.timestamp, "record timestamp")
        assert.are.equal(want.timestamp, got.timestamp)
        assert.is_true((want.body or "") == got.body,
          ("record %d: body differs (%q vs %q)"):format(i, want.body or "", tostring(got.body)))
        assert.are.same(want.headers or {}, got.headers)
      end
    end)

    it("keeps 1 KiB of every byte value in a body intact", function()
      local stream = H.new_stream(basin, "binary")
      local body = binary_body(1024)
      must(stream:append({ body }))
      local batch = must(stream:read { seq_num = 0, count = 1 })
      assert.are.equal(1, #batch.records)
      assert.are.equal(#body, #batch.records[1].body)
      assert.is_true(body == batch.records[1].body, "binary body differs")
    end)
  end)

  describe("match_seq_num", function()
    it("succeeds when it matches the tail and fails with 412 seq_num_mismatch otherwise", function()
      local stream = H.new_stream(basin, "match")

      local ack = must(stream:append({ "a", "b" }, { match_seq_num = 0 }))
      assert.are.equal(0, ack.start.seq_num)
      ack = must(stream:append({ "c" }, { match_seq_num = 2 }))
      assert.are.equal(2, ack.start.seq_num)
      assert.are.equal(3, ack["end"].seq_num)

      local err = must_fail(stream:append({ "d" }, { match_seq_num = 1 }))
      assert.are.equal(412, err.status)
      assert.are.equal("seq_num_mismatch", err.code)
      assert.are.equal(3, err.expected_seq_num)
      assert.is_false(err.retryable)

      -- the error prints as one line and concatenates
      local line = tostring(err)
      assert.is_true(#line > 0)
      assert.is_nil(line:find("\n", 1, true), "tostring(err) must be one line")
      assert.is_true(contains("x" .. err, "x"))

      -- nothing landed
      assert.are.equal(3, must(stream:check_tail()).seq_num)

      -- a match ahead of the tail fails too
      err = must_fail(stream:append({ "e" }, { match_seq_num = 10 }))
      assert.are.equal("seq_num_mismatch", err.code)
      assert.are.equal(3, err.expected_seq_num)
    end)
  end)

  describe("fencing", function()
    it("rejects a wrong fencing_token with 412 and accepts the right one", function()
      local stream = H.new_stream(basin, "fence")

      local ack = must(stream:append({ s2.fence("tok") }))
      assert.are.equal(0, ack.start.seq_num)
      assert.are.equal(1, ack["end"].seq_num)

      local err = must_fail(stream:append({ "blocked" }, { fencing_token = "wrong" }))
      assert.are.equal(412, err.status)
      assert.are.equal("fencing_token_mismatch", err.code)
      assert.are.equal("tok", err.expected_fencing_token)
      assert.is_false(err.retryable)
      assert.are.equal(1, must(stream:check_tail()).seq_num)

      ack = must(stream:append({ "allowed" }, { fencing_token = "tok" }))
      assert.are.equal(1, ack.start.seq_num)
      assert.are.equal(2, ack["end"].seq_num)

      -- both conditions at once
      ack = must(stream:append({ "both" }, { fencing_token = "tok", match_seq_num = 2 }))
      assert.are.equal(2, ack.start.seq_num)

      -- the fence command record reads back as written
      local batch = must(stream:read { seq_num = 0, count = 10 })
      assert.are.equal(3, #batch.records)
      assert.are.same({ { "", "fence" } }, batch.records[1].headers)
      assert.are.equal("tok", batch.records[1].body)
      assert.are.equal("allowed", batch.records[2].body)
      assert.are.equal("both", batch.records[3].body)
    end)

    it("clears the token with an empty fence", function()
      local stream = H.new_stream(basin, "unfence")
      must(stream:append({ s2.fence("tok") }))
      local ack = must(stream:append({ s2.fence("") }, { fencing_token = "tok" }))
      assert.are.equal(1, ack.start.seq_num)

      local err = must_fail(stream:append({ "x" }, { fencing_token = "tok" }))
      assert.are.equal("fencing_token_mismatch", err.code)
      assert.are.equal("", err.expected_fencing_token)
    end)

    it("meters a fence command as 8 + 2 + #\"fence\" + #token", function()
      assert.are.equal(8 + 2 + 5 + 3, s2.metered_bytes(s2.fence("tok")))
      assert.are.equal(8 + 2 + 5 + 36, s2.metered_bytes(s2.fence(string.rep("t", 36))))
    end)
  end)

  describe("trim", function()
    it("acks a trim command, which reads back with header {\"\", \"trim\"} and an 8-byte body", function()
      local stream = H.new_stream(basin, "trim")
      must(stream:append({ "r0", "r1", "r2" }))

      local ack = must(stream:append({ s2.trim(2) }))
      assert.are.equal(3, ack.start.seq_num)
      assert.are.equal(4, ack["end"].seq_num)

      -- records before 2 may or may not be gone yet; the command itself is at 3
      local batch = must(stream:read { seq_num = 3, count = 1 })
      assert.are.equal(1, #batch.records)
      local rec = batch.records[1]
      assert.are.equal(3, rec.seq_num)
      assert.are.same({ { "", "trim" } }, rec.headers)
      assert.are.equal(8, #rec.body)
      assert.are.equal(string.pack(">I8", 2), rec.body)
    end)

    it("builds command records as record tables (big-endian trim body)", function()
      local n = 0x0102030405
      local trim = s2.trim(n)
      assert.is_table(trim)
      assert.are.same({ { "", "trim" } }, trim.headers)
      assert.are.equal("\0\0\0\1\2\3\4\5", trim.body)
      assert.are.equal(8 + 2 + 4 + 8, s2.metered_bytes(trim))

      local fence = s2.fence("tok")
      assert.is_table(fence)
      assert.are.same({ { "", "fence" } }, fence.headers)
      assert.are.equal("tok", fence.body)
    end)

    it("acks a trim past the tail (the server clamps it)", function()
      local stream = H.new_stream(basin, "trimbig")
      must(stream:append({ "r0" }))
      -- Not read back: a clamped trim also trims the command record itself.
      local ack = must(stream:append({ s2.trim(0x0102030405) }))
      assert.are.equal(1, ack.start.seq_num)
      assert.are.equal(2, ack["end"].seq_num)
    end)
  end)

  describe("check_tail", function()
    it("follows appends, with the last record's timestamp", function()
      local stream = H.new_stream(basin, "tail")
      local t0 = past_ms()
      local tail = must(stream:check_tail())
      assert.are.equal(0, tail.seq_num)

      local ack = must(stream:append({ { body = "a", timestamp = t0 } }))
      tail = must(stream:check_tail())
      assert.are.equal(1, tail.seq_num)
      assert.are.equal(t0, tail.timestamp)
      assert.are.equal(ack.tail.seq_num, tail.seq_num)

      ack = must(stream:append({ { body = "b", timestamp = t0 + 5 }, { body = "c", timestamp = t0 + 6 } }))
      tail = must(stream:check_tail())
      assert.are.equal(3, tail.seq_num)
      assert.are.equal(t0 + 6, tail.timestamp)
      assert.are.equal(ack.tail.seq_num, tail.seq_num)
      assert.are.equal(ack.tail.timestamp, tail.timestamp)
      assert_integer(tail.seq_num, "tail seq_num")
      assert_integer(tail.timestamp, "tail timestamp")
    end)
  end)

  describe("limits", function()
    it("meters records as 8 + 2*headers + names + values + body", function()
      assert.are.equal(8 + 3, s2.metered_bytes("abc"))
      assert.are.equal(8, s2.metered_bytes(""))
      assert.are.equal(8 + 3, s2.metered_bytes({ body = "abc" }))
      assert.are.equal(8 + 2 + 1 + 2 + 3,
        s2.metered_bytes({ body = "xyz", headers = { { "a", "bc" } } }))
      assert.are.equal(8 + 4 + 1 + 0 + 2 + 1,
        s2.metered_bytes({ headers = { { "a", "" }, { "bb", "c" } } }))
    end)

    it("appends and reads back a record of exactly 1 MiB metered", function()
      local stream = H.new_stream(basin, "big")
      local body = binary_body(MiB - 8)
      assert.are.equal(MiB, s2.metered_bytes(body))

      local ack = must(stream:append({ body }))
      assert.are.equal(0, ack.start.seq_num)
      assert.are.equal(1, ack["end"].seq_num)

      local batch = must(stream:read { seq_num = 0, count = 1 })
      assert.are.equal(1, #batch.records)
      assert.are.equal(#body, #batch.records[1].body)
      assert.is_true(body == batch.records[1].body, "1 MiB body differs after the round trip")
    end)

    it("accepts exactly 1000 records in one batch", function()
      local stream = H.new_stream(basin, "thousand")
      local recs = {}
      for i = 1, 1000 do recs[i] = "r" .. i end
      local ack = must(stream:append(recs))
      assert.are.equal(0, ack.start.seq_num)
      assert.are.equal(1000, ack["end"].seq_num)
      assert.are.equal(1000, must(stream:check_tail()).seq_num)
    end)

    it("rejects 1001 records before sending anything", function()
      local stream = H.new_stream(basin, "over1000")
      local recs = {}
      for i = 1, 1001 do recs[i] = "r" .. i end
      local msg = raises(function() return stream:append(recs) end)
      assert.is_true(contains(msg, "records"), msg)
      assert.is_true(contains(msg, "1000"), msg)
      assert.are.equal(0, must(stream:check_tail()).seq_num)
    end)

    it("rejects a single record of 1 MiB + 1 metered before sending anything", function()
      local stream = H.new_stream(basin, "overmib")
      local body = string.rep("x", MiB - 8 + 1)
      assert.are.equal(MiB + 1, s2.metered_bytes(body))
      local msg = raises(function() return stream:append({ body }) end)
      assert.is_true(contains(msg, "1048576"), msg)
      assert.are.equal(0, must(stream:check_tail()).seq_num)
    end)

    it("rejects a batch whose records sum to 1 MiB + 1 metered before sending anything", function()
      local stream = H.new_stream(basin, "oversum")
      local a = string.rep("a", MiB // 2 - 8)       -- metered MiB/2
      local b = string.rep("b", MiB // 2 - 8 + 1)   -- metered MiB/2 + 1
      assert.are.equal(MiB + 1, s2.metered_bytes(a) + s2.metered_bytes(b))
      local msg = raises(function() return stream:append({ a, b }) end)
      assert.is_true(contains(msg, "1048576"), msg)
      assert.are.equal(0, must(stream:check_tail()).seq_num)
    end)
  end)

  describe("errors", function()
    it("answers stream_not_found for a stream that was never created", function()
      local stream = basin:stream(H.unique_name("missing"))
      local err = must_fail(stream:append({ "x" }))
      assert.are.equal("stream_not_found", err.code)
      assert.are.equal(404, err.status)
    end)

    it("answers basin_not_found for a basin that was never created", function()
      local stream = client:basin(H.unique_name("nobasin")):stream("s")
      local err = must_fail(stream:append({ "x" }))
      assert.are.equal("basin_not_found", err.code)
      assert.are.equal(404, err.status)
    end)
  end)
end)
