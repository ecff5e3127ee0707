# s2 — Lua client for S2. See README.md.
#
#   make            build build/s2/core.so (Lua 5.4)
#   make deps       install what is missing for everything (Debian packages, s2-lite into
#                   ~/.cache); the same as make test-deps
#   make demo-deps  only what building and running the module and s2-lite need
#   make test       deps + build + the busted suite against a real s2-lite
#   make demo       demo-deps + build + examples/quickstart.lua against a real s2-lite
#                   (S2_LITE=/path/to/server: that binary; S2_ACCOUNT_ENDPOINT set: that server)
#   make examples   every example, the host guides' (docs/hosts/) and OpenResty's in nginx
#   make dist       build/dist/s2-VERSION-1.src.rock, the source rock (luarocks pack)
#   make bench-openresty   the module in real nginx under wrk (docs/benchmarks.md)
#   make install    install s2/core.so, s2/*.lua and bin/s2lua (DESTDIR, INST_PREFIX, INST_LIBDIR,
#                   INST_LUADIR, INST_BINDIR honoured)

LUA_VERSION ?= 5.4
LUA         ?= lua$(LUA_VERSION)
PKG_CONFIG  ?= pkg-config
LUA_PC      ?= lua$(LUA_VERSION)
BUILD       ?= build

CC      ?= cc
CFLAGS  ?= -O2 -g
WARN    ?= -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes -Wno-unused-parameter
ifeq ($(CI),true)
WARN    += -Werror
endif
LIBFLAG ?= -shared

DEP_PCS      = libcurl libnghttp2 openssl libzstd zlib
LUA_CFLAGS  := $(shell $(PKG_CONFIG) --cflags $(LUA_PC) 2>/dev/null)
DEP_CFLAGS  := $(shell $(PKG_CONFIG) --cflags $(DEP_PCS) 2>/dev/null)
DEP_LIBS    := $(shell $(PKG_CONFIG) --libs $(DEP_PCS) 2>/dev/null) -lpthread

override CFLAGS += -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden $(WARN) $(LUA_CFLAGS) $(DEP_CFLAGS)

CORE_SRCS = csrc/s2_buf.c csrc/s2_json.c csrc/s2_error.c csrc/s2_proto.c csrc/s2_frame.c csrc/s2_endpoint.c \
            csrc/s2_http.c csrc/s2_retry.c csrc/s2_session.c csrc/s2_producer.c csrc/s2_reader.c csrc/s2_sse.c csrc/s2_sse_parse.c \
            csrc/s2_runtime.c csrc/s2_call.c csrc/s2_notice.c csrc/s2_events.c
BIND_SRCS = csrc/lua_s2.c csrc/lua_s2_conv.c csrc/lua_s2_codec.c csrc/lua_s2_client.c csrc/lua_s2_session.c \
            csrc/lua_s2_producer.c csrc/lua_s2_ticket.c csrc/lua_s2_reader.c csrc/lua_s2_call.c
