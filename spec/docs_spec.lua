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
      "reader:next(", "reader:next_batch(", "reader:next_columns(", "reader:records(", "reader:is_caught_up(", "reader:wait_caught_up(",
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

-- Documented options and error codes against the code. The option sets are what the code
-- accepts: each call is made with an unknown option, and its error lists the known ones
-- (util.check_options), so nothing here restates the code's lists.
local function known_options(call)
  local ok, err = pcall(call)
  assert(not ok, "an unknown option was accepted")
  local list = tostring(err):match("%(known: ([^)]*)%)")
  assert(list, "no list of known options in: " .. tostring(err))
  local set = {}
  for name in list:gmatch("[%a_][%w_]*") do set[name] = true end
  return set
end

local function keys(set)
  local t = {}
  for k in pairs(set) do t[#t + 1] = k end
  table.sort(t)
  return t
end

local function minus(a, b)
  local t = {}
  for k in pairs(a) do if not b[k] then t[#t + 1] = k end end
  table.sort(t)
  return t
end

-- The text of the section under a heading that starts with `heading` (to the next heading).
local function section(docs, heading)
  local start = docs:find("\n" .. heading, 1, true)
  assert(start, "docs/api.md has no heading " .. heading)
  local stop = docs:find("\n#", start + 1) or #docs
  return docs:sub(start, stop)
end

-- The first-column names of the `| option | default | |` table in a section.
local function option_rows(text)
  local set = {}
  local in_table = false
  for line in text:gmatch("[^\n]*") do
    if line:match("^|%s*option%s*|") then
      in_table = true
    elseif in_table and line:match("^|") then
      local name = line:match("^|%s*`([%a_][%w_]*)`")
      if name then set[name] = true end
    elseif in_table then
      break
    end
  end
  assert(next(set), "no option table in:\n" .. text:sub(1, 200))
  return set
end

-- Backticked identifiers in a piece of text.
local function ticked(text)
  local set = {}
  for name in text:gmatch("`([%a_][%w_]*)`") do set[name] = true end
  return set
end

local function slurp(path)
  local f = assert(io.open(ROOT .. "/" .. path, "r"))
  local s = f:read("a")
  f:close()
  return s
end

describe("docs/api.md against the code", function()
  local docs, s2, stream

  setup(function()
    docs = read_docs()
    s2 = require "s2"
    -- No I/O: option checks raise before anything is sent.
    local client = s2.client { access_token = "t", account_endpoint = "http://127.0.0.1:1",
      basin_endpoint = "http://127.0.0.1:1" }
    stream = client:basin("docs-basin"):stream("docs-stream")
  end)

  local function same_options(what, documented, code)
    assert.are.same({}, minus(documented, code), what .. ": documented in docs/api.md, unknown to the code")
    assert.are.same({}, minus(code, documented), what .. ": accepted by the code, not documented in docs/api.md")
  end

  it("documents exactly the client options the code takes (s2.client{...} and retry = {...})", function()
    local block = section(docs, "### Client options")
    local top, retry = {}, {}
    local in_retry = false
    for line in block:gmatch("[^\n]*") do
      local indent, name = line:match("^(%s+)([%a_][%w_]*)%s*=")
      if name and #indent == 6 then
        top[name] = true
        in_retry = name == "retry"
      elseif name and #indent == 8 and in_retry then
        retry[name] = true
      end
    end
    assert.is_true(top.access_token and retry.max_attempts and true or false, "could not read the options block")
    same_options("s2.client", top, known_options(function() return s2.client { access_token = "t", __probe = 1 } end))
    same_options("s2.client retry", retry,
      known_options(function() return s2.client { access_token = "t", retry = { __probe = 1 } } end))
  end)

  it("documents exactly the options of stream:append, stream:read and the sessions", function()
    local read_rows = option_rows(section(docs, "### `stream:read("))
    local cases = {
      { "stream:append", option_rows(section(docs, "### `stream:append(")),
        function() return stream:append({ "x" }, { __probe = 1 }) end },
      { "stream:read", read_rows, function() return stream:read { __probe = 1 } end },
      { "stream:append_session", option_rows(section(docs, "### Options of `stream:append_session")),
        function() return stream:append_session { __probe = 1 } end },
      { "stream:producer", option_rows(section(docs, "### Options of `stream:producer")),
        function() return stream:producer { __probe = 1 } end },
    }
    -- A read session takes "the start and stop options of stream:read" (named in its section)
    -- plus its own table.
    local rs = section(docs, "### Options of `stream:read_session")
    local rs_set = option_rows(rs)
    local inherited = ticked(rs:match("The start and stop options of `stream:read` (%b())") or "")
    assert.is_true(next(inherited) ~= nil, "the read session section no longer names the options of stream:read")
    for k in pairs(inherited) do rs_set[k] = true end
    cases[#cases + 1] = { "stream:read_session", rs_set, function() return stream:read_session { __probe = 1 } end }
    for _, c in ipairs(cases) do same_options(c[1], c[2], known_options(c[3])) end
  end)

  it("documents exactly the client-side error codes the core and the Lua layer produce", function()
    -- Produced: s2_fail(err, KIND, "code", ...) in csrc/, errors.new("code", ...) in lua/s2/.
    local produced = {}
    local files = {}
    for path in io.popen("cd '" .. ROOT .. "' && ls csrc/*.c lua/s2/*.lua lua/s2/adapters/*.lua"):lines() do
      files[#files + 1] = path
    end
    assert.is_true(#files > 10)
    for _, path in ipairs(files) do
      local src = slurp(path)
      for code in src:gmatch("s2_fail%([^,]+,%s*S2_E_[%u_]+,%s*\"([%w_]+)\"") do produced[code] = true end
      for code in src:gmatch("%.new%(\"([%w_]+)\"") do produced[code] = true end
    end
    local tbl = docs:match("%*%*Client codes:%*%*(.-)\n\n[^|]")
    assert(tbl, "no **Client codes:** table")
    local documented = {}
    for code in tbl:gmatch("\n|%s*`([%w_]+)`") do documented[code] = true end
    assert.are.same({}, minus(documented, produced), "client codes in docs/api.md that nothing produces")
    assert.are.same({}, minus(produced, documented), "client codes produced but not in docs/api.md's table")
  end)

  it("names only server codes of the core's table, and its retryable ones exactly", function()
    local src = slurp("csrc/s2_error.c")
    local table_src = src:match("code_table%[%]%s*=%s*(%b{})")
    assert(table_src, "csrc/s2_error.c has no code_table")
    local all, retryable = {}, {}
    for code, r in table_src:gmatch("{%s*\"([%w_]+)\"%s*,%s*(%a+)%s*,") do
      all[code] = true
      if r == "true" then retryable[code] = true end
    end
    assert.is_true(next(all) ~= nil)
    local passed = docs:match("%*%*Server codes are passed through%*%*(.-)\n\n")
    assert(passed, "no **Server codes are passed through** paragraph")
    local named = ticked(passed)
    named.code = nil -- "a body without a code"
    for k in pairs(named) do
      if k:match("^http_%d+$") then named[k] = nil end -- `http_<status>`, e.g. http_502
    end
    assert.are.same({}, minus(named, all), "server codes in docs/api.md that csrc/s2_error.c does not know")
    local classification = docs:match("Retry classification of server codes.-retryable are(.-);")
    assert(classification, "no retry classification paragraph")
    same_options("retryable server codes", ticked(classification), retryable)
  end)
end)
