--- s2: the Lua client for S2, the durable streams API (https://s2.dev).
--
--   local s2 = require "s2"
--   local client = s2.client()                         -- S2_* environment variables
--   local stream = client:basin("my-basin"):stream("my-stream")
--   local ack, err = stream:append({ "hello", { body = "world" } })
--
-- Nothing touches the network or starts a thread at require time. See docs/api.md.
local core = require "s2.core"
local client = require "s2.client"
local errors = require "s2.error"
local util = require "s2.util"
local await = require "s2.await" -- installs scheduler-aware ticket:ack()

local s2 = {
  VERSION = core.VERSION,
  MAX_BATCH_RECORDS = core.MAX_BATCH_RECORDS,
  MAX_BATCH_BYTES = core.MAX_BATCH_BYTES,
  MAX_FENCING_TOKEN = core.MAX_FENCING_TOKEN,
}

--- Creates a client. With no argument, everything comes from the environment
-- (S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT).
function s2.client(opts)
  return client.new(opts)
end

--- A fence command record: appends that carry another fencing_token fail from now on
-- ("" clears the fence).
function s2.fence(token)
  if type(token) ~= "string" then
    error(("s2.fence: token must be a string, got %s"):format(type(token)), 2)
  end
  if #token > core.MAX_FENCING_TOKEN then
    error(("s2.fence: token of %d bytes is over the limit of %d"):format(#token,
      core.MAX_FENCING_TOKEN), 2)
  end
  return { headers = { { "", "fence" } }, body = token }
end

-- 8-byte big-endian encoding without string.pack, so LuaJIT works too.
local function u64be(n)
  local bytes = {}
  for i = 8, 1, -1 do
    bytes[i] = string.char(n % 256)
    n = (n - n % 256) / 256
  end
  return table.concat(bytes)
end

--- A trim command record: records before seq_num are deleted (eventually).
function s2.trim(seq_num)
  if type(seq_num) ~= "number" or seq_num < 0 or seq_num % 1 ~= 0
      or seq_num > (math.maxinteger or 2 ^ 53) then
    error(("s2.trim: seq_num must be a non-negative integer, got %s"):format(tostring(seq_num)), 2)
  end
  return { headers = { { "", "trim" } }, body = u64be(seq_num) }
end

--- A new random key for an encrypted stream (32 bytes from OpenSSL's RAND_bytes, base64: 44
-- characters), for basin:stream(name, { encryption_key = key }). Keep it: without it the
-- stream's records cannot be read.
function s2.new_encryption_key()
  return core.new_encryption_key()
end

--- Whether a record (as reads return it, or as appended) is a command record (fence, trim):
-- exactly one header, with an empty name.
function s2.is_command_record(record)
  if type(record) ~= "table" then
    error(("s2.is_command_record: record must be a table, got %s"):format(type(record)), 2)
  end
  return util.is_command_record(record)
end

--- Metered size of a record: 8 + 2 x headers + name, value and body lengths.
-- A record as reads return it (seq_num, timestamp, headers, body) counts the same as the
-- record appended: its position is not metered.
function s2.metered_bytes(record)
  if type(record) == "table" and record.seq_num ~= nil then
    record = { body = record.body, headers = record.headers, timestamp = record.timestamp }
  end
  return core.metered_bytes(record)
end

--- Installs a scheduler hook for waiting (see s2.await): fn(waitable, timeout) -> true |
-- nil, err | "block". Adapters: require("s2.adapters.luv")(), require("s2.adapters.copas")().
s2.set_scheduler = await.set_scheduler

--- Installs (or, with nil, removes) the handler of observability events for every client
-- that has no on_event of its own (see docs/api.md, "Observability / events").
s2.set_logger = require("s2.events").set_logger

s2.error = errors
s2.is_error = errors.is

return s2
