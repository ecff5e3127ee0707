-- s2lua --encryption-key / S2_ENCRYPTION_KEY on a basin with a stream cipher. Needs
-- basin:stream(name, { encryption_key = KEY }) (the s2-encryption-key header) from the
-- library: until that is in, the CLI's key is not sent and these fail with bad_header.
local H = require "helper"
local C = require "support.cli"

local run = C.run

describe("s2lua encryption", function()
  local basin_name
  -- 32 bytes, base64 (44 characters).
  local KEY = require("s2.cli.format").base64_encode(("k"):rep(32))
  local OTHER = require("s2.cli.format").base64_encode(("o"):rep(32))

  lazy_setup(function()
    basin_name = H.unique_name("clienc")
    local code, _, stderr = run { "create-basin", basin_name, "--create-stream-on-append",
      "--stream-cipher", "aegis-256" }
    assert(code == 0, stderr)
  end)

  local function uri(s) return ("s2://%s/%s"):format(basin_name, s) end

  it("appends and reads back with --encryption-key", function()
    local code, _, stderr = run({ "append", uri "e", "--encryption-key", KEY }, { stdin = "secret 1\nsecret 2\n" })
    assert.are.equal(0, code, stderr)
    local stdout
    code, stdout, stderr = run { "read", uri "e", "--seq-num", "0", "--count", "2", "-k", KEY }
    assert.are.equal(0, code, stderr)
    assert.are.equal("secret 1\nsecret 2\n", stdout)
  end)

  it("takes the key from S2_ENCRYPTION_KEY and --encryption-key-file", function()
    local env = { S2_ENCRYPTION_KEY = KEY }
    local code, _, stderr = run({ "append", uri "env" }, { stdin = "from env\n", env = env })
    assert.are.equal(0, code, stderr)
    local path = os.tmpname()
    C.write_file(path, KEY .. "\n")
    local stdout
    code, stdout, stderr = run { "read", uri "env", "--seq-num", "0", "--count", "1",
      "--encryption-key-file", path }
    os.remove(path)
    assert.are.equal(0, code, stderr)
    assert.are.equal("from env\n", stdout)
  end)

  it("fails with exit 1 without the key or with another one", function()
    local code, _, stderr = run({ "append", uri "e2", "-k", KEY }, { stdin = "x\n" })
    assert.are.equal(0, code, stderr)
    code, _, stderr = run { "read", uri "e2", "--seq-num", "0", "--count", "1" }
    assert.are.equal(1, code)
    assert.matches("^s2lua: bad_header: ", stderr)
    code, _, stderr = run { "read", uri "e2", "--seq-num", "0", "--count", "1", "-k", OTHER }
    assert.are.equal(1, code)
    assert.matches("^s2lua: decryption_failed: ", stderr)
  end)
end)
