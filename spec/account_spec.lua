-- Account-level management: access tokens, metrics, locations (lua/s2/account.lua), and the
-- `location` option of create_basin / ensure_basin.
--
-- s2-lite answers 501 not_implemented for every one of these endpoints, so against it each
-- call must come back as err.code "not_implemented". What the client sends and how it decodes
-- real answers is checked against the fault server (tools/fault_server.c): `status CODE JSON`
-- makes it answer the next request with a response shaped like openapi.json's, and
-- `last_request` reports the method, path (with its query) and body the client sent.
local H = require "helper"
local s2 = require "s2"
local cjson = require "cjson"
local F = require "support.fault_server"

local must = H.must

local function not_implemented(value, err)
  assert.is_nil(value)
  assert.is_table(err, "expected an error object")
  assert.are.equal("not_implemented", err.code)
  assert.are.equal(501, err.status)
  assert.is_false(err.retryable)
end

describe("account management against s2-lite", function()
  local client
  lazy_setup(function() client = H.client() end)
  lazy_teardown(function() client:close() end)

  it("answers not_implemented for access tokens", function()
    not_implemented(client:issue_access_token { id = "lite-token",
      scope = { basins = { prefix = "" }, ops = { "read" } } })
    not_implemented(client:list_access_tokens { prefix = "lite", limit = 5 })
    not_implemented(client:revoke_access_token("lite-token"))
    local ok, err = pcall(function()
      for _ in client:list_all_access_tokens() do end
    end)
    assert.is_false(ok)
    assert.are.equal("not_implemented", err.code)
  end)

  it("answers not_implemented for metrics", function()
    not_implemented(client:account_metrics { set = "active-basins" })
    not_implemented(client:account_metrics { set = "account-ops", start = 1700000000,
      ["end"] = 1700003600, interval = "minute" })
    not_implemented(client:basin_metrics(H.unique_name("m"), { set = "storage" }))
    not_implemented(client:stream_metrics(H.unique_name("m"), "s", { set = "storage" }))
  end)

  it("answers not_implemented for locations", function()
    not_implemented(client:list_locations())
    not_implemented(client:get_default_location())
    not_implemented(client:set_default_location("aws:us-east-1"))
  end)

  it("takes a basin location on create and ensure (s2-lite ignores it)", function()
    local name = H.unique_name("loc")
    local info = must(client:create_basin(name, nil, { location = "aws:us-east-1" }))
    assert.are.equal(name, info.name)
    local name2 = H.unique_name("loc")
    local info2, err, result = client:ensure_basin(name2, { create_stream_on_append = true },
      { location = "aws:us-east-1" })
    must(info2, err)
    assert.are.equal("created", result)
    assert.is_true(must(client:get_basin_config(name2)).create_stream_on_append)
    must(client:delete_basin(name))
    must(client:delete_basin(name2))
  end)
end)

