-- Programmer mistakes must raise (not return nil, err), with a message naming the argument
-- and, where there is one, the limit; and they must be caught before any network I/O, so a
-- stream that already holds good records is left exactly as it was.
-- Runs against the s2-lite that `make test` starts (see spec/helper.lua).
local H = require "helper"
local s2 = require "s2"

local MiB = 1024 * 1024
local NO_AUTO_CREATE = { create_stream_on_append = false, create_stream_on_read = false }

local must = H.must

local function contains(haystack, needle)
  return string.find(haystack, needle, 1, true) ~= nil
end

-- Messages of Lua run-time accidents: a deliberate argument check never reads like these.
local ACCIDENTS = {
  "attempt to index", "attempt to call", "attempt to compare",
  "attempt to perform arithmetic", "attempt to concatenate", "attempt to get length",
}

local function records(n, body)
  local out = {}
  for i = 1, n do out[i] = body or ("r" .. i) end
  return out
end

-- The good records written before any bad call; they must survive every case below.
local GOOD = { "good-1", { body = "good-2", headers = { { "k", "v" } } } }

-- Each case: `call(stream)` must raise; the message must contain every word of `all` (if
-- given) and at least one word of `any` (if given).
local CASES = {
  -- records
  { name = "a non-string body (body = 42)",
    call = function(st) return st:append({ { body = 42 } }) end,
    all = { "body" } },
  { name = "a bad record after a good one in the same batch",
    call = function(st) return st:append({ "fine", { body = 42 } }) end,
    all = { "body" } },
  { name = "a record that is neither a string nor a table (true)",
    call = function(st) return st:append({ true }) end,
    all = { "record" } },
  { name = "1001 records",
    call = function(st) return st:append(records(1001)) end,
    all = { "records", "1000" } },
  { name = "one record of 1 MiB + 1 metered",
    call = function(st) return st:append({ string.rep("x", MiB - 8 + 1) }) end,
    all = { "1048576" } },
  { name = "a batch summing to 1 MiB + 1 metered",
    call = function(st)
      return st:append({ string.rep("a", MiB // 2 - 8), string.rep("b", MiB // 2 - 8 + 1) })
    end,
    all = { "1048576" } },
  { name = "an empty records table",
    call = function(st) return st:append({}) end,
    any = { "records", "empty" } },
  -- headers
  { name = "a header that is not a pair ({ {\"a\"} })",
    call = function(st) return st:append({ { body = "x", headers = { { "a" } } } }) end,
    all = { "header" } },
  { name = "a header name that is not a string",
    call = function(st) return st:append({ { body = "x", headers = { { true, "v" } } } }) end,
    all = { "header" } },
  { name = "a header value that is not a string",
    call = function(st) return st:append({ { body = "x", headers = { { "n", {} } } } }) end,
    all = { "header" } },
  { name = "headers that are not a table",
    call = function(st) return st:append({ { body = "x", headers = true } }) end,
    all = { "header" } },
  -- append options
  { name = "a negative match_seq_num",
    call = function(st) return st:append({ "x" }, { match_seq_num = -1 }) end,
    all = { "match_seq_num" } },
  { name = "a non-integer match_seq_num",
    call = function(st) return st:append({ "x" }, { match_seq_num = 1.5 }) end,
    all = { "match_seq_num" } },
  { name = "a fencing token of 37 bytes",
    call = function(st) return st:append({ "x" }, { fencing_token = string.rep("f", 37) }) end,
    all = { "36" } },
  { name = "a fencing token that is not a string",
    call = function(st) return st:append({ "x" }, { fencing_token = {} }) end,
    all = { "fencing_token" } },
  { name = "an unknown option name in stream:append",
    call = function(st) return st:append({ "x" }, { match_seq_nmu = 2 }) end,
    all = { "match_seq_nmu" } },
  -- other entry points
  { name = "an unknown option name in s2.client{...}",
    call = function() return H.client({ requets_timeout = 5 }) end,
    all = { "requets_timeout" } },
  { name = "an unknown option name in stream:read{...}",
    call = function(st) return st:read { seq_num = 0, cuont = 1 } end,
    all = { "cuont" } },
  { name = "s2.trim(-1)",
    call = function() return s2.trim(-1) end,
    any = { "seq_num", "trim" } },
  { name = "s2.fence with a token of 37 bytes",
    call = function() return s2.fence(string.rep("f", 37)) end,
    all = { "36" } },
}

describe("bad input", function()
  local client, basin, stream

  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "badinput", NO_AUTO_CREATE)
    stream = H.new_stream(basin, "bad")
    local ack = must(stream:append(GOOD))
    assert(ack["end"].seq_num == #GOOD, "setup: the good records did not land")
  end)

  for _, case in ipairs(CASES) do
    it(case.name .. " raises and sends nothing", function()
      -- measured per case, so that one case that leaks does not fail all the later ones
      local before = must(stream:check_tail()).seq_num
      local ok, msg = pcall(case.call, stream)
      assert.is_false(ok, "expected an error to be raised, got a return")
      msg = tostring(msg)

      for _, accident in ipairs(ACCIDENTS) do
        assert.is_false(contains(msg, accident), "a Lua run-time error, not a check: " .. msg)
      end
      for _, word in ipairs(case.all or {}) do
        assert.is_true(contains(msg, word), ("%q not in the message: %s"):format(word, msg))
      end
      if case.any then
        local found = false
        for _, word in ipairs(case.any) do
          found = found or contains(msg, word)
        end
        assert.is_true(found, ("none of %s in the message: %s"):format(
          table.concat(case.any, ", "), msg))
      end

      -- nothing was sent, nothing was lost
      local tail = must(stream:check_tail())
      assert.are.equal(before, tail.seq_num, "the stream's tail moved: something was sent")
    end)
  end

  it("leaves exactly the good records, intact, and the stream usable", function()
    assert.are.equal(#GOOD, must(stream:check_tail()).seq_num)
    local batch = must(stream:read { seq_num = 0, count = 100 })
    assert.are.equal(#GOOD, #batch.records)
    assert.are.equal("good-1", batch.records[1].body)
    assert.are.equal("good-2", batch.records[2].body)
    assert.are.same({ { "k", "v" } }, batch.records[2].headers)

    local ack = must(stream:append({ "good-3" }, { match_seq_num = #GOOD }))
    assert.are.equal(#GOOD, ack.start.seq_num)
  end)

  it("still accepts the limits themselves (1000 records; 36-byte fencing token)", function()
    local st = H.new_stream(basin, "limits")
    local ack = must(st:append(records(1000)))
    assert.are.equal(1000, ack["end"].seq_num)
    -- a 36-byte token is valid: the server answers (412, since the stream has no token),
    -- it is not rejected on the client
    local _, err = st:append({ "x" }, { fencing_token = string.rep("f", 36) })
    assert.is_table(err)
    assert.are.equal("fencing_token_mismatch", err.code)
    assert.is_true((pcall(s2.fence, string.rep("f", 36))), "s2.fence must accept 36 bytes")
  end)
end)
