-- Unit specs of the C codec (s2.core): protobuf wire bytes, round trips, metered bytes,
-- batch validation and malformed input. No server needed.
local core = require "s2.core"
local s2 = require "s2"

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

local function unhex(h)
  return (h:gsub("%s", ""):gsub("..", function(x) return string.char(tonumber(x, 16)) end))
end

describe("AppendInput encoding", function()
  it("writes the exact protobuf bytes of a small batch", function()
    local wire = core.encode_append_input({ "hi" }, { match_seq_num = 1, fencing_token = "t" })
    -- records[0] = { body = "hi" }, match_seq_num = 1, fencing_token = "t"
    assert.are.equal("0a041a026869" .. "1001" .. "1a0174", hex(wire))
  end)

  it("writes timestamps and headers in field order, empty values omitted", function()
    local wire = core.encode_append_input({ { timestamp = 300, headers = { { "k", "" } } } })
    -- record (8 bytes): 08 ac02 (ts=300), 12 03 (header) 0a 01 6b (name "k"); no value, no body
    assert.are.equal("0a08" .. "08ac02" .. "12030a016b", hex(wire))
  end)

  it("keeps an empty fencing token (it clears a fence) but leaves out absent options", function()
    assert.are.equal("0a00" .. "1a00", hex(core.encode_append_input({ "" }, { fencing_token = "" })))
    assert.are.equal("0a00", hex(core.encode_append_input({ "" })))
  end)

  it("round-trips bodies, headers (order, empty values, binary) and timestamps", function()
    local records = {
      "",
      "plain",
      { body = "a\0b\255", headers = { { "z", "1" }, { "a", "" }, { "", "" }, { "bin\0", "\1\2" } } },
      { timestamp = 0 },
      { timestamp = math.maxinteger, body = "max" },
    }
    local wire = core.encode_append_input(records, { match_seq_num = math.maxinteger })
    local got, opts = core.decode_append_input(wire)
    assert.are.equal(#records, #got)
    assert.are.equal("", got[1].body)
    assert.are.equal("plain", got[2].body)
    assert.are.same(records[3].headers, got[3].headers)
    assert.are.equal("a\0b\255", got[3].body)
    assert.are.equal(0, got[4].timestamp)
    assert.is_nil(got[2].timestamp)
    assert.are.equal(math.maxinteger, got[5].timestamp)
    assert.are.equal(math.maxinteger, opts.match_seq_num)
    assert.is_nil(opts.fencing_token)
  end)

  it("round-trips a record of exactly 1 MiB metered", function()
    local body = ("x"):rep(1024 * 1024 - 8)
    assert.are.equal(1024 * 1024, s2.metered_bytes(body))
    local got = core.decode_append_input(core.encode_append_input({ body }))
    assert.are.equal(body, got[1].body)
  end)
end)

describe("metered bytes", function()
  it("is 8 + 2 per header + names, values and body", function()
    assert.are.equal(8, s2.metered_bytes(""))
    assert.are.equal(13, s2.metered_bytes("hello"))
    assert.are.equal(8 + 2 + 1 + 2 + 3, s2.metered_bytes { body = "abc", headers = { { "a", "bc" } } })
    assert.are.equal(8 + (2 + 4 + 0) * 2, s2.metered_bytes { headers = { { "name", "" }, { "", "name" } } })
    -- command records: 8 + 2 + len(op) + payload
    assert.are.equal(8 + 2 + 5 + 3, s2.metered_bytes(s2.fence("tok")))
    assert.are.equal(8 + 2 + 4 + 8, s2.metered_bytes(s2.trim(7)))
  end)
end)

describe("batch validation", function()
  local function err_of(f, ...)
    local ok, e = pcall(f, ...)
    assert.is_false(ok)
    return tostring(e)
  end

  it("accepts 1000 records and 1 MiB metered exactly", function()
    local t = {}
    for i = 1, 1000 do t[i] = ("y"):rep(1024 * 1024 // 1000 - 8) end
    assert.is_string(core.encode_append_input(t))
  end)

  it("rejects an empty batch", function()
    assert.truthy(err_of(core.encode_append_input, {}):find("at least 1 record", 1, true))
  end)

  it("rejects 1001 records, naming the limit", function()
    local t = {}
    for i = 1, 1001 do t[i] = "x" end
    local e = err_of(core.encode_append_input, t)
    assert.truthy(e:find("1001", 1, true) and e:find("1000", 1, true), e)
  end)

  it("rejects 1 MiB + 1 metered, per record and per batch", function()
    local e = err_of(core.encode_append_input, { ("x"):rep(1024 * 1024 - 7) })
    assert.truthy(e:find("records[1]", 1, true) and e:find("1048576", 1, true), e)
    e = err_of(core.encode_append_input, { ("x"):rep(1024 * 1024 - 8), "" })
    assert.truthy(e:find("1048584", 1, true) and e:find("1048576", 1, true), e)
  end)

  it("rejects a fencing token over 36 bytes", function()
    local e = err_of(core.encode_append_input, { "x" }, { fencing_token = ("f"):rep(37) })
    assert.truthy(e:find("fencing_token", 1, true) and e:find("36", 1, true), e)
    assert.is_string(core.encode_append_input({ "x" }, { fencing_token = ("f"):rep(36) }))
  end)

  it("names the record and field of a malformed record", function()
    assert.truthy(err_of(core.encode_append_input, { "ok", { body = 42 } }):find("records[2].body", 1, true))
    assert.truthy(err_of(core.encode_append_input, { true }):find("records[1]", 1, true))
    assert.truthy(err_of(core.encode_append_input, { { headers = { { "a" } } } })
      :find("records[1].headers[1]", 1, true))
    assert.truthy(err_of(core.encode_append_input, { { headers = { { 1, "a" } } } })
      :find("must be strings", 1, true))
    assert.truthy(err_of(core.encode_append_input, { { bdy = "x" } }):find("unknown field 'bdy'", 1, true))
    assert.truthy(err_of(core.encode_append_input, { { timestamp = -1 } }):find("timestamp", 1, true))
    assert.truthy(err_of(core.encode_append_input, { { timestamp = 1.5 } }):find("timestamp", 1, true))
    assert.truthy(err_of(core.encode_append_input, { "x" }, { match_seq_num = -1 })
      :find("match_seq_num", 1, true))
  end)
end)

describe("AppendAck", function()
  it("decodes the exact wire bytes", function()
    local ack = assert(core.decode_append_ack(unhex("0a00 1204 0802 1005 1a04 0802 1005")))
    assert.are.same({ seq_num = 0, timestamp = 0 }, ack.start)
    assert.are.same({ seq_num = 2, timestamp = 5 }, ack["end"])
    assert.are.same({ seq_num = 2, timestamp = 5 }, ack.tail)
  end)

  it("round-trips maximum values", function()
    local m = math.maxinteger
    local ack = { start = { seq_num = m - 1, timestamp = m }, ["end"] = { seq_num = m, timestamp = m },
                  tail = { seq_num = m, timestamp = 0 } }
    assert.are.same(ack, core.decode_append_ack(core.encode_append_ack(ack)))
  end)

  it("skips unknown fields of every wire type", function()
    -- field 9 varint, field 10 fixed64, field 11 bytes, field 12 fixed32, then end = {seq 3}
    local wire = unhex("4801" .. "51" .. "0000000000000000" .. "5a0161" .. "6500000000" .. "12020803")
    local ack = assert(core.decode_append_ack(wire))
    assert.are.equal(3, ack["end"].seq_num)
  end)

  it("rejects truncated, overlong and mistyped input with protocol_error", function()
    for _, bad in ipairs {
      "0a05",                                     -- length past the end
      "08ffffffffffffffffffff01",                 -- varint longer than 10 bytes
      "0802",                                     -- start with varint wire type
      "0a020803ff",                               -- trailing garbage key
      "0b",                                       -- group wire type
      "00",                                       -- field number 0
    } do
      local ack, err = core.decode_append_ack(unhex(bad))
      assert.is_nil(ack, bad)
      assert.are.equal("protocol_error", err.code)
      assert.is_false(err.retryable)
    end
  end)
end)

describe("ReadBatch", function()
  it("round-trips records, headers and the tail", function()
    local batch = {
      records = {
        { seq_num = 0, timestamp = 10, headers = {}, body = "" },
        { seq_num = 1, timestamp = 11, headers = { { "h", "v" }, { "", "" } }, body = ("b"):rep(70000) },
        { seq_num = math.maxinteger, timestamp = 12, headers = {}, body = "\0" },
      },
      tail = { seq_num = 99, timestamp = 12 },
    }
    assert.are.same(batch, core.decode_read_batch(core.encode_read_batch(batch)))
  end)

  it("has no tail when none was sent, and an empty batch decodes to no records", function()
    local b = assert(core.decode_read_batch(""))
    assert.are.same({}, b.records)
    assert.is_nil(b.tail)
    -- a heartbeat: no records, a tail
    b = assert(core.decode_read_batch(core.encode_read_batch { records = {}, tail = { seq_num = 5, timestamp = 1 } }))
    assert.are.same({}, b.records)
    assert.are.equal(5, b.tail.seq_num)
  end)

  -- The decoder's fast path takes seq_num, timestamp, body in field order and nothing else;
  -- every other layout must decode the same through the general loop.
  local function rec_bytes(fields) -- fields: hex of a SequencedRecord -> a ReadBatch of it
    local r = unhex(fields)
    return "\10" .. string.char(#r) .. r
  end

  it("decodes records in any field order, with unknown fields, and with fields left out", function()
    local cases = {
      -- seq 5, ts 7, body "ab": the usual order
      { "0805 1007 22026162", { seq_num = 5, timestamp = 7, headers = {}, body = "ab" } },
      -- body first, then ts, then seq
      { "22026162 1007 0805", { seq_num = 5, timestamp = 7, headers = {}, body = "ab" } },
      -- an unknown varint field (9) after the body
      { "0805 1007 22026162 4801", { seq_num = 5, timestamp = 7, headers = {}, body = "ab" } },
      -- seq_num 0 and timestamp 0 left out (proto3 defaults)
      { "22026162", { seq_num = 0, timestamp = 0, headers = {}, body = "ab" } },
      -- a header between timestamp and body
      { "0805 1007 1a06 0a016b 120176 22026162",
        { seq_num = 5, timestamp = 7, headers = { { "k", "v" } }, body = "ab" } },
      -- two-byte varints for seq_num and timestamp, body twice (the last wins)
      { "08ac02 10ac02 220178 22026162", { seq_num = 300, timestamp = 300, headers = {}, body = "ab" } },
    }
    for i, c in ipairs(cases) do
      local b, err = core.decode_read_batch(rec_bytes(c[1]))
      assert(b, "case " .. i .. ": " .. tostring(err))
      assert.are.same({ c[2] }, b.records, "case " .. i)
    end
  end)

  it("rejects a body length past the record, and a mistyped seq_num", function()
    for _, bad in ipairs { "0805 1007 22036162", "0a0105 1007 22026162", "0805 1007 2202" } do
      local b, err = core.decode_read_batch(rec_bytes(bad))
      assert.is_nil(b, bad)
      assert.are.equal("protocol_error", err.code)
    end
  end)

  it("rejects a record cut short", function()
    local wire = core.encode_read_batch { records = { { seq_num = 1, body = "hello" } } }
    local b, err = core.decode_read_batch(wire:sub(1, -2))
    assert.is_nil(b)
    assert.are.equal("protocol_error", err.code)
  end)
end)

describe("server error bodies", function()
  it("maps 412 seq_num_mismatch with the expected value", function()
    local e = core.error_from_response(412, '{"seq_num_mismatch": 42}')
    assert.are.equal("seq_num_mismatch", e.code)
    assert.are.equal(42, e.expected_seq_num)
    assert.are.equal(412, e.status)
    assert.is_false(e.retryable)
  end)

  it("maps 412 fencing_token_mismatch with the expected token (JSON escapes decoded)", function()
    local e = core.error_from_response(412, '{"fencing_token_mismatch":"a\\"b\\u00e9"}')
    assert.are.equal("fencing_token_mismatch", e.code)
    assert.are.equal('a"b\195\169', e.expected_fencing_token)
  end)

  it("maps 416 with the tail", function()
    local e = core.error_from_response(416, '{"tail":{"seq_num":7,"timestamp":123}}')
    assert.are.equal(416, e.status)
    assert.are.same({ seq_num = 7, timestamp = 123 }, e.tail)
  end)

  it("passes codes through and classifies them", function()
    local cases = {
      { 404, "stream_not_found", false }, { 429, "rate_limited", true },
      { 503, "unavailable", true }, { 409, "transaction_conflict", true },
      { 409, "resource_already_exists", false }, { 422, "invalid", false },
      { 500, "storage", true }, { 502, "hot_server", true },
    }
    for _, c in ipairs(cases) do
      local e = core.error_from_response(c[1], ('{"code":"%s","message":"m","extra":[1,{"x":null}]}'):format(c[2]))
      assert.are.equal(c[2], e.code)
      assert.are.equal("m", e.message)
      assert.are.equal(c[3], e.retryable, c[2])
    end
  end)

  it("falls back to the status for unknown codes and non-JSON bodies", function()
    local e = core.error_from_response(503, "upstream\nbroke")
    assert.are.equal("http_503", e.code)
    assert.are.equal("upstream broke", e.message)
    assert.is_true(e.retryable)
    e = core.error_from_response(400, '{"code":"brand_new"}')
    assert.are.equal("brand_new", e.code)
    assert.is_false(e.retryable)
    e = core.error_from_response(500, "")
    assert.are.equal("http_500", e.code)
  end)

  it("prints as one line and concatenates", function()
    local e = core.error_from_response(404, '{"code":"stream_not_found","message":"no such stream"}')
    assert.are.equal("stream_not_found: no such stream (HTTP 404)", tostring(e))
    assert.are.equal("error: stream_not_found: no such stream (HTTP 404)", "error: " .. e)
    assert.is_true(s2.is_error(e))
  end)
end)

describe("endpoints", function()
  it("parses the accepted forms", function()
    local function p(s) return assert(core.parse_endpoint(s)) end
    assert.are.same({ https = true, basin_template = false, host = "a.s2.dev", port = 443, path = "/v1" },
      p("https://a.s2.dev"))
    assert.are.same({ https = false, basin_template = false, host = "127.0.0.1", port = 8080, path = "/v1" },
      p("http://127.0.0.1:8080/"))
    assert.are.same({ https = true, basin_template = true, host = "b.s2.dev", port = 443, path = "/v1" },
      p("{basin}.b.s2.dev"))
    assert.are.equal(false, p("localhost:9000").https)
    assert.are.equal("/api/v1", p("https://h/api/v1/").path)
  end)

  it("rejects what it cannot use", function()
    for _, bad in ipairs { "", "ftp://x", "http://h?q=1", "http://h#f", "http://:80", "http://h:0",
                           "http://h:99999", "http://h:12x", "http://h h" } do
      local ep, err = core.parse_endpoint(bad)
      assert.is_nil(ep, bad)
      assert.are.equal("invalid", err.code)
    end
  end)
end)
