-- Run by spec/regress/shared_ticket_fd_spec.lua under LuaJIT (Debian packages copas for Lua 5.1
-- only): several copas threads waiting at once on one fd. Prints one line per check; exits 1
-- on any failure.
--   1. the record tickets of one producer batch (one eventfd), one ticket twice, and tickets
--      of other batches: every thread resolves with its own seq_num;
--   2. an fd that the first thread woken drains (as every backpressure retry drains the
--      client's progress fd): the other threads on it must wake all the same.
package.path = "lua/?.lua;lua/?/init.lua;" .. package.path
package.cpath = "build-jit/?.so;" .. package.cpath
local copas = require "copas"
local ffi = require "ffi"
local s2 = require "s2"

local hook = require("s2.adapters.copas")(copas)
s2.set_scheduler(hook)
local client = s2.client()
local basin = assert(os.getenv("COPAS_BASIN"), "COPAS_BASIN")
local stream = client:basin(basin):stream("shared")
local ok = true

local function step_until(done, steps)
  for _ = 1, steps do -- copas 1.x's loop() never returns
    if done() then return true end
    copas.step(0.05)
  end
  return done()
end

-- 1. tickets
local producer = assert(stream:producer { linger = 0.2, max_batch_records = 4 })
local tickets = {}
for i = 1, 6 do tickets[i] = assert(producer:submit("r" .. i)) end -- batches of 4 and 2
local got, n = {}, 0
local function waiter(key, t)
  copas.addthread(function()
    local ack, err = t:ack(20)
    got[key] = ack and ack.seq_num or tostring(err)
    n = n + 1
  end)
end
for i = 1, 6 do waiter(i, tickets[i]) end
waiter("again", tickets[2])
local waited_all = n == 0 -- every thread was waiting (the batch lingers 0.2 s)
step_until(function() return n == 7 end, 400)
local line = {}
for i = 1, 6 do line[#line + 1] = tostring(got[i]) end
line[#line + 1] = "again=" .. tostring(got.again)
print("tickets " .. table.concat(line, " "))
ok = ok and waited_all and table.concat(line, " ") == "0 1 2 3 4 5 again=1"
assert(producer:close())

-- 2. a drained fd
ffi.cdef [[
int eventfd(unsigned int initval, int flags);
long read(int fd, void *buf, unsigned long count);
long write(int fd, const void *buf, unsigned long count);
int close(int fd);
]]
local EFD_NONBLOCK = 2048
local efd = ffi.C.eventfd(0, EFD_NONBLOCK)
assert(efd >= 0, "eventfd")
local value = ffi.new("uint64_t[1]")
local signalled = false
local shared = { -- a waitable like the backpressure waiter of s2.await
  ready = function() return signalled end,
  pollfd = function() return efd end,
  events = function() return "r" end,
  timeout = function() return nil end,
}
local woken = 0
for _ = 1, 3 do
  copas.addthread(function()
    assert(hook(shared, nil))
    woken = woken + 1
    ffi.C.read(efd, value, 8) -- the first one drains it, the way a retry does
  end)
end
copas.step(0) -- they all wait
signalled = true
value[0] = 1
ffi.C.write(efd, value, 8)
step_until(function() return woken == 3 end, 40) -- ready at once: 2 s is ample
ffi.C.close(efd)
print("drained fd woke " .. woken)
ok = ok and woken == 3

os.exit(ok and 0 or 1)
