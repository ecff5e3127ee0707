-- Regression (issue 13, found by ThreadSanitizer): releasing a read session or an append
-- session dropped the caller's reference under the lock and then woke the I/O thread through
-- the session (`s->op.rt`) after the unlock — by then the I/O thread could have reaped and
-- freed the session (a finished reader, a closed session): a read of freed memory, and a
-- wake of a runtime whose last reference may have gone with it. The release now holds its
-- own runtime reference across the wake. Many sessions that finish at once and are released
-- right away race the I/O thread's reaping: `make tsan TSAN_SPECS=<this file>` reported the
-- race on the old code (data race: s2_read_session_release reading what s2_reader_op_free
-- freed) and reports nothing now. A plain or ASan run rarely hits the window.
local H = require "helper"

describe("releasing sessions the I/O thread is finishing (regress)", function()
  it("never touches a session after its reference is gone", function()
    local client = H.client()
    local basin = H.new_basin(client, "relrace")
    local stream = client:basin(basin.name):stream("s")
    assert(stream:append({ "only" }))
    for i = 1, 400 do
      local reader = assert(stream:read_session { seq_num = 0, count = 1 })
      local record = assert(reader:next(10), "reader " .. i .. " got no record")
      assert.are.equal("only", record.body)
      assert.is_nil(reader:next(10)) -- ended: the I/O thread finishes it now
      reader:close()                 -- and the release races its reaping
      local session = assert(stream:append_session())
      assert(session:close())        -- closed: reaped, while
      session = nil                  -- the collector releases the handle
      if i % 50 == 0 then collectgarbage() end
    end
    collectgarbage()
    assert.are.equal(1, assert(stream:check_tail()).seq_num)
    client:close()
  end)
end)
