-- s2lua's management commands (basins, streams, configs, listings), check-tail, fence, trim
-- and per-command --help, run as a child process against s2-lite.
local H = require "helper"
local C = require "support.cli"
local cjson = require("cjson").new()

local run, lines_of = C.run, C.lines_of

local function ok_run(args, opts)
  local code, stdout, stderr = run(args, opts)
  assert.are.equal(0, code, table.concat(args, " ") .. ": " .. stderr)
  return stdout, stderr
end

-- A failure: exit 1, nothing on stdout, one line on stderr with the error code.
local function fails_with(code_name, args, opts)
  local code, stdout, stderr = run(args, opts)
  assert.are.equal(1, code, table.concat(args, " ") .. ": " .. stderr)
  assert.are.equal("", stdout)
  assert.are.equal(1, #lines_of(stderr), stderr)
  assert.matches("^s2lua: " .. code_name .. ": ", stderr)
end

describe("s2lua management", function()
  local prefix = H.unique_name("climgmt")

  it("create-basin / get-basin-config / reconfigure-basin / delete-basin", function()
    local name = prefix .. "-a"
    local _, stderr = ok_run { "create-basin", name, "--create-stream-on-append",
      "--storage-class", "standard", "--retention-policy", "7d" }
    assert.matches("basin created", stderr)
    local config = cjson.decode((ok_run { "get-basin-config", "s2://" .. name }))
    assert.is_true(config.create_stream_on_append)
    assert.is_false(config.create_stream_on_read)
    assert.are.equal(7 * 86400, config.default_stream_config.retention_policy.age)
    assert.are.equal("standard", config.default_stream_config.storage_class)

    config = cjson.decode((ok_run { "reconfigure-basin", name, "--create-stream-on-read", "true",
      "--create-stream-on-append", "false", "--retention-policy", "infinite" }))
    assert.is_true(config.create_stream_on_read)
    assert.is_false(config.create_stream_on_append)
    assert.is_table(config.default_stream_config.retention_policy.infinite)
    -- What reconfigure printed is what the server now has.
    assert.are.same(config, cjson.decode((ok_run { "get-basin-config", name })))

    fails_with("resource_already_exists", { "create-basin", name })
    ok_run { "delete-basin", name }
    -- Deletion is asynchronous: the basin is listed as being deleted, or gone.
    local out = ok_run { "list-basins", "--prefix", name }
    assert.is_true(out == "" or out == name .. " [deleting]\n", out)
  end)

  it("create-stream / get-stream-config / reconfigure-stream / delete-stream", function()
    local b = prefix .. "-s"
    ok_run { "create-basin", b }
    local uri = "s2://" .. b .. "/events"
    ok_run { "create-stream", uri, "--retention-policy", "1d", "--timestamping-mode",
      "client-require", "--uncapped", "--delete-on-empty-min-age", "1h" }
    local config = cjson.decode((ok_run { "get-stream-config", b, "events" }))
    assert.are.equal(86400, config.retention_policy.age)
    assert.are.same({ mode = "client-require", uncapped = true }, config.timestamping)
    assert.are.equal(3600, config.delete_on_empty.min_age_secs)

    config = cjson.decode((ok_run { "reconfigure-stream", uri, "--timestamping-mode", "arrival",
      "--timestamping-uncapped", "false", "--storage-class", "express" }))
    assert.are.same({ mode = "arrival", uncapped = false }, config.timestamping)
    assert.are.equal("express", config.storage_class)
    assert.are.equal(86400, config.retention_policy.age) -- unchanged
    assert.are.same(config, cjson.decode((ok_run { "get-stream-config", uri })))

    fails_with("resource_already_exists", { "create-stream", uri })
    ok_run { "delete-stream", uri }
    fails_with("stream_not_found", { "get-stream-config", uri })
  end)

  it("list-basins, list-streams and ls with --prefix, --start-after, --limit", function()
    local b1, b2, b3 = prefix .. "-l1", prefix .. "-l2", prefix .. "-l3"
    for _, b in ipairs { b1, b2, b3 } do ok_run { "create-basin", b } end
    assert.are.same({ b1, b2, b3 }, lines_of((ok_run { "list-basins", "--prefix", prefix .. "-l" })))
    assert.are.same({ b2, b3 }, lines_of((ok_run { "list-basins", "-p", prefix .. "-l", "-s", b1 })))
    assert.are.same({ b1, b2 }, lines_of((ok_run { "list-basins", "--prefix", prefix .. "-l", "--limit", "2" })))
    assert.are.same({ b1 }, lines_of((ok_run { "list-basins", "--prefix", prefix .. "-l", "--limit", "1",
      "--no-auto-paginate" })))
    assert.are.same({ b1, b2, b3 }, lines_of((ok_run { "ls", "--prefix", prefix .. "-l" })))

    local basin = H.client():basin(b1)
    for _, s in ipairs { "app/a", "app/b", "other" } do assert(basin:create_stream(s)) end
    assert.are.same({ "s2://" .. b1 .. "/app/a", "s2://" .. b1 .. "/app/b", "s2://" .. b1 .. "/other" },
      lines_of((ok_run { "list-streams", b1 })))
    assert.are.same({ "s2://" .. b1 .. "/app/a", "s2://" .. b1 .. "/app/b" },
      lines_of((ok_run { "list-streams", "s2://" .. b1 .. "/app" })))
    assert.are.same({ "app/b", "other" }, lines_of((ok_run { "ls", b1, "--start-after", "app/a" })))
    assert.are.same({ "app/a" }, lines_of((ok_run { "ls", "s2://" .. b1 .. "/app", "-n", "1" })))
    local code = run { "ls", "s2://" .. b1 .. "/app", "--prefix", "x" }
    assert.are.equal(2, code) -- the prefix twice
  end)

  it("check-tail prints SEQ_NUM @ TIMESTAMP", function()
    local b = prefix .. "-t"
    ok_run { "create-basin", b }
    ok_run { "create-stream", b, "s" }
    assert.are.equal("0 @ 0\n", (ok_run { "check-tail", "s2://" .. b .. "/s" }))
    local ack = assert(H.client():basin(b):stream("s"):append { "a", "b", "c" })
    assert.are.equal(("3 @ %d\n"):format(ack["end"].timestamp), (ok_run { "check-tail", b, "s" }))
  end)

  it("fence: a fenced stream refuses appends with another token; moving the fence needs the old one", function()
    local b = prefix .. "-f"
    ok_run { "create-basin", b, "--create-stream-on-append" }
    local uri = "s2://" .. b .. "/f"
    local _, stderr = ok_run { "fence", uri, "tok1" }
    assert.matches('^new fencing token "tok1" // 0 @ %d+\n$', stderr)
    fails_with("fencing_token_mismatch", { "append", uri, "--fencing-token", "wrong" }, { stdin = "x\n" })
    ok_run({ "append", uri, "-f", "tok1" }, { stdin = "x\n" })
    fails_with("fencing_token_mismatch", { "fence", uri, "tok2", "--fencing-token", "wrong" })
    ok_run { "fence", b, "f", "tok2", "-f", "tok1" }
    fails_with("fencing_token_mismatch", { "append", uri, "-f", "tok1" }, { stdin = "y\n" })
    local rs = assert(H.client():basin(b):stream("f"):read { seq_num = 0 }).records
    assert.are.equal(3, #rs) -- fence, x, fence
    assert.are.equal("tok2", rs[3].body)
    -- --match-seq-num on a command record.
    fails_with("seq_num_mismatch", { "fence", uri, "tok3", "-f", "tok2", "--match-seq-num", "0" })
  end)

  it("trim appends a trim command record at the given point", function()
    local b = prefix .. "-r"
    ok_run { "create-basin", b, "--create-stream-on-append" }
    local s = H.client():basin(b):stream("t")
    assert(s:append { "0", "1", "2", "3", "4" })
    local _, stderr = ok_run { "trim", "s2://" .. b .. "/t", "3" }
    assert.matches("^trim to 3 // 5 @ %d+\n$", stderr)
    local r = assert(s:read { seq_num = 5 }).records[1]
    assert.are.same({ { "", "trim" } }, r.headers)
    assert.are.equal(string.pack(">I8", 3), r.body)
    local code = run { "trim", b, "t", "three" }
    assert.are.equal(2, code)
  end)

  it("fails with exit 1 and the error code for a missing basin", function()
    local missing = H.unique_name("nobasin")
    for _, args in ipairs {
      { "get-basin-config", missing },
      { "reconfigure-basin", missing, "--create-stream-on-read", "true" },
      { "delete-basin", missing },
      { "list-streams", missing },
      { "create-stream", missing, "s" },
      { "reconfigure-stream", missing, "s", "--storage-class", "standard" },
      { "check-tail", "s2://" .. missing .. "/s" },
      { "fence", missing, "s", "t" },
      { "trim", missing, "s", "1" },
    } do
      fails_with("basin_not_found", args)
    end
    -- s2-lite answers these two with the stream's code.
    fails_with("stream_not_found", { "get-stream-config", missing, "s" })
    fails_with("stream_not_found", { "delete-stream", missing, "s" })
  end)

  it("exits 2 with the command's usage line on bad arguments", function()
    for _, args in ipairs {
      { "create-basin" },
      { "create-basin", "a", "b" },
      { "create-basin", "x", "--storage-class", "gold" },
      { "create-basin", "x", "--retention-policy", "forever" },
      { "create-basin", "x", "--retention-policy", "500ms" },
      { "reconfigure-basin", "x", "--create-stream-on-read", "maybe" },
      { "reconfigure-basin", "x", "--create-stream-on-read" },
      { "get-basin-config", "s2://x/stream" },
      { "create-stream", "x" },
      { "create-stream", "s2://x" },
      { "create-stream", "x", "s", "--timestamping-mode", "now" },
      { "reconfigure-stream", "x", "s", "--delete-on-empty-min-age", "1x" },
      { "delete-stream", "x", "s", "extra" },
      { "check-tail", "x" },
      { "fence", "x", "s" },
      { "fence", "x", "s", ("t"):rep(37) },
      { "trim", "x", "s" },
      { "trim", "x", "s", "-1" },
      { "list-basins", "extra" },
      { "list-basins", "--limit", "-3" },
      { "list-streams" },
    } do
      local code, stdout, stderr = run(args)
      assert.are.equal(2, code, table.concat(args, " ") .. ": " .. stderr)
      assert.are.equal("", stdout)
      assert.matches("^s2lua: " .. args[1]:gsub("%-", "%%-") .. ": [^\n]+\nusage: s2lua "
        .. args[1]:gsub("%-", "%%-") .. " ", stderr)
    end
  end)
end)

describe("s2lua --help", function()
  local commands = require("s2.cli").COMMANDS

  it("lists every command, exit 0 on stdout", function()
    for _, args in ipairs { { "--help" }, { "-h" }, { "help" } } do
      local code, stdout, stderr = run(args)
      assert.are.equal(0, code)
      assert.are.equal("", stderr)
      for name in pairs(commands) do
        assert.matches("\n  " .. name:gsub("%-", "%%-") .. " ", stdout)
      end
    end
  end)

  it("shows each command's usage and every one of its flags", function()
    local n = 0
    for name, cmd in pairs(commands) do
      for _, args in ipairs { { name, "--help" }, { "help", name }, { name, "x", "-h", "--bogus" } } do
        local code, stdout, stderr = run(args)
        assert.are.equal(0, code, table.concat(args, " "))
        assert.are.equal("", stderr)
        assert.are.equal(1, stdout:find("usage: s2lua " .. name .. " ", 1, true), stdout)
        for _, f in ipairs(cmd.flags) do
          assert.is_truthy(stdout:find(f[1], 1, true), name .. " --help lacks " .. f[1])
        end
      end
      n = n + 1
    end
    assert.is_true(n >= 17)
  end)
end)
