-- Writes the small seed corpora of the fuzz harnesses (fuzz/corpus/<name>/), using the
-- codecs of s2.core itself to make well-formed inputs. Run from the repository root after
-- `make`:
--   LUA_CPATH='build/?.so;;' lua5.4 fuzz/gen_corpus.lua
-- The first byte of every frame/proto seed is the harness's mode selector (see the harness).
local core = require "s2.core"

local function write(dir, name, bytes)
  os.execute("mkdir -p fuzz/corpus/" .. dir)
  local f = assert(io.open(("fuzz/corpus/%s/%s"):format(dir, name), "wb"))
  f:write(bytes)
  f:close()
end

local function u8(n) return string.char(n) end

-- proto: 0 AppendAck, 1 ReadBatch, 2 AppendInput
local ack = core.encode_append_ack {
  start = { seq_num = 5, timestamp = 1700000000000 },
  ["end"] = { seq_num = 8, timestamp = 1700000000005 },
  tail = { seq_num = 8, timestamp = 1700000000005 } }
write("proto", "ack", u8(0) .. ack)
write("proto", "ack_empty", u8(0))
local batch = core.encode_read_batch { records = {
  { seq_num = 0, timestamp = 1, body = "hello" },
  { seq_num = 1, timestamp = 2, headers = { { "k", "v" }, { "", "fence" } }, body = "" },
  { seq_num = 2, timestamp = 3, body = ("x"):rep(40) } },
  tail = { seq_num = 3, timestamp = 3 } }
write("proto", "read_batch", u8(1) .. batch)
write("proto", "heartbeat", u8(1) .. core.encode_read_batch { records = {}, tail = { seq_num = 9, timestamp = 9 } })
local input = core.encode_append_input({ "a", { body = "b", headers = { { "h", "v" } }, timestamp = 7 },
  { headers = { { "", "trim" } }, body = "\0\0\0\0\0\0\0\5" } }, { match_seq_num = 3, fencing_token = "tok" })
write("proto", "append_input", u8(2) .. input)
write("proto", "append_input_fence", u8(2) .. core.encode_append_input({ { headers = { { "", "fence" } }, body = "" } }, { fencing_token = "" }))
write("proto", "unknown_fields", u8(1) .. "\x2a\x03abc\x30\x01\x39" .. ("\0"):rep(8) .. "\x3d\0\0\0\0" .. batch)

-- frame: 0 raw wire, 1 round trip, 2 garbage compressed, 3 damaged compressed, 4 append input
local f1 = core.encode_frame(batch)
local term = core.encode_frame("\1\154" .. '{"code":"seq_num_mismatch","message":"x"}', 0x80)
write("frame", "raw_two_frames", u8(0) .. u8(3) .. "\2\5\9" .. f1 .. term)
write("frame", "raw_reconnect", u8(0) .. u8(0) .. core.encode_frame(ack, 0x10))
write("frame", "raw_zstd", u8(0) .. u8(0) .. core.encode_frame(("z"):rep(3000), 0, "zstd"))
write("frame", "raw_gzip", u8(0) .. u8(1) .. "\7" .. core.encode_frame(("g"):rep(3000), 0, "gzip"))
write("frame", "raw_bad", u8(0) .. u8(0) .. "\0\0\2\96x\0\0\0")
write("frame", "round_trip_zstd", u8(1) .. u8(0) .. u8(1) .. ("abc"):rep(400))
write("frame", "round_trip_gzip_terminal", u8(1) .. u8(0x80) .. u8(2) .. "\1\144{}")
write("frame", "garbage_zstd", u8(2) .. u8(0x20) .. "\40\181\47\253" .. ("q"):rep(20))
write("frame", "damaged_zstd", u8(3) .. u8(0) .. "\0\3\7" .. ("payload "):rep(50))
write("frame", "damaged_gzip", u8(3) .. u8(1) .. "\0\0\9" .. ("payload "):rep(50))
write("frame", "append_input", u8(4) .. u8(1) .. "\5hello\132abcd\0")

-- error: 4-byte status (big-endian; top byte 0 folds into 100..599) + body
local function st(n) return string.char(n >> 24 & 255, n >> 16 & 255, n >> 8 & 255, n & 255) end
write("error", "rate_limited", st(429) .. '{"code":"rate_limited","message":"slow down"}')
write("error", "seq_mismatch", st(412) .. '{"seq_num_mismatch":42}')
write("error", "fence_mismatch", st(412) .. '{"fencing_token_mismatch":"t\\u00e9\\ud83d\\ude00"}')
write("error", "range", st(416) .. '{"tail":{"seq_num":10,"timestamp":1700000000000}}')
write("error", "nested", st(500) .. '{"x":[1,{"y":[true,false,null]}],"code":"other","message":"a\\nb"}')
write("error", "not_json", st(502) .. "<html>Bad Gateway</html>\r\n")
write("error", "negative_status", st(0xffffffff) .. "{}")

