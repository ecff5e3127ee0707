-- Specs for bin/s2lua, run as a separate process with the suite's S2_* environment (the
-- s2-lite that `make test` starts; see spec/helper.lua).
local H = require "helper"

local C = require "support.cli"

local tmpname = os.tmpname
local write_file = C.write_file
local lines_of = C.lines_of

-- Runs the CLI with args (a list), stdin from a file (or /dev/null): exit code, stdout, stderr.
local function run(args, stdin_path)
  return C.run(args, { stdin_path = stdin_path })
end

describe("s2lua", function()
  local basin_name

  lazy_setup(function()
    basin_name = H.unique_name("cli")
    local _, err = H.client():create_basin(basin_name,
      { create_stream_on_append = true, create_stream_on_read = true })
    assert(not err, err and tostring(err))
  end)

  it("appends 100,000 lines from stdin and tails them back unchanged", function()
    local parts = {}
    for i = 1, 100000 do
      -- Varied lengths, an empty line now and then, a tab and non-ASCII bytes.
      if i % 9973 == 0 then parts[i] = ""
      elseif i % 1000 == 0 then parts[i] = ("line %d\twith tab, é ü"):format(i)
      else parts[i] = ("line %d %s"):format(i, ("x"):rep(i % 50)) end
    end
    local input = table.concat(parts, "\n") .. "\n"
    local path = tmpname()
    write_file(path, input)

    local code, stdout, stderr = run({ "append", basin_name, "lines" }, path)
    os.remove(path)
    assert.are.equal(0, code, stderr)
    assert.are.equal("", stdout)
    -- Not a terminal: no progress line, just the summary.
    assert.matches("100000 records", stderr)
    assert.matches("seq_num 0 through 99999", stderr, 1, true)
    assert.is_nil(stderr:find("\r", 1, true), "no progress line when stderr is not a terminal")

    code, stdout, stderr = run({ "tail", basin_name, "lines", "--count", "100000" })
    assert.are.equal(0, code, stderr)
    assert.are.equal("", stderr)
    assert.are.equal(#input, #stdout)
    assert.is_true(stdout == input, "tail gave back other bytes than were appended")

    -- --from: a start seq_num; a negative one counts back from the tail.
    code, stdout = run({ "tail", basin_name, "lines", "--from", "99998", "--count", "2" })
    assert.are.equal(0, code)
    assert.are.same({ parts[99999], parts[100000] }, lines_of(stdout))
    code, stdout = run({ "tail", basin_name, "lines", "--from", "-1", "--count", "1" })
    assert.are.equal(0, code)
    assert.are.same({ parts[100000] }, lines_of(stdout))
  end)

  it("round-trips length-prefixed records, newlines and empty bodies included", function()
    local bodies = { "one\ntwo", "", ("\0"):rep(3), ("b"):rep(70000) }
    local framed = {}
    for i, b in ipairs(bodies) do framed[i] = string.pack(">s4", b) end
    local path = tmpname()
    write_file(path, table.concat(framed))
    local code, _, stderr = run({ "append", basin_name, "framed", "--lengths" }, path)
    os.remove(path)
    assert.are.equal(0, code, stderr)
    local stdout
    code, stdout, stderr = run({ "tail", basin_name, "framed", "--count", "4", "--lengths" })
    assert.are.equal(0, code, stderr)
    assert.is_true(stdout == table.concat(framed))
  end)

  it("fails with exit 1 and one line on truncated length-prefixed input", function()
    local path = tmpname()
    write_file(path, string.pack(">I4", 10) .. "short")
    local code, _, stderr = run({ "append", basin_name, "trunc", "--lengths" }, path)
    os.remove(path)
    assert.are.equal(1, code)
    assert.are.equal(1, #lines_of(stderr), stderr)
  end)

  it("lists basins, and the streams of a basin", function()
    local code, stdout, stderr = run({ "ls" })
    assert.are.equal(0, code, stderr)
    local found = false
    for _, name in ipairs(lines_of(stdout)) do found = found or name == basin_name end
    assert.is_true(found, "basin " .. basin_name .. " not in: " .. stdout)

    local b = H.client():basin(basin_name)
    assert(b:ensure_stream("listed-a"))
    assert(b:ensure_stream("listed-b"))
    code, stdout, stderr = run({ "ls", basin_name })
    assert.are.equal(0, code, stderr)
    local names = {}
    for _, name in ipairs(lines_of(stdout)) do names[name] = true end
    assert.is_true(names["listed-a"] and names["listed-b"], stdout)
  end)

  it("exits 2 on bad usage", function()
    for _, args in ipairs {
      {},
      { "frobnicate" },
      { "append", basin_name },
      { "append", basin_name, "s", "extra" },
      { "append", basin_name, "s", "--bogus" },
      { "tail", basin_name, "s", "--count" },
      { "tail", basin_name, "s", "--count", "many" },
      { "tail", basin_name, "s", "--count", "-1" },
      { "ls", "a", "b" },
    } do
      local code, stdout, stderr = run(args)
      assert.are.equal(2, code, table.concat(args, " ") .. ": " .. stderr)
      assert.are.equal("", stdout)
      assert.matches("^s2lua: ", stderr)
      assert.matches("usage:", stderr)
    end
    local code, stdout = run({ "--help" })
    assert.are.equal(0, code)
    assert.matches("usage:", stdout)
  end)

  it("exits 1 with one readable line for an unknown basin", function()
    local missing = H.unique_name("nobasin")
    local path = tmpname()
    write_file(path, "a record\n")
    for _, args in ipairs {
      { "ls", missing },
      { "tail", missing, "s", "--count", "1" },
      { "append", missing, "s" },
    } do
      local code, stdout, stderr = run(args, path)
      assert.are.equal(1, code, table.concat(args, " ") .. ": " .. stderr)
      assert.are.equal("", stdout)
      local lines = lines_of(stderr)
      assert.are.equal(1, #lines, stderr)
      assert.matches("^s2lua: basin_not_found: ", lines[1])
    end
    os.remove(path)
  end)
end)
