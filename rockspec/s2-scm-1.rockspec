rockspec_format = "3.0"
package = "s2"
version = "scm-1"
-- For `luarocks make rockspec/s2-scm-1.rockspec` in a checkout, which builds the files there
-- and fetches nothing. There is no public repository yet (see README.md, "Install"); the
-- released sources come as a source rock, from rockspec/s2-0.1.0-1.rockspec (`make dist`).
source = {
  url = "s2-scm.tar.gz",
}
description = {
  summary = "Lua client for S2, the durable streams API",
  detailed = [[
    A C core (protobuf and S2S codecs, libcurl for unary calls, HTTP/2 sessions through
    nghttp2 and OpenSSL on one I/O thread per client, retries) with a small Lua layer: basin
    and stream management, single-batch appends, pipelined append sessions, a batching
    producer with per-record tickets, unary reads and read sessions that follow the tail.
    Never blocks an event loop: waits yield under OpenResty and cqueues, and under luv and
    copas through the adapters that ship. Includes the s2lua command.
  ]],
  homepage = "https://s2.dev",
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
external_dependencies = {
  -- No header check for curl: Debian keeps curl/curl.h in a multiarch include directory
  -- (/usr/include/x86_64-linux-gnu), where luarocks does not look; the compiler finds it.
  CURL = { library = "curl" },
  NGHTTP2 = { header = "nghttp2/nghttp2.h", library = "nghttp2" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
  ZSTD = { header = "zstd.h", library = "zstd" },
  ZLIB = { header = "zlib.h", library = "z" },
}
build = {
  type = "builtin",
  modules = {
    ["s2.core"] = {
      sources = {
        "csrc/s2_buf.c", "csrc/s2_json.c", "csrc/s2_error.c", "csrc/s2_proto.c", "csrc/s2_frame.c",
        "csrc/s2_endpoint.c", "csrc/s2_http.c", "csrc/s2_retry.c", "csrc/s2_session.c",
        "csrc/s2_producer.c", "csrc/s2_reader.c", "csrc/s2_sse.c", "csrc/s2_sse_parse.c",
        "csrc/s2_runtime.c", "csrc/s2_call.c", "csrc/s2_notice.c", "csrc/s2_events.c",
        "csrc/lua_s2.c", "csrc/lua_s2_conv.c", "csrc/lua_s2_codec.c", "csrc/lua_s2_client.c",
        "csrc/lua_s2_session.c", "csrc/lua_s2_producer.c", "csrc/lua_s2_ticket.c",
        "csrc/lua_s2_reader.c", "csrc/lua_s2_call.c",
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "curl", "nghttp2", "ssl", "crypto", "zstd", "z", "pthread" },
      incdirs = { "$(CURL_INCDIR)", "$(NGHTTP2_INCDIR)", "$(OPENSSL_INCDIR)", "$(ZSTD_INCDIR)", "$(ZLIB_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(NGHTTP2_LIBDIR)", "$(OPENSSL_LIBDIR)", "$(ZSTD_LIBDIR)", "$(ZLIB_LIBDIR)" },
    },
    ["s2"] = "lua/s2/init.lua",
    ["s2.error"] = "lua/s2/error.lua",
    ["s2.util"] = "lua/s2/util.lua",
    ["s2.client"] = "lua/s2/client.lua",
    ["s2.account"] = "lua/s2/account.lua",
    ["s2.basin"] = "lua/s2/basin.lua",
    ["s2.stream"] = "lua/s2/stream.lua",
    ["s2.session"] = "lua/s2/session.lua",
    ["s2.producer"] = "lua/s2/producer.lua",
    ["s2.reader"] = "lua/s2/reader.lua",
    ["s2.await"] = "lua/s2/await.lua",
    ["s2.events"] = "lua/s2/events.lua",
    ["s2.adapters.luv"] = "lua/s2/adapters/luv.lua",
    ["s2.adapters.copas"] = "lua/s2/adapters/copas.lua",
    ["s2.cli"] = "lua/s2/cli/init.lua",
    ["s2.cli.args"] = "lua/s2/cli/args.lua",
    ["s2.cli.format"] = "lua/s2/cli/format.lua",
    ["s2.cli.records"] = "lua/s2/cli/records.lua",
    ["s2.cli.manage"] = "lua/s2/cli/manage.lua",
  },
  install = {
    bin = { s2lua = "bin/s2lua" },
  },
}
-- `luarocks test`: the unit specs, which need no server (the "unit" task of .busted).
test = {
  type = "busted",
  flags = { "--run=unit" },
}
