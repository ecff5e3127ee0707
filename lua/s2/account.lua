--- Account-level management beyond basins: access tokens, metrics and locations.
-- Installed onto the Client class by s2.client (require "s2.account"(Client)); every call is
-- one JSON request on the unary path (Client:_json), so it waits through s2.await like the
-- basin calls. Option checking raises naming the argument; run-time failures are nil, err.
local util = require "s2.util"

-- Access token IDs: 1 to 96 bytes (AccessTokenIdStr).
local MAX_TOKEN_ID = 96
-- Location names: 1 to 64 of ASCII letters, digits, ':', '-' and '.' (the SDKs' rule).
local MAX_LOCATION = 64
-- Metrics timestamps are Unix seconds the API takes as u32.
local MAX_U32 = 4294967295
-- 9999-12-31T23:59:59Z: the last second RFC 3339 can write.
local MAX_UNIX = 253402300799

local SCOPE_KEYS = util.set { "basins", "streams", "access_tokens", "op_groups", "ops" }
local OP_GROUP_KEYS = util.set { "account", "basin", "stream" }
local RW_KEYS = util.set { "read", "write" }
local ISSUE_OPTIONS = util.set { "id", "scope", "expires_at", "auto_prefix_streams" }
local TOKEN_LIST_OPTIONS = util.set { "prefix", "start_after", "limit" }
local TOKEN_LIST_KEYS = { "prefix", "start_after", "limit" }
local METRICS_OPTIONS = util.set { "set", "start", "end", "interval" }
local METRICS_KEYS = { "set", "start", "end", "interval" }
local INTERVALS = util.set { "minute", "hour", "day" }
-- Metric sets per level (openapi AccountMetricSet, BasinMetricSet, StreamMetricSet).
local SETS = {
  account = { "active-basins", "account-ops" },
  basin = { "storage", "append-ops", "read-ops", "read-throughput", "append-throughput",
            "basin-ops" },
  stream = { "storage" },
}

-- Raises as if the function calling fail had called error(msg, level + 1): level 2 (the
-- util.check_* convention) names the caller of that function's caller, level 1 its caller.
local function fail(fname, level, fmt, ...)
  error(fname .. ": " .. fmt:format(...), level + 2)
end

local function check_self(Client, self, fname)
  if getmetatable(self) ~= Client then
    error(fname .. ": call it with ':' on a client", 3)
  end
end

local function check_token_id(fname, what, id, level)
  util.check_string(fname, what, id, level + 1)
  if #id > MAX_TOKEN_ID then
    fail(fname, level, "%s must be at most %d bytes, got %d", what, MAX_TOKEN_ID, #id)
  end
  return id
end

local function check_location(fname, what, name, level)
  util.check_string(fname, what, name, level + 1)
  if #name > MAX_LOCATION or not name:match("^[%w:%.%-]+$") then
    fail(fname, level, "%s must be 1 to %d of ASCII letters, digits, ':', '-' and '.', got %q",
      what, MAX_LOCATION, name)
  end
  return name
end

-- A resource matcher of a scope: { exact = "name" } or { prefix = "p" } (exactly one; an
-- empty exact matches nothing, an empty prefix everything).
local function check_matcher(fname, what, m, level)
  if type(m) ~= "table" then
    fail(fname, level, "%s must be a table { exact = name } or { prefix = p }, got %s", what,
      type(m))
  end
  local out, n = {}, 0
  for k, v in pairs(m) do
    if k ~= "exact" and k ~= "prefix" then
      fail(fname, level, "%s: unknown key '%s' (known: exact, prefix)", what, tostring(k))
    end
    if type(v) ~= "string" then
      fail(fname, level, "%s.%s must be a string, got %s", what, k, type(v))
    end
    out[k], n = v, n + 1
  end
  if n ~= 1 then
    fail(fname, level, "%s must have exactly one of exact and prefix", what)
  end
  return out
end

-- op_groups = { account = { read =, write = }, basin = {...}, stream = {...} }.
local function check_op_groups(fname, g, level)
  if type(g) ~= "table" then
    fail(fname, level, "scope.op_groups must be a table, got %s", type(g))
  end
  local out = {}
  for k, perms in pairs(g) do
    if not OP_GROUP_KEYS[k] then
      fail(fname, level, "scope.op_groups: unknown key '%s' (known: account, basin, stream)",
        tostring(k))
    end
    local what = "scope.op_groups." .. k
    if type(perms) ~= "table" then
      fail(fname, level, "%s must be a table { read = bool, write = bool }, got %s", what,
        type(perms))
    end
    local p = {}
    for pk, pv in pairs(perms) do
      if not RW_KEYS[pk] then
        fail(fname, level, "%s: unknown key '%s' (known: read, write)", what, tostring(pk))
      end
      if type(pv) ~= "boolean" then
        fail(fname, level, "%s.%s must be a boolean, got %s", what, pk, type(pv))
      end
      p[pk] = pv
    end
    out[k] = p
  end
  return out
end

-- ops = { "append", "read", ... }: a list of operation names (the server checks the names).
local function check_ops(fname, ops, level)
  if type(ops) ~= "table" then
    fail(fname, level, "scope.ops must be a list of operation names, got %s", type(ops))
  end
  local n = #ops
  for k in pairs(ops) do
    if not util.is_integer(k) or k < 1 or k > n then
      fail(fname, level, "scope.ops must be a list (keys 1..n), has key %s", tostring(k))
    end
  end
  local out = {}
  for i = 1, n do
    local op = ops[i]
    if type(op) ~= "string" or op == "" then
      fail(fname, level, "scope.ops[%d] must be a non-empty string, got %s", i,
        type(op) == "string" and "an empty string" or type(op))
    end
    out[i] = op
  end
  return out
end

-- The scope in REST shape, copied (the caller's table is not kept or changed).
local function check_scope(fname, scope, level)
  if type(scope) ~= "table" then
    fail(fname, level, "scope must be a table, got %s", type(scope))
  end
  local out = {}
  for k, v in pairs(scope) do
    if not SCOPE_KEYS[k] then
      fail(fname, level,
        "scope: unknown key '%s' (known: access_tokens, basins, op_groups, ops, streams)",
        tostring(k))
    end
    if k == "op_groups" then
      out[k] = check_op_groups(fname, v, level + 1)
    elseif k == "ops" then
      local ops = check_ops(fname, v, level + 1)
      -- An empty list means no operations, as does no list: leave it out (an empty Lua
      -- table would be encoded as the JSON object {}).
      if #ops > 0 then out[k] = ops end
    else
      out[k] = check_matcher(fname, "scope." .. k, v, level + 1)
    end
  end
  return out
end

-- expires_at: an RFC 3339 string (passed as is), or whole Unix seconds (written in UTC).
local function check_expires_at(fname, v, level)
  if v == nil then return nil end
  if type(v) == "number" then
    if not util.is_integer(v) or v < 0 or v > MAX_UNIX then
      fail(fname, level, "expires_at must be whole Unix seconds from 0 to %d or an RFC 3339 "
        .. "string, got %s", MAX_UNIX, tostring(v))
    end
    return os.date("!%Y-%m-%dT%H:%M:%SZ", v)
  end
  if type(v) ~= "string" then
    fail(fname, level, "expires_at must be an RFC 3339 string or Unix seconds, got %s", type(v))
  end
  local date, rest = v:match("^(%d%d%d%d%-%d%d%-%d%d[Tt ]%d%d:%d%d:%d%d)(.*)$")
  if rest then rest = rest:gsub("^%.%d+", "") end
  if not date or not (rest == "Z" or rest == "z" or rest:match("^[+-]%d%d:%d%d$")) then
    fail(fname, level, "expires_at must be an RFC 3339 time such as \"2030-01-31T12:00:00Z\", "
      .. "got %q", v)
  end
  return v
end

local function check_u32(fname, what, v, level)
  if v ~= nil and (not util.is_integer(v) or v < 0 or v > MAX_U32) then
    fail(fname, level, "%s must be whole Unix seconds from 0 to %d, got %s", what, MAX_U32,
      tostring(v))
  end
  return v
end

-- Metrics options for a level: set (required, per level), start, end, interval.
local function check_metrics(fname, level_name, opts, level)
  if opts == nil then fail(fname, level, "options must be a table with set, got nil") end
  opts = util.check_options(fname, opts, METRICS_OPTIONS, level + 1)
  local sets = SETS[level_name]
  local ok = false
  for _, s in ipairs(sets) do if opts.set == s then ok = true end end
  if not ok then
    fail(fname, level, "set must be one of %s, got %s", table.concat(sets, ", "),
      type(opts.set) == "string" and ("%q"):format(opts.set) or type(opts.set))
  end
  check_u32(fname, "start", opts.start, level + 1)
  check_u32(fname, "end", opts["end"], level + 1)
  if opts.start and opts["end"] and opts.start > opts["end"] then
    fail(fname, level, "start (%d) must not be after end (%d)", opts.start, opts["end"])
  end
  if opts.interval ~= nil and not INTERVALS[opts.interval] then
    fail(fname, level, "interval must be \"minute\", \"hour\" or \"day\", got %s",
      type(opts.interval) == "string" and ("%q"):format(opts.interval) or type(opts.interval))
  end
  return util.query(opts, METRICS_KEYS)
end

return function(Client)
  --- Issues an access token: the token string | nil, err.
  function Client:issue_access_token(opts)
    local F = "client:issue_access_token"
    check_self(Client, self, F)
    if opts == nil then fail(F, 1, "options must be a table with id and scope, got nil") end
    opts = util.check_options(F, opts, ISSUE_OPTIONS, 2)
    local body = {
      id = check_token_id(F, "id", opts.id, 2),
      scope = check_scope(F, opts.scope, 2),
      expires_at = check_expires_at(F, opts.expires_at, 2),
    }
    if opts.auto_prefix_streams ~= nil then
      if type(opts.auto_prefix_streams) ~= "boolean" then
        fail(F, 1, "auto_prefix_streams must be a boolean, got %s", type(opts.auto_prefix_streams))
      end
      body.auto_prefix_streams = opts.auto_prefix_streams
    end
    local resp, err = self:_json("POST", "/access-tokens", body)
    if not resp then return nil, err end
    if type(resp) ~= "table" or type(resp.access_token) ~= "string" then
      return nil, require("s2.error").new("protocol_error",
        "issue_access_token: the answer has no access_token string")
    end
    return resp.access_token
  end

  --- One page of access tokens: { access_tokens = { info, ... }, has_more = bool } | nil, err.
  function Client:list_access_tokens(opts)
    local F = "client:list_access_tokens"
    check_self(Client, self, F)
    opts = Client._check_list(F, util.check_options(F, opts, TOKEN_LIST_OPTIONS, 2))
    return self:_json("GET", "/access-tokens" .. util.query(opts, TOKEN_LIST_KEYS))
  end

  --- Every access token, page after page (paged by id). Failures are raised.
  function Client:list_all_access_tokens(opts)
    local F = "client:list_all_access_tokens"
    check_self(Client, self, F)
    local query = Client._check_list_all(F, opts, TOKEN_LIST_OPTIONS)
    return util.list_all(function(q)
      return self:_json("GET", "/access-tokens" .. util.query(q, TOKEN_LIST_KEYS))
    end, "access_tokens", query, true, "id")
  end

  --- Revokes an access token: true | nil, err.
  function Client:revoke_access_token(id)
    local F = "client:revoke_access_token"
    check_self(Client, self, F)
    check_token_id(F, "id", id, 2)
    local ok, err = self:_json("DELETE", "/access-tokens/" .. util.urlencode(id))
    if not ok then return nil, err end
    return true
  end

  --- Account-level metrics: { values = { metric, ... } } | nil, err.
  function Client:account_metrics(opts)
    local F = "client:account_metrics"
    check_self(Client, self, F)
    return self:_json("GET", "/metrics" .. check_metrics(F, "account", opts, 2))
  end

  function Client:basin_metrics(basin, opts)
    local F = "client:basin_metrics"
    check_self(Client, self, F)
    util.check_basin_name(F, basin, 2)
    local q = check_metrics(F, "basin", opts, 2)
    return self:_json("GET", "/metrics/" .. util.urlencode(basin) .. q)
  end

  function Client:stream_metrics(basin, stream, opts)
    local F = "client:stream_metrics"
    check_self(Client, self, F)
    util.check_basin_name(F, basin, 2)
    util.check_string(F, "stream", stream, 2)
    local q = check_metrics(F, "stream", opts, 2)
    return self:_json("GET", "/metrics/" .. util.urlencode(basin) .. "/" .. util.urlencode(stream)
      .. q)
  end

  --- The locations the account can place basins in: { { name =, is_private = }, ... }.
  function Client:list_locations()
    check_self(Client, self, "client:list_locations")
    return self:_json("GET", "/locations")
  end

  function Client:get_default_location()
    check_self(Client, self, "client:get_default_location")
    return self:_json("GET", "/locations/default")
  end

  --- Sets the account's default location: its { name =, is_private = } | nil, err.
  function Client:set_default_location(name)
    local F = "client:set_default_location"
    check_self(Client, self, F)
    check_location(F, "name", name, 2)
    return self:_json("PUT", "/locations/default", name)
  end

  Client._check_location = check_location
end
