-- docs/api.md must document every public function of the Lua layer. Public functions are
-- found by loading the modules and walking their tables (and the ticket class of the C
-- binding), so a new function without documentation fails here. Needs no server.
--
-- A function counts as documented when docs/api.md names it with its object, the way the
-- docs and examples write calls: `s2.fence(`, `client:basin(`, `ticket:ack(`, ... (a table
-- call such as `stream:read{` counts too).
local ROOT = (debug.getinfo(1, "S").source:match("^@(.*)/spec/[^/]*$") or ".")

local function read_docs()
  local f = assert(io.open(ROOT .. "/docs/api.md", "r"), "docs/api.md is missing")
  local s = f:read("a")
  f:close()
  return s
end

-- Modules of the Lua layer and the name their values go by in the docs.
local MODULES = {
  { module = "s2", prefix = "s2" },
  { module = "s2.error", prefix = "s2.error" },
  { module = "s2.client", prefix = "client" },
  { module = "s2.basin", prefix = "basin" },
  { module = "s2.stream", prefix = "stream" },
  { module = "s2.session", prefix = "session" },
  { module = "s2.producer", prefix = "producer" },
  { module = "s2.reader", prefix = "reader" },
}

-- Constructors: reached through s2.client() and stream:..., documented there.
local CONSTRUCTORS = { new = true, open = true }

local function public_functions(t)
  local names = {}
  for k, v in pairs(t) do
    if type(k) == "string" and type(v) == "function" and not k:match("^_")
        and not CONSTRUCTORS[k] then
      names[#names + 1] = k
    end
  end
  table.sort(names)
  return names
end

local function escape(s)
  return (s:gsub("[%^%$%(%)%%%.%[%]%*%+%-%?]", "%%%0"))
end

-- `prefix.name` or `prefix:name` followed by a call: "(", "{" or a quoted string.
local function documented(docs, prefix, name)
  local base = escape(prefix) .. "[%.:]" .. escape(name) .. "%s*"
  return docs:find(base .. "%(") or docs:find(base .. "{") or docs:find(base .. "[\"']")
end

describe("docs/api.md", function()
  local docs, s2

  setup(function()
    docs = read_docs()
    s2 = require "s2"
  end)

  it("exists and is not a stub", function()
    assert.is_true(#docs > 5000)
  end)

  for _, m in ipairs(MODULES) do
    it("documents every public function of " .. m.module, function()
      local t = require(m.module)
      assert.is_table(t)
      local names = public_functions(t)
      assert.is_true(#names > 0, m.module .. " has no public functions?")
      local missing = {}
      for _, name in ipairs(names) do
        if not documented(docs, m.prefix, name) then
          missing[#missing + 1] = m.prefix .. (m.prefix:match("^s2") and "." or ":") .. name
        end
      end
      assert.are.same({}, missing, "not documented in docs/api.md: " .. table.concat(missing, ", "))
    end)
  end

  it("documents every method of append-session and producer tickets", function()
    -- The ticket class lives in the C binding; loading s2 registered it.
    local registry = debug.getregistry()
    local missing, seen = {}, {}
    for _, class in ipairs { "s2.core.ticket" } do
      local mt = registry[class]
      assert.is_table(mt, class .. " is not registered")
      local methods = type(mt.__index) == "table" and mt.__index or {}
      local names = public_functions(methods)
      assert.is_true(#names > 0)
      for _, name in ipairs(names) do
        if not seen[name] and not documented(docs, "ticket", name) then
          missing[#missing + 1] = "ticket:" .. name
        end
        seen[name] = true
      end
    end
    assert.are.same({}, missing, "not documented in docs/api.md: " .. table.concat(missing, ", "))
  end)

  it("documents only functions that exist", function()
    -- Calls written as `prefix:name(` / `prefix.name(` for the objects of the Lua layer.
    local tables = {}
    for _, m in ipairs(MODULES) do tables[m.prefix] = require(m.module) end
    local registry = debug.getregistry()
    local ticket = {}
    for k, v in pairs(registry["s2.core.ticket"].__index) do ticket[k] = v end
    tables.ticket = ticket
    local unknown, seen = {}, {}
    for prefix, t in pairs(tables) do
      for sep, name in docs:gmatch("%f[%w_.]" .. escape(prefix) .. "([%.:])([%a_][%w_]*)%s*%(") do
        local full = prefix .. sep .. name
        if not seen[full] and t[name] == nil then
          seen[full] = true
          unknown[#unknown + 1] = full
        end
      end
    end
    table.sort(unknown)
    assert.are.same({}, unknown, "docs/api.md calls functions that do not exist: "
      .. table.concat(unknown, ", "))
  end)

  it("covers the functions the API contract names", function()
    -- A fixed list, so that a function disappearing from the code is noticed too.
    local expected = {
      "s2.client(", "s2.fence(", "s2.trim(", "s2.metered_bytes(", "s2.is_error(",
      "s2.error.new(", "s2.error.is(",
      "client:basin(", "client:close(", "client:stats(", "client:create_basin(",
      "client:ensure_basin(", "client:delete_basin(", "client:list_basins(",
      "client:get_basin_config(", "client:reconfigure_basin(",
      "basin:stream(", "basin:create_stream(", "basin:ensure_stream(", "basin:delete_stream(",
      "basin:list_streams(", "basin:get_stream_config(", "basin:reconfigure_stream(",
      "stream:append(", "stream:read(", "stream:check_tail(", "stream:append_session(",
      "stream:producer(", "stream:read_session(",
      "session:submit(", "session:close(", "session:stats(",
      "producer:submit(", "producer:flush(", "producer:close(", "producer:stats(",
      "reader:next(", "reader:records(", "reader:is_caught_up(", "reader:wait_caught_up(",
      "reader:last_tail(",
      "reader:status(", "reader:close(",
      "ticket:ack(", "ticket:ready(", "ticket:result(",
    }
    local missing = {}
    for _, call in ipairs(expected) do
      if not docs:find(call, 1, true) then missing[#missing + 1] = call end
    end
    assert.are.same({}, missing)
  end)
end)
