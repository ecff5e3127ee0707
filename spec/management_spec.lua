-- Integration specs for basin and stream management (create / ensure / get config / list /
-- reconfigure / delete). Runs against the s2-lite that `make test` starts (spec/helper.lua).
--
-- s2-lite deletes asynchronously (202, then a background task): a deleted basin or stream may
-- still be listed for a while with state "deleting" / a deleted_at time, so every name here is
-- unique and the checks after a delete accept either "gone" or "being deleted".
local H = require "helper"
require "s2"

local NO_AUTO_CREATE = { create_stream_on_append = false, create_stream_on_read = false }

local must = H.must

local function must_fail(value, err)
  assert.is_nil(value, "expected a failure, got a result")
  assert.is_table(err, "expected an error object")
  assert.is_string(err.code)
  assert.is_boolean(err.retryable)
  return err
end

local function names(list)
  local out = {}
  for i, entry in ipairs(list) do out[i] = entry.name end
  return out
end

local function find(list, name)
  for _, entry in ipairs(list) do
    if entry.name == name then return entry end
  end
end

-- JSON null may decode to nil or to a sentinel (e.g. cjson.null): only a string is a time.
local function is_deleting(entry)
  return entry.state == "deleting" or type(entry.deleted_at) == "string"
end

describe("management", function()
  local client

  lazy_setup(function()
    client = H.client()
  end)

  describe("basins", function()
    it("create returns the basin's info and get_basin_config returns its config", function()
      local name = H.unique_name("bcreate")
      local info = must(client:create_basin(name, {
        create_stream_on_append = true,
        default_stream_config = { retention_policy = { age = 3600 } },
      }))
      assert.is_table(info)
      assert.are.equal(name, info.name)

      local cfg = must(client:get_basin_config(name))
      assert.is_true(cfg.create_stream_on_append)
      assert.are_not.equal(true, cfg.create_stream_on_read)
      assert.are.equal(3600, cfg.default_stream_config.retention_policy.age)
    end)

    it("create accepts an empty config table and no config at all", function()
      local a, b = H.unique_name("bempty"), H.unique_name("bnil")
      assert.are.equal(a, must(client:create_basin(a, {})).name)
      assert.are.equal(b, must(client:create_basin(b)).name)
      assert.is_table(must(client:get_basin_config(a)))
      assert.is_table(must(client:get_basin_config(b)))
    end)

    it("create twice answers resource_already_exists (409)", function()
      local name = H.unique_name("btwice")
      must(client:create_basin(name, NO_AUTO_CREATE))
      local err = must_fail(client:create_basin(name, NO_AUTO_CREATE))
      assert.are.equal("resource_already_exists", err.code)
      assert.are.equal(409, err.status)
    end)

    it("list with a prefix finds exactly the basins that share it, paginated", function()
      local prefix = H.unique_name("blist") .. "-"
      local want = { prefix .. "a", prefix .. "b", prefix .. "c" }
      for i = #want, 1, -1 do  -- created out of order: the listing is sorted by name
        must(client:create_basin(want[i], NO_AUTO_CREATE))
      end

      local page = must(client:list_basins { prefix = prefix })
      assert.are.same(want, names(page.basins))
      assert.is_false(page.has_more)
      for _, entry in ipairs(page.basins) do
        assert.are.equal("active", entry.state)
      end

      page = must(client:list_basins { prefix = prefix, limit = 1 })
      assert.are.same({ want[1] }, names(page.basins))
      assert.is_true(page.has_more)

      page = must(client:list_basins { prefix = prefix, start_after = want[1] })
      assert.are.same({ want[2], want[3] }, names(page.basins))
      assert.is_false(page.has_more)

      page = must(client:list_basins { prefix = prefix, start_after = want[1], limit = 1 })
      assert.are.same({ want[2] }, names(page.basins))
      assert.is_true(page.has_more)

      page = must(client:list_basins { prefix = prefix .. "zzz" })
      assert.are.same({}, names(page.basins))
      assert.is_false(page.has_more)
    end)

    it("reconfigure changes only what it names and returns the new config", function()
      local name = H.unique_name("breconf")
      must(client:create_basin(name, {
        create_stream_on_append = false,
        create_stream_on_read = true,
        default_stream_config = { retention_policy = { age = 3600 } },
      }))

      local cfg = must(client:reconfigure_basin(name, { create_stream_on_append = true }))
      assert.is_true(cfg.create_stream_on_append)
      assert.is_true(cfg.create_stream_on_read)
      assert.are.equal(3600, cfg.default_stream_config.retention_policy.age)

      cfg = must(client:reconfigure_basin(name, {
        default_stream_config = { retention_policy = { age = 7200 } },
      }))
      assert.are.equal(7200, cfg.default_stream_config.retention_policy.age)
      assert.is_true(cfg.create_stream_on_append)

      cfg = must(client:get_basin_config(name))
      assert.is_true(cfg.create_stream_on_append)
      assert.is_true(cfg.create_stream_on_read)
      assert.are.equal(7200, cfg.default_stream_config.retention_policy.age)
    end)

    it("reconfigure takes effect: a basin switched to create_stream_on_append auto-creates", function()
      local name = H.unique_name("bauto")
      must(client:create_basin(name, NO_AUTO_CREATE))
      local stream = client:basin(name):stream("auto")
      local err = must_fail(stream:append({ "x" }))
      assert.are.equal("stream_not_found", err.code)

      must(client:reconfigure_basin(name, { create_stream_on_append = true }))
      local ack = must(stream:append({ "x" }))
      assert.are.equal(0, ack.start.seq_num)
    end)

    it("ensure creates a missing basin and is idempotent on an existing one", function()
      local name = H.unique_name("bensure")
      local info, err, result = client:ensure_basin(name, NO_AUTO_CREATE)
      assert.is_nil(err)
      assert.are.equal(name, info.name)
      assert.are.equal("created", result)
      assert.are_not.equal(true, must(client:get_basin_config(name)).create_stream_on_append)

      info, err, result = client:ensure_basin(name, NO_AUTO_CREATE)
      assert.is_nil(err)
      assert.are.equal(name, info.name)
      assert.are.equal("noop", result)

      -- ensure with another config brings the basin to that config
      must(client:ensure_basin(name, { create_stream_on_append = true }))
      assert.is_true(must(client:get_basin_config(name)).create_stream_on_append)

      -- and create still sees it as existing
      local err = must_fail(client:create_basin(name, NO_AUTO_CREATE))
      assert.are.equal("resource_already_exists", err.code)
    end)

    it("delete returns true, after which the basin is gone or deleting", function()
      local name = H.unique_name("bdelete")
      must(client:create_basin(name, NO_AUTO_CREATE))
      local before = find(must(client:list_basins { prefix = name }).basins, name)
      assert.is_table(before)
      assert.is_false(is_deleting(before))

      assert.is_true(must(client:delete_basin(name)))

      local after = find(must(client:list_basins { prefix = name }).basins, name)
      assert.is_true(after == nil or is_deleting(after),
        "a deleted basin must be unlisted or listed as deleting")

      -- nothing new can be created in it
      local err = must_fail(client:basin(name):create_stream("s"))
      assert.is_true(err.status == 404 or err.status == 409,
        "expected 404 or 409, got " .. tostring(err))
    end)

    it("unknown basins answer basin_not_found (404)", function()
      local name = H.unique_name("bmissing")
      local err = must_fail(client:get_basin_config(name))
      assert.are.equal("basin_not_found", err.code)
      assert.are.equal(404, err.status)

      err = must_fail(client:delete_basin(name))
      assert.are.equal("basin_not_found", err.code)

      err = must_fail(client:reconfigure_basin(name, { create_stream_on_append = true }))
      assert.are.equal("basin_not_found", err.code)

      err = must_fail(client:basin(name):create_stream("s"))
      assert.are.equal("basin_not_found", err.code)
      assert.are.equal(404, err.status)
    end)
  end)

  describe("streams", function()
    local basin

    lazy_setup(function()
      basin = H.new_basin(client, "mstreams", NO_AUTO_CREATE)
    end)

    it("create returns the stream's info and get_stream_config returns its config", function()
      local name = H.unique_name("screate")
      local info = must(basin:create_stream(name, {
        retention_policy = { age = 3600 },
        timestamping = { mode = "arrival" },
      }))
      assert.is_table(info)
      assert.are.equal(name, info.name)

      local cfg = must(basin:get_stream_config(name))
      assert.are.equal(3600, cfg.retention_policy.age)
      assert.are.equal("arrival", cfg.timestamping.mode)

      -- the stream exists and is empty
      assert.are.equal(0, must(basin:stream(name):check_tail()).seq_num)
    end)

    it("create without a config inherits the basin's default stream config", function()
      local bname = H.unique_name("bdefault")
      must(client:create_basin(bname, {
        default_stream_config = { retention_policy = { age = 1234 } },
      }))
      local b = client:basin(bname)
      must(b:create_stream("inherits"))
      assert.are.equal(1234, must(b:get_stream_config("inherits")).retention_policy.age)
    end)

    it("create twice answers resource_already_exists (409)", function()
      local name = H.unique_name("stwice")
      must(basin:create_stream(name))
      local err = must_fail(basin:create_stream(name))
      assert.are.equal("resource_already_exists", err.code)
      assert.are.equal(409, err.status)
    end)

    it("names may contain '/' and work for create, list, append, read and config", function()
      local dir = H.unique_name("dir") .. "/"
      local name = dir .. "sub/leaf"
      assert.are.equal(name, must(basin:create_stream(name)).name)

      local page = must(basin:list_streams { prefix = dir })
      assert.are.same({ name }, names(page.streams))

      local stream = basin:stream(name)
      must(stream:append({ "slashed" }))
      local batch = must(stream:read { seq_num = 0, count = 1 })
      assert.are.equal("slashed", batch.records[1].body)
      assert.is_table(must(basin:get_stream_config(name)))
    end)

    it("list with a prefix finds exactly the streams that share it, paginated", function()
      local prefix = H.unique_name("slist") .. "-"
      local want = { prefix .. "a", prefix .. "b", prefix .. "c" }
      for i = #want, 1, -1 do must(basin:create_stream(want[i])) end

      local page = must(basin:list_streams { prefix = prefix })
      assert.are.same(want, names(page.streams))
      assert.is_false(page.has_more)

      page = must(basin:list_streams { prefix = prefix, limit = 1 })
      assert.are.same({ want[1] }, names(page.streams))
      assert.is_true(page.has_more)

      page = must(basin:list_streams { prefix = prefix, start_after = want[2] })
      assert.are.same({ want[3] }, names(page.streams))
      assert.is_false(page.has_more)
    end)

    it("list is scoped to the basin", function()
      local other = H.new_basin(client, "mother", NO_AUTO_CREATE)
      local name = H.unique_name("scoped")
      must(other:create_stream(name))
      assert.are.same({}, names(must(basin:list_streams { prefix = name }).streams))
      assert.are.same({ name }, names(must(other:list_streams { prefix = name }).streams))
    end)

    it("reconfigure changes only what it names and returns the new config", function()
      local name = H.unique_name("sreconf")
      must(basin:create_stream(name, {
        retention_policy = { age = 3600 },
        timestamping = { mode = "arrival" },
      }))
      local cfg = must(basin:reconfigure_stream(name, { retention_policy = { age = 600 } }))
      assert.are.equal(600, cfg.retention_policy.age)
      assert.are.equal("arrival", cfg.timestamping.mode)

      cfg = must(basin:get_stream_config(name))
      assert.are.equal(600, cfg.retention_policy.age)
      assert.are.equal("arrival", cfg.timestamping.mode)
    end)

    it("ensure creates a missing stream and is idempotent on an existing one", function()
      local name = H.unique_name("sensure")
      assert.are.equal(name, must(basin:ensure_stream(name)).name)
      assert.are.equal(0, must(basin:stream(name):check_tail()).seq_num)
      must(basin:stream(name):append({ "kept" }))

      assert.are.equal(name, must(basin:ensure_stream(name)).name)
      -- an ensure does not reset the stream
      assert.are.equal(1, must(basin:stream(name):check_tail()).seq_num)

      must(basin:ensure_stream(name, { retention_policy = { age = 4321 } }))
      assert.are.equal(4321, must(basin:get_stream_config(name)).retention_policy.age)
    end)

    it("delete returns true, after which the stream is gone or deleting", function()
      local name = H.unique_name("sdelete")
      local stream = basin:stream(name)
      must(basin:create_stream(name))
      must(stream:append({ "doomed" }))
      local before = find(must(basin:list_streams { prefix = name }).streams, name)
      assert.is_table(before)
      assert.is_false(is_deleting(before))

      assert.is_true(must(basin:delete_stream(name)))

      local after = find(must(basin:list_streams { prefix = name }).streams, name)
      assert.is_true(after == nil or is_deleting(after),
        "a deleted stream must be unlisted or listed as deleting")

      -- data operations fail (the basin does not auto-create): 404 or 409 deletion pending
      local err = must_fail(stream:check_tail())
      assert.is_true(err.status == 404 or err.status == 409,
        "expected 404 or 409, got " .. tostring(err))
      err = must_fail(stream:append({ "after" }))
      assert.is_true(err.status == 404 or err.status == 409,
        "expected 404 or 409, got " .. tostring(err))
    end)

    it("unknown streams answer stream_not_found (404)", function()
      local name = H.unique_name("smissing")
      local err = must_fail(basin:get_stream_config(name))
      assert.are.equal("stream_not_found", err.code)
      assert.are.equal(404, err.status)

      err = must_fail(basin:delete_stream(name))
      assert.are.equal("stream_not_found", err.code)

      err = must_fail(basin:reconfigure_stream(name, { retention_policy = { age = 60 } }))
      assert.are.equal("stream_not_found", err.code)
    end)
  end)
end)
