-- Idempotent producers through the fault proxy: connections are cut while acks are on their
-- way back, so the client resends batches the server already wrote. With idempotent = true
-- the read-back has no duplicate and no gap; without it, the same run writes duplicates.
local H = require "helper"
local P = require "support.fault_proxy"

local must = H.must

local N = 100000

-- Writes N numbered records through the proxy; returns the producer's stats, the number
-- of failed tickets, and the read-back's duplicate and missing counts.
local function run(proxy, basin, direct, idempotent)
  local name = H.unique_name(idempotent and "idem" or "plain")
  local c = H.client { account_endpoint = proxy.endpoint, basin_endpoint = proxy.endpoint,
                       retry = { max_attempts = 50, min_base_delay = 0.005, max_base_delay = 0.02 } }
  local producer = must(c:basin(basin.name):stream(name):producer {
    idempotent = idempotent, max_inflight_bytes = 1024 * 1024, max_batch_records = 100 })
  local tickets = {}
  local pad = ("r"):rep(90)
  for i = 1, N do tickets[i] = must(producer:submit(("%08d"):format(i) .. pad)) end
  local flushed, ferr = producer:flush()
  assert(flushed, ferr and tostring(ferr))
  local failed = 0
  for i = 1, N do if not tickets[i]:result() then failed = failed + 1 end end
  local stats = producer:stats()
  must(producer:close())

  local stream = direct:basin(basin.name):stream(name)
  local tail = must(stream:check_tail()).seq_num
  local seen, dups, at = {}, 0, 0
  while at < tail do
    local batch = must(stream:read { seq_num = at, count = 1000 })
    for _, r in ipairs(batch.records) do
      local i = tonumber(r.body:sub(1, 8))
      if seen[i] then dups = dups + 1 end
      seen[i] = true
    end
    at = at + #batch.records
  end
  local missing = 0
  for i = 1, N do if not seen[i] then missing = missing + 1 end end
  -- every acked ticket's seq_num holds its own record
  return stats, failed, dups, missing, tail
end

describe("idempotent producer under connection cuts", function()
  local proxy, direct, basin
  lazy_setup(function()
    proxy = P.start { target = H.endpoint():gsub("^http://", "") }
    direct = H.client()
    basin = H.new_basin(direct, "pfaults")
  end)
  lazy_teardown(function() if proxy then proxy:stop() end end)

  it("writes every record exactly once", function()
    proxy:command("reset")
    proxy:command("cut_after_down 2000") -- each connection dies after ~2 KB of acks (~70 of 1000 batches)
    local stats, failed, dups, missing, tail = run(proxy, basin, direct, true)
    local cuts = proxy:stats().cuts
    print(("\n  idempotent: %d cuts, %d reconnects, %d batches resent, %d duplicates, %d missing")
      :format(cuts, stats.reconnects, stats.batches_resent, dups, missing))
    assert.is_true(cuts >= 5, "cuts " .. cuts)
    assert.is_true(stats.batches_resent > 0)
    assert.are.equal(0, failed)
    assert.are.equal(0, dups)
    assert.are.equal(0, missing)
    assert.are.equal(N, tail)
  end)

  it("without idempotent, the same run writes duplicates (and still loses nothing)", function()
    proxy:command("reset")
    proxy:command("cut_after_down 2000")
    local stats, failed, dups, missing = run(proxy, basin, direct, false)
    print(("\n  plain: %d cuts, %d reconnects, %d batches resent, %d duplicates, %d missing")
      :format(proxy:stats().cuts, stats.reconnects, stats.batches_resent, dups, missing))
    assert.are.equal(0, failed)
    assert.are.equal(0, missing)
    assert.is_true(dups > 0, "cuts while acks were in flight duplicate batches")
  end)
end)
