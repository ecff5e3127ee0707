--- Client: configuration, connections, and account-level (basin) management.
local core = require "s2.core"
local util = require "s2.util"
local basin_mod = require "s2.basin"
local await = require "s2.await"
local events = require "s2.events"

local Client = {}
Client.__index = Client

local OPTIONS = util.set {
  "access_token", "account_endpoint", "basin_endpoint", "request_timeout",
  "connection_timeout", "retry", "compression", "ca_file", "force_http1", "drain_timeout",
  "on_event",
}
local RETRY_OPTIONS = util.set {
  "max_attempts", "min_base_delay", "max_base_delay", "append_retry_policy",
}
local DEFAULT_ACCOUNT_ENDPOINT = "https://a.s2.dev/v1"
local DEFAULT_BASIN_ENDPOINT = "https://{basin}.b.s2.dev/v1"

-- Seconds from 1 ms to a day: outside that, a value is a mistake (and would overflow the
-- millisecond conversions below).
local function positive(fname, name, v, dflt)
  if v == nil then return dflt end
  if type(v) ~= "number" or v ~= v or v < 0.001 or v > 86400 then
    error(("%s: %s must be a number of seconds from 0.001 to 86400, got %s"):format(fname, name,
      tostring(v)), 4)
  end
  return v
end

-- Seconds from 0 (no wait) to a day.
local function non_negative(fname, name, v, dflt)
  if v == nil then return dflt end
  if type(v) ~= "number" or v ~= v or v < 0 or v > 86400 then
    error(("%s: %s must be a number of seconds from 0 to 86400, got %s"):format(fname, name,
      tostring(v)), 4)
  end
  return v
end

local MAX_ATTEMPTS = 100
-- With max_attempts = math.huge (sessions retry forever), a unary call still stops after
-- this many attempts: it holds its caller and has no other bound.
local UNARY_FOREVER_ATTEMPTS = MAX_ATTEMPTS

--- Checks a retry table (the client's, or a session's override) and returns it complete:
-- what it leaves out comes from `base` (a complete one; nil: the defaults). `level` is the
-- level, as error() in the caller would count it, to blame (the user's call).
local function check_retry(fname, retry, base, level)
  level = level + 1
  retry = util.check_options(fname .. ": retry", retry, RETRY_OPTIONS, level)
  base = base or { max_attempts = 3, min_base_delay = 0.1, max_base_delay = 1,
                   append_retry_policy = "all" }
  local max_attempts = retry.max_attempts
  if max_attempts == nil then
    max_attempts = base.max_attempts
  elseif max_attempts ~= math.huge and (type(max_attempts) ~= "number" or max_attempts < 1
      or max_attempts % 1 ~= 0 or max_attempts > MAX_ATTEMPTS) then
    error(("%s: retry.max_attempts must be an integer from 1 to %d, or math.huge (retry "
      .. "forever), got %s"):format(fname, MAX_ATTEMPTS, tostring(max_attempts)), level)
  end
  local policy = retry.append_retry_policy or base.append_retry_policy
  if policy ~= "all" and policy ~= "no_side_effects" then
    error(fname .. ": retry.append_retry_policy must be \"all\" or \"no_side_effects\", got "
      .. tostring(policy), level)
  end
  local function delay(name) -- (one call deeper: level + 1)
    local v = retry[name]
    if v == nil then return base[name] end
    if type(v) ~= "number" or v ~= v or v < 0.001 or v > 86400 then
      error(("%s: retry.%s must be a number of seconds from 0.001 to 86400, got %s")
        :format(fname, name, tostring(v)), level + 1)
    end
    return v
  end
  return {
    max_attempts = max_attempts,
    min_base_delay = delay("min_base_delay"),
    max_base_delay = delay("max_base_delay"),
    append_retry_policy = policy,
  }
end
Client._check_retry = check_retry

local function env(name)
  local v = os.getenv(name)
  if v == "" then return nil end
  return v
end

function Client.new(opts)
  local F = "s2.client"
  opts = util.check_options(F, opts, OPTIONS, 2)
  local retry = check_retry(F, opts.retry, nil, 2)
  local token = opts.access_token or env "S2_ACCESS_TOKEN"
  if token == nil then
    error(F .. ": access_token is required (or set S2_ACCESS_TOKEN)", 2)
  end
  util.check_string(F, "access_token", token, 2)
  if opts.force_http1 ~= nil and type(opts.force_http1) ~= "boolean" then
    error(F .. ": force_http1 must be a boolean, got " .. type(opts.force_http1), 2)
  end
  if opts.on_event ~= nil and type(opts.on_event) ~= "function" then
    error(F .. ": on_event must be a function, got " .. type(opts.on_event), 2)
  end
  local compression = opts.compression or "none"
  if compression ~= "none" and compression ~= "zstd" and compression ~= "gzip" then
    error(F .. ": compression must be \"none\", \"zstd\" or \"gzip\", got "
      .. tostring(compression), 2)
  end
  local cfg = {
    access_token = token,
    account_endpoint = opts.account_endpoint or env "S2_ACCOUNT_ENDPOINT" or DEFAULT_ACCOUNT_ENDPOINT,
    basin_endpoint = opts.basin_endpoint or env "S2_BASIN_ENDPOINT" or DEFAULT_BASIN_ENDPOINT,
    request_timeout = positive(F, "request_timeout", opts.request_timeout, 5),
    drain_timeout = non_negative(F, "drain_timeout", opts.drain_timeout, nil),
    connection_timeout = positive(F, "connection_timeout", opts.connection_timeout, 3),
    -- Unary calls (the core's client config); sessions get `retry` itself (session_retry).
    max_attempts = retry.max_attempts == math.huge and UNARY_FOREVER_ATTEMPTS or retry.max_attempts,
    min_base_delay = retry.min_base_delay,
    max_base_delay = retry.max_base_delay,
    append_retry_policy = retry.append_retry_policy,
    ca_file = opts.ca_file,
  }
  -- At collection or exit, unacked batches get this long to drain (see docs/api.md).
  if cfg.drain_timeout == nil then cfg.drain_timeout = cfg.request_timeout end
  local ok, handle, err = pcall(core.client, cfg)
  if not ok then error(F .. ": " .. tostring(handle), 2) end
  if not handle then return nil, err end
  -- The core keeps its own copy of the token; the Lua side must not (every stream, session,
  -- reader and producer holds its client: a dump of any of them would show it).
  cfg.access_token = nil
  local client = setmetatable({ core = handle, config = cfg, retry = retry,
                                compression = compression,
                                force_http1 = opts.force_http1 and true or false }, Client)
  events.register(client, opts.on_event)
  return client
end

--- Delivers the client's queued observability events to its handler now (they are also
-- delivered at every wait and public call); returns how many.
function Client:poll_events()
  if getmetatable(self) ~= Client then
    error("client:poll_events: call it with ':' on a client", 2)
  end
  return events.poll(self)
end

--- A session's retry settings: the client's, with what the session's `retry` option (if
-- any) overrides; checked like the client's. `level` as for error(), from the caller.
function Client:_session_retry(fname, retry, level)
  if retry == nil then return self.retry end
  return check_retry(fname, retry, self.retry, level + 1)
