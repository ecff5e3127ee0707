--- s2lua's command line parsing: flags by declaration, s2:// targets, durations, help text,
-- and the two ways a command ends early (usage error: exit 2; failure: exit 1).
-- Internal to bin/s2lua; not part of the module's API.
local M = {}

-- ---- exits ------------------------------------------------------------------------------------

local Exit = {}
Exit.__index = Exit

--- Ends the command with exit 2: msg, then the command's usage line, on stderr.
function M.usage_error(msg)
  error(setmetatable({ status = 2, msg = msg }, Exit), 0)
end

--- Ends the command with exit 1: one line on stderr (err: an s2 error, a string, ...).
function M.fail(err)
  error(setmetatable({ status = 1, err = err }, Exit), 0)
end

function M.is_exit(v)
  return getmetatable(v) == Exit
end

-- ---- values -----------------------------------------------------------------------------------

local UNITS = {
  ns = 1e-9, us = 1e-6, ms = 1e-3,
  s = 1, sec = 1, secs = 1, second = 1, seconds = 1,
  m = 60, min = 60, mins = 60, minute = 60, minutes = 60,
  h = 3600, hr = 3600, hrs = 3600, hour = 3600, hours = 3600,
  d = 86400, day = 86400, days = 86400,
  w = 604800, week = 604800, weeks = 604800,
  M = 2630016, month = 2630016, months = 2630016, -- 30.44 days
  y = 31557600, year = 31557600, years = 31557600, -- 365.25 days
}

--- "7d", "1h30m", "500ms", "2w" (a bare integer is seconds) -> seconds, or nil.
function M.parse_duration(s)
  if s:match("^%d+$") then return tonumber(s) end
  local total, pos, parts = 0, 1, 0
  s = s:gsub("^%s+", ""):gsub("%s+$", "")
  while pos <= #s do
    local n, unit, nxt = s:match("^(%d+)%s*(%a+)%s*()", pos)
    if not n or not UNITS[unit] then return nil end
    total = total + tonumber(n) * UNITS[unit]
    pos, parts = nxt, parts + 1
  end
  if parts == 0 then return nil end
  return total
end

local function convert(flag, v)
  local t = flag.type
  if t == "string" then return v end
  if t == "uint" or t == "int" then
    if not v:match(t == "uint" and "^%d+$" or "^%-?%d+$") then
      M.usage_error(("%s needs %s integer, got '%s'"):format(flag.name,
        t == "uint" and "a non-negative" or "an", v))
    end
    local n = math.tointeger(tonumber(v))
    if n == nil then M.usage_error(("%s: %s is out of range"):format(flag.name, v)) end
    return n
  end
  if t == "duration" then
    local d = M.parse_duration(v)
    if not d then
      M.usage_error(("%s needs a duration such as 30s, 5m, 1h, 7d, got '%s'"):format(flag.name, v))
    end
    return d
  end
  if t == "bool" then
    if v == "true" then return true elseif v == "false" then return false end
    M.usage_error(("%s needs true or false, got '%s'"):format(flag.name, v))
  end
  if type(t) == "table" then -- one of a list of words
    for _, w in ipairs(t) do if v == w then return v end end
    M.usage_error(("%s needs one of %s, got '%s'"):format(flag.name, table.concat(t, ", "), v))
  end
  error("args: unknown flag type " .. tostring(t))
end

local function key_of(name)
  return (name:gsub("^%-%-", ""):gsub("%-", "_"))
end

