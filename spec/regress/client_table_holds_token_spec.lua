-- The encryption key is kept out of a stream's fields so that printing or dumping a stream
-- (or a session, reader or producer holding it) never shows it; but every such object also
-- holds its client, whose `config` field kept the access token in clear: an inspect() or a
-- table dump in a log showed it. Nothing reads client.config (the core has its own copy).
-- No server: the objects are made without any request.
describe("regression: the access token in the client's fields", function()
  local TOKEN = "tok-SECRET-8d3a" .. ("x"):rep(20)

  -- Every string reachable from v through table keys and values (metatables too).
  local function strings_of(v, out, seen)
    out, seen = out or {}, seen or {}
    local t = type(v)
    if t == "string" then
      out[#out + 1] = v
    elseif t == "table" and not seen[v] then
      seen[v] = true
      for k, x in pairs(v) do
        strings_of(k, out, seen)
        strings_of(x, out, seen)
      end
      strings_of(getmetatable(v), out, seen)
    end
    return out
  end

  it("is not reachable from the client, its streams, sessions and producers", function()
    local s2 = require "s2"
    local key = s2.new_encryption_key()
    local c = s2.client { access_token = TOKEN, account_endpoint = "http://127.0.0.1:1",
                          basin_endpoint = "http://127.0.0.1:1" }
    local stream = c:basin("some-basin-name"):stream("s", { encryption_key = key })
    local session = assert(stream:append_session())
    local producer = assert(stream:producer())
    local found = strings_of { c, stream, session, producer }
    assert.is_true(#found > 10, "the walk found too little to mean anything")
    for _, s in ipairs(found) do
      assert.is_nil(s:find(TOKEN, 1, true), "the access token is reachable")
      assert.is_nil(s:find(key, 1, true), "the encryption key is reachable")
    end
    producer:close(0)
    session:close(0)
    c:close()
  end)
end)
