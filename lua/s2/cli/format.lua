--- s2lua's record formats (text, json, json-base64: one JSON object per line, the shape the
-- official s2 CLI uses), base64, and JSON output of configs. Internal to bin/s2lua.
local cjson = require("cjson").new()

local M = {}

M.FORMATS = { "text", "json", "json-base64" }

-- ---- base64 (RFC 4648, standard alphabet, padded) ---------------------------------------------

local ALPHABET = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local ENC, DEC = {}, {}
for i = 1, 64 do
  local c = ALPHABET:sub(i, i)
  ENC[i - 1] = c
  DEC[c:byte()] = i - 1
end

function M.base64_encode(s)
  local out, n = {}, 0
  for i = 1, #s - 2, 3 do
    local a, b, c = s:byte(i, i + 2)
    local v = a << 16 | b << 8 | c
    n = n + 1
    out[n] = ENC[v >> 18] .. ENC[v >> 12 & 63] .. ENC[v >> 6 & 63] .. ENC[v & 63]
  end
  local rest = #s % 3
  if rest == 1 then
    local v = s:byte(-1) << 16
    out[n + 1] = ENC[v >> 18] .. ENC[v >> 12 & 63] .. "=="
  elseif rest == 2 then
    local a, b = s:byte(-2, -1)
    local v = a << 16 | b << 8
    out[n + 1] = ENC[v >> 18] .. ENC[v >> 12 & 63] .. ENC[v >> 6 & 63] .. "="
  end
  return table.concat(out)
end

--- Decodes padded base64; nil when s is not valid base64.
function M.base64_decode(s)
  if #s % 4 ~= 0 then return nil end
  local out, n = {}, 0
  for i = 1, #s, 4 do
    local c1, c2, c3, c4 = s:byte(i, i + 3)
    local last = i + 3 == #s
    local v1, v2 = DEC[c1], DEC[c2]
    if not v1 or not v2 then return nil end
    if last and c4 == 61 then -- "="
      if c3 == 61 then
        if v2 & 15 ~= 0 then return nil end
        n = n + 1
        out[n] = string.char(v1 << 2 | v2 >> 4)
      else
        local v3 = DEC[c3]
        if not v3 or v3 & 3 ~= 0 then return nil end
        n = n + 1
        out[n] = string.char(v1 << 2 | v2 >> 4, (v2 & 15) << 4 | v3 >> 2)
      end
    else
      local v3, v4 = DEC[c3], DEC[c4]
      if not v3 or not v4 then return nil end
      local v = v1 << 18 | v2 << 12 | v3 << 6 | v4
      n = n + 1
      out[n] = string.char(v >> 16, v >> 8 & 255, v & 255)
    end
  end
  return table.concat(out)
end

-- ---- JSON output ------------------------------------------------------------------------------

