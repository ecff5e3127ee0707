-- Regression: an idempotent producer whose stream gets a record from another writer must
-- fail with seq_num_mismatch, not report its own record as durable at the intruder's
-- seq_num (the batch's first attempt was taken for a resend that had already landed).
local H = require "helper"

describe("idempotent producer with a second writer", function()
  it("fails clearly instead of acking a record that was never written", function()
    local client = H.client()
    local basin = H.new_basin(client, "intruder")
    local stream = H.new_stream(basin, "s")
    assert(stream:append({ "first" }))
    local producer = assert(stream:producer { idempotent = true, linger = 0.001 })
    assert(stream:append({ "intruder" })) -- breaks the single-writer rule
    local ack, err = producer:submit("mine"):ack(10)
    assert.is_nil(ack)
    assert.are.equal("seq_num_mismatch", err.code)
    assert.are.equal(2, err.expected_seq_num)
    local ok, cerr = producer:close()
    assert.is_nil(ok)
    assert.are.equal("seq_num_mismatch", cerr.code)
    local batch = assert(stream:read { seq_num = 0, count = 10 })
    assert.are.equal(2, #batch.records)
    assert.are.equal("intruder", batch.records[2].body)
  end)
end)
