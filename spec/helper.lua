-- Shared fixtures for the specs. Loaded by busted before every spec file (see .busted).
--
-- Integration specs talk to a real s2-lite that `make test` starts on a free loopback port
-- (scripts/with-s2-lite.sh) and names in S2_TEST_ENDPOINT. Each spec file makes its own
-- uniquely named basin, so files never see each other's streams.
local H = {}

local counter = 0
local run_id = ("%x%04x"):format(os.time() % 0xffffff, math.random(0, 0xffff))

function H.endpoint()
  local ep = os.getenv "S2_TEST_ENDPOINT"
  if not ep or ep == "" then
    error("S2_TEST_ENDPOINT is not set: run the specs with `make test`, which starts s2-lite", 2)
  end
  return ep
end

-- A client pointed at the test server. `opts` are merged over the defaults.
function H.client(opts)
  local s2 = require "s2"
  local cfg = {
    access_token = "ignored",
    account_endpoint = H.endpoint(),
    basin_endpoint = H.endpoint(),
  }
  for k, v in pairs(opts or {}) do cfg[k] = v end
  return s2.client(cfg)
end

-- A unique basin name (8..48 chars of [a-z0-9-]); `tag` is a short hint for logs.
function H.unique_name(tag)
  counter = counter + 1
  tag = (tag or "t"):lower():gsub("[^a-z0-9]", ""):sub(1, 12)
  if tag == "" then tag = "t" end
  return ("%s-%s-%d"):format(tag, run_id, counter)
end

-- Creates a fresh basin (streams auto-created on append and read unless `config` says
-- otherwise) and returns the basin object.
function H.new_basin(client, tag, config)
  local name = H.unique_name(tag or "basin")
  local cfg = config or { create_stream_on_append = true, create_stream_on_read = true }
  local _, err = client:create_basin(name, cfg)
  assert(not err, err and tostring(err))
  return client:basin(name), name
end

-- A fresh, explicitly created stream in `basin`.
function H.new_stream(basin, tag)
  local name = H.unique_name(tag or "stream")
  local _, err = basin:create_stream(name)
  assert(not err, err and tostring(err))
  return basin:stream(name), name
end

-- v, or an error naming err at the caller: for calls that must not fail (nil, err).
function H.must(v, err)
  if v == nil then error("unexpected failure: " .. tostring(err), 2) end
  return v
end

-- Polls pred() (for what the API offers no wait, e.g. "the I/O thread got the tail") every
-- 10 ms for up to `secs` (default 10); true once it held.
function H.eventually(pred, secs)
  local core = require "s2.core"
  local deadline = core.now() + (secs or 10)
  while core.now() < deadline do
    if pred() then return true end
    os.execute("sleep 0.01")
  end
  return pred() and true or false
end

-- Appends n records prefix..1 .. prefix..n (default prefix "r") through a producer.
function H.fill(stream, n, prefix)
  local p = assert(stream:producer())
  for i = 1, n do assert(p:submit((prefix or "r") .. i)) end
  assert(p:close())
end

package.loaded["helper"] = H
return H
