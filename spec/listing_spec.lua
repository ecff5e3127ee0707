-- Issue 14 (first part): listing every page, deletes that ignore a missing name, command
-- records in unary reads, 501 as not_implemented. Against s2-lite (and the fault server for 501).
local H = require "helper"
local s2 = require "s2"

describe("listing and deleting", function()
  local client, basin

  lazy_setup(function()
    client = H.client()
    basin = H.new_basin(client, "listall")
  end)

  lazy_teardown(function()
    if client then client:close() end
  end)

  it("list_all_streams walks every page (limit is the page size)", function()
    local want = {}
    for i = 1, 7 do
      local name = ("p-%02d"):format(i)
      assert(basin:create_stream(name))
      want[#want + 1] = name
    end
    local got = {}
    for info in basin:list_all_streams { prefix = "p-", limit = 3 } do got[#got + 1] = info.name end
    assert.are.same(want, got)
    -- start_after skips, and a page size over 1000 passes through (the server clamps it)
    got = {}
    for info in basin:list_all_streams { prefix = "p-", start_after = "p-05", limit = 5000 } do
      got[#got + 1] = info.name
    end
    assert.are.same({ "p-06", "p-07" }, got)
  end)

  it("list_all_streams leaves out streams being deleted unless include_deleted", function()
    assert(basin:create_stream("d-1"))
    assert(basin:create_stream("d-2"))
    assert(basin:delete_stream("d-1"))
    local names = {}
    for info in basin:list_all_streams { prefix = "d-" } do names[#names + 1] = info.name end
    assert.are.same({ "d-2" }, names)
    local all = {}
    for info in basin:list_all_streams { prefix = "d-", include_deleted = true } do
      all[info.name] = true
    end
    assert.is_true(all["d-2"])
  end)

  it("list_all_basins finds this basin", function()
    local found = false
    for info in client:list_all_basins { prefix = basin.name, limit = 1 } do
      if info.name == basin.name then found = true end
    end
    assert.is_true(found)
  end)

  it("raises the error object from the loop when a page fails", function()
    local closed = H.client()
    local it = closed:basin(basin.name):list_all_streams()
    closed:close()
    assert.has_error(function() it() end)
  end)

  it("checks its options", function()
    assert.has_error(function() basin:list_all_streams { limit = 0 } end,
      "basin:list_all_streams: limit must be a positive integer, got 0")
    assert.has_error(function() basin:list_all_streams { include_deleted = "yes" } end)
    assert.has_error(function() basin:list_all_streams { page = 2 } end)
  end)

  it("delete_stream / delete_basin with ignore_not_found", function()
    local ok, err = basin:delete_stream("never-there")
    assert.is_nil(ok)
    assert.are.equal("stream_not_found", err.code)
    assert.is_true(assert(basin:delete_stream("never-there", { ignore_not_found = true })))
    local name = H.unique_name("gone")
    ok, err = client:delete_basin(name)
    assert.is_nil(ok)
    assert.are.equal("basin_not_found", err.code)
    assert.is_true(assert(client:delete_basin(name, { ignore_not_found = true })))
    assert.has_error(function() basin:delete_stream("x", { ignore = true }) end)
  end)
end)

describe("command records", function()
  it("s2.is_command_record and stream:read{ ignore_command_records = true }", function()
    local client = H.client()
    local basin = H.new_basin(client, "cmdrec")
    local stream = basin:stream("s")
    assert(stream:append({ "a", s2.fence("tok"), "b" }, { fencing_token = "" }))
    local all = assert(stream:read { seq_num = 0 })
    assert.are.equal(3, #all.records)
    assert.is_false(s2.is_command_record(all.records[1]))
    assert.is_true(s2.is_command_record(all.records[2]))
    assert.is_true(s2.is_command_record(s2.trim(5)))
    local data = assert(stream:read { seq_num = 0, ignore_command_records = true })
    assert.are.equal(2, #data.records)
    assert.are.equal("a", data.records[1].body)
    assert.are.equal("b", data.records[2].body)
    assert.has_error(function() stream:read { ignore_command_records = 1 } end)
    -- metered_bytes takes records as reads return them (the position is not metered)
    assert.are.equal(s2.metered_bytes("a"), s2.metered_bytes(all.records[1]))
    assert.are.equal(s2.metered_bytes(s2.fence("tok")), s2.metered_bytes(all.records[2]))
    assert.has_error(function() s2.is_command_record("x") end)
    client:close()
  end)
end)

describe("a 501 answer", function()
  it("is not_implemented", function()
    local F = require "support.fault_server"
    local srv = F.start()
    local client = s2.client { access_token = "x", account_endpoint = srv.endpoint,
                               basin_endpoint = srv.endpoint }
    local ok, err = client:basin("basin-five5"):stream("s"):read { seq_num = 0 }
    assert.is_nil(ok)
    assert.are.equal("not_implemented", err.code)
    client:close()
    srv:stop()
  end)
end)
