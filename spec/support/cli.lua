-- Runs bin/s2lua as a separate process for the cli specs, with the suite's S2_* environment
-- (the s2-lite that `make test` starts; see spec/helper.lua).
local M = {}

local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/support/[^/]*$") or ".")
M.CLI = ROOT .. "/bin/s2lua"

local function shell_quote(s)
  return "'" .. tostring(s):gsub("'", "'\\''") .. "'"
end
M.shell_quote = shell_quote

function M.read_file(path)
  local f = assert(io.open(path, "rb"))
  local s = f:read("a")
  f:close()
  return s
end

function M.write_file(path, s)
  local f = assert(io.open(path, "wb"))
  f:write(s)
  f:close()
end

-- The shell command that runs the CLI with args (a list) and env (a table of extra variables).
function M.command(args, env)
  local parts = {}
  for k, v in pairs(env or {}) do parts[#parts + 1] = k .. "=" .. shell_quote(v) end
  -- The CLI puts the checkout's lua/ and build/ first; the suite's own paths come after
  -- (e.g. build-asan/ under `make asan`, where build/ may not exist).
  parts[#parts + 1] = "LUA_PATH=" .. shell_quote(package.path)
  parts[#parts + 1] = "LUA_CPATH=" .. shell_quote(package.cpath)
  parts[#parts + 1] = shell_quote(M.CLI)
  for _, a in ipairs(args) do parts[#parts + 1] = shell_quote(a) end
  return table.concat(parts, " ")
end

-- Runs the CLI; stdin from opts.stdin (a string) or opts.stdin_path (default /dev/null),
-- extra environment from opts.env. Returns the exit code, stdout and stderr.
function M.run(args, opts)
  opts = opts or {}
  local stdin_path, tmp_in = opts.stdin_path or "/dev/null", nil
  if opts.stdin then
    tmp_in = os.tmpname()
    M.write_file(tmp_in, opts.stdin)
    stdin_path = tmp_in
  end
  local out, err = os.tmpname(), os.tmpname()
  local cmd = ("%s <%s >%s 2>%s"):format(M.command(args, opts.env), shell_quote(stdin_path),
    shell_quote(out), shell_quote(err))
  local ok, how, code = os.execute(cmd)
  local stdout, stderr = M.read_file(out), M.read_file(err)
  os.remove(out)
  os.remove(err)
  if tmp_in then os.remove(tmp_in) end
  if how == "signal" then error(("s2lua killed by signal %d: %s"):format(code, stderr)) end
  return ok and 0 or code, stdout, stderr
end

function M.lines_of(s)
  local t = {}
  for line in s:gmatch("([^\n]*)\n") do t[#t + 1] = line end
  return t
end

return M