SRCS      = $(CORE_SRCS) $(BIND_SRCS)
OBJS      = $(SRCS:csrc/%.c=$(BUILD)/obj/%.o)
HEADERS   = $(wildcard csrc/*.h)
CORE_SO   = $(BUILD)/s2/core.so

INST_PREFIX ?= /usr/local
INST_LIBDIR ?= $(shell $(PKG_CONFIG) --variable=INSTALL_CMOD $(LUA_PC) 2>/dev/null || echo $(INST_PREFIX)/lib/lua/$(LUA_VERSION))
INST_BINDIR ?= $(INST_PREFIX)/bin
INST_LUADIR ?= $(shell $(PKG_CONFIG) --variable=INSTALL_LMOD $(LUA_PC) 2>/dev/null || echo $(INST_PREFIX)/share/lua/$(LUA_VERSION))

BUSTED   ?= $(LUA) /usr/bin/busted
WITH_S2  = scripts/with-s2-lite.sh
# Scripts run straight from the checkout.
IN_TREE  = LUA_PATH='lua/?.lua;lua/?/init.lua;;' LUA_CPATH='$(BUILD)/?.so;;'


.PHONY: all deps test-deps demo-deps dist test unit demo examples install clean asan bench-session bench-producer luajit compat bench fuzz soak history valgrind tsan bench-reader bench-openresty bench-scale

all: $(CORE_SO)

$(BUILD)/obj/%.o: csrc/%.c $(HEADERS)
	@mkdir -p $(dir $@)
	$(CC) $(CFLAGS) -c $< -o $@

$(CORE_SO): $(OBJS)
	@mkdir -p $(dir $@)
	$(CC) $(LIBFLAG) $(LDFLAGS) -o $@ $(OBJS) $(DEP_LIBS)

# Loopback TCP fault proxy for the specs (tools/fault_proxy.c; no project flags: it is a
# standalone program, not part of the module).
FAULT_PROXY ?= $(BUILD)/fault-proxy
$(FAULT_PROXY): tools/fault_proxy.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -pthread -o $@ $<

# LD_PRELOAD shim for specs: slow name lookups with chosen addresses (tools/dns_shim.c).
DNS_SHIM ?= $(BUILD)/dns-shim.so
$(DNS_SHIM): tools/dns_shim.c
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -O2 -shared -fPIC -o $@ $< -ldl

# The same sources for LuaJIT (Lua 5.1 ABI): what nginx's Lua module loads.
luajit:
	@$(MAKE) --no-print-directory LUA_PC=luajit BUILD=build-jit all

# Scriptable S2 test server for the specs (tools/fault_server.c + the core's codec sources).
FAULT_SERVER      ?= $(BUILD)/fault-server
FAULT_SERVER_SRCS  = tools/fault_server.c csrc/s2_buf.c csrc/s2_json.c csrc/s2_error.c csrc/s2_proto.c csrc/s2_frame.c
FAULT_SERVER_PCS   = libnghttp2 libzstd zlib
$(FAULT_SERVER): $(FAULT_SERVER_SRCS) csrc/s2.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -O2 -Icsrc \
	  $(shell $(PKG_CONFIG) --cflags $(FAULT_SERVER_PCS)) -o $@ $(FAULT_SERVER_SRCS) \
	  $(shell $(PKG_CONFIG) --libs $(FAULT_SERVER_PCS))

# Null S2 sink for benchmarks (tools/null_sink.c, the same codec sources): acks every batch at
# once and serves reads from generated streams, so only the client's cost is measured.
NULL_SINK      ?= $(BUILD)/null-sink
NULL_SINK_SRCS  = tools/null_sink.c csrc/s2_buf.c csrc/s2_json.c csrc/s2_error.c csrc/s2_proto.c csrc/s2_frame.c
$(NULL_SINK): $(NULL_SINK_SRCS) csrc/s2.h csrc/s2_internal.h
	@mkdir -p $(dir $@)
	$(CC) -std=c11 -D_GNU_SOURCE -Wall -Wextra -Werror -Wshadow -O2 -Icsrc \
	  $(shell $(PKG_CONFIG) --cflags $(FAULT_SERVER_PCS)) -o $@ $(NULL_SINK_SRCS) \
	  $(shell $(PKG_CONFIG) --libs $(FAULT_SERVER_PCS))

# Compile checks for the other Lua versions the C sources support.
compat:
	@$(MAKE) --no-print-directory LUA_PC=lua5.3 BUILD=build-5.3 all
	@$(MAKE) --no-print-directory LUA_PC=lua5.1 BUILD=build-5.1 all

deps test-deps:
	@scripts/deps.sh test

demo-deps:
	@scripts/deps.sh demo

# The whole suite runs against one in-memory s2-lite started (and stopped) by the wrapper;
# each spec file makes its own uniquely named basin.
# Also: the Lua 5.3 and 5.1 builds must compile, the rockspecs must build, pack, install (the
# source rock, into a clean tree) and load, `luarocks test` must pass, and every example must
# run (OpenResty's in nginx); then the spec suite, whose last line is "N passed, N failed".
test: deps
	@$(MAKE) --no-print-directory all $(FAULT_PROXY) $(FAULT_SERVER) $(NULL_SINK) $(DNS_SHIM) luajit compat
	@scripts/check-layers.sh $(BUILD)/obj
	@scripts/check-rockspec.sh
	@$(WITH_S2) env LUA=$(LUA) BUILD=$(BUILD) scripts/run-examples.sh
	@$(WITH_S2) $(BUSTED)

demo: demo-deps
	@$(MAKE) --no-print-directory all
	@env LUA=$(LUA) BUILD=$(BUILD) scripts/demo.sh

# The source rock of the release rockspec: the sources as a tarball beside the rockspec,
# packed with `luarocks pack` (scripts/dist.sh; no repository is fetched).
dist:
	@scripts/dist.sh $(BUILD)/dist

# The whole suite with AddressSanitizer + UBSan (the Lua interpreter is not instrumented,
# so libasan is preloaded).
ASAN_FLAGS = -O1 -g -fno-omit-frame-pointer -fsanitize=address,undefined -fno-sanitize-recover=undefined
asan: deps
	@$(MAKE) --no-print-directory BUILD=build-asan CFLAGS="$(ASAN_FLAGS)" LDFLAGS="-fsanitize=address,undefined" all
	@$(MAKE) --no-print-directory $(FAULT_PROXY) $(FAULT_SERVER) $(DNS_SHIM) luajit
	@$(WITH_S2) env LD_PRELOAD="$$($(CC) -print-file-name=libasan.so) $$($(CC) -print-file-name=libubsan.so)" \
	  ASAN_OPTIONS=detect_leaks=0:abort_on_error=1 $(BUSTED) --cpath='build-asan/?.so'

bench-session: deps
	@$(MAKE) --no-print-directory all
	@$(IN_TREE) $(WITH_S2) sh -c 'for s in 1024 128 8192; do RECORD_SIZE=$$s $(LUA) bench/session_throughput.lua; done'

# Issue 9: the Lua client beside the official SDKs (Go only with S2_GO_SDK_SRC) and a curl
# floor; writes docs/benchmarks.md and docs/benchmarks.png (about 15 minutes). A report is
# written even when a run failed (it lists the failures); the exit status says so. LuaJIT rows
# come from build-jit (built here).
bench: deps
	@$(MAKE) --no-print-directory all luajit
	@BUILD=$(BUILD) LUA=$(LUA) $(WITH_S2) bench/run_all.sh $(BUILD)/bench.jsonl; rc=$$?; \
	  python3 bench/report.py $(BUILD)/bench.jsonl && exit $$rc

# Issue 13: the module in real nginx (one worker) under wrk: unary append, per-worker producer,
# and a hand-written cosocket JSON POST; /ping latency alongside. Writes
# bench/results/openresty.json and the "OpenResty (one nginx worker)" section of
# docs/benchmarks.md (about 1-2 minutes; BENCH_SECONDS, CONNS, VARIANTS, ROUNDS: see
# bench/openresty/run.py). wrk comes from Debian, installed here when missing.
bench-openresty: deps
	@$(MAKE) --no-print-directory luajit
	@command -v wrk >/dev/null || { sudo=""; [ "$$(id -u)" -eq 0 ] || sudo=sudo; \
	  $$sudo apt-get update -q && DEBIAN_FRONTEND=noninteractive $$sudo apt-get install -y -q --no-install-recommends wrk; }
	@$(WITH_S2) python3 bench/openresty/run.py

# Issue 15, "Scale": 1000 append + 1000 read sessions on one client (bench/scale.lua), against
# the null sink and then s2-lite; one JSON line each (SCALE_ARGS: e.g. "--sessions 200").
bench-scale: deps
	@$(MAKE) --no-print-directory all $(NULL_SINK)
	@$(IN_TREE) BUILD=$(BUILD) bench/with_sink.sh $(LUA) bench/scale.lua $(SCALE_ARGS)
	@$(IN_TREE) $(WITH_S2) $(LUA) bench/scale.lua $(SCALE_ARGS)

bench-reader: deps
	@$(MAKE) --no-print-directory all
	@$(IN_TREE) $(WITH_S2) $(LUA) bench/reader_memory.lua

bench-producer: deps
	@$(MAKE) --no-print-directory all
	@$(IN_TREE) $(WITH_S2) sh -c 'for s in 100 8192; do RECORD_SIZE=$$s $(LUA) bench/producer_throughput.lua; done'

# Every examples/*.lua and examples/hosts/* (OpenResty's through real nginx, with the LuaJIT
# build) against a fresh s2-lite, one line each.
examples: deps
	@$(MAKE) --no-print-directory all luajit
	@$(WITH_S2) env LUA=$(LUA) BUILD=$(BUILD) scripts/run-examples.sh

# libFuzzer harnesses of the codecs (fuzz/), ASan+UBSan, FUZZ_SECONDS each, two at a time.
# FUZZ_RUNS=N also bounds executions. See docs/reliability.md.
FUZZ_SECONDS ?= 60
fuzz: deps
	@fuzz/run.sh $(FUZZ_SECONDS)

# Mixed-workload soak: producers, append sessions, fast and slow read sessions on one client,
# TLS through the shaped, cutting, stalling fault proxy; hash chains (soak/mixed.lua,
# SOAK_SECONDS, default 120). SOAK=chaos runs the older multi-client soak (soak/soak.lua).
SOAK ?= mixed
soak: deps
	@$(MAKE) --no-print-directory all $(FAULT_PROXY)
	@soak/run.sh $(SOAK)

# History check: concurrent clients (some through the cutting proxy) checked against a model of
# the stream (soak/history.lua, HIST_SECONDS, default 60).
history: deps
	@$(MAKE) --no-print-directory all $(FAULT_PROXY)
	@soak/run.sh history

# The suite under valgrind memcheck (Lua 5.4 build; definite leaks are errors).
valgrind: deps
	@$(MAKE) --no-print-directory all $(FAULT_PROXY) $(FAULT_SERVER) luajit
	@scripts/valgrind-suite.sh

# ThreadSanitizer build (build-tsan/) over the session/producer/reader/scheduler/fault specs.
tsan: deps
	@$(MAKE) --no-print-directory all $(FAULT_PROXY) $(FAULT_SERVER)
	@scripts/tsan-suite.sh

install: $(CORE_SO)
	install -d $(DESTDIR)$(INST_LIBDIR)/s2 $(DESTDIR)$(INST_LUADIR)/s2
	install -m 0755 $(CORE_SO) $(DESTDIR)$(INST_LIBDIR)/s2/core.so
	install -d $(DESTDIR)$(INST_LUADIR)/s2/adapters
	install -m 0644 lua/s2/*.lua $(DESTDIR)$(INST_LUADIR)/s2/
	install -m 0644 lua/s2/adapters/*.lua $(DESTDIR)$(INST_LUADIR)/s2/adapters/
	install -d $(DESTDIR)$(INST_LUADIR)/s2/cli
	install -m 0644 lua/s2/cli/*.lua $(DESTDIR)$(INST_LUADIR)/s2/cli/
	install -d $(DESTDIR)$(INST_BINDIR)
	install -m 0755 bin/s2lua $(DESTDIR)$(INST_BINDIR)/s2lua

clean:
	rm -rf $(BUILD)