--- Parses a command's arguments by its flag declarations:
-- flags = { { "--name", short = "-n", type = "flag"|"uint"|"int"|"string"|"duration"|"bool"|
--   { "word", ... }, metavar =, help =, group = "start", sets = { key = value } }, ... }.
-- Returns the positionals (a list) and the options (keyed by name without dashes, "-" -> "_").
-- "--name=value" works too; "--" ends the flags.
function M.parse(flags, argv)
  local by_name = {}
  for _, f in ipairs(flags) do
    by_name[f[1]] = f
    if f.short then by_name[f.short] = f end
    f.name = f[1]
  end
  local pos, opt, seen_group = {}, {}, {}
  local i, flags_done = 1, false
  while i <= #argv do
    local a = argv[i]
    if flags_done or a == "-" or not (a:match("^%-%-.") or a:match("^%-%a")) then
      pos[#pos + 1] = a
    elseif a == "--" then
      flags_done = true
    else
      local name, inline = a:match("^(%-%-[^=]+)=(.*)$")
      if not name and not a:match("^%-%-") and #a > 2 then
        name, inline = a:sub(1, 2), a:sub(3) -- "-kVALUE": a value glued to a short flag
      end
      name = name or a
      local f = by_name[name]
      -- Only the option's name, never what came with it (it may be a key or a token).
      if not f then M.usage_error("unknown option " .. name) end
      local v
      if f.type == "flag" then
        if inline then M.usage_error(f.name .. " takes no value") end
        v = true
      else
        v = inline
        if v == nil then
          i = i + 1
          v = argv[i]
          if v == nil then
            M.usage_error(("%s needs a value (%s)"):format(f.name, f.metavar or "VALUE"))
          end
        end
        v = convert(f, v)
      end
      if f.group then
        local other = seen_group[f.group]
        if other and other ~= f.name then
          M.usage_error(("give at most one of %s and %s"):format(other, f.name))
        end
        seen_group[f.group] = f.name
      end
      if f.sets then
        for k, sv in pairs(f.sets) do opt[k] = sv end
      else
        opt[key_of(f.name)] = v
      end
    end
    i = i + 1
  end
  return pos, opt
end

-- ---- targets ----------------------------------------------------------------------------------

local function split_uri(s)
  local rest = s:match("^s2://(.*)$")
  if not rest then return nil end
  local basin, path = rest:match("^([^/]*)/(.*)$")
  if not basin then basin = rest end
  if basin == "" then M.usage_error("no basin in " .. s) end
  return basin, path
end

--- A stream from the positionals: "s2://BASIN/STREAM" or "BASIN STREAM"; `extra` more
-- positionals must follow. Returns basin, stream, the rest (a list).
function M.stream_target(pos, extra)
  local basin, stream, n
  if pos[1] and pos[1]:match("^s2://") then
    basin, stream = split_uri(pos[1])
    if stream == nil or stream == "" then M.usage_error("no stream in " .. pos[1]) end
    n = 1
  else
    basin, stream, n = pos[1], pos[2], 2
    if basin == nil or stream == nil then M.usage_error("needs S2_URI (or BASIN STREAM)") end
  end
  if #pos ~= n + (extra or 0) then M.usage_error("wrong number of arguments") end
  return basin, stream, { table.unpack(pos, n + 1) }
end

--- A basin from the positionals: "s2://BASIN" or "BASIN". With allow_prefix, "s2://BASIN/P"
-- also gives a name prefix (returned second). optional: no positional is fine (nil).
function M.basin_target(pos, allow_prefix, optional)
  if #pos == 0 and optional then return nil end
  if #pos ~= 1 then M.usage_error("needs one BASIN (or s2://BASIN)") end
  local a = pos[1]
  if a:match("^s2://") then
    local basin, path = split_uri(a)
    if path and path ~= "" and not allow_prefix then
      M.usage_error("expected a basin, not a stream: " .. a)
    end
    return basin, path ~= "" and path or nil
  end
  if a == "" then M.usage_error("the basin name is empty") end
  return a
end

-- ---- help -------------------------------------------------------------------------------------

--- The help of one command: usage lines, description, options.
function M.help(cmd)
  local lines = {}
  for i, u in ipairs(cmd.usage) do
    lines[#lines + 1] = (i == 1 and "usage: s2lua " or "       s2lua ") .. u
  end
  lines[#lines + 1] = ""
  lines[#lines + 1] = cmd.help
  if #cmd.flags > 0 then
    lines[#lines + 1] = ""
    lines[#lines + 1] = "options:"
    for _, f in ipairs(cmd.flags) do
      local left = (f.short and (f.short .. ", ") or "    ") .. f[1]
      if f.type ~= "flag" then
        local mv = f.metavar or (type(f.type) == "table" and table.concat(f.type, "|"))
          or (f.type == "bool" and "true|false") or "VALUE"
        left = left .. " " .. mv
      end
      left = "  " .. left
      if #left > 32 then
        lines[#lines + 1] = left
        left = ""
      end
      lines[#lines + 1] = left .. (" "):rep(34 - #left) .. f.help
    end
  end
  return table.concat(lines, "\n")
end

return M
