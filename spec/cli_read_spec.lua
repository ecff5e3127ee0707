-- s2lua read (start and stop flags, formats, progress) and append --format json/json-base64,
-- each against data appended through the library, run as a child process against s2-lite.
local H = require "helper"
local C = require "support.cli"
local cjson = require("cjson").new()
local s2 = require "s2"

local run, lines_of = C.run, C.lines_of

local function b64(s) return require("s2.cli.format").base64_encode(s) end

describe("s2lua read", function()
  local basin_name, basin
  local HOUR = 3600 * 1000
  local now_ms

  lazy_setup(function()
    basin, basin_name = H.new_basin(H.client(), "cliread")
    local bodies = {}
    for i = 0, 9 do bodies[#bodies + 1] = "r" .. i end
    assert(basin:stream("ten"):append(bodies))
    -- Record i is (10 - i) hours old: r0 ten hours ago ... r9 one hour ago.
    now_ms = os.time() * 1000
    local timed = {}
    for i = 0, 9 do timed[#timed + 1] = { body = "t" .. i, timestamp = now_ms - (10 - i) * HOUR } end
    assert(basin:stream("timed"):append(timed))
  end)

  local function uri(stream) return ("s2://%s/%s"):format(basin_name, stream) end

  local function read_ok(args)
    local code, stdout, stderr = run(args)
    assert.are.equal(0, code, table.concat(args, " ") .. ": " .. stderr)
    return stdout, stderr
  end

  it("--seq-num N --count M gives exactly records N .. N+M-1 (s2:// and BASIN STREAM)", function()
    assert.are.equal("r3\nr4\n", read_ok { "read", uri "ten", "--seq-num", "3", "--count", "2" })
    assert.are.equal("r3\nr4\n", read_ok { "read", basin_name, "ten", "-s", "3", "-n", "2" })
  end)

  it("--tail-offset N gives the last N, and a limit stops at the tail", function()
    assert.are.equal("r8\nr9\n", read_ok { "read", uri "ten", "--tail-offset", "2", "--count", "100" })
    local out = read_ok { "read", uri "ten", "--seq-num", "0", "--count", "50" }
    assert.are.equal(10, #lines_of(out))
  end)

  it("--bytes stops before the record that would pass the limit (10 metered bytes each)", function()
    assert.are.equal("r0\nr1\nr2\n", read_ok { "read", uri "ten", "--seq-num", "0", "--bytes", "35" })
    assert.are.equal("r0\nr1\nr2\nr3\n", read_ok { "read", uri "ten", "--seq-num", "0", "--bytes", "40" })
  end)

  it("--until, --timestamp and --ago select by record timestamp", function()
    local until3 = tostring(now_ms - 7 * HOUR) -- t3's timestamp: exclusive
    assert.are.equal("t0\nt1\nt2\n", read_ok { "read", uri "timed", "--seq-num", "0", "--until", until3 })
    local from5 = tostring(now_ms - 5 * HOUR)
    assert.are.equal("t5\nt6\nt7\nt8\nt9\n",
      read_ok { "read", uri "timed", "--timestamp", from5, "--count", "100" })
    -- 150 minutes ago: after t7 (3 h), before t8 (2 h).
    assert.are.equal("t8\nt9\n", read_ok { "read", uri "timed", "--ago", "150m", "--count", "100" })
    assert.are.equal("t8\nt9\n", read_ok { "read", uri "timed", "--ago", "2h30m", "--count", "100" })
  end)

  it("a start at the tail reads nothing; beyond it fails unless --clamp", function()
    assert.are.equal("", read_ok { "read", uri "ten", "--seq-num", "10", "--count", "5" })
    assert.are.equal("", read_ok { "read", uri "ten", "--count", "5" }) -- default start: the tail
    assert.are.equal("", read_ok { "read", uri "ten", "--seq-num", "100", "--clamp", "--count", "5" })
    local code, stdout, stderr = run { "read", uri "ten", "--seq-num", "100", "--count", "5" }
    assert.are.equal(1, code)
    assert.are.equal("", stdout)
    assert.matches("^s2lua: range_not_satisfiable: [^\n]*\n$", stderr)
  end)

  it("follows the stream without a limit", function()
    local s = basin:stream("follow")
    assert(s:append { "first" })
    -- `exec` keeps the shell's pid, which is printed first: the child is stopped by its id.
    local p = assert(io.popen("echo $$; exec env " .. C.command { "read", uri "follow", "--seq-num", "0" }))
    local pid = assert(math.tointeger(tonumber(p:read("l"))))
    assert.are.equal("first", p:read("l"))
    -- The child is still reading: a record appended now comes out too.
    assert(s:append { "second" })
    assert.are.equal("second", p:read("l"))
    os.execute("kill " .. pid)
    p:close()
  end)

  it("--format json and json-base64 write the official CLI's line shape", function()
    local s = basin:stream("mixed")
    assert(s:append {
      { body = "plain", headers = { { "k", "v" } } },
      { body = "\0\255\1" },
      "",
    })
    assert(s:append { s2.fence("tok") })
    local out = read_ok { "read", uri "mixed", "--seq-num", "0", "--count", "4", "--format", "json" }
    local lines = lines_of(out)
    assert.are.equal(4, #lines)
    assert.matches('^{"seq_num":0,"timestamp":%d+,"headers":%[%["k","v"%]%],"body":"plain"}$', lines[1])
    assert.are.equal("\0\u{FFFD}\1", cjson.decode(lines[2]).body) -- lossy UTF-8 in json
    assert.matches('^{"seq_num":2,"timestamp":%d+}$', lines[3]) -- empty body and headers left out
    assert.matches('"headers":%[%["","fence"%]%],"body":"tok"}$', lines[4])

    out = read_ok { "read", uri "mixed", "--seq-num", "0", "--count", "4", "--format", "json-base64" }
    lines = lines_of(out)
    local r1, r2 = cjson.decode(lines[1]), cjson.decode(lines[2])
    assert.are.same({ { b64 "k", b64 "v" } }, r1.headers)
    assert.are.equal(b64 "plain", r1.body)
    assert.are.equal(b64 "\0\255\1", r2.body)
    assert.are.equal(1, r2.seq_num)

    -- Text: bodies on stdout; the fence described on stderr, not on stdout.
    local stderr
    out, stderr = read_ok { "read", uri "mixed", "--seq-num", "0", "--count", "4" }
    assert.are.equal("plain\n\0\255\1\n\n", out)
    assert.matches('^new fencing token "tok" // 3 @ %d+\n$', stderr)
  end)

  it("progress: none when stderr is not a terminal, a final line with --progress", function()
    local out, stderr = read_ok { "read", uri "ten", "--seq-num", "0", "--count", "10" }
    assert.are.equal(10, #lines_of(out))
    assert.are.equal("", stderr)
    out, stderr = read_ok { "read", uri "ten", "--seq-num", "0", "--count", "10", "--progress" }
    assert.are.equal(10, #lines_of(out))
    assert.matches("^10 records, 100 bytes in [%d.]+ s: ", stderr)
    assert.are.equal(1, #lines_of(stderr))
  end)

  it("--progress writes a line each second while reading", function()
    local s = basin:stream("slow")
    local bodies = {}
    for i = 1, 10 do bodies[i] = "s" .. i end
    assert(s:append(bodies))
    local err_path = os.tmpname()
    local p = assert(io.popen(C.command { "tail", uri "slow", "--count", "11", "--progress" }
      .. " 2>" .. C.shell_quote(err_path)))
    for _ = 1, 10 do assert(p:read("l")) end -- the ten that are there
    -- The time between progress lines is what is checked: let more than a second pass
    -- before the last record comes.
    os.execute("sleep 1.2")
    assert(s:append { "s11" })
    assert.are.equal("s11", p:read("l"))
    assert.is_true(p:close())
    local stderr = C.read_file(err_path)
    os.remove(err_path)
    local lines = lines_of(stderr)
    assert.are.equal(2, #lines, stderr) -- one progress line, then the final one
    assert.matches("^11 records, ", lines[1])
    assert.matches("^11 records, ", lines[2])
  end)

  it("exits 2 on bad flags and 1 for an unknown basin", function()
    for _, args in ipairs {
      { "read", uri "ten", "--seq-num", "x" },
      { "read", uri "ten", "--format", "xml" },
      { "read", uri "ten", "--seq-num", "1", "--tail-offset", "2" },
      { "read", uri "ten", "--ago", "soon" },
      { "read", "s2://" .. basin_name },
      { "read", uri "ten", "--bogus" },
      { "append", uri "x", "--lengths", "--format", "json" },
    } do
      local code, stdout, stderr = run(args)
      assert.are.equal(2, code, table.concat(args, " ") .. ": " .. stderr)
      assert.are.equal("", stdout)
      assert.matches("^s2lua: %S+: [^\n]+\nusage: s2lua " .. args[1], stderr)
    end
    local code, stdout, stderr = run { "read", "s2://" .. H.unique_name("nobasin") .. "/s", "--count", "1" }
    assert.are.equal(1, code)
    assert.are.equal("", stdout)
    assert.matches("^s2lua: basin_not_found: [^\n]*\n$", stderr)
  end)
end)

describe("s2lua append --format", function()
  local basin_name, basin

  lazy_setup(function()
    basin, basin_name = H.new_basin(H.client(), "cliappend")
  end)

  local function uri(stream) return ("s2://%s/%s"):format(basin_name, stream) end

  local function all(stream)
    local batch = assert(basin:stream(stream):read { seq_num = 0, count = 1000 })
    return batch.records
  end

  it("json: body, headers and timestamp per line, every field optional", function()
    local input = table.concat({
      '{"body":"a","headers":[["h","1"],["h2",""]],"timestamp":123}',
      "{}",
      '{"body":"c","seq_num":99}', -- other fields (as read writes them) are ignored
    }, "\n") .. "\n"
    local code, _, stderr = run({ "append", uri "json", "--format", "json" }, { stdin = input })
    assert.are.equal(0, code, stderr)
    local r = all "json"
    assert.are.equal(3, #r)
    assert.are.equal("a", r[1].body)
    assert.are.same({ { "h", "1" }, { "h2", "" } }, r[1].headers)
    assert.are.equal(123, r[1].timestamp)
    assert.are.equal("", r[2].body)
    assert.are.same({}, r[2].headers)
    assert.are.equal("c", r[3].body)
    assert.are.equal(2, r[3].seq_num)
  end)

  it("json-base64: decodes bodies and headers; read | append round-trips them", function()
    local input = ('{"body":"%s","headers":[["%s","%s"]]}\n'):format(b64 "\0bin\255", b64 "n", b64 "\1")
    local code, _, stderr = run({ "append", uri "b64", "--format", "json-base64" }, { stdin = input })
    assert.are.equal(0, code, stderr)
    local r = all "b64"
    assert.are.equal("\0bin\255", r[1].body)
    assert.are.same({ { "n", "\1" } }, r[1].headers)

    local out
    code, out, stderr = run { "read", uri "b64", "--seq-num", "0", "--count", "1", "--format", "json-base64" }
    assert.are.equal(0, code, stderr)
    code, _, stderr = run({ "append", uri "b64copy", "--format", "json-base64" }, { stdin = out })
    assert.are.equal(0, code, stderr)
    local copy = all "b64copy"
    assert.are.equal(r[1].body, copy[1].body)
    assert.are.same(r[1].headers, copy[1].headers)
  end)

  it("bad input fails with exit 1 naming the line, after appending what came before", function()
    local input = '{"body":"ok1"}\n{"body":"ok2"}\n{"body":\n{"body":"never"}\n'
    local code, stdout, stderr = run({ "append", uri "bad", "--format", "json" }, { stdin = input })
    assert.are.equal(1, code)
    assert.are.equal("", stdout)
    assert.matches("^s2lua: input line 3: invalid JSON", stderr)
    assert.are.equal(1, #lines_of(stderr))
    local r = all "bad"
    assert.are.equal(2, #r)
    assert.are.equal("ok2", r[2].body)

    code, _, stderr = run({ "append", uri "bad64", "--format", "json-base64" },
      { stdin = '{"body":"not base64!"}\n' })
    assert.are.equal(1, code)
    assert.matches("^s2lua: input line 1: body is not valid base64", stderr)
  end)

  it("--match-seq-num and --input", function()
    local path = os.tmpname()
    C.write_file(path, "x\ny\n")
    local code, _, stderr = run { "append", uri "m", "--input", path, "--match-seq-num", "0" }
    assert.are.equal(0, code, stderr)
    code, _, stderr = run { "append", uri "m", "-i", path, "-m", "0" }
    os.remove(path)
    assert.are.equal(1, code)
    assert.matches("^s2lua: seq_num_mismatch: ", stderr)
    assert.are.equal(2, #all "m")
  end)
end)