describe("account management on the wire (fault server)", function()
  local srv, client

  lazy_setup(function()
    srv = F.start()
    client = s2.client { access_token = "x", account_endpoint = srv.endpoint,
                         basin_endpoint = srv.endpoint, retry = { max_attempts = 1 } }
  end)
  lazy_teardown(function()
    if client then client:close() end
    if srv then srv:stop() end
  end)
  before_each(function() srv:command("reset") end)

  -- The last request: method, path and (for a JSON body) the decoded body.
  local function sent()
    local r = srv:last_request()
    local body = nil
    if r.body ~= "" then body = cjson.decode(r.body) end
    return r.method, r.path, body, r.body
  end

  describe("access tokens", function()
    it("issue_access_token sends the scope in REST shape and returns the token", function()
      srv:command([[status 201 {"access_token":"s2-token-abc"}]])
      local token = must(client:issue_access_token {
        id = "ci-reader",
        scope = {
          basins = { prefix = "prod-" },
          streams = { exact = "events" },
          access_tokens = { prefix = "" },
          op_groups = { account = { read = true }, stream = { read = true, write = false } },
          ops = { "read", "check-tail" },
        },
        expires_at = "2030-01-31T12:00:00Z",
        auto_prefix_streams = false,
      })
      assert.are.equal("s2-token-abc", token)
      local method, path, body = sent()
      assert.are.equal("POST", method)
      assert.are.equal("/v1/access-tokens", path)
      assert.are.same({
        id = "ci-reader",
        scope = {
          basins = { prefix = "prod-" },
          streams = { exact = "events" },
          access_tokens = { prefix = "" },
          op_groups = { account = { read = true }, stream = { read = true, write = false } },
          ops = { "read", "check-tail" },
        },
        expires_at = "2030-01-31T12:00:00Z",
        auto_prefix_streams = false,
      }, body)
    end)

    it("issue_access_token writes Unix seconds as RFC 3339 UTC and leaves out what is unset",
      function()
        srv:command([[status 201 {"access_token":"t2"}]])
        assert.are.equal("t2", must(client:issue_access_token {
          id = "x", scope = { ops = {} }, expires_at = 1700000000 }))
        local _, _, body, raw = sent()
        assert.are.same({ id = "x", scope = {}, expires_at = "2023-11-14T22:13:20Z" }, body)
        -- an empty ops list is left out (an empty Lua table would be the JSON object {})
        assert.is_nil(raw:find("ops", 1, true))
        assert.is_nil(raw:find("auto_prefix_streams", 1, true))
      end)

    it("issue_access_token: an answer without access_token is a protocol_error", function()
      srv:command([[status 201 {"token":"nope"}]])
      local v, err = client:issue_access_token { id = "x", scope = {} }
      assert.is_nil(v)
      assert.are.equal("protocol_error", err.code)
    end)

    it("issue_access_token: a 409 is returned as the server's error", function()
      srv:command([[status 409 {"code":"resource_already_exists","message":"token exists"}]])
      local v, err = client:issue_access_token { id = "dup", scope = {} }
      assert.is_nil(v)
      assert.are.equal("resource_already_exists", err.code)
      assert.are.equal(409, err.status)
    end)

    it("list_access_tokens escapes its query and decodes the page", function()
      srv:command([[status 200 {"access_tokens":[{"id":"a b/1","expires_at":"2030-01-01T00:00:00Z","auto_prefix_streams":true,"scope":{"basins":{"exact":"b1-basin"},"streams":{"prefix":"tenant-1/"},"access_tokens":null,"op_groups":{"account":{"read":true,"write":false},"basin":null,"stream":{"read":true,"write":true}},"ops":["append","read"]}}],"has_more":true}]])
      local page = must(client:list_access_tokens { prefix = "a b/", start_after = "a&b=c", limit = 5 })
      local method, path, body = sent()
      assert.are.equal("GET", method)
      assert.are.equal("/v1/access-tokens?prefix=a%20b%2F&start_after=a%26b%3Dc&limit=5", path)
      assert.is_nil(body)
      assert.is_true(page.has_more)
      assert.are.equal(1, #page.access_tokens)
      local t = page.access_tokens[1]
      assert.are.equal("a b/1", t.id)
      assert.are.equal("2030-01-01T00:00:00Z", t.expires_at)
      assert.is_true(t.auto_prefix_streams)
      assert.are.same({ exact = "b1-basin" }, t.scope.basins)
      assert.are.same({ prefix = "tenant-1/" }, t.scope.streams)
      assert.is_nil(t.scope.access_tokens) -- JSON null
      assert.are.same({ account = { read = true, write = false },
                        stream = { read = true, write = true } }, t.scope.op_groups)
      assert.are.same({ "append", "read" }, t.scope.ops)
    end)

    it("list_all_access_tokens pages by id", function()
      srv:command([[status 200 {"access_tokens":[{"id":"a1","scope":{}},{"id":"a2","scope":{}}],"has_more":true}]])
      srv:command([[status 200 {"access_tokens":[{"id":"a3","scope":{}}],"has_more":false}]])
      local ids = {}
      local it = client:list_all_access_tokens { prefix = "a", limit = 2 }
      ids[1] = it().id
      local _, first = sent()
      assert.are.equal("/v1/access-tokens?prefix=a&limit=2", first)
      for t in it do ids[#ids + 1] = t.id end
      assert.are.same({ "a1", "a2", "a3" }, ids)
      local _, second = sent()
      assert.are.equal("/v1/access-tokens?prefix=a&start_after=a2&limit=2", second)
      assert.are.equal(0, srv:stats().queued) -- both canned pages were served
    end)

    it("revoke_access_token sends DELETE with the id percent-encoded and returns true", function()
      srv:command("status 204")
      assert.is_true(client:revoke_access_token("ci/reader 1%"))
      local method, path, body, raw = sent()
      assert.are.equal("DELETE", method)
      assert.are.equal("/v1/access-tokens/ci%2Freader%201%25", path)
      assert.is_nil(body)
      assert.are.equal("", raw)
    end)

    it("revoke_access_token returns nil, err for a missing token", function()
      srv:command([[status 404 {"code":"access_token_not_found","message":"no such token"}]])
      local v, err = client:revoke_access_token("gone")
      assert.is_nil(v)
      assert.are.equal("access_token_not_found", err.code)
    end)
  end)

  describe("metrics", function()
    it("account_metrics sends set, start, end and interval and decodes an accumulation",
      function()
        srv:command([=[status 200 {"values":[{"accumulation":{"name":"account-ops","unit":"operations","interval":"minute","values":[[1700000000,12.0],[1700000060,3.5]]}}]}]=])
        local m = must(client:account_metrics { set = "account-ops", start = 1700000000,
          ["end"] = 1700003600, interval = "minute" })
        local method, path, body = sent()
        assert.are.equal("GET", method)
        assert.are.equal("/v1/metrics?set=account-ops&start=1700000000&end=1700003600&interval=minute",
          path)
        assert.is_nil(body)
        local acc = m.values[1].accumulation
        assert.are.equal("account-ops", acc.name)
        assert.are.equal("operations", acc.unit)
        assert.are.equal("minute", acc.interval)
        assert.are.same({ { 1700000000, 12 }, { 1700000060, 3.5 } }, acc.values)
      end)

    it("account_metrics decodes a label set", function()
      srv:command([[status 200 {"values":[{"label":{"name":"active-basins","values":["b-one-1","b-two-2"]}}]}]])
      local m = must(client:account_metrics { set = "active-basins" })
      local _, path = sent()
      assert.are.equal("/v1/metrics?set=active-basins", path)
      assert.are.same({ { label = { name = "active-basins", values = { "b-one-1", "b-two-2" } } } },
        m.values)
    end)

    it("basin_metrics puts the basin in the path and decodes a gauge", function()
      srv:command([=[status 200 {"values":[{"gauge":{"name":"storage","unit":"bytes","values":[[1700000000,1048576.0]]}}]}]=])
      local m = must(client:basin_metrics("my-basin-1", { set = "storage", start = 0,
        interval = "hour" }))
      local method, path = sent()
      assert.are.equal("GET", method)
      assert.are.equal("/v1/metrics/my-basin-1?set=storage&start=0&interval=hour", path)
      assert.are.same({ name = "storage", unit = "bytes", values = { { 1700000000, 1048576 } } },
        m.values[1].gauge)
    end)

    it("stream_metrics percent-encodes the stream and decodes a scalar", function()
      srv:command([[status 200 {"values":[{"scalar":{"name":"storage","unit":"bytes","value":1024.5}}]}]])
      local m = must(client:stream_metrics("my-basin-1", "logs/app 1", { set = "storage" }))
      local _, path = sent()
      assert.are.equal("/v1/metrics/my-basin-1/logs%2Fapp%201?set=storage", path)
      assert.are.same({ scalar = { name = "storage", unit = "bytes", value = 1024.5 } }, m.values[1])
    end)
  end)

  describe("locations", function()
    it("list_locations decodes the array", function()
      srv:command([=[status 200 [{"name":"aws:us-east-1","is_private":false},{"name":"acme:private-1","is_private":true}]]=])
      local locs = must(client:list_locations())
      local method, path, body = sent()
      assert.are.equal("GET", method)
      assert.are.equal("/v1/locations", path)
      assert.is_nil(body)
      assert.are.same({ { name = "aws:us-east-1", is_private = false },
                        { name = "acme:private-1", is_private = true } }, locs)
    end)

    it("get_default_location", function()
      srv:command([[status 200 {"name":"aws:us-east-1","is_private":false}]])
      assert.are.same({ name = "aws:us-east-1", is_private = false },
        must(client:get_default_location()))
      local method, path = sent()
      assert.are.equal("GET", method)
      assert.are.equal("/v1/locations/default", path)
    end)

    it("set_default_location PUTs the name as a JSON string", function()
      srv:command([[status 200 {"name":"aws:us-west-2","is_private":false}]])
      assert.are.same({ name = "aws:us-west-2", is_private = false },
        must(client:set_default_location("aws:us-west-2")))
      local method, path, _, raw = sent()
      assert.are.equal("PUT", method)
      assert.are.equal("/v1/locations/default", path)
      assert.are.equal([["aws:us-west-2"]], raw)
    end)

    it("create_basin sends location beside basin and config", function()
      srv:command([[status 201 {"name":"placed-basin","location":"aws:eu-north-1","created_at":"2026-01-01T00:00:00Z","deleted_at":null,"state":"active"}]])
      local info = must(client:create_basin("placed-basin", { create_stream_on_append = true },
        { location = "aws:eu-north-1" }))
      assert.are.equal("aws:eu-north-1", info.location)
      assert.is_nil(info.deleted_at)
      local method, path, body = sent()
      assert.are.equal("POST", method)
      assert.are.equal("/v1/basins", path)
      assert.are.same({ basin = "placed-basin", config = { create_stream_on_append = true },
                        location = "aws:eu-north-1" }, body)
    end)

    it("create_basin without opts sends no location", function()
      srv:command([[status 201 {"name":"plain-basin","created_at":"2026-01-01T00:00:00Z"}]])
      must(client:create_basin("plain-basin"))
      local _, _, body = sent()
      assert.are.same({ basin = "plain-basin" }, body)
    end)

    it("ensure_basin sends location in the PUT body", function()
      srv:command([[status 201 {"name":"placed-basin","location":"aws:eu-north-1","created_at":"2026-01-01T00:00:00Z"}]])
      must(client:ensure_basin("placed-basin", nil, { location = "aws:eu-north-1" }))
      local method, path, body = sent()
      assert.are.equal("PUT", method)
      assert.are.equal("/v1/basins/placed-basin", path)
      assert.are.same({ location = "aws:eu-north-1" }, body)
    end)
  end)

  describe("a 501", function()
    it("for a path the server does not serve is not_implemented, on every call", function()
      not_implemented(client:issue_access_token { id = "x", scope = {} })
      not_implemented(client:list_access_tokens())
      not_implemented(client:revoke_access_token("x"))
      not_implemented(client:account_metrics { set = "account-ops" })
      not_implemented(client:basin_metrics("my-basin-1", { set = "read-ops" }))
      not_implemented(client:stream_metrics("my-basin-1", "s", { set = "storage" }))
      not_implemented(client:list_locations())
      not_implemented(client:get_default_location())
      not_implemented(client:set_default_location("x"))
    end)

    it("without a code in its body is not_implemented too", function()
      srv:command([[status 501 {"message":"nope"}]])
      not_implemented(client:list_locations())
    end)
  end)
end)

describe("account management bad input", function()
  local client
  lazy_setup(function()
    client = s2.client { access_token = "x", account_endpoint = "http://127.0.0.1:1",
                         basin_endpoint = "http://127.0.0.1:1", retry = { max_attempts = 1 } }
  end)
  lazy_teardown(function() client:close() end)

  local function raises(words, fn)
    local ok, msg = pcall(fn)
    assert.is_false(ok, "expected an error naming " .. table.concat(words, ", "))
    msg = tostring(msg)
    for _, w in ipairs(words) do
      assert.is_truthy(msg:find(w, 1, true), ("%q does not name %q"):format(msg, w))
    end
    -- the error points at the caller (no tail calls here), not inside the library
    assert.is_truthy(msg:find("account_spec.lua", 1, true), msg)
  end

  local function issue(t)
    return function()
      local opts = { id = "ok", scope = {} }
      for k, v in pairs(t) do opts[k] = v end
      local _ = client:issue_access_token(opts)
    end
  end

  it("issue_access_token checks its options", function()
    raises({ "issue_access_token", "options" }, function() local _ = client:issue_access_token() end)
    raises({ "issue_access_token", "bogus" }, issue { bogus = 1 })
    raises({ "id" }, issue { id = 42 })
    raises({ "id" }, issue { id = "" })
    raises({ "id", "96" }, issue { id = ("i"):rep(97) })
    raises({ "scope" }, issue { scope = "all" })
    raises({ "scope", "bogus" }, issue { scope = { bogus = {} } })
    raises({ "scope.basins" }, issue { scope = { basins = "prod" } })
    raises({ "scope.basins", "exactly one" }, issue { scope = { basins = { exact = "a", prefix = "b" } } })
    raises({ "scope.basins", "exactly one" }, issue { scope = { basins = {} } })
    raises({ "scope.streams", "glob" }, issue { scope = { streams = { glob = "*" } } })
    raises({ "scope.access_tokens.prefix" }, issue { scope = { access_tokens = { prefix = 1 } } })
    raises({ "scope.op_groups" }, issue { scope = { op_groups = true } })
    raises({ "scope.op_groups", "tenant" }, issue { scope = { op_groups = { tenant = {} } } })
    raises({ "scope.op_groups.basin.write" },
      issue { scope = { op_groups = { basin = { write = "yes" } } } })
    raises({ "scope.op_groups.stream", "admin" },
      issue { scope = { op_groups = { stream = { admin = true } } } })
    raises({ "scope.ops" }, issue { scope = { ops = "read" } })
    raises({ "scope.ops[2]" }, issue { scope = { ops = { "read", 7 } } })
    raises({ "scope.ops", "list" }, issue { scope = { ops = { read = true } } })
    raises({ "expires_at" }, issue { expires_at = "tomorrow" })
    raises({ "expires_at" }, issue { expires_at = "2030-01-31" })
    raises({ "expires_at" }, issue { expires_at = -1 })
    raises({ "expires_at" }, issue { expires_at = 1.5 })
    raises({ "expires_at" }, issue { expires_at = 2 ^ 63 })
    raises({ "expires_at" }, issue { expires_at = true })
    raises({ "auto_prefix_streams" }, issue { auto_prefix_streams = 1 })
  end)

  it("list and revoke check their arguments", function()
    raises({ "list_access_tokens", "bogus" }, function() local _ = client:list_access_tokens { bogus = 1 } end)
    raises({ "limit" }, function() local _ = client:list_access_tokens { limit = 1001 } end)
    raises({ "prefix" }, function() local _ = client:list_access_tokens { prefix = 1 } end)
    raises({ "list_all_access_tokens", "include_deleted" },
      function() local _ = client:list_all_access_tokens { include_deleted = true } end)
    raises({ "limit" }, function() local _ = client:list_all_access_tokens { limit = 0 } end)
    raises({ "revoke_access_token", "id" }, function() local _ = client:revoke_access_token() end)
    raises({ "id", "96" }, function() local _ = client:revoke_access_token(("i"):rep(97)) end)
  end)

  it("metrics check set per level, times and interval", function()
    raises({ "account_metrics", "options" }, function() local _ = client:account_metrics() end)
    raises({ "set", "active-basins" }, function() local _ = client:account_metrics { set = "storage" } end)
    raises({ "set" }, function() local _ = client:account_metrics { set = 1 } end)
    raises({ "basin_metrics", "set", "basin-ops" },
      function() local _ = client:basin_metrics("my-basin-1", { set = "account-ops" }) end)
    raises({ "stream_metrics", "set" },
      function() local _ = client:stream_metrics("my-basin-1", "s", { set = "read-ops" }) end)
    raises({ "bogus" }, function() local _ = client:account_metrics { set = "account-ops", bogus = 1 } end)
    raises({ "start" }, function() local _ = client:account_metrics { set = "account-ops", start = -1 } end)
    raises({ "start" }, function() local _ = client:account_metrics { set = "account-ops", start = 1.5 } end)
    raises({ "end" }, function() local _ = client:account_metrics { set = "account-ops", ["end"] = 2 ^ 32 } end)
    raises({ "start", "end" },
      function() local _ = client:account_metrics { set = "account-ops", start = 10, ["end"] = 5 } end)
    raises({ "interval" },
      function() local _ = client:account_metrics { set = "account-ops", interval = "week" } end)
    raises({ "name" }, function() local _ = client:basin_metrics("x", { set = "storage" }) end)
    raises({ "name" }, function() local _ = client:stream_metrics(nil, "s", { set = "storage" }) end)
    raises({ "stream" }, function() local _ = client:stream_metrics("my-basin-1", "", { set = "storage" }) end)
  end)

  it("locations check names", function()
    raises({ "set_default_location", "name" }, function() local _ = client:set_default_location() end)
    raises({ "name" }, function() local _ = client:set_default_location("a b") end)
    raises({ "name", "64" }, function() local _ = client:set_default_location(("l"):rep(65)) end)
    raises({ "create_basin", "location" },
      function() local _ = client:create_basin("my-basin-1", nil, { location = 42 }) end)
    raises({ "create_basin", "bogus" },
      function() local _ = client:create_basin("my-basin-1", nil, { bogus = 1 }) end)
    raises({ "ensure_basin", "location" },
      function() local _ = client:ensure_basin("my-basin-1", nil, { location = "us/east" }) end)
    raises({ "ensure_basin", "options" },
      function() local _ = client:ensure_basin("my-basin-1", nil, "aws:us-east-1") end)
  end)

  it("methods called with '.' raise", function()
    raises({ "issue_access_token", "':'" }, function() local _ = client.issue_access_token { id = "x" } end)
    raises({ "list_locations", "':'" }, function() local _ = client.list_locations() end)
  end)
end)
