-- Shared pieces of the soak tools (soak/mixed.lua, soak/history.lua): environment settings,
-- FNV-1a 64, a one-line serializer for history files, a problem list, bounded-wait checks.
local M = {}

function M.env_num(name, dflt)
  local v = tonumber(os.getenv(name) or "")
  if v == nil then return dflt end
  return v
end

function M.env_str(name, dflt)
  local v = os.getenv(name)
  if v == nil or v == "" then return dflt end
  return v
end

-- ---- FNV-1a 64 (pure Lua, 64-bit integer arithmetic) ------------------------------------------
local FNV_OFFSET = -3750763034362895579 -- 0xcbf29ce484222325 as a signed 64-bit integer
local FNV_PRIME = 0x100000001b3
local byte = string.byte

function M.fnv1a(s)
  local h = FNV_OFFSET
  for i = 1, #s do h = (h ~ byte(s, i)) * FNV_PRIME end
  return h
end

-- 16 hex digits back to the same signed 64-bit integer ("0x..." + 0 wraps, tonumber(s, 16)
-- would give a float for the top half).
function M.hex64(s) return math.tointeger(("0x" .. s) + 0) end

-- ---- serializer: one Lua table constructor per line ---------------------------------------------
-- Values: strings, integers, floats, booleans, and nested tables of those (arrays or maps with
-- string keys). Read back with M.unline.
local function ser(v, out)
  local t = type(v)
  if t == "string" then
    out[#out + 1] = ("%q"):format(v):gsub("\n", "n")
  elseif t == "number" then
    if math.type(v) == "integer" then out[#out + 1] = ("%d"):format(v)
    elseif v ~= v then out[#out + 1] = "(0/0)"
    else out[#out + 1] = ("%.17g"):format(v) end
  elseif t == "boolean" then
    out[#out + 1] = tostring(v)
  elseif t == "table" then
    out[#out + 1] = "{"
    local n = #v
    for i = 1, n do ser(v[i], out); out[#out + 1] = "," end
    for k, x in pairs(v) do
      if not (math.type(k) == "integer" and k >= 1 and k <= n) then
        assert(type(k) == "string" and k:match("^[%a_][%w_]*$"), "serializer: bad key")
        out[#out + 1] = k .. "="
        ser(x, out)
        out[#out + 1] = ","
      end
    end
    out[#out + 1] = "}"
  else
    error("serializer: cannot write a " .. t)
  end
end

function M.line(v)
  local out = {}
  ser(v, out)
  return table.concat(out)
end

function M.unline(s)
  local f, err = load("return " .. s, "history line", "t", {})
  if not f then return nil, err end
  local ok, v = pcall(f)
  if not ok then return nil, v end
  return v
end

-- ---- problems ------------------------------------------------------------------------------------
-- A named counter per kind of violation, with the first few examples of each kept for the report.
function M.problems(keep)
  keep = keep or 5
  local P = { counts = {}, examples = {}, order = {} }
  function P.add(kind, fmt, ...)
    if not P.counts[kind] then
      P.counts[kind] = 0
      P.examples[kind] = {}
      P.order[#P.order + 1] = kind
    end
    P.counts[kind] = P.counts[kind] + 1
    local ex = P.examples[kind]
    if #ex < keep and fmt then ex[#ex + 1] = fmt:format(...) end
  end
  function P.total()
    local n = 0
    for _, c in pairs(P.counts) do n = n + c end
    return n
  end
  function P.report(prefix)
    for _, kind in ipairs(P.order) do
      print(("%sVIOLATION %s: %d"):format(prefix or "", kind, P.counts[kind]))
      for _, e in ipairs(P.examples[kind]) do print(("%s    %s"):format(prefix or "", e)) end
    end
  end
  return P
end

-- ---- bounded waits -------------------------------------------------------------------------------
-- Every wait with a timeout goes through a watch: it measures how long the call took and how
-- far it went past its bound. `slack` seconds (and 50 % of the bound) are allowed; more is a
-- violation. Returns the call's results.
function M.waits(now, problems, slack)
  local W = { calls = 0, worst_over = 0, worst_what = "", by = {} }
  local unpack = table.unpack
  function W.call(what, bound, f, ...)
    local t0 = now()
    local r = table.pack(f(...))
    local dt = now() - t0
    W.calls = W.calls + 1
    local over = dt - bound
    if over > W.worst_over then W.worst_over, W.worst_what = over, what end
    local b = W.by[what]
    if not b then b = { calls = 0, max = 0 }; W.by[what] = b end
    b.calls = b.calls + 1
    if dt > b.max then b.max = dt end
    if over > slack + bound * 0.5 then
      problems.add("wait_over_bound", "%s took %.1f s, bound %.1f s", what, dt, bound)
    end
    return unpack(r, 1, r.n)
  end
  return W
end

-- Error code of an error object (or a plain string) for the failure tables.
function M.code(err)
  if type(err) == "table" then return tostring(err.code or "?") end
  return tostring(err)
end

function M.count_into(t, k, n)
  t[k] = (t[k] or 0) + (n or 1)
end

function M.format_counts(t)
  local keys = {}
  for k in pairs(t) do keys[#keys + 1] = k end
  table.sort(keys)
  local out = {}
  for _, k in ipairs(keys) do out[#out + 1] = ("%s=%d"):format(k, t[k]) end
  if #out == 0 then return "none" end
  return table.concat(out, " ")
end

return M
