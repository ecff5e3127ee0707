--- s2lua's management commands: basins, streams, configs, listings, check-tail, fence, trim.
-- Internal to bin/s2lua.
local args = require "s2.cli.args"
local format = require "s2.cli.format"
local records = require "s2.cli.records"
local s2 = require "s2"

local M = {}

local function concat(...)
  local t = {}
  for _, list in ipairs { ... } do
    for _, f in ipairs(list) do t[#t + 1] = f end
  end
  return t
end

local function print_json(v)
  io.stdout:write(format.pretty(v), "\n")
end

-- ---- configs ----------------------------------------------------------------------------------

local STREAM_CONFIG_FLAGS = {
  { "--storage-class", type = { "standard", "express" }, help = "storage class of recent writes" },
  { "--retention-policy", type = "string", metavar = "DURATION|infinite",
    help = "how long records are kept, e.g. 7d, or infinite (until trimmed)" },
  { "--timestamping-mode", type = { "client-prefer", "client-require", "arrival" },
    help = "where record timestamps come from" },
  { "--timestamping-uncapped", type = "bool", help = "client timestamps may exceed the arrival time" },
  { "--uncapped", type = "flag", sets = { timestamping_uncapped = true },
    help = "the same as --timestamping-uncapped true" },
  { "--delete-on-empty-min-age", type = "duration", metavar = "DURATION",
    help = "delete the stream once empty for this long (0: never)" },
}

local function whole_seconds(flag, d)
  if d ~= math.floor(d) then args.usage_error(flag .. " must be whole seconds") end
  return math.tointeger(d)
end

--- The stream config (or reconfiguration: the same shape) from the flags; nil when none given.
local function stream_config(opt)
  local c, any = {}, false
  if opt.storage_class then c.storage_class, any = opt.storage_class, true end
  if opt.retention_policy then
    local v = opt.retention_policy
    if v == "infinite" then
      c.retention_policy = { infinite = {} }
    else
      local d = args.parse_duration(v)
      if not d or d < 1 then
        args.usage_error("--retention-policy needs a duration of at least 1s (e.g. 7d) or 'infinite', got '"
          .. v .. "'")
      end
      c.retention_policy = { age = whole_seconds("--retention-policy", d) }
    end
    any = true
  end
  if opt.timestamping_mode or opt.timestamping_uncapped ~= nil then
    c.timestamping = { mode = opt.timestamping_mode, uncapped = opt.timestamping_uncapped }
    any = true
  end
  if opt.delete_on_empty_min_age then
    c.delete_on_empty = {
      min_age_secs = whole_seconds("--delete-on-empty-min-age", opt.delete_on_empty_min_age),
    }
    any = true
  end
  return any and c or nil
end

local CIPHER_FLAG = { "--stream-cipher", type = { "aegis-256", "aes-256-gcm" },
  help = "encrypt streams created in the basin from now on" }

-- ---- basins -----------------------------------------------------------------------------------

M["create-basin"] = {
  usage = { "create-basin BASIN [options]" },
  summary = "create a basin",
  help = "Creates a basin; the stream options set its default stream config.",
  flags = concat({
    { "--create-stream-on-append", type = "flag", help = "an append to a missing stream creates it" },
    { "--create-stream-on-read", type = "flag", help = "a read of a missing stream creates it" },
    CIPHER_FLAG,
  }, STREAM_CONFIG_FLAGS),
  run = function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    local basin = args.basin_target(pos)
    local config = {
      create_stream_on_append = opt.create_stream_on_append or nil,
      create_stream_on_read = opt.create_stream_on_read or nil,
      stream_cipher = opt.stream_cipher,
      default_stream_config = stream_config(opt),
    }
    ctx:check(ctx:client():create_basin(basin, next(config) and config or nil))
    io.stderr:write("basin created: ", basin, "\n")
  end,
}

M["delete-basin"] = {
  usage = { "delete-basin BASIN" },
  summary = "delete a basin",
  help = "Requests the deletion of a basin and all its streams.",
  flags = {},
  run = function(ctx, argv, cmd)
    local basin = args.basin_target((args.parse(cmd.flags, argv)))
    ctx:check(ctx:client():delete_basin(basin))
    io.stderr:write("basin deletion requested: ", basin, "\n")
  end,
}

M["get-basin-config"] = {
  usage = { "get-basin-config BASIN" },
  summary = "print a basin's config as JSON",
  help = "Prints the basin's config (the REST API's field names) as JSON on stdout.",
  flags = {},
  run = function(ctx, argv, cmd)
    local basin = args.basin_target((args.parse(cmd.flags, argv)))
    print_json(ctx:check(ctx:client():get_basin_config(basin)))
  end,
}

M["reconfigure-basin"] = {
  usage = { "reconfigure-basin BASIN [options]" },
  summary = "change a basin's config",
  help = [=[Changes the given fields of a basin's config (the stream options change its default
stream config) and prints the new config as JSON on stdout.]=],
  flags = concat({
    { "--create-stream-on-append", type = "bool", help = "an append to a missing stream creates it" },
    { "--create-stream-on-read", type = "bool", help = "a read of a missing stream creates it" },
    CIPHER_FLAG,
  }, STREAM_CONFIG_FLAGS),
  run = function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    local basin = args.basin_target(pos)
    local changes = {
      create_stream_on_append = opt.create_stream_on_append,
      create_stream_on_read = opt.create_stream_on_read,
      stream_cipher = opt.stream_cipher,
      default_stream_config = stream_config(opt),
    }
    local config = ctx:check(ctx:client():reconfigure_basin(basin, changes))
    io.stderr:write("basin reconfigured: ", basin, "\n")
    print_json(config)
  end,
}