end

function Client:basin(name)
  if getmetatable(self) ~= Client then error("client:basin: call it with ':' on a client", 2) end
  util.check_basin_name("client:basin", name, 2)
  return basin_mod.new(self, name)
end

--- Transport counters: connections_opened, connections_open (HTTP/2, for sessions);
-- loop_turns, op_runs (the I/O thread's turns and the operations run in them).
function Client:stats()
  events.deliver()
  return self.core:stats()
end

--- Closes the client's connections. Using it afterwards is an error.
-- Outstanding work fails with "closed"; the wait for the I/O thread to finish yields like
-- every other wait.
function Client:close()
  local c = self.core
  if c:close_start() then
    await.until_done(c, function() return c:stopped() end, nil, "client:close: not done in %.3f s")
  end
  c:close()
  events.poll(self) -- what the I/O thread queued while it stopped (losses, retirements)
end
Client.__close = Client.close

-- One JSON management call. Returns the decoded body (or true for an empty one) | nil, err.
-- With want_provision, a successful call also returns, third, the s2-provision-result
-- header ("created", "updated" or "noop"); success never has a second value.
function Client:_json(method, path, body, basin, request_token, want_provision)
  local can, cerr = await.can_wait()
  if not can then return nil, cerr end
  local call, serr = self.core:request {
    method = method, path = path, basin = basin, request_token = request_token,
    body = body ~= nil and util.json_encode(body) or nil,
    content_type = body ~= nil and "application/json" or nil,
  }
  if not call then return nil, serr end
  local status, resp, provision = await.call(call)
  if not status then return nil, resp end
  local value, err = true, nil
  if resp ~= "" then value, err = util.json_decode(resp) end
  if value == nil then
    return nil, require("s2.error").new("protocol_error", "bad JSON from server: " .. tostring(err))
  end
  if want_provision then return value, nil, provision end
  return value
end

local LIST_OPTIONS = util.set { "prefix", "start_after", "limit" }
local LIST_KEYS = { "prefix", "start_after", "limit" }

local function check_config(fname, config)
  if config ~= nil and type(config) ~= "table" then
    error(("%s: config must be a table, got %s"):format(fname, type(config)), 3)
  end
end

-- Options of create_basin / ensure_basin: { location = name } (where the basin is placed;
-- default: the account's default location; it cannot be changed later).
local BASIN_CREATE_OPTIONS = util.set { "location" }
local function basin_location(fname, opts)
  opts = util.check_options(fname, opts, BASIN_CREATE_OPTIONS, 3)
  if opts.location == nil then return nil end
  local location = Client._check_location(fname, "location", opts.location, 3)
  return location -- not a tail call: the error levels count this frame
end

function Client:create_basin(name, config, opts)
  util.check_basin_name("client:create_basin", name, 2)
  check_config("client:create_basin", config)
  local location = basin_location("client:create_basin", opts)
  return self:_json("POST", "/basins", { basin = name, config = config, location = location }, nil,
    core.random_token())
end

--- Creates the basin or brings its config in line: info, nil, "created" | "updated" | "noop".
function Client:ensure_basin(name, config, opts)
  util.check_basin_name("client:ensure_basin", name, 2)
  check_config("client:ensure_basin", config)
  local location = basin_location("client:ensure_basin", opts)
  return self:_json("PUT", "/basins/" .. util.urlencode(name),
    { config = config, location = location }, nil, nil, true)
end

function Client:delete_basin(name, opts)
  util.check_basin_name("client:delete_basin", name, 2)
  local ignore = util.delete_ignores("client:delete_basin", opts)
  local ok, err = self:_json("DELETE", "/basins/" .. util.urlencode(name))
  if not ok and not (ignore and err.code == "basin_not_found") then return nil, err end
  return true
end

-- list options: prefix and start_after strings, limit 0..1000.
local function check_list(fname, opts)
  for _, k in ipairs { "prefix", "start_after" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      error(("%s: %s must be a string, got %s"):format(fname, k, type(opts[k])), 3)
    end
  end
  local limit = opts.limit
  if limit ~= nil and (not util.is_integer(limit) or limit < 0 or limit > 1000) then
    error(("%s: limit must be an integer from 0 to 1000, got %s"):format(fname, tostring(limit)), 3)
  end
  return opts
end
Client._check_list = check_list

function Client:list_basins(opts)
  opts = check_list("client:list_basins", util.check_options("client:list_basins", opts, LIST_OPTIONS, 2))
  return self:_json("GET", "/basins" .. util.query(opts, LIST_KEYS))
end

local LIST_ALL_OPTIONS = util.set { "prefix", "start_after", "limit", "include_deleted" }

-- list_all options: those of list (limit is the page size and may exceed 1000: the server
-- clamps it) and include_deleted.
-- `allowed` (default: those) narrows the options (access tokens have no include_deleted).
local function check_list_all(fname, opts, allowed)
  opts = util.check_options(fname, opts, allowed or LIST_ALL_OPTIONS, 3)
  for _, k in ipairs { "prefix", "start_after" } do
    if opts[k] ~= nil and type(opts[k]) ~= "string" then
      error(("%s: %s must be a string, got %s"):format(fname, k, type(opts[k])), 3)
    end
  end
  if opts.limit ~= nil and (not util.is_integer(opts.limit) or opts.limit < 1) then
    error(("%s: limit must be a positive integer, got %s"):format(fname, tostring(opts.limit)), 3)
  end
  if opts.include_deleted ~= nil and type(opts.include_deleted) ~= "boolean" then
    error(("%s: include_deleted must be a boolean, got %s"):format(fname,
      type(opts.include_deleted)), 3)
  end
  local query = { prefix = opts.prefix, start_after = opts.start_after, limit = opts.limit }
  return query, opts.include_deleted == true
end
Client._check_list_all = check_list_all

--- Every basin, page after page: for info in client:list_all_basins{...} do ... end.
-- Basins being deleted are left out unless include_deleted. Failures are raised.
function Client:list_all_basins(opts)
  local query, include_deleted = check_list_all("client:list_all_basins", opts)
  return util.list_all(function(q)
    return self:_json("GET", "/basins" .. util.query(q, LIST_KEYS))
  end, "basins", query, include_deleted)
end

function Client:get_basin_config(name)
  util.check_basin_name("client:get_basin_config", name, 2)
  return self:_json("GET", "/basins/" .. util.urlencode(name))
end

function Client:reconfigure_basin(name, changes)
  util.check_basin_name("client:reconfigure_basin", name, 2)
  check_config("client:reconfigure_basin", changes)
  return self:_json("PATCH", "/basins/" .. util.urlencode(name), changes or {})
end

Client.LIST_OPTIONS = LIST_OPTIONS
Client.LIST_KEYS = LIST_KEYS
-- Access tokens, metrics and locations (lua/s2/account.lua).
require "s2.account" (Client)
return Client
