--- Small helpers shared by the Lua layer: option checking, URL encoding, JSON.
local cjson = require("cjson").new() -- a private instance: no shared global settings

local M = {}

--- Raises when opts has a key not in `allowed` (a set), naming the function and the key.
function M.check_options(fname, opts, allowed, level)
  if opts == nil then return {} end
  if type(opts) ~= "table" then
    error(("%s: options must be a table, got %s"):format(fname, type(opts)), (level or 2) + 1)
  end
  for k in pairs(opts) do
    if not allowed[k] then
      local names = {}
      for name in pairs(allowed) do names[#names + 1] = name end
      table.sort(names)
      error(("%s: unknown option '%s' (known: %s)"):format(fname, tostring(k),
        table.concat(names, ", ")), (level or 2) + 1)
    end
  end
  return opts
end

-- Integers the same way on 5.4 (math.type) and LuaJIT (whole numbers up to 2^53).
M.MAX_INTEGER = math.maxinteger or 2 ^ 53

function M.is_integer(v)
  if math.type then return math.type(v) == "integer" end
  return type(v) == "number" and v % 1 == 0 and v >= -M.MAX_INTEGER and v <= M.MAX_INTEGER
end

function M.set(list)
  local s = {}
  for _, v in ipairs(list) do s[v] = true end
  return s
end

function M.check_string(fname, what, v, level)
  if type(v) ~= "string" or v == "" then
    error(("%s: %s must be a non-empty string, got %s"):format(fname, what,
      type(v) == "string" and "an empty string" or type(v)), (level or 2) + 1)
  end
  return v
end

--- S2's basin name rule (8..48 of [a-z0-9-], no '-' at either end); raises naming `what`.
function M.check_basin_name(fname, name, level)
  M.check_string(fname, "name", name, (level or 2) + 1)
  if #name < 8 or #name > 48 or not name:match("^[a-z0-9][a-z0-9-]*[a-z0-9]$") then
    error(("%s: \"%s\" is not a basin name (8 to 48 of a-z, 0-9 and '-', no '-' at either end)")
      :format(fname, name), (level or 2) + 1)
  end
  return name
end

function M.urlencode(s)
  return (s:gsub("[^%w%-%._~]", function(c) return ("%%%02X"):format(c:byte()) end))
end

--- Query string from a table of optional parameters (keys sorted for stable URLs).
function M.query(params, keys)
  local parts = {}
  for _, k in ipairs(keys) do
    local v = params[k]
    if v ~= nil then parts[#parts + 1] = k .. "=" .. M.urlencode(tostring(v)) end
  end
  return #parts > 0 and ("?" .. table.concat(parts, "&")) or ""
end

-- JSON null becomes nil, and whole floats become integers (cjson gives floats on 5.4).
local function clean(v)
  if v == cjson.null then return nil end
  if type(v) == "number" and math.type and math.type(v) == "float" then
    return math.tointeger(v) or v
  end
  if type(v) == "table" then
    for k, x in pairs(v) do v[k] = clean(x) end
  end
  return v
end

function M.json_decode(s)
  if s == nil or s == "" then return {} end
  local ok, v = pcall(cjson.decode, s)
  if not ok then return nil, v end
  return clean(v)
end

function M.json_encode(v)
  return cjson.encode(v)
end

--- A command record (fence, trim): exactly one header, with an empty name.
function M.is_command_record(record)
  local h = record.headers
  return type(h) == "table" and #h == 1 and type(h[1]) == "table" and h[1][1] == ""
end

--- Options of delete_basin / delete_stream: { ignore_not_found = bool }.
function M.delete_ignores(fname, opts)
  if opts == nil then return false end
  if type(opts) ~= "table" then
    error(("%s: opts must be a table, got %s"):format(fname, type(opts)), 3)
  end
  for k in pairs(opts) do
    if k ~= "ignore_not_found" then
      error(("%s: unknown option %q (known: ignore_not_found)"):format(fname, tostring(k)), 3)
    end
  end
  local v = opts.ignore_not_found
  if v ~= nil and type(v) ~= "boolean" then
    error(("%s: ignore_not_found must be a boolean, got %s"):format(fname, type(v)), 3)
  end
  return v == true
end

--- An iterator over every item of a paged listing. list(opts) -> { <key> = items, has_more };
-- each page starts after the last item's `cursor` field (default "name"; access tokens page
-- by "id"). Items being deleted (deleted_at set, or state "deleting") are skipped
-- unless include_deleted. A failure is raised (the error object): a for loop has no other way.
function M.list_all(list, key, opts, include_deleted, cursor)
  cursor = cursor or "name"
  local page, i, done = nil, 0, false
  local query = {}
  for k, v in pairs(opts) do query[k] = v end
  return function()
    while true do
      if page and i < #page then
        i = i + 1
        local item = page[i]
        local deleting = item.deleted_at ~= nil or item.state == "deleting"
        if include_deleted or not deleting then return item end
      elseif done then
        return nil
      else
        local resp, err = list(query)
        if not resp then error(err, 2) end
        page, i = resp[key] or {}, 0
        done = not resp.has_more or #page == 0
        if #page > 0 then query.start_after = page[#page][cursor] end
      end
    end
  end
end

return M
