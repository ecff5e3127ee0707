-- Encrypted streams: a basin whose streams are encrypted with a key only the client holds.
-- Every append and read of the stream sends the key (the s2-encryption-key header); the key
-- never shows in errors or in what the stream prints.
local s2 = require "s2"

local function check(v, err)
  if v == nil then
    io.stderr:write("encryption.lua: ", tostring(err), "\n")
    os.exit(1)
  end
  return v
end

local client = s2.client()
math.randomseed(os.time())
local basin_name = ("ex-enc-%d-%04x"):format(os.time(), math.random(0, 0xffff))
-- stream_cipher: "aegis-256" or "aes-256-gcm"; new streams of the basin are encrypted.
check(client:create_basin(basin_name, { create_stream_on_append = true,
                                        stream_cipher = "aegis-256" }))

-- Keep the key somewhere safe (S2_ENCRYPTION_KEY here): without it nothing can be read back.
local key = os.getenv("S2_ENCRYPTION_KEY") or s2.new_encryption_key()
local stream = client:basin(basin_name):stream("secrets", { encryption_key = key })
print(tostring(stream))                      -- s2.stream(..., with an encryption key)

check(stream:append { "card 4111-1111", "card 5500-0000" })
for _, r in ipairs(check(stream:read { seq_num = 0, count = 10 }).records) do
  print(r.seq_num, r.body)
end

-- Without the key the server refuses: bad_header.
local _, err = client:basin(basin_name):stream("secrets"):read { seq_num = 0, count = 10 }
print("without the key: " .. tostring(err and err.code))
if not err or err.code ~= "bad_header" then os.exit(1) end

check(client:delete_basin(basin_name))
client:close()
