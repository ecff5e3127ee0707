--- Error objects of the s2 module.
-- Every run-time failure is `nil, err` where err is a table:
--   err.code (string), err.status (HTTP status or nil), err.message (string),
--   err.retryable (boolean); 412: expected_seq_num | expected_fencing_token; 416: tail.
-- tostring(err) and ".." give one readable line. The metatable is shared with the C core,
-- so errors made in C and in Lua are alike.
local core = require "s2.core"

local M = {}

local mt = core.error_mt

--- Makes an error object (client-side codes: "timeout", "closed", "connection_failed", ...).
function M.new(code, message, fields)
  local e = { code = code, message = message, retryable = false }
  for k, v in pairs(fields or {}) do e[k] = v end
  return setmetatable(e, mt)
end

--- True when v is an s2 error object.
function M.is(v)
  return type(v) == "table" and getmetatable(v) == mt
end

M.mt = mt
return M
