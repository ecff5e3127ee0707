-- Regression: a client collected by the GC leaves its runtime to its own I/O thread, which
-- drains, stops, and frees it (s2_runtime.c free_orphan). That last step took the list of
-- live runtimes with a trylock ("if it is held, the process is exiting"), but the list is
-- also held briefly by any other runtime being made, freed, or ending the same way: when
-- clients were collected together, some lost that race and their runtimes were never freed
-- (epoll fd, wake eventfd, kept-alive connections and all the memory: seen here as fds
-- left open after every I/O thread had ended).
local H = require "helper"
local socket = require "socket"

local function count(dir)
  local n = 0
  local p = assert(io.popen("ls " .. dir))
  for _ in p:lines() do n = n + 1 end
  p:close()
  return n
end

describe("clients collected together (regress)", function()
  it("free every runtime once their I/O threads end", function()
    collectgarbage()
    collectgarbage()
    local base_fds = count("/proc/self/fd")
    local base_tasks = count("/proc/self/task")
    -- New clients are made while the last round's threads end (each takes the list too).
    for _ = 1, 30 do
      local clients = {}
      for i = 1, 64 do
        clients[i] = H.client { drain_timeout = 0 }
        assert(clients[i]:list_basins()) -- its I/O thread is running
      end
      clients = nil
      collectgarbage()
      collectgarbage()
    end
    -- Each orphaned runtime's thread ends on its own: wait for them all to be gone.
    for _ = 1, 500 do
      if count("/proc/self/task") <= base_tasks then break end
      socket.sleep(0.02)
    end
    assert.is_true(count("/proc/self/task") <= base_tasks, "I/O threads still running")
    local fds = count("/proc/self/fd")
    assert.is_true(fds <= base_fds, ("%d fds left open (%d before)"):format(fds, base_fds))
  end)
end)
