--- s2lua's data commands: append, read, tail. Internal to bin/s2lua.
local args = require "s2.cli.args"
local format = require "s2.cli.format"
local s2 = require "s2"
local now = require("s2.core").now

local M = {}

local MiB = 1024 * 1024
local FOREVER = 31536000 -- seconds (a year, the longest wait): "wait" bounds the time between records
local PROGRESS_EVERY = 1 -- seconds between progress lines

-- ---- shared flags -----------------------------------------------------------------------------

local KEY_FLAGS = {
  { "--encryption-key", short = "-k", type = "string", metavar = "KEY", group = "key",
    help = "base64 key of an encrypted stream (default: $S2_ENCRYPTION_KEY)" },
  { "--encryption-key-file", type = "string", metavar = "FILE", group = "key",
    help = "read the key from FILE" },
}
local FORMAT_FLAG = { "--format", type = format.FORMATS, metavar = "text|json|json-base64",
  help = "records as text lines (default), or JSON lines (see the reference)" }
local PROGRESS_FLAG = { "--progress", type = "flag",
  help = "progress on stderr each second (default: when stderr is a terminal)" }

local function with(list, ...)
  local t = {}
  for _, f in ipairs(list) do t[#t + 1] = f end
  for _, more in ipairs { ... } do
    for _, f in ipairs(more) do t[#t + 1] = f end
  end
  return t
end

local function read_whole(path)
  local f, err = io.open(path, "rb")
  if not f then args.fail(err) end
  local s = f:read("a")
  f:close()
  return s
end

--- The encryption key: --encryption-key, --encryption-key-file, else $S2_ENCRYPTION_KEY.
local function encryption_key(opt)
  if opt.encryption_key then return opt.encryption_key end
  if opt.encryption_key_file then
    -- As it is: basin:stream trims it (in linear time; a "%s+$" gsub here was quadratic).
    return read_whole(opt.encryption_key_file)
  end
  local env = os.getenv "S2_ENCRYPTION_KEY"
  if env and env ~= "" then return env end
  return nil
end
M.encryption_key = encryption_key

local function open_stream(ctx, basin, stream, opt)
  local key = encryption_key(opt)
  local b = ctx:client():basin(basin)
  if key then return b:stream(stream, { encryption_key = key }) end
  return b:stream(stream)
end

local stderr_tty
local function progress_wanted(opt)
  if stderr_tty == nil then stderr_tty = os.execute("test -t 2") == true end
  return opt.progress or stderr_tty, stderr_tty
end

--- A progress line on stderr at most every PROGRESS_EVERY seconds: in place on a terminal,
-- one line each time otherwise. line() builds the text.
local function meter(enabled, tty, line, before)
  local m = { start = now() }
  local next_at = m.start + PROGRESS_EVERY
  function m.tick()
    if not enabled then return end
    local t = now()
    if t < next_at then return end
    next_at = t + PROGRESS_EVERY
    if before then before() end
    if tty then io.stderr:write("\r\27[K", line(t - m.start)) else io.stderr:write(line(t - m.start), "\n") end
  end
  function m.finish(always)
    if not (enabled or always) then return end
    if tty then io.stderr:write("\r\27[K") end
    io.stderr:write(line(math.max(now() - m.start, 1e-6)), "\n")
  end
  return m
end

-- ---- append -----------------------------------------------------------------------------------

-- Record sources: a function returning the next record (a string or table), nil at the end,
-- or false and a message for bad input.
local function line_source(f)
  return function()
    local line = f:read("L")
    if line == nil then return nil end
    if line:sub(-1) == "\n" then line = line:sub(1, -2) end
    return line
  end
end

local function length_source(f)
  return function()
    local head = f:read(4)
    if head == nil then return nil end
    if #head < 4 then return false, "input ends inside a length prefix" end
    local n = string.unpack(">I4", head)
    local body = n == 0 and "" or f:read(n)
    if body == nil or #body < n then
      return false, ("input ends inside a record (%d of %d bytes)"):format(body and #body or 0, n)
    end
    return body
  end
end

local function json_source(f, base64)
  local lineno = 0
  return function()
    local line = f:read("l")
    if line == nil then return nil end
    lineno = lineno + 1
    local record, err = format.parse_record(line, base64)
    if not record then return false, ("input line %d: %s"):format(lineno, err) end
    return record
  end
end

local function cmd_append(ctx, argv, cmd)
  local pos, opt = args.parse(cmd.flags, argv)
  local basin, stream = args.stream_target(pos, 0)
  local fmt = opt.format or "text"
  if opt.lengths and fmt ~= "text" then args.usage_error("--lengths goes with --format text only") end
  if opt.linger and opt.linger > 60 then args.usage_error("--linger is at most 60s") end
  if opt.fencing_token and #opt.fencing_token > s2.MAX_FENCING_TOKEN then
    args.usage_error(("--fencing-token is at most %d bytes"):format(s2.MAX_FENCING_TOKEN))
  end
  local input = io.stdin
  if opt.input and opt.input ~= "-" then
    local f, err = io.open(opt.input, "rb")
    if not f then args.fail(err) end
    input = f
  end
  local next_record
  if opt.lengths then next_record = length_source(input)
  elseif fmt == "text" then next_record = line_source(input)
  else next_record = json_source(input, fmt == "json-base64") end

  local want, tty = progress_wanted(opt)
  local producer = ctx:check(open_stream(ctx, basin, stream, opt):producer {
    linger = opt.linger, fencing_token = opt.fencing_token, match_seq_num = opt.match_seq_num,
  })

  -- Acks arrive in order, so a sample of tickets (one every SAMPLE records) tells how many
  -- records are durable without keeping a ticket per record.
  local SAMPLE = 1000
  local samples, head = {}, 1
  local records, bytes, acked = 0, 0, 0
  local first, last
  local function drain_samples()
    while samples[head] do
      local s = samples[head]
      local ack, err = s.ticket:result()
      if ack == false then break end
      if not ack then args.fail(err) end
      acked = s.count
      samples[head] = nil
      head = head + 1
    end
  end
  local m = meter(want, tty, function(dt)
    return ("%d records, %.1f MiB in %.1f s: %.0f records/s, %.2f MiB/s, %d acked")
      :format(records, bytes / MiB, dt, records / dt, bytes / MiB / dt, acked)
  end, drain_samples)

  while true do
    local record, bad = next_record()
    if record == false then
      -- What came before the bad input is appended (and acked) first, then the failure.
      ctx:check(producer:close())
      args.fail(bad)
    end
    if record == nil then break end
    local ticket, err = producer:submit(record)
    if not ticket then args.fail(err) end
    records = records + 1
    bytes = bytes + s2.metered_bytes(record)
    if records == 1 then first = ticket end
    last = ticket
    if records % SAMPLE == 0 then samples[#samples + 1] = { ticket = ticket, count = records } end
    if want then m.tick() end
  end
  ctx:check(producer:close())
  acked = records
  m.finish(true)
  if first then
    local a, b = ctx:check(first:ack()), ctx:check(last:ack())
    io.stderr:write(("%s/%s: seq_num %d through %d\n"):format(basin, stream, a.seq_num, b.seq_num))
  end
  if input ~= io.stdin then input:close() end
end

M.append = {
  name = "append",
  usage = { "append s2://BASIN/STREAM [options] < records", "append BASIN STREAM [options] < records" },
  summary = "append records from stdin (or --input) through a producer",
  help = [=[Appends records read from stdin: one record per line (without the newline) with
--format text, or one JSON object per line with --format json / json-base64:
  {"body":"...","headers":[["name","value"]],"timestamp":1700000000000}
(every field optional; json-base64 has base64 names, values and bodies; other fields such as
seq_num are ignored, so read --format json output can be appended again). With --lengths, each
record is its length as 4 bytes big-endian, then the body. Ends with a summary on stderr; on
bad input, the records before it are appended, then it fails (exit 1).]=],
  flags = with({
    { "--lengths", type = "flag", help = "records framed by a 4-byte big-endian length" },
    FORMAT_FLAG,
    { "--input", short = "-i", type = "string", metavar = "FILE", help = "read records from FILE ('-': stdin)" },
    { "--fencing-token", short = "-f", type = "string", metavar = "TOKEN",
      help = "every batch must match the stream's fencing token" },
    { "--match-seq-num", short = "-m", type = "uint", metavar = "N",
      help = "the first record must get seq_num N" },
    { "--linger", type = "duration", metavar = "DURATION",
      help = "wait this long for more records before sending a batch (default 5ms)" },
    PROGRESS_FLAG,
  }, KEY_FLAGS),
  run = cmd_append,
}

-- ---- read and tail ----------------------------------------------------------------------------

local function command_text(record)
  local kind = record.headers[1][2]
  local what
  if kind == "fence" then
    what = ('new fencing token "%s"'):format(record.body)
  elseif kind == "trim" then
    what = ("trim to %d"):format(#record.body >= 8 and string.unpack(">I8", record.body) or 0)
  else
    what = "unknown command"
  end
  return ("%s // %d @ %d"):format(what, record.seq_num, record.timestamp)
end
M.command_text = command_text

local function record_writer(out, fmt, lengths)
  if lengths then
    return function(r) out:write(string.pack(">I4", #r.body), r.body) end
  elseif fmt == "json" or fmt == "json-base64" then
    local b64 = fmt == "json-base64"
    return function(r) out:write(format.record_json(r, b64), "\n") end
  end
  return function(r)
    if s2.is_command_record(r) then
      io.stderr:write(command_text(r), "\n") -- text cannot show headers: described on stderr
    else
      out:write(r.body, "\n")
    end
  end
end

local function open_output(opt)
  if opt.output and opt.output ~= "-" then
    local f, err = io.open(opt.output, "wb")
    if not f then args.fail(err) end
    return f
  end
  return io.stdout
end

-- Copies a read session to out. at_end(err): true when a failure at the start means "nothing
-- to read" rather than an error.
local function pump(reader, write, out, m, at_end)
  local got = 0
  out:setvbuf("full")
  while true do
    -- Take what is buffered without waiting; flush before waiting for more, so a follower
    -- sees records as they come while a bulk read still writes in large blocks.
    local record, err = reader:next(0)
    if record == nil and err and err.code == "timeout" then
      out:flush()
      record, err = reader:next()
    end
    if record == nil then
      if err and not (got == 0 and at_end and at_end(err)) then args.fail(err) end
      break -- a limit was reached
    end
    got = got + 1
    write(record)
    m.count(record)
    m.tick()
  end
  out:flush()
  reader:close()
end

local function read_meter(opt)
  local want, tty = progress_wanted(opt)
  local records, bytes = 0, 0
  local m = meter(want, tty, function(dt)
    return ("%d records, %d bytes in %.1f s: %.0f records/s, %.2f MiB/s")
      :format(records, bytes, dt, records / dt, bytes / MiB / dt)
  end)
  m.count = want and function(r)
    records = records + 1
    bytes = bytes + s2.metered_bytes(r)
  end or function() end
  return m
end

local function cmd_read(ctx, argv, cmd)
  local pos, opt = args.parse(cmd.flags, argv)
  local basin, stream = args.stream_target(pos, 0)
  if opt.count == 0 or opt.bytes == 0 then return end
  local o = { clamp = opt.clamp or nil, count = opt.count, bytes = opt.bytes, ["until"] = opt["until"] }
  if opt.seq_num then o.seq_num = opt.seq_num
  elseif opt.timestamp then o.timestamp = opt.timestamp
  elseif opt.ago then o.timestamp = math.max(0, os.time() * 1000 - math.floor(opt.ago * 1000))
  else o.tail_offset = opt.tail_offset or 0 end
  local out = open_output(opt)
  local write = record_writer(out, opt.format or "text")
  local m = read_meter(opt)
  local reader = ctx:check(open_stream(ctx, basin, stream, opt):read_session(o))
  -- With a limit the server stops at the tail, and a start at the tail is a 416: nothing to
  -- read, not a failure (also a start clamped to the tail). A start beyond the tail (an
  -- explicit seq_num, without --clamp) still fails.
  pump(reader, write, out, m, function(err)
    if err.code ~= "range_not_satisfiable" then return false end
    if o.seq_num == nil or o.clamp then return true end
    return err.tail ~= nil and o.seq_num <= err.tail.seq_num
  end)
  m.finish(false)
  if out ~= io.stdout then out:close() end
end

M.read = {
  name = "read",
  usage = { "read s2://BASIN/STREAM [options]", "read BASIN STREAM [options]" },
  summary = "read records to stdout (or --output)",
  help = [=[Reads records and writes them to stdout: the body and a newline per record with
--format text (command records are described on stderr instead), or one JSON object per line
with --format json / json-base64:
  {"seq_num":0,"timestamp":1700000000000,"headers":[["name","value"]],"body":"..."}
(headers and body left out when empty). The start defaults to the tail. Without --count,
--bytes or --until it follows the stream until interrupted; with one of them it stops at that
limit or at the tail, whichever comes first (a start at the tail then reads nothing).]=],
  flags = with({
    { "--seq-num", short = "-s", type = "uint", metavar = "N", group = "start",
      help = "start at seq_num N" },
    { "--timestamp", type = "uint", metavar = "MS", group = "start",
      help = "start at the first record at or after this timestamp (ms since the epoch)" },
    { "--ago", type = "duration", metavar = "DURATION", group = "start",
      help = "start at the records of this long ago, e.g. 1h (converted to --timestamp)" },
    { "--tail-offset", type = "uint", metavar = "N", group = "start",
      help = "start N records before the tail (default 0: at the tail)" },
    { "--count", short = "-n", type = "uint", metavar = "N", help = "stop after N records" },
    { "--bytes", short = "-b", type = "uint", metavar = "N", help = "stop after N metered bytes" },
    { "--until", type = "uint", metavar = "MS", help = "only records with a timestamp before MS" },
    { "--clamp", type = "flag", help = "a start beyond the tail starts at the tail" },
    FORMAT_FLAG,
    { "--output", short = "-o", type = "string", metavar = "FILE", help = "write to FILE ('-': stdout)" },
    PROGRESS_FLAG,
  }, KEY_FLAGS),
  run = cmd_read,
}

local function cmd_tail(ctx, argv, cmd)
  local pos, opt = args.parse(cmd.flags, argv)
  local basin, stream = args.stream_target(pos, 0)
  local count = opt.count
  local fmt = opt.format or "text"
  if opt.lengths and fmt ~= "text" then args.usage_error("--lengths goes with --format text only") end
  if count == 0 then return end
  local from = opt.from or 0
  -- With a count, the server's default wait is 0 (stop at the tail); a long wait keeps
  -- following until count records came.
  local o = { ignore_command_records = true, count = count, wait = count and FOREVER or nil }
  if from < 0 then o.tail_offset = -from else o.seq_num = from end
  local out = io.stdout
  local m = read_meter(opt)
  local reader = ctx:check(open_stream(ctx, basin, stream, opt):read_session(o))
  pump(reader, record_writer(out, fmt, opt.lengths), out, m)
  m.finish(false)
end

M.tail = {
  name = "tail",
  usage = { "tail s2://BASIN/STREAM [--from N] [--count N] [options]", "tail BASIN STREAM [--from N] [--count N] [options]" },
  summary = "write record bodies to stdout, following the stream",
  help = [=[Writes the bodies of a stream's records to stdout, one per line (with --lengths, each
prefixed by its 4-byte big-endian length; with --format json, as read does), following the
tail; command records are skipped. --from N starts at seq_num N (default 0), --from -N N records
before the tail; --count N stops after N records (waiting for them if need be).]=],
  flags = with({
    { "--from", type = "int", metavar = "N", help = "start at seq_num N, or -N: N records before the tail" },
    { "--count", type = "uint", metavar = "N", help = "stop after N records" },
    { "--lengths", type = "flag", help = "each body prefixed by its 4-byte big-endian length" },
    FORMAT_FLAG,
    PROGRESS_FLAG,
  }, KEY_FLAGS),
  run = cmd_tail,
}

return M