-- ---- listings ---------------------------------------------------------------------------------

local LIST_FLAGS = {
  { "--prefix", short = "-p", type = "string", metavar = "PREFIX", help = "only names starting with PREFIX" },
  { "--start-after", short = "-s", type = "string", metavar = "NAME", help = "only names after NAME" },
  { "--limit", short = "-n", type = "uint", metavar = "N",
    help = "at most N names (with --no-auto-paginate: the page size, at most 1000)" },
  { "--no-auto-paginate", type = "flag", help = "one page only" },
}

-- Writes every listed item: show(item) gives the line. A failed page fails the command.
local function list(ctx, opt, prefix, one_page, all_pages, show)
  if opt.prefix and prefix then
    args.usage_error("give the prefix once: in the s2:// URI or with --prefix")
  end
  local q = { prefix = opt.prefix or prefix, start_after = opt.start_after }
  local limit = opt.limit
  if limit == 0 then return end
  if opt.no_auto_paginate then
    if limit and limit > 1000 then args.usage_error("--limit is at most 1000 with --no-auto-paginate") end
    q.limit = limit
    local page = ctx:check(one_page(q))
    for _, item in ipairs(page.items) do io.stdout:write(show(item), "\n") end
    return
  end
  q.limit = limit and math.min(limit, 1000) or nil
  q.include_deleted = true
  local n = 0
  local ok, err = pcall(function()
    for item in all_pages(q) do
      io.stdout:write(show(item), "\n")
      n = n + 1
      if limit and n >= limit then break end
    end
  end)
  if not ok then args.fail(err) end
end

local function deleting(item)
  return item.deleted_at ~= nil or item.state == "deleting"
end

local function marked(s, item)
  return deleting(item) and (s .. " [deleting]") or s
end

local function list_basins(ctx, opt, bare)
  local c = ctx:client()
  list(ctx, opt, nil, function(q)
    local page, err = c:list_basins(q)
    return page and { items = page.basins or {} }, err
  end, function(q) return c:list_all_basins(q) end,
  function(item) return bare and item.name or marked(item.name, item) end)
end

local function list_streams(ctx, opt, basin, prefix, uris)
  local b = ctx:client():basin(basin)
  list(ctx, opt, prefix, function(q)
    local page, err = b:list_streams(q)
    return page and { items = page.streams or {} }, err
  end, function(q) return b:list_all_streams(q) end,
  function(item)
    if uris then return marked(("s2://%s/%s"):format(basin, item.name), item) end
    return item.name
  end)
end

M["list-basins"] = {
  usage = { "list-basins [options]" },
  summary = "list basins",
  help = "Lists basins, one name per line (a basin being deleted is marked [deleting]).",
  flags = LIST_FLAGS,
  run = function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    if #pos > 0 then args.usage_error("list-basins takes no arguments") end
    list_basins(ctx, opt)
  end,
}

M["list-streams"] = {
  usage = { "list-streams BASIN [options]", "list-streams s2://BASIN[/PREFIX] [options]" },
  summary = "list the streams of a basin",
  help = [=[Lists the streams of a basin, one s2://BASIN/STREAM per line (a stream being deleted is
marked [deleting]).]=],
  flags = LIST_FLAGS,
  run = function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    local basin, prefix = args.basin_target(pos, true)
    list_streams(ctx, opt, basin, prefix, true)
  end,
}

M.ls = {
  usage = { "ls [BASIN | s2://BASIN[/PREFIX]] [options]" },
  summary = "list basins, or the streams of BASIN (bare names)",
  help = "Lists basin names, or the stream names of BASIN, one per line.",
  flags = LIST_FLAGS,
  run = function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    if #pos > 1 then args.usage_error("ls takes at most one BASIN") end
    local basin, prefix = args.basin_target(pos, true, true)
    if basin then list_streams(ctx, opt, basin, prefix, false) else list_basins(ctx, opt, true) end
  end,
}

-- ---- streams ----------------------------------------------------------------------------------

local function stream_command(name, summary, help, flags, run)
  M[name] = {
    usage = { name .. " s2://BASIN/STREAM" .. (flags[1] and " [options]" or ""),
      name .. " BASIN STREAM" .. (flags[1] and " [options]" or "") },
    summary = summary, help = help, flags = flags, run = run,
  }
