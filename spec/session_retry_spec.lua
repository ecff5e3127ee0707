-- The per-session retry override (stream:producer / :append_session / :read_session
-- { retry = {...} }) and max_attempts = math.huge, against s2-lite behind the fault proxy:
-- an outage of OUTAGE seconds (connections cut, then refused) with 0.05..0.1 s backoff is
-- far more than the client's 3 attempts survive.
local H = require "helper"
local P = require "support.fault_proxy"

local OUTAGE = 2
local FOREVER = { max_attempts = math.huge, min_base_delay = 0.05, max_base_delay = 0.1 }

local must = H.must

local function sleep(s) os.execute(("sleep %g"):format(s)) end

describe("per-session retry override", function()
  local basin, proxy, client
  before_each(function()
    basin = basin or H.new_basin(H.client(), "retryov")
    proxy = P.start { target = H.endpoint():gsub("^http://", "") }
    -- the client's own settings: the default 3 attempts, short delays
    client = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                        retry = { min_base_delay = 0.05, max_base_delay = 0.1 } }
  end)
  after_each(function()
    if proxy then proxy:stop() end
  end)

  -- Connections cut and refused for OUTAGE seconds.
  local function outage()
    proxy:command("refuse on")
    proxy:command("cut_all")
    sleep(OUTAGE)
    proxy:command("refuse off")
  end

  local function read_back(name, n)
    local r = must(H.client():basin(basin.name):stream(name):read_session { seq_num = 0, count = n + 1, wait = 1 })
    local bodies = {}
    for rec in r:records() do bodies[#bodies + 1] = rec.body end
    return bodies
  end

  it("a producer with max_attempts = math.huge rides out the outage; each record acked once", function()
    local name = H.unique_name("prod")
    local stream = client:basin(basin.name):stream(name)
    local p = must(stream:producer { retry = FOREVER })
    local tickets = {}
    for i = 1, 100 do tickets[i] = must(p:submit("r" .. i)) end
    must(p:flush()) -- nothing in flight at the cut: a resend could not duplicate
    proxy:command("refuse on")
    proxy:command("cut_all")
    for i = 101, 200 do tickets[i] = must(p:submit("r" .. i)) end
    sleep(OUTAGE)
    proxy:command("refuse off")
    must(p:close())
    local seen = {}
    for i, t in ipairs(tickets) do
      local seq = must(t:seq_num(10))
      assert.is_nil(seen[seq], "seq_num " .. seq .. " acked twice")
      seen[seq] = i
    end
    local stats = p:stats()
    assert.is_true(stats.reconnects > 3, "reconnects " .. stats.reconnects)
    local bodies = read_back(name, 200)
    assert.are.equal(200, #bodies)
    for i = 1, 200 do assert.are.equal("r" .. i, bodies[i]) end
  end)

  it("the same producer without the override fails in that outage (the client's 3 attempts)", function()
    local stream = client:basin(basin.name):stream(H.unique_name("prod3"))
    local p = must(stream:producer())
    must(p:submit("first"))
    must(p:flush())
    proxy:command("refuse on")
    proxy:command("cut_all")
    local t = must(p:submit("second"))
    local ok, err = t:ack(OUTAGE + 5)
    proxy:command("refuse off")
    assert.is_nil(ok)
    assert.are.equal("connection_failed", err.code)
    assert.matches("after 3 attempts", err.message)
    p:close(1)
  end)

  it("an append session with the override rides out the outage too", function()
    local name = H.unique_name("sess")
    local s = must(client:basin(basin.name):stream(name):append_session { retry = FOREVER })
    must(must(s:submit { "a", "b" }):ack(5))
    proxy:command("refuse on")
    proxy:command("cut_all")
    local t = must(s:submit { "c" })
    sleep(OUTAGE)
    proxy:command("refuse off")
    local ack = must(t:ack(10))
    assert.are.equal(2, ack.start.seq_num)
    must(s:close())
    assert.are.same({ "a", "b", "c" }, read_back(name, 3))
  end)

  it("a read session with the override resumes after the outage, no gap, no duplicate", function()
    local name = H.unique_name("read")
    local direct = H.client():basin(basin.name):stream(name)
    must(direct:append { "r1", "r2", "r3", "r4", "r5" })
    local r = must(client:basin(basin.name):stream(name):read_session { seq_num = 0, retry = FOREVER })
    for i = 1, 5 do assert.are.equal("r" .. i, must(r:next(5)).body) end
    proxy:command("refuse on")
    proxy:command("cut_all")
    must(direct:append { "r6", "r7" })
    sleep(OUTAGE)
    proxy:command("refuse off")
    for i = 6, 7 do
      local rec = must(r:next(10))
      assert.are.equal(i - 1, rec.seq_num)
      assert.are.equal("r" .. i, rec.body)
    end
    assert.is_true(r:wait_caught_up(10))
    assert.is_true(r:status().reconnects > 3, "reconnects " .. r:status().reconnects)
    r:close()
  end)

  it("max_attempts = 1 on the session fails at the first cut, where the client's 3 resume", function()
    local name = H.unique_name("once")
    local direct = H.client():basin(basin.name):stream(name)
    must(direct:append { "a" })
    local st = client:basin(basin.name):stream(name)
    local once = must(st:read_session { seq_num = 0, retry = { max_attempts = 1 } })
    local default = must(st:read_session { seq_num = 0 })
    assert.are.equal("a", must(once:next(5)).body)
    assert.are.equal("a", must(default:next(5)).body)
    assert.is_true(once:wait_caught_up(5))
    assert.is_true(default:wait_caught_up(5))
    proxy:command("cut_all") -- one cut, no refusal: a retry reconnects at once
    must(direct:append { "b" })
    local rec, err = once:next(10)
    assert.is_nil(rec)
    assert.are.equal("connection_failed", err.code)
    assert.are.equal("b", must(default:next(10)).body)
    once:close()
    default:close()
  end)
end)
