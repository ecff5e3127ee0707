--- Stream: appends, reads and the tail of one stream.
local util = require "s2.util"
local await = require "s2.await"

local Stream = {}
Stream.__index = Stream

-- Each stream's encryption key, kept out of its fields so that printing or dumping a stream
-- (or a session, reader or producer holding it) never shows it. Weak: it goes with the stream.
local keys = setmetatable({}, { __mode = "k" })

function Stream.new(basin, name, encryption_key)
  local self = setmetatable({ basin = basin, client = basin.client, name = name }, Stream)
  keys[self] = encryption_key
  return self
end

--- The stream's encryption key, or nil (for s2.session, s2.reader and s2.producer).
function Stream._encryption_key(stream)
  return keys[stream]
end

function Stream:__tostring()
  return ("s2.stream(%s/%s%s)"):format(self.basin.name, self.name,
    keys[self] and ", with an encryption key" or "")
end

-- opts for a core call: a copy with the encryption key (and `extra`) added, or opts itself
-- when there is nothing to add (the caller's table is never changed).
local function core_opts(self, opts, extra)
  local key = keys[self]
  if key == nil and extra == nil then return opts end
  local copy = {}
  for k, v in pairs(opts or {}) do copy[k] = v end
  copy.encryption_key = key
  for k, v in pairs(extra or {}) do copy[k] = v end
  return copy
end

local APPEND_OPTIONS = util.set { "match_seq_num", "fencing_token" }
local READ_OPTIONS = util.set {
  "seq_num", "timestamp", "tail_offset", "clamp", "count", "bytes", "until", "wait",
  "ignore_command_records",
}

--- Appends one batch (1..1000 records, at most 1 MiB metered) atomically.
-- Returns the ack { start =, ["end"] =, tail = } or nil, err.
function Stream:append(records, opts)
  util.check_options("stream:append", opts, APPEND_OPTIONS, 2)
  if type(records) ~= "table" then
    error(("stream:append: records must be a table (an array of records), got %s")
      :format(type(records)), 2)
  end
  local can, cerr = await.can_wait()
  if not can then return nil, cerr end
  -- With compression on, the body goes out compressed (Content-Encoding), as the SDKs send it.
  local compression = self.client.compression
  local ok, call, err = pcall(self.client.core.append, self.client.core, self.basin.name,
    self.name, records, core_opts(self, opts,
      compression ~= "none" and { compression = compression } or nil))
  if not ok then error("stream:append: " .. tostring(call), 2) end
  if not call then return nil, err end
  return await.call(call)
end

--- One unary read. Returns { records = {...}, tail = } or nil, err.
function Stream:read(opts)
  opts = util.check_options("stream:read", opts, READ_OPTIONS, 2)
  local skip = opts.ignore_command_records
  if skip ~= nil and type(skip) ~= "boolean" then
    error(("stream:read: ignore_command_records must be a boolean, got %s"):format(type(skip)), 2)
  end
  local can, cerr = await.can_wait()
  if not can then return nil, cerr end
  local ok, call, err = pcall(self.client.core.read, self.client.core, self.basin.name,
    self.name, core_opts(self, opts))
  if not ok then error("stream:read: " .. tostring(call), 2) end
  if not call then return nil, err end
  local batch, rerr = await.call(call)
  if batch and skip then
    local kept = {}
    for _, r in ipairs(batch.records) do
      if not util.is_command_record(r) then kept[#kept + 1] = r end
    end
    batch.records = kept
  end
  return batch, rerr
end

--- Opens an append session (see s2.session).
function Stream:append_session(opts)
  return require("s2.session").open(self, opts)
end

--- Opens a read session (see s2.reader): same start/stop options as read, plus
-- ignore_command_records.
function Stream:read_session(opts)
  return require("s2.reader").open(self, opts)
end

--- Opens a producer (see s2.producer).
function Stream:producer(opts)
  return require("s2.producer").open(self, opts)
end

--- The next sequence number to be assigned, and the timestamp of the last record.
function Stream:check_tail()
  local body, err = self.basin:_json("GET", self.basin._stream_path(self.name) .. "/records/tail")
  if not body then return nil, err end
  return body.tail
end

return Stream