-- endpoint: TEXT \0 BASIN \0 SUFFIX
write("endpoint", "default_basin", "https://{basin}.b.s2.dev/v1\0my-basin\0/streams/x")
write("endpoint", "account", "https://a.s2.dev/v1")
write("endpoint", "local_port", "localhost:8080\0basin\0/records?x=1")
write("endpoint", "http_path", "http://127.0.0.1:1/api/v2/\0b")
write("endpoint", "bare_host", "example.com")
write("endpoint", "bad_scheme", "ftp://x")
-- sse: 0 event stream (next byte: chunking seed), 1 JSON ReadBatch, 2 ping data / event id
local rec1 = '{"seq_num":0,"timestamp":1700000000000,"headers":[["aw==","dg=="],["","Zg=="]],"body":"aGVsbG8="}'
local rec2 = '{"seq_num":1,"timestamp":1700000000001,"body":"AP8="}'
local batch_json = '{"records":[' .. rec1 .. ',' .. rec2 .. '],"tail":{"seq_num":2,"timestamp":1700000000001}}'
local ping = '{"timestamp":1700000000002,"tail":{"seq_num":2,"timestamp":1700000000001}}'
write("sse", "stream", u8(0) .. u8(7) .. "event: batch\nid: 1,2,36\ndata: " .. batch_json ..
  "\n\n: keep-alive\n\nevent: ping\ndata: " .. ping .. "\n\ndata: [DONE]\n\n")
write("sse", "stream_crlf", u8(0) .. u8(3) .. "event: batch\r\nid: 1,2,36\r\ndata: " .. batch_json ..
  "\r\n\r\nevent: error\r\ndata: {\"code\":\"unavailable\",\"message\":\"x\"}\r\n\r\n")
write("sse", "stream_cr_multiline", u8(0) .. u8(1) .. "event:ping\rdata:{\"timestamp\":1,\rdata: \"tail\":null}\r\rid\rretry: 5\r\r")
write("sse", "batch", u8(1) .. batch_json)
write("sse", "batch_tail_null", u8(1) .. '{"tail":null,"records":[{"timestamp":5,"seq_num":9}],"x":[{"y":[1,2]}]}')
write("sse", "ping", u8(2) .. ping)
write("sse", "id", u8(2) .. "18446744073709551615,1000,1048576")
-- Regression inputs (issue 12, item 7): a record with two "headers" members made the old
-- parser give the record headers past the end of the batch's header array; duplicates of the
-- other members, a header that is not a pair, an id that would inject a request header.
local two_headers = '{"records":[{"seq_num":0,"timestamp":1,"headers":[["aw==","dg=="]],' ..
  '"headers":[["aw==","dg=="]],"body":"eA=="}]}'
write("sse", "regress-two-headers", u8(1) .. two_headers)
write("sse", "regress-two-headers-stream", u8(0) .. u8(5) .. "event: batch\nid: 0,1,14\ndata: " .. two_headers .. "\n\n")
write("sse", "regress-duplicates", u8(1) .. '{"records":[{"seq_num":0,"seq_num":1,"timestamp":1,"body":"","body":"eA=="}],"records":[]}')
write("sse", "regress-header-not-pair", u8(1) .. '{"records":[{"seq_num":0,"timestamp":1,"headers":[["aw=="],["aw==","dg==","dg=="]]}]}')
write("sse", "regress-id-injection", u8(0) .. u8(2) .. "event: batch\nid: 0,1,9\rx-injected: 1\ndata: " ..
  '{"records":[{"seq_num":0,"timestamp":1,"body":"eA=="}]}' .. "\n\n")
-- Regression inputs of findings (kept in the corpus so every run replays them first):
--   proto/regress-malformed-header-*   a record whose header submessage is malformed (a heap overflow,
--                                      fixed in e3a74d7),
--                                      followed by another record with a header
--   proto/regress-no-headers-null-offset, error/regress-empty-body-null   NULL + 0
write("proto", "regress-malformed-header-append-input", "\2\x0a\x03\x12\x01\x08\x0a\x02\x12\x00")
write("proto", "regress-malformed-header-read-batch", "\1\x0a\x03\x1a\x01\x08\x0a\x02\x1a\x00")
write("proto", "regress-no-headers-null-offset", "\1\x0a\x00")
write("error", "regress-empty-body-null", "\0\0\1\xf7")
print("seed corpora written under fuzz/corpus/")
