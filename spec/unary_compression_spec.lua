-- Compressed unary append bodies: with the client's compression set to "zstd" or "gzip",
-- stream:append sends its protobuf body compressed, with Content-Encoding (as the Rust, Go
-- and Python SDKs do), and so does the HTTP/1.1 fallback of append sessions. Against s2-lite,
-- through the fault proxy, whose byte counter shows what went over the wire.
local H = require "helper"
local P = require "support.fault_proxy"

local must = H.must

-- 256 KiB that compress to almost nothing, with a varying head so bodies differ.
local BODY_LEN = 256 * 1024
local function body(tag)
  return (tag .. ":" .. ("squeeze me "):rep(BODY_LEN // 11 + 1)):sub(1, BODY_LEN)
end

describe("unary append compression", function()
  local proxy, basin_name
  lazy_setup(function()
    basin_name = select(2, H.new_basin(H.client(), "unarycomp"))
    proxy = P.start { target = H.endpoint():gsub("^http://", "") }
  end)
  lazy_teardown(function()
    if proxy then proxy:stop() end
  end)

  -- Bytes the client sent through the proxy while fn ran.
  local function uploaded(fn)
    local before = proxy:stats().bytes_up
    fn()
    return proxy:stats().bytes_up - before
  end

  local function client(compression, extra)
    local opts = { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                   compression = compression }
    for k, v in pairs(extra or {}) do opts[k] = v end
    return H.client(opts)
  end

  -- Appends two big records (and a small one) and reads them back; returns the bytes sent.
  local function round_trip(compression)
    local stream = client(compression):basin(basin_name):stream(H.unique_name("s"))
    local records = { body("one"), { body = body("two"), headers = { { "h", "v" } } }, "tiny" }
    local sent = uploaded(function()
      local ack = must(stream:append(records))
      assert.are.equal(0, ack.start.seq_num)
      assert.are.equal(3, ack["end"].seq_num)
    end)
    local batch = must(H.client():basin(basin_name):stream(stream.name):read { seq_num = 0 })
    assert.are.equal(3, #batch.records)
    assert.is_true(batch.records[1].body == records[1], "record 1 differs")
    assert.is_true(batch.records[2].body == records[2].body, "record 2 differs")
    assert.are.same({ { "h", "v" } }, batch.records[2].headers)
    assert.are.equal("tiny", batch.records[3].body)
    return sent
  end

  it("without compression sends the body as it is (the baseline)", function()
    assert.is_true(round_trip("none") > 2 * BODY_LEN)
  end)

  for _, algo in ipairs { "zstd", "gzip" } do
    it(("with %s sends the body compressed, and the records read back identical"):format(algo),
      function()
        local sent = round_trip(algo)
        -- 512 KiB of records; the request line and headers are well under 1 KiB
        assert.is_true(sent < 16 * 1024, ("%d bytes went up for 512 KiB of records"):format(sent))
      end)
  end

  it("over the HTTP/1.1 fallback of an append session too (each batch a unary append)",
    function()
      local stream = client("zstd", { force_http1 = true }):basin(basin_name)
        :stream(H.unique_name("h1"))
      local sent = uploaded(function()
        local session = must(stream:append_session())
        local t1 = must(session:submit { body("a") })
        local t2 = must(session:submit { body("b"), "small" })
        must(t1:ack(10))
        must(t2:ack(10))
        must(session:close(10))
      end)
      assert.is_true(sent < 16 * 1024, ("%d bytes went up for 512 KiB of records"):format(sent))
      local batch = must(H.client():basin(basin_name):stream(stream.name):read { seq_num = 0 })
      assert.are.equal(3, #batch.records)
      assert.is_true(batch.records[1].body == body("a"))
      assert.is_true(batch.records[2].body == body("b"))
      assert.are.equal("small", batch.records[3].body)
    end)
end)
