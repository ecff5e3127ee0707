rockspec_format = "3.0"
package = "s2"
version = "scm-1"
source = {
  url = "git+https://github.com/s2-streamstore/s2-lua.git",
}
description = {
  summary = "Lua client for S2, the durable streams API",
  detailed = [[
    A C core (protobuf and S2S codecs, HTTP via libcurl and nghttp2, an I/O thread per
    client) with a small Lua layer: single-batch appends, reads, management, and (coming)
    append sessions, a batching producer and read sessions.
  ]],
  homepage = "https://s2.dev",
  license = "MIT",
}
dependencies = {
  "lua >= 5.1",
  "lua-cjson",
}
external_dependencies = {
  CURL = { library = "curl" },
  NGHTTP2 = { header = "nghttp2/nghttp2.h", library = "nghttp2" },
  OPENSSL = { header = "openssl/ssl.h", library = "ssl" },
}
build = {
  type = "builtin",
  modules = {
    ["s2.core"] = {
      sources = {
        "csrc/s2_buf.c", "csrc/s2_json.c", "csrc/s2_error.c", "csrc/s2_proto.c", "csrc/s2_frame.c",
        "csrc/s2_endpoint.c", "csrc/s2_http.c", "csrc/s2_retry.c", "csrc/s2_session.c", "csrc/s2_producer.c", "csrc/s2_reader.c", "csrc/s2_sse.c", "csrc/s2_sse_parse.c",
        "csrc/s2_runtime.c",
        "csrc/s2_call.c",
        "csrc/s2_notice.c",
        "csrc/s2_events.c",
        "csrc/lua_s2.c", "csrc/lua_s2_conv.c", "csrc/lua_s2_codec.c", "csrc/lua_s2_client.c",
        "csrc/lua_s2_session.c", "csrc/lua_s2_producer.c", "csrc/lua_s2_ticket.c", "csrc/lua_s2_reader.c",
        "csrc/lua_s2_call.c",
      },
      defines = { "_GNU_SOURCE" },
      libraries = { "curl", "nghttp2", "ssl", "crypto", "zstd", "z", "pthread" },
      incdirs = { "$(CURL_INCDIR)", "$(NGHTTP2_INCDIR)", "$(OPENSSL_INCDIR)" },
      libdirs = { "$(CURL_LIBDIR)", "$(NGHTTP2_LIBDIR)", "$(OPENSSL_LIBDIR)" },
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
