-- Unit specs of S2S framing (s2_frame.c): layout, flags, compression, malformed frames.
local core = require "s2.core"

local function hex(s)
  return (s:gsub(".", function(c) return ("%02x"):format(c:byte()) end))
end

describe("S2S frames", function()
  it("has a 3-byte length (flag + payload) and a flag byte", function()
    assert.are.equal("00000400" .. "616263", hex(core.encode_frame("abc")))
    assert.are.equal("00000180", hex(core.encode_frame("", 0x80)))
  end)

  it("round-trips several frames fed at once, keeping an incomplete tail", function()
    local wire = core.encode_frame("one") .. core.encode_frame("two") .. core.encode_frame("three")
    local frames, rest = core.decode_frames(wire .. wire:sub(1, 5))
    assert.are.equal(3, #frames)
    assert.are.equal("three", frames[3].payload)
    assert.are.equal(5, rest)
  end)

  it("decodes terminal frames as status + JSON and never compresses them", function()
    local body = '{"code":"invalid","message":"' .. ("m"):rep(2000) .. '"}'
    local wire = core.encode_frame("\1\148" .. body, 0x80, "zstd")
    assert.are.equal(0x80, wire:byte(4))
    local f = core.decode_frames(wire)[1]
    assert.is_true(f.terminal)
    assert.are.equal(404, f.status)
    assert.are.equal(body, f.payload)
  end)

  it("sees the reconnect-advised flag", function()
    local f = core.decode_frames(core.encode_frame("x", 0x10))[1]
    assert.is_true(f.reconnect)
    assert.is_false(f.terminal)
  end)

  for _, algo in ipairs { "zstd", "gzip" } do
    it("compresses " .. algo .. " payloads of 1 KiB and more, not smaller ones", function()
      local small = ("s"):rep(1023)
      local big = ("b"):rep(100000)
      assert.are.equal(0, core.encode_frame(small, 0, algo):byte(4) & 0x60)
      local wire = core.encode_frame(big, 0, algo)
      assert.are_not.equal(0, wire:byte(4) & 0x60)
      assert.is_true(#wire < #big / 10)
      assert.are.equal(big, core.decode_frames(wire)[1].payload)
    end)
  end

  it("rejects malformed frames cleanly", function()
    local cases = {
      ["zero length"] = "\0\0\0",
      ["length over 2 MiB"] = "\32\0\1\0",
      ["unknown compression"] = "\0\0\2\96x",
      ["bad zstd"] = "\0\0\5\32abcd",
      ["bad gzip"] = "\0\0\5\64abcd",
      ["terminal without a status"] = "\0\0\2\128\1",
    }
    for name, wire in pairs(cases) do
      local frames, err = core.decode_frames(wire)
      assert.is_nil(frames, name)
      assert.are.equal("bad_frame", err.code, name)
    end
  end)

  it("refuses to inflate past 2 MiB", function()
    local bomb = core.encode_frame(("z"):rep(2 * 1024 * 1024 - 1), 0, "zstd")
    assert.is_table(core.decode_frames(bomb)) -- 2 MiB - 1 is the largest payload
    -- a small compressed frame whose payload inflates to 3 MiB
    for _, algo in ipairs { "zstd", "gzip" } do
      local bomb3 = assert(core.encode_frame(("z"):rep(3 * 1024 * 1024), 0, algo))
      assert.is_true(#bomb3 < 1024 * 1024)
      local frames, err = core.decode_frames(bomb3)
      assert.is_nil(frames)
      assert.are.equal("bad_frame", err.code)
    end
  end)
end)
