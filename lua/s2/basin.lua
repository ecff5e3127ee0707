--- Basin: stream management within one basin.
local core = require "s2.core"
local util = require "s2.util"
local stream_mod = require "s2.stream"

local Basin = {}
Basin.__index = Basin

function Basin.new(client, name)
  return setmetatable({ client = client, name = name }, Basin)
end

local STREAM_OPTIONS = util.set { "encryption_key" }

-- An s2-encryption-key value as the SDKs take it: trimmed, 1 to 44 characters (base64 of
-- 32 bytes), and here also only the base64 alphabet (it goes into a header). The key itself
-- never goes into the message.
local function check_encryption_key(fname, key)
  if key == nil then return nil end
  if type(key) ~= "string" then
    error(("%s: encryption_key must be a string (base64), got %s"):format(fname, type(key)), 3)
  end
  -- Linear: the first and last non-blank (a "^%s*(.-)%s*$" match backtracks over every
  -- run of blanks inside, quadratic in a long key).
  local first = key:find("%S")
  local trimmed = first and key:sub(first, key:match(".*()%S")) or ""
  if #trimmed < 1 or #trimmed > core.MAX_ENCRYPTION_KEY or trimmed:find("[^A-Za-z0-9+/=]") then
    error(("%s: encryption_key must be 1 to %d characters of base64 (A-Z a-z 0-9 + / =), "
      .. "got %d characters%s"):format(fname, core.MAX_ENCRYPTION_KEY, #trimmed,
        trimmed:find("[^A-Za-z0-9+/=]") and " with some outside that alphabet" or ""), 3)
  end
  return trimmed
end

--- A handle on one stream. opts.encryption_key: the base64 key of an encrypted stream, sent
-- (as s2-encryption-key) with every append and read of this handle.
function Basin:stream(name, opts)
  util.check_string("basin:stream", "name", name, 2)
  opts = util.check_options("basin:stream", opts, STREAM_OPTIONS, 2)
  return stream_mod.new(self, name, check_encryption_key("basin:stream", opts.encryption_key))
end

local function stream_path(name)
  return "/streams/" .. util.urlencode(name)
end

function Basin:_json(method, path, body, request_token, want_provision)
  return self.client:_json(method, path, body, self.name, request_token, want_provision)
end

local function check_config(fname, config)
  if config ~= nil and type(config) ~= "table" then
    error(("%s: config must be a table, got %s"):format(fname, type(config)), 3)
  end
end

function Basin:create_stream(name, config)
  util.check_string("basin:create_stream", "name", name, 2)
  check_config("basin:create_stream", config)
  return self:_json("POST", "/streams", { stream = name, config = config }, core.random_token())
end

--- Creates the stream or brings its config in line: info, nil, "created" | "updated" | "noop".
function Basin:ensure_stream(name, config)
  util.check_string("basin:ensure_stream", "name", name, 2)
  check_config("basin:ensure_stream", config)
  return self:_json("PUT", stream_path(name), config or {}, nil, true)
end

function Basin:delete_stream(name, opts)
  util.check_string("basin:delete_stream", "name", name, 2)
  local ignore = util.delete_ignores("basin:delete_stream", opts)
  local ok, err = self:_json("DELETE", stream_path(name))
  if not ok and not (ignore and err.code == "stream_not_found") then return nil, err end
  return true
end

--- Every stream of the basin, page after page (see client:list_all_basins).
function Basin:list_all_streams(opts)
  local Client = require "s2.client"
  local query, include_deleted = Client._check_list_all("basin:list_all_streams", opts)
  return util.list_all(function(q)
    return self:_json("GET", "/streams" .. util.query(q, Client.LIST_KEYS))
  end, "streams", query, include_deleted)
end

function Basin:list_streams(opts)
  local Client = require "s2.client"
  opts = Client._check_list("basin:list_streams",
    util.check_options("basin:list_streams", opts, Client.LIST_OPTIONS, 2))
  return self:_json("GET", "/streams" .. util.query(opts, Client.LIST_KEYS))
end

function Basin:get_stream_config(name)
  util.check_string("basin:get_stream_config", "name", name, 2)
  return self:_json("GET", stream_path(name))
end

function Basin:reconfigure_stream(name, changes)
  util.check_string("basin:reconfigure_stream", "name", name, 2)
  check_config("basin:reconfigure_stream", changes)
  return self:_json("PATCH", stream_path(name), changes or {})
end

Basin._stream_path = stream_path
return Basin
