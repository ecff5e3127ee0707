-- basin:stream trimmed the encryption key with the pattern "^%s*(.-)%s*$", which backtracks
-- over every run of blanks inside the string: quadratic. A 60 KB key made of two letters
-- around blanks (a pasted file, a corrupted variable) took about 20 s of CPU before it was
-- refused, blocking the event loop it ran in; a megabyte, hours. s2lua's --encryption-key-file
-- trimmed the file with "%s+$", quadratic the same way. No server needed.
describe("regression: trimming a long encryption key", function()
  local s2 = require "s2"
  local c = s2.client { access_token = "t", account_endpoint = "http://127.0.0.1:1",
                        basin_endpoint = "http://127.0.0.1:1" }
  local key = "a" .. (" "):rep(60000) .. "a"

  it("refuses a long key with blanks inside at once", function()
    local t = os.clock()
    local ok, err = pcall(function()
      return c:basin("some-basin-name"):stream("s", { encryption_key = key })
    end)
    local spent = os.clock() - t
    assert.is_false(ok)
    assert.is_truthy(tostring(err):find("encryption_key must be 1 to 44", 1, true), tostring(err))
    assert.is_true(spent < 1, ("%.2f s of CPU to refuse it"):format(spent))
  end)

  it("still trims blanks and newlines around a good key", function()
    local good = s2.new_encryption_key()
    local stream = c:basin("some-basin-name"):stream("s", { encryption_key = " \t\r\n" .. good .. "\n " })
    assert.are.equal(good, require("s2.stream")._encryption_key(stream))
  end)

  it("s2lua --encryption-key-file: a long file with blanks inside, at once", function()
    local path = os.tmpname()
    local f = assert(io.open(path, "wb"))
    f:write(key, "\n")
    f:close()
    local t = os.clock()
    local got = require("s2.cli.records").encryption_key { encryption_key_file = path }
    local spent = os.clock() - t
    os.remove(path)
    assert.are.equal(#key + 1 >= #got and #got >= #key, true)
    assert.is_true(spent < 1, ("%.2f s of CPU to read it"):format(spent))
  end)

  lazy_teardown(function() c:close() end)
end)
