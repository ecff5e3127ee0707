--- s2lua: the command line of the s2 module (bin/s2lua is its launcher).
--   require("s2.cli").main(argv) -> exit status (0 ok, 1 failure, 2 usage error)
-- Commands live in s2.cli.records (append, read, tail) and s2.cli.manage (the rest); flag
-- parsing and help in s2.cli.args. Internal to bin/s2lua; not part of the module's API.
local args = require "s2.cli.args"
local records = require "s2.cli.records"
local manage = require "s2.cli.manage"

local M = {}

-- Help order; each entry's definition comes from records or manage.
local ORDER = {
  "append", "read", "tail", "check-tail", "fence", "trim",
  "ls", "list-basins", "create-basin", "delete-basin", "get-basin-config", "reconfigure-basin",
  "list-streams", "create-stream", "delete-stream", "get-stream-config", "reconfigure-stream",
}

local COMMANDS = {}
for _, name in ipairs(ORDER) do
  local cmd = records[name] or manage[name]
  assert(cmd, name)
  cmd.name = name
  COMMANDS[name] = cmd
end
M.COMMANDS = COMMANDS

local function usage_text()
  local lines = { "usage: s2lua COMMAND [ARGS] [options]", "", "commands:" }
  for _, name in ipairs(ORDER) do
    lines[#lines + 1] = ("  %-20s %s"):format(name, COMMANDS[name].summary)
  end
  lines[#lines + 1] = [[

A stream is named s2://BASIN/STREAM or BASIN STREAM; a basin BASIN or s2://BASIN.
`s2lua COMMAND --help` shows a command's options.

environment: S2_ACCESS_TOKEN, S2_ACCOUNT_ENDPOINT, S2_BASIN_ENDPOINT, S2_ENCRYPTION_KEY
exit status: 0 done, 1 failed (one line on stderr), 2 usage error]]
  return table.concat(lines, "\n")
end
M.usage_text = usage_text

-- One readable line, whatever was raised or returned.
local function one_line(e)
  local s = tostring(e)
  s = s:gsub("^[^\n]-%.lua:%d+: ", "") -- drop a "file.lua:12: " position
  return (s:gsub("[\r\n]+", " "))
end

-- ---- the context a command runs in: its client, opened on first use ----------------------------

local Ctx = {}
Ctx.__index = Ctx

function Ctx:client()
  if not self._client then
    local ok, c, err = pcall(require("s2").client)
    if not ok then args.fail(c) end
    if not c then args.fail(err) end
    self._client = c
  end
  return self._client
end

--- v, or the command fails with err (the `nil, err` convention of the module).
function Ctx:check(v, err, ...)
  if v == nil then args.fail(err) end
  return v, err, ...
end

function Ctx:close()
  -- Closed before the process exits, so the I/O thread stops first.
  if self._client then pcall(self._client.close, self._client) end
  self._client = nil
end

local function wants_help(argv)
  for _, a in ipairs(argv) do
    if a == "--" then return false end
    if a == "--help" or a == "-h" then return true end
  end
  return false
end

--- Runs one command line (argv without the program name); returns the exit status.
function M.main(argv)
  argv = { table.unpack(argv or {}) }
  local debug_mode = os.getenv "S2LUA_DEBUG"
  local name = table.remove(argv, 1)
  if name == "-h" or name == "--help" or (name == "help" and #argv == 0) then
    io.stdout:write(usage_text(), "\n")
    return 0
  end
  if name == "help" then
    name, argv = argv[1], { "--help" }
  end
  if name == nil then
    io.stderr:write("s2lua: a command is required\n", usage_text(), "\n")
    return 2
  end
  local cmd = COMMANDS[name]
  if not cmd then
    io.stderr:write("s2lua: unknown command '", name, "'\n", usage_text(), "\n")
    return 2
  end
  if wants_help(argv) then
    io.stdout:write(args.help(cmd), "\n")
    return 0
  end
  local ctx = setmetatable({}, Ctx)
  local ok, e = xpcall(cmd.run, function(err)
    if type(err) == "string" and debug_mode then return debug.traceback(err, 2) end
    return err
  end, ctx, argv, cmd)
  if ok then
    ctx:close()
    return 0
  end
  ctx:close()
  if args.is_exit(e) and e.status == 2 then
    local lines = {}
    for i, u in ipairs(cmd.usage) do
      lines[i] = (i == 1 and "usage: s2lua " or "       s2lua ") .. u
    end
    io.stderr:write("s2lua: ", name, ": ", e.msg, "\n", table.concat(lines, "\n"), "\n",
      "(s2lua ", name, " --help for the options)\n")
    return 2
  end
  local err = e
  if args.is_exit(e) then err = e.err end
  io.stderr:write("s2lua: ", debug_mode and tostring(err) or one_line(err), "\n")
  return 1
end

return M
