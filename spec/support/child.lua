-- Runs a Lua script in a child process (what a spec needs when the case is process exit,
-- a signal, or an LD_PRELOAD), with the parent's package paths, so the same build (plain,
-- ASan) is under test. Returns { status = exit code or 128+signal, stdout =, stderr = }.
local M = {}

local function q(s) return "'" .. tostring(s):gsub("'", "'\\''") .. "'" end

local function slurp(path)
  local f = io.open(path, "rb")
  if not f then return "" end
  local s = f:read("a")
  f:close()
  os.remove(path)
  return s
end

local function interpreter()
  local i = -1
  while arg and arg[i - 1] do i = i - 1 end
  local exe = arg and arg[i]
  -- busted runs as "lua5.4 /usr/bin/busted": the interpreter is the first word.
  if exe and exe:match("lua") and not exe:match("busted") then return exe end
  return "lua5.4"
end

--- run(script, { env = { NAME = value }, preload = "path.so", timeout = seconds })
function M.run(script, opts)
  opts = opts or {}
  local file = os.tmpname()
  local f = assert(io.open(file, "w"))
  f:write(script)
  f:close()
  local out, err = os.tmpname(), os.tmpname()
  local env = { ("LUA_PATH=%s"):format(q(package.path)), ("LUA_CPATH=%s"):format(q(package.cpath)) }
  for k, v in pairs(opts.env or {}) do env[#env + 1] = ("%s=%s"):format(k, q(v)) end
  if opts.preload then
    env[#env + 1] = ("LD_PRELOAD=%s"):format(q(((os.getenv("LD_PRELOAD") or "") .. " " .. opts.preload)))
  end
  local cmd = ("env %s timeout -s KILL %d %s %s >%s 2>%s; echo $?"):format(table.concat(env, " "),
    opts.timeout or 60, interpreter(), q(file), q(out), q(err))
  local p = assert(io.popen(cmd))
  local status = tonumber(p:read("a"):match("(%d+)%s*$"))
  p:close()
  os.remove(file)
  return { status = status, stdout = slurp(out), stderr = slurp(err) }
end

return M