end

stream_command("create-stream", "create a stream", "Creates a stream with the given config.",
  STREAM_CONFIG_FLAGS, function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    local basin, stream = args.stream_target(pos, 0)
    ctx:check(ctx:client():basin(basin):create_stream(stream, stream_config(opt)))
    io.stderr:write("stream created: s2://", basin, "/", stream, "\n")
  end)

stream_command("delete-stream", "delete a stream", "Requests the deletion of a stream.", {},
  function(ctx, argv, cmd)
    local basin, stream = args.stream_target((args.parse(cmd.flags, argv)), 0)
    ctx:check(ctx:client():basin(basin):delete_stream(stream))
    io.stderr:write("stream deletion requested: s2://", basin, "/", stream, "\n")
  end)

stream_command("get-stream-config", "print a stream's config as JSON",
  "Prints the stream's config (the REST API's field names) as JSON on stdout.", {},
  function(ctx, argv, cmd)
    local basin, stream = args.stream_target((args.parse(cmd.flags, argv)), 0)
    print_json(ctx:check(ctx:client():basin(basin):get_stream_config(stream)))
  end)

stream_command("reconfigure-stream", "change a stream's config",
  "Changes the given fields of a stream's config and prints the new config as JSON on stdout.",
  STREAM_CONFIG_FLAGS, function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    local basin, stream = args.stream_target(pos, 0)
    local config = ctx:check(ctx:client():basin(basin):reconfigure_stream(stream,
      stream_config(opt) or {}))
    io.stderr:write("stream reconfigured: s2://", basin, "/", stream, "\n")
    print_json(config)
  end)

stream_command("check-tail", "print the tail: next seq_num @ last timestamp",
  [[Prints the stream's tail as "SEQ_NUM @ TIMESTAMP": the seq_num the next record will get and
the timestamp (ms) of the last record.]], {},
  function(ctx, argv, cmd)
    local basin, stream = args.stream_target((args.parse(cmd.flags, argv)), 0)
    local tail = ctx:check(ctx:client():basin(basin):stream(stream):check_tail())
    io.stdout:write(("%d @ %d\n"):format(tail.seq_num, tail.timestamp))
  end)

local COMMAND_FLAGS = {
  { "--fencing-token", short = "-f", type = "string", metavar = "TOKEN",
    help = "append only if the stream's fencing token is TOKEN" },
  { "--match-seq-num", short = "-m", type = "uint", metavar = "N",
    help = "append only if the command record gets seq_num N" },
}

local function check_token(flag, token)
  if #token > s2.MAX_FENCING_TOKEN then
    args.usage_error(("%s is at most %d bytes"):format(flag, s2.MAX_FENCING_TOKEN))
  end
end

-- Appends one command record; prints it as read --format text describes it.
local function append_command(ctx, basin, stream, record, opt)
  if opt.fencing_token then check_token("--fencing-token", opt.fencing_token) end
  local ack = ctx:check(ctx:client():basin(basin):stream(stream):append({ record },
    { fencing_token = opt.fencing_token, match_seq_num = opt.match_seq_num }))
  io.stderr:write(records.command_text {
    headers = record.headers, body = record.body,
    seq_num = ack.start.seq_num, timestamp = ack.start.timestamp,
  }, "\n")
end

M.fence = {
  usage = { "fence s2://BASIN/STREAM NEW_TOKEN [options]", "fence BASIN STREAM NEW_TOKEN [options]" },
  summary = "set a stream's fencing token",
  help = [=[Appends a fence command record: from then on, appends that carry a fencing token must
carry NEW_TOKEN (at most 36 bytes; "" clears the fence). To move a fence that is set, give the
current token with --fencing-token.]=],
  flags = COMMAND_FLAGS,
  run = function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    local basin, stream, rest = args.stream_target(pos, 1)
    check_token("NEW_TOKEN", rest[1])
    append_command(ctx, basin, stream, s2.fence(rest[1]), opt)
  end,
}

M.trim = {
  usage = { "trim s2://BASIN/STREAM TRIM_POINT [options]", "trim BASIN STREAM TRIM_POINT [options]" },
  summary = "delete the records before a seq_num",
  help = [=[Appends a trim command record: records before seq_num TRIM_POINT are deleted
(eventually; a trim point below an earlier one is ignored).]=],
  flags = COMMAND_FLAGS,
  run = function(ctx, argv, cmd)
    local pos, opt = args.parse(cmd.flags, argv)
    local basin, stream, rest = args.stream_target(pos, 1)
    local point = rest[1]:match("^%d+$") and math.tointeger(tonumber(rest[1]))
    if not point then args.usage_error("TRIM_POINT must be a seq_num (a non-negative integer)") end
    append_command(ctx, basin, stream, s2.trim(point), opt)
  end,
}

return M
