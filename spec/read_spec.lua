-- Integration specs for unary reads (stream:read) and check_tail.
-- Runs against the s2-lite that `make test` starts (see spec/helper.lua).
local H = require "helper"
local s2 = require "s2"

local NO_AUTO_CREATE = { create_stream_on_append = false, create_stream_on_read = false }

local must = H.must

local function must_fail(value, err)
  assert.is_nil(value, "expected a failure, got a result")
  assert.is_table(err, "expected an error object")
  assert.is_string(err.code)
  assert.is_boolean(err.retryable)
  return err
end

-- The seq_nums of a batch, as a list.
local function seqs(batch)
  local out = {}
  for i, rec in ipairs(batch.records) do out[i] = rec.seq_num end
  return out
end

local function bodies(batch)
  local out = {}
  for i, rec in ipairs(batch.records) do out[i] = rec.body end
  return out
end

-- Five records "r0".."r4" in two appends, timestamps t0, t0+1000, ..., t0+4000 (ms, in the
-- past, so client-prefer keeps them). Returns stream, t0.
local function five_records(basin, tag)
  local stream = H.new_stream(basin, tag)
  local t0 = (os.time() - 3600) * 1000
  local recs = {}
  for i = 0, 4 do
    recs[#recs + 1] = { body = "r" .. i, timestamp = t0 + 1000 * i }
  end
  must(stream:append({ recs[1], recs[2] }))
  local ack = must(stream:append({ recs[3], recs[4], recs[5] }))
  assert.are.equal(5, ack.tail.seq_num)
  return stream, t0
end

describe("stream:read", function()
  local client, basin

  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "read", NO_AUTO_CREATE)
  end)

  describe("check_tail", function()
    it("is seq_num 0 on a fresh stream", function()
      local stream = H.new_stream(basin, "fresh")
      local tail = must(stream:check_tail())
      assert.are.equal(0, tail.seq_num)
      assert.are.equal(0, tail.timestamp)
    end)

    it("is the next seq_num and the last timestamp after appends", function()
      local stream, t0 = five_records(basin, "tail")
      local tail = must(stream:check_tail())
      assert.are.equal(5, tail.seq_num)
      assert.are.equal(t0 + 4000, tail.timestamp)
    end)
  end)

  describe("records", function()
    it("come back with seq_num, timestamp, headers and body", function()
      local stream, t0 = five_records(basin, "shape")
      local batch = must(stream:read { seq_num = 0, count = 100 })
      assert.are.same({ 0, 1, 2, 3, 4 }, seqs(batch))
      assert.are.same({ "r0", "r1", "r2", "r3", "r4" }, bodies(batch))
      for i, rec in ipairs(batch.records) do
        assert.are.equal("integer", math.type(rec.seq_num))
        assert.are.equal("integer", math.type(rec.timestamp))
        assert.are.equal(t0 + 1000 * (i - 1), rec.timestamp)
        assert.is_table(rec.headers)
        assert.are.equal(0, #rec.headers)
      end
    end)
  end)

  describe("count", function()
    it("limits the number of records", function()
      local stream = five_records(basin, "count")
      assert.are.same({ 0, 1 }, seqs(must(stream:read { seq_num = 0, count = 2 })))
      assert.are.same({ 1, 2, 3 }, seqs(must(stream:read { seq_num = 1, count = 3 })))
      assert.are.same({ 4 }, seqs(must(stream:read { seq_num = 4, count = 1 })))
    end)

    it("returns what there is when it exceeds the records available", function()
      local stream = five_records(basin, "countmore")
      assert.are.same({ 2, 3, 4 }, seqs(must(stream:read { seq_num = 2, count = 50 })))
    end)
  end)

  describe("bytes", function()
    it("limits the metered size of the batch", function()
      local stream = five_records(basin, "bytes")
      local m = s2.metered_bytes("r0")  -- every record here has the same metered size
      assert.are.equal(10, m)
      assert.are.same({ 0, 1 }, seqs(must(stream:read { seq_num = 0, bytes = 2 * m })))
      assert.are.same({ 0 }, seqs(must(stream:read { seq_num = 0, bytes = 2 * m - 1 })))
      assert.are.same({ 1, 2, 3 }, seqs(must(stream:read { seq_num = 1, bytes = 3 * m })))
      assert.are.same({ 0, 1, 2, 3, 4 }, seqs(must(stream:read { seq_num = 0, bytes = 1000 })))
    end)

    it("counts headers in the metered size", function()
      local stream = H.new_stream(basin, "bytesh")
      local a = { body = "a", headers = { { "name", "value" } } }
      local b = { body = "b" }
      must(stream:append({ a, b, b }))
      local ma, mb = s2.metered_bytes(a), s2.metered_bytes(b)
      assert.are.equal(8 + 2 + 4 + 5 + 1, ma)
      assert.are.same({ 0, 1 }, seqs(must(stream:read { seq_num = 0, bytes = ma + mb })))
      assert.are.same({ 0 }, seqs(must(stream:read { seq_num = 0, bytes = ma + mb - 1 })))
    end)

    it("combines with count: whichever is hit first", function()
      local stream = five_records(basin, "both")
      assert.are.same({ 0, 1 }, seqs(must(stream:read { seq_num = 0, count = 2, bytes = 1000 })))
      assert.are.same({ 0, 1, 2 }, seqs(must(stream:read { seq_num = 0, count = 4, bytes = 30 })))
    end)
  end)

  describe("tail_offset", function()
    it("starts that many records before the tail", function()
      local stream = five_records(basin, "toff")
      assert.are.same({ 3, 4 }, seqs(must(stream:read { tail_offset = 2 })))
      assert.are.same({ 2 }, seqs(must(stream:read { tail_offset = 3, count = 1 })))
      assert.are.same({ 0, 1, 2, 3, 4 }, seqs(must(stream:read { tail_offset = 5 })))
    end)

    it("starts at 0 when it reaches past the head", function()
      local stream = five_records(basin, "toffbig")
      assert.are.same({ 0, 1, 2, 3, 4 }, seqs(must(stream:read { tail_offset = 999 })))
    end)

    it("is 416 at offset 0 (exactly the tail, bounded read)", function()
      local stream = five_records(basin, "toff0")
      local err = must_fail(stream:read { tail_offset = 0 })
      assert.are.equal(416, err.status)
      assert.is_table(err.tail)
      assert.are.equal(5, err.tail.seq_num)
    end)
  end)

  describe("timestamp", function()
    it("starts at the first record at or after the timestamp", function()
      local stream, t0 = five_records(basin, "ts")
      local batch = must(stream:read { timestamp = t0 + 2000 })
      assert.are.same({ 2, 3, 4 }, seqs(batch))
      assert.are.equal(t0 + 2000, batch.records[1].timestamp)

      assert.are.same({ 2, 3, 4 }, seqs(must(stream:read { timestamp = t0 + 1500 })))
      assert.are.same({ 0, 1, 2, 3, 4 }, seqs(must(stream:read { timestamp = 0 })))
      assert.are.same({ 1 }, seqs(must(stream:read { timestamp = t0 + 1, count = 1 })))
    end)

    it("is 416 with the tail when it is after the last record", function()
      local stream, t0 = five_records(basin, "tsfuture")
      local err = must_fail(stream:read { timestamp = t0 + 4001 })
      assert.are.equal(416, err.status)
      assert.are.equal(5, err.tail.seq_num)
      assert.are.equal(t0 + 4000, err.tail.timestamp)
    end)
  end)

  describe("until", function()
    it("stops before the first record at or after the timestamp (exclusive)", function()
      local stream, t0 = five_records(basin, "until")
      assert.are.same({ 0, 1 }, seqs(must(stream:read { seq_num = 0, ["until"] = t0 + 2000 })))
      assert.are.same({ 0, 1, 2 }, seqs(must(stream:read { seq_num = 0, ["until"] = t0 + 2001 })))
      assert.are.same({ 1, 2 },
        seqs(must(stream:read { timestamp = t0 + 1000, ["until"] = t0 + 3000 })))
    end)

    it("is rejected by the server (422 invalid) when it is not after the start timestamp", function()
      local stream, t0 = five_records(basin, "untilbad")
      local err = must_fail(stream:read { timestamp = t0 + 2000, ["until"] = t0 + 2000 })
      assert.are.equal(422, err.status)
      assert.are.equal("invalid", err.code)
    end)
  end)

  describe("beyond the tail", function()
    it("is 416 with err.tail = the tail without clamp", function()
      local stream, t0 = five_records(basin, "beyond")
      local err = must_fail(stream:read { seq_num = 10, count = 1 })
      assert.are.equal(416, err.status)
      assert.is_table(err.tail)
      assert.are.equal(5, err.tail.seq_num)
      assert.are.equal(t0 + 4000, err.tail.timestamp)
      assert.are.equal("integer", math.type(err.tail.seq_num))
    end)

    it("is 416 exactly at the tail (a bounded read cannot follow)", function()
      local stream = five_records(basin, "attail")
      local err = must_fail(stream:read { seq_num = 5 })
      assert.are.equal(416, err.status)
      assert.are.equal(5, err.tail.seq_num)
    end)

    it("is 416 on an empty stream, with tail 0", function()
      local stream = H.new_stream(basin, "empty")
      local err = must_fail(stream:read { seq_num = 0 })
      assert.are.equal(416, err.status)
      assert.are.equal(0, err.tail.seq_num)
    end)

    it("with clamp and a wait, returns an empty batch instead of 416", function()
      local stream = five_records(basin, "clampwait")
      local batch = must(stream:read { seq_num = 10, clamp = true, wait = 1 })
      assert.is_table(batch.records)
      assert.are.equal(0, #batch.records)
    end)

    it("with clamp but no wait, still 416 at the tail (s2-lite: unary reads are bounded)", function()
      local stream = five_records(basin, "clampnowait")
      local err = must_fail(stream:read { seq_num = 10, clamp = true })
      assert.are.equal(416, err.status)
      assert.are.equal(5, err.tail.seq_num)
    end)

    it("with clamp, a start inside the stream is not moved", function()
      local stream = five_records(basin, "clampin")
      assert.are.same({ 3, 4 }, seqs(must(stream:read { seq_num = 3, clamp = true })))
    end)
  end)

  describe("errors", function()
    it("stream_not_found for a stream that was never created", function()
      local stream = basin:stream(H.unique_name("missing"))
      local err = must_fail(stream:read { seq_num = 0 })
      assert.are.equal("stream_not_found", err.code)
      assert.are.equal(404, err.status)
      err = must_fail(stream:check_tail())
      assert.are.equal("stream_not_found", err.code)
      assert.are.equal(404, err.status)
    end)
  end)
end)
