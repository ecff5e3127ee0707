/* lua_s2_reader.c — the read session userdata (s2.core.read_session): records one at a
 * time from a streaming read that reconnects where it left off. */
#include <string.h>

#include "lua_s2.h"

/* client:read_session(basin, stream, opts) -> reader | nil, err
 * opts: the read options (no 60 s cap on wait), ignore_command_records, compression, http1,
 *       encryption_key, retry */
int s2l_client_read_session(lua_State *L) {
    s2l_client *c = s2l_check_client(L);
    const char *basin = s2l_check_basin(L, 2);
    const char *stream = luaL_checkstring(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    s2l_read_opts o;
    s2l_check_read_opts(L, 4, &o, false);
    s2_read_options ro;
    memset(&ro, 0, sizeof ro);
    ro.start_kind = strcmp(o.start_key, "timestamp") == 0     ? S2_READ_TIMESTAMP
                    : strcmp(o.start_key, "tail_offset") == 0 ? S2_READ_TAIL_OFFSET
                                                              : S2_READ_SEQ_NUM;
    ro.start = o.start;
    ro.clamp = o.clamp;
    ro.has_count = o.has_count;
    ro.count = o.count;
    ro.has_bytes = o.has_bytes;
    ro.bytes = o.bytes;
    ro.has_until = o.has_until;
    ro.until = o.until;
    ro.has_wait = o.wait >= 0;
    ro.wait = o.wait;
    lua_getfield(L, 4, "ignore_command_records");
    ro.ignore_command_records = lua_toboolean(L, -1);
    lua_getfield(L, 4, "http1");
    ro.http1 = lua_toboolean(L, -1);
    lua_pop(L, 2);
    s2l_opt_retry(L, 4, &ro.retry);
    size_t len;
    const char *comp = s2l_opt_string(L, 4, "compression", &len);
    if (comp && strcmp(comp, "zstd") == 0) ro.compression = S2_COMPRESSION_ZSTD;
    else if (comp && strcmp(comp, "gzip") == 0) ro.compression = S2_COMPRESSION_GZIP;
    ro.encryption_key = s2l_opt_encryption_key(L, 4);
    s2_error err;
    s2_runtime *rt = s2l_client_runtime(c, &err);
    if (!rt) return s2l_fail(L, &err);
    s2l_reader_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->s = NULL;
    luaL_setmetatable(L, READER_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    u->s = s2_read_session_open(rt, basin, stream, &ro, &err);
    if (!u->s) return s2l_fail(L, &err);
    return 1;
}

static s2l_reader_ud *check_reader(lua_State *L) {
    s2l_reader_ud *u = luaL_checkudata(L, 1, READER_MT);
    if (!u->s) luaL_error(L, "read session is closed");
    s2l_check_owned(L, s2_read_session_owned(u->s));
    return u;
}

/* reader:next([timeout]) -> record | nil (a limit was reached) | nil, err */
static int l_reader_next(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    s2_sequenced_record r;
    s2_error err;
    int rc = s2_read_session_next(u->s, s2l_opt_timeout(L, 2), &r, &err);
    if (rc < 0) return s2l_fail(L, &err);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    s2l_push_record(L, &r);
    return 1;
}

/* Records are taken from the core CHUNK at most at a time, and one server batch at most at a
 * time: each call's are Lua tables before the next call (which frees the batch the previous
 * one drained). A list also ends once its records reach LIST_BYTES metered: megabytes of fresh
 * strings in one call (1000 records of 8 KiB) outgrow the cache and the collector's pace,
 * where a quarter MiB per call is reused as it frees the lists before. The first take is
 * FIRST_TAKE records; later ones are sized from the records seen so far. */
#define CHUNK 256
#define FIRST_TAKE 16
#define LIST_BYTES (256u * 1024u)

static lua_Integer check_max(lua_State *L, int idx, const char *fn) {
    if (lua_isnoneornil(L, idx)) return 1000;
    lua_Integer max = 0;
    if (lua_type(L, idx) == LUA_TNUMBER) {
        lua_Number v = lua_tonumber(L, idx);
        if (v >= 1 && v <= 1e15 && v == (lua_Number)(lua_Integer)v) max = (lua_Integer)v;
    }
    if (max < 1) luaL_error(L, "%s: max must be an integer >= 1 (got a %s)", fn,
                            luaL_typename(L, idx));
    return max;
}

/* How one call hands its records to Lua: a list of record tables (next_batch, take), or
 * columns (next_columns): one list per field, so a record costs its body string and no
 * table of its own. */
typedef enum { SHAPE_LIST, SHAPE_COLUMNS } batch_shape;

/* On the stack from `base`: the list, then the four keys (SHAPE_LIST); or the result, then
 * its seq_nums, timestamps, bodies and headers lists (SHAPE_COLUMNS). */
static void begin_shape(lua_State *L, batch_shape shape, size_t n) {
    if (shape == SHAPE_LIST) {
        lua_createtable(L, (int)n, 0); /* grows if more batches follow */
        s2l_push_record_keys(L);
        return;
    }
    lua_createtable(L, 0, 5);
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, (int)n, 0);
    lua_createtable(L, 0, 0); /* sparse: only records that have headers */
}

static void add_record(lua_State *L, batch_shape shape, int base, lua_Integer i,
                       const s2_sequenced_record *r) {
    if (shape == SHAPE_LIST) {
        s2l_push_record_k(L, base + 1, r);
        lua_rawseti(L, base, i);
        return;
    }
    lua_pushinteger(L, (lua_Integer)r->seq_num);
    lua_rawseti(L, base + 1, i);
    lua_pushinteger(L, (lua_Integer)r->timestamp);
    lua_rawseti(L, base + 2, i);
    lua_pushlstring(L, (const char *)r->body, r->body_len); /* straight from the frame */
    lua_rawseti(L, base + 3, i);
    if (r->num_headers) {
        s2l_push_headers(L, r->headers, r->num_headers);
        lua_rawseti(L, base + 4, i);
    }
}

/* Leaves only the list or the result (with its n) at `base`. */
static void end_shape(lua_State *L, batch_shape shape, int base, lua_Integer n) {
    if (shape == SHAPE_LIST) {
        lua_settop(L, base);
        return;
    }
    lua_setfield(L, base, "headers");
    lua_setfield(L, base, "bodies");
    lua_setfield(L, base, "timestamps");
    lua_setfield(L, base, "seq_nums");
    lua_pushinteger(L, n);
    lua_setfield(L, base, "n");
}

/* The records of one call: up to max, waiting up to timeout for the first (0: none). On
 * the stack: a list or columns (returns 1), or nil (ended), nil, err; or, with nowait and
 * nothing buffered, false. */
static int push_batch(lua_State *L, s2_read_session *s, lua_Integer max, double timeout,
                      bool nowait, batch_shape shape) {
    s2_sequenced_record recs[CHUNK];
    s2_error err;
    size_t n;
    size_t want = max < FIRST_TAKE ? (size_t)max : FIRST_TAKE;
    int rc = s2_read_session_next_batch(s, timeout, recs, want, &n, &err);
    if (rc == -2 && nowait) {
        lua_pushboolean(L, 0);
        return 1;
    }
    if (rc < 0) return s2l_fail(L, &err);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    int base = lua_gettop(L) + 1;
    begin_shape(L, shape, n);
    lua_Integer i = 0;
    size_t bytes = 0;
    for (;;) {
        for (size_t j = 0; j < n; j++) {
            add_record(L, shape, base, ++i, &recs[j]);
            bytes += s2_sequenced_record_metered_bytes(&recs[j]);
        }
        if (i >= max || bytes >= LIST_BYTES) break;
        size_t room = (LIST_BYTES - bytes) / (bytes / (size_t)i) + 1;
        want = max - i < CHUNK ? (size_t)(max - i) : CHUNK;
        if (room < want) want = room;
        /* More may be buffered: take it without waiting. A failure or the end found here
         * is sticky: the next call reports it. */
        if (s2_read_session_next_batch(s, 0, recs, want, &n, &err) != 1) break;
    }
    end_shape(L, shape, base, i);
    return 1;
}

/* reader:next_batch([max [, timeout]]) -> list of 1..max records | nil (a limit was
 * reached) | nil, err: waits (blocking this thread) only while none is buffered. */
static int l_reader_next_batch(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    lua_Integer max = check_max(L, 2, "reader:next_batch");
    return push_batch(L, u->s, max, s2l_opt_timeout(L, 3), false, SHAPE_LIST);
}

/* reader:next_columns([max [, timeout]]) -> { n, seq_nums, timestamps, bodies, headers } |
 * nil | nil, err: next_batch's records as columns. */
static int l_reader_next_columns(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    lua_Integer max = check_max(L, 2, "reader:next_columns");
    return push_batch(L, u->s, max, s2l_opt_timeout(L, 3), false, SHAPE_COLUMNS);
}

/* reader:take([max [, columns]]) -> never waits. Without max: a record; with it: a list of
 * 1..max records (columns: as next_columns). false when none is buffered; nil (ended);
 * nil, err. */
static int l_reader_take(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    if (!lua_isnoneornil(L, 2))
        return push_batch(L, u->s, check_max(L, 2, "reader:take"), 0, true,
                          lua_toboolean(L, 3) ? SHAPE_COLUMNS : SHAPE_LIST);
    s2_sequenced_record r;
    s2_error err;
    size_t n;
    int rc = s2_read_session_next_batch(u->s, 0, &r, 1, &n, &err);
    if (rc == -2) {
        lua_pushboolean(L, 0);
    } else if (rc < 0) {
        return s2l_fail(L, &err);
    } else if (rc == 0) {
        lua_pushnil(L);
    } else {
        s2l_push_record(L, &r);
    }
    return 1;
}

/* The waitable protocol (lua/s2/await.lua): ready() when next(0) would not time out. */
static int l_reader_ready(lua_State *L) {
    lua_pushboolean(L, s2_read_session_ready(check_reader(L)->s));
    return 1;
}

static int l_reader_pollfd(lua_State *L) {
    int fd = s2_read_session_fd(check_reader(L)->s);
    if (fd < 0) return luaL_error(L, "reader:pollfd: no eventfd available");
    lua_pushinteger(L, fd);
    return 1;
}

static int l_reader_events(lua_State *L) {
    check_reader(L);
    lua_pushliteral(L, "r");
    return 1;
}

static int l_reader_timeout(lua_State *L) {
    if (s2_read_session_ready(check_reader(L)->s)) lua_pushnumber(L, 0);
    else lua_pushnil(L);
    return 1;
}

static int l_reader_notice(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    return s2l_push_notice(L, s2_read_session_runtime(u->s), s2_read_session_notice(u->s));
}

/* The caught-up wait (lua/s2/reader.lua wait_caught_up). Argument 2: self_consumes (the
 * waiter is the one who takes records; see s2_read_session_caught_up_poll). */

/* reader:caught_up_poll(self_consumes) -> true | false (would wait) | nil, err */
static int l_reader_caught_up_poll(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    s2_error err;
    int rc = s2_read_session_caught_up_poll(u->s, lua_toboolean(L, 2), &err);
    if (rc < 0) return s2l_fail(L, &err);
    lua_pushboolean(L, rc > 0);
    return 1;
}

/* reader:wait_caught_up([timeout]) -> true | nil, err: blocks this thread (a plain script) */
static int l_reader_wait_caught_up(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    s2_error err;
    if (s2_read_session_wait_caught_up(u->s, s2l_opt_timeout(L, 2), &err) < 0)
        return s2l_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_reader_caught_up_fd(lua_State *L) {
    int fd = s2_read_session_caught_up_fd(check_reader(L)->s, lua_toboolean(L, 2));
    if (fd < 0) return luaL_error(L, "reader:caught_up_fd: no eventfd available");
    lua_pushinteger(L, fd);
    return 1;
}

static int l_reader_caught_up_notice(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    return s2l_push_notice(L, s2_read_session_runtime(u->s),
                           s2_read_session_caught_up_notice(u->s, lua_toboolean(L, 2)));
}

/* reader:status() -> { caught_up, tail, ended, delivered, reconnects, buffered_bytes } */
static int l_reader_status(lua_State *L) {
    s2l_reader_ud *u = check_reader(L);
    s2_read_status st;
    s2_read_session_status(u->s, &st);
    lua_createtable(L, 0, 5);
    lua_pushboolean(L, st.caught_up);
    lua_setfield(L, -2, "caught_up");
    lua_pushboolean(L, st.ended);
    lua_setfield(L, -2, "ended");
    s2l_set_int(L, "delivered", st.delivered);
    s2l_set_int(L, "reconnects", st.reconnects);
    s2l_set_int(L, "buffered_bytes", st.buffered_bytes);
    if (st.has_tail) {
        s2l_push_position(L, &st.tail);
        lua_setfield(L, -2, "tail");
    }
    return 1;
}

static int l_reader_close(lua_State *L) {
    s2l_reader_ud *u = luaL_checkudata(L, 1, READER_MT);
    if (u->s && !s2_read_session_owned(u->s)) u->s = NULL; /* the parent's: leave it alone */
    if (u->s) {
        s2_read_session_release(u->s);
        u->s = NULL;
    }
    return 0;
}

static const luaL_Reg reader_methods[] = {
    {"next", l_reader_next},
    {"next_batch", l_reader_next_batch},
    {"next_columns", l_reader_next_columns},
    {"take", l_reader_take},
    {"status", l_reader_status},
    {"ready", l_reader_ready},
    {"pollfd", l_reader_pollfd},
    {"events", l_reader_events},
    {"timeout", l_reader_timeout},
    {"notice", l_reader_notice},
    {"caught_up_poll", l_reader_caught_up_poll},
    {"wait_caught_up", l_reader_wait_caught_up},
    {"caught_up_fd", l_reader_caught_up_fd},
    {"caught_up_notice", l_reader_caught_up_notice},
    {"close", l_reader_close},
    {NULL, NULL},
};

void s2l_open_reader(lua_State *L, int emt) {
    s2l_register_class(L, READER_MT, reader_methods, emt, l_reader_close);
}
