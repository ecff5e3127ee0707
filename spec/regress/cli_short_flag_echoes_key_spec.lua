-- `s2lua read s2://b/s -kKEY` (the key glued to its short flag, as getopt tools take it)
-- was refused as "unknown option -kKEY": the encryption key went to stderr, and into
-- whatever logs the terminal or CI keeps. No server: both cases stop at the flags.
local C = require "support.cli"

describe("regression: s2lua with a value glued to a short flag", function()
  local KEY = require("s2.cli.format").base64_encode(("s"):rep(32))

  it("never echoes the text glued to a short option in a usage error", function()
    for _, argv in ipairs {
      { "read", "s2://basin-name-x/s", "-K" .. KEY },       -- no such short flag
      { "read", "s2://basin-name-x/s", "-z" .. KEY, "-k", KEY },
    } do
      local code, stdout, stderr = C.run(argv)
      assert.are.equal(2, code, stderr)
      assert.is_nil(stderr:find(KEY, 1, true), stderr)
      assert.is_nil(stdout:find(KEY, 1, true), stdout)
      assert.is_truthy(stderr:find("unknown option", 1, true), stderr)
    end
  end)

  it("takes -kKEY as -k KEY (so the key is used, not printed)", function()
    local args = require "s2.cli.args"
    local records = require "s2.cli.records"
    local _, opt = args.parse(records.read.flags, { "s2://b/s", "-k" .. KEY })
    assert.are.equal(KEY, opt.encryption_key)
    -- a glued value on a flag that takes none is refused, without echoing it
    local ok, e = pcall(args.parse, records.read.flags, { "s2://b/s", "-k", KEY, "--progress=" .. KEY })
    assert.is_false(ok)
    assert.is_true(args.is_exit(e))
    assert.is_nil(e.msg:find(KEY, 1, true), e.msg)
  end)
end)