--- Invalid UTF-8 sequences replaced by U+FFFD (what the json format does with binary data).
function M.lossy_utf8(s)
  if utf8.len(s) then return s end
  local out, i = {}, 1
  while i <= #s do
    local n, bad = utf8.len(s, i)
    if n then
      out[#out + 1] = s:sub(i)
      break
    end
    out[#out + 1] = s:sub(i, bad - 1)
    out[#out + 1] = "\u{FFFD}"
    i = bad + 1
  end
  return table.concat(out)
end

local ESCAPES = {
  ['"'] = '\\"', ["\\"] = "\\\\", ["\b"] = "\\b", ["\f"] = "\\f", ["\n"] = "\\n",
  ["\r"] = "\\r", ["\t"] = "\\t",
}

local function json_string(s)
  return '"' .. s:gsub('[%c"\\]', function(c)
    return ESCAPES[c] or ("\\u%04x"):format(c:byte())
  end) .. '"'
end
M.json_string = json_string

--- One record as a JSON line (without the newline), fields in the official CLI's order:
-- {"seq_num":N,"timestamp":T,"headers":[["name","value"],...],"body":"..."}; headers and body
-- are left out when empty; json-base64 encodes header names, values and the body as base64.
function M.record_json(record, base64)
  local enc = base64 and M.base64_encode or M.lossy_utf8
  local parts = { ('{"seq_num":%d,"timestamp":%d'):format(record.seq_num, record.timestamp) }
  local headers = record.headers
  if headers and #headers > 0 then
    local hs = {}
    for i, h in ipairs(headers) do
      hs[i] = "[" .. json_string(enc(h[1])) .. "," .. json_string(enc(h[2])) .. "]"
    end
    parts[#parts + 1] = ',"headers":[' .. table.concat(hs, ",") .. "]"
  end
  if record.body ~= "" then parts[#parts + 1] = ',"body":' .. json_string(enc(record.body)) end
  parts[#parts + 1] = "}"
  return table.concat(parts)
end

local function is_array(t)
  local n = #t
  if n == 0 then return false end
  local count = 0
  for _ in pairs(t) do count = count + 1 end
  return count == n
end

--- Any decoded JSON value (a config) as indented JSON with sorted keys.
function M.pretty(v, indent)
  indent = indent or ""
  local t = type(v)
  if t == "string" then return json_string(v) end
  if t == "number" then
    if math.type(v) == "integer" then return tostring(v) end
    return ("%.17g"):format(v)
  end
  if t == "boolean" then return tostring(v) end
  if t ~= "table" then return "null" end
  local inner = indent .. "  "
  local items = {}
  if is_array(v) then
    for i, x in ipairs(v) do items[i] = inner .. M.pretty(x, inner) end
    return "[\n" .. table.concat(items, ",\n") .. "\n" .. indent .. "]"
  end
  local keys = {}
  for k in pairs(v) do keys[#keys + 1] = tostring(k) end
  if #keys == 0 then return "{}" end
  table.sort(keys)
  for i, k in ipairs(keys) do items[i] = inner .. json_string(k) .. ": " .. M.pretty(v[k], inner) end
  return "{\n" .. table.concat(items, ",\n") .. "\n" .. indent .. "}"
end

-- ---- JSON input -------------------------------------------------------------------------------

--- A record to append from one JSON line: {"body":...,"headers":[[n,v],...],"timestamp":T},
-- every field optional; other fields (seq_num, as read --format json writes) are ignored.
-- Returns the record, or nil and a message.
function M.parse_record(line, base64)
  local ok, v = pcall(cjson.decode, line)
  if not ok then return nil, "invalid JSON: " .. tostring(v):gsub("^.-: ", "") end
  if type(v) ~= "table" or is_array(v) then return nil, "expected a JSON object" end
  local function bytes(s, what)
    if type(s) ~= "string" then return nil, what .. " must be a string" end
    if not base64 then return s end
    local d = M.base64_decode(s)
    if not d then return nil, what .. " is not valid base64: " .. s end
    return d
  end
  local record = {}
  if v.body ~= nil and v.body ~= cjson.null then
    local b, err = bytes(v.body, "body")
    if not b then return nil, err end
    record.body = b
  else
    record.body = ""
  end
  if v.headers ~= nil and v.headers ~= cjson.null then
    if type(v.headers) ~= "table" then return nil, "headers must be an array of [name, value]" end
    local hs = {}
    for i, h in ipairs(v.headers) do
      if type(h) ~= "table" or #h ~= 2 then
        return nil, ("headers[%d] must be [name, value]"):format(i)
      end
      local name, err = bytes(h[1], ("headers[%d] name"):format(i))
      if not name then return nil, err end
      local value, verr = bytes(h[2], ("headers[%d] value"):format(i))
      if not value then return nil, verr end
      hs[i] = { name, value }
    end
    if #hs > 0 then record.headers = hs end
  end
  if v.timestamp ~= nil and v.timestamp ~= cjson.null then
    local ts = type(v.timestamp) == "number" and math.tointeger(v.timestamp)
    if not ts or ts < 0 then return nil, "timestamp must be a non-negative integer (ms)" end
    record.timestamp = ts
  end
  return record
end

return M
