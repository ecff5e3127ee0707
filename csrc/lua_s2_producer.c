/* lua_s2_producer.c — the producer userdata (s2.core.producer): submit single records,
 * get a record ticket each; the core batches them (linger, size limits) on an append
 * session it owns. */
#include <string.h>

#include "lua_s2.h"

/* client:producer(basin, stream, { linger, max_batch_records, max_batch_bytes,
 *   max_inflight_bytes, idempotent, match_seq_num, fencing_token, compression, http1,
 *   encryption_key, retry })
 *   -> producer | nil, err  (options checked and defaulted by lua/s2/producer.lua) */
int s2l_client_producer(lua_State *L) {
    s2l_client *c = s2l_check_client(L);
    const char *basin = s2l_check_basin(L, 2);
    const char *stream = luaL_checkstring(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    s2_producer_options o;
    memset(&o, 0, sizeof o);
    o.session.max_inflight_bytes = s2l_opt_size(L, 4, "max_inflight_bytes", 5u * 1024 * 1024);
    size_t len;
    const char *comp = s2l_opt_string(L, 4, "compression", &len);
    if (comp && strcmp(comp, "zstd") == 0) o.session.compression = S2_COMPRESSION_ZSTD;
    else if (comp && strcmp(comp, "gzip") == 0) o.session.compression = S2_COMPRESSION_GZIP;
    lua_getfield(L, 4, "http1");
    o.session.http1 = lua_toboolean(L, -1);
    s2l_opt_retry(L, 4, &o.session.retry);
    lua_getfield(L, 4, "idempotent");
    o.idempotent = lua_toboolean(L, -1);
    lua_pop(L, 2);
    o.linger = s2l_opt_number(L, 4, "linger", 0.005);
    o.max_batch_records = s2l_opt_size(L, 4, "max_batch_records", S2_MAX_BATCH_RECORDS);
    o.max_batch_bytes = s2l_opt_size(L, 4, "max_batch_bytes", S2_MAX_BATCH_BYTES);
    o.has_match_seq_num = s2l_opt_u64(L, 4, "match_seq_num", "", &o.match_seq_num);
    o.fencing_token = s2l_opt_string(L, 4, "fencing_token", &o.fencing_token_len);
    o.session.encryption_key = s2l_opt_encryption_key(L, 4);
    s2_error err;
    s2_runtime *rt = s2l_client_runtime(c, &err);
    if (!rt) return s2l_fail(L, &err);
    s2l_producer_ud *u = lua_newuserdatauv(L, sizeof *u, 2);
    u->s = NULL;
    u->batch = NULL;
    luaL_setmetatable(L, PRODUCER_MT);
#if LUA_VERSION_NUM < 504
    /* User values 1 (the client) and 2 (the holder, see submit) in a table. */
    lua_createtable(L, 2, 0);
    lua_pushvalue(L, 1);
    lua_rawseti(L, -2, 1);
#if LUA_VERSION_NUM < 502
    lua_setfenv(L, -2);
#else
    lua_setuservalue(L, -2);
#endif
#else
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
#endif
    u->s = s2_producer_open(rt, basin, stream, &o, &err);
    if (!u->s) {
        if (err.kind == S2_E_INVALID) return luaL_error(L, "%s", err.message);
        return s2l_fail(L, &err);
    }
    return 1;
}

static s2l_producer_ud *check_producer(lua_State *L) {
    s2l_producer_ud *u = luaL_checkudata(L, 1, PRODUCER_MT);
    if (!u->s) luaL_error(L, "producer is closed");
    s2l_check_owned(L, s2_producer_owned(u->s));
    return u;
}

/* The producer's user value 2: the holder of the batch ticket its record tickets of the open
 * batch share (u->batch is that batch ticket's core ticket). */
static void push_holder(lua_State *L) {
#if LUA_VERSION_NUM < 502
    lua_getfenv(L, 1);
    lua_rawgeti(L, -1, 2);
    lua_remove(L, -2);
#elif LUA_VERSION_NUM < 504
    lua_getuservalue(L, 1);
    lua_rawgeti(L, -1, 2);
    lua_remove(L, -2);
#else
    lua_getiuservalue(L, 1, 2);
#endif
}

static void set_holder(lua_State *L) { /* pops it */
#if LUA_VERSION_NUM < 502
    lua_getfenv(L, 1);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 1);
#elif LUA_VERSION_NUM < 504
    lua_getuservalue(L, 1);
    lua_insert(L, -2);
    lua_rawseti(L, -2, 2);
    lua_pop(L, 1);
#else
    lua_setiuservalue(L, 1, 2);
#endif
}

/* Raises "<where>fn: msg", where being the position of the Lua code that called the method
 * through its Lua wrapper (lua/s2/producer.lua: level 2). */
static int raise_from(lua_State *L, const char *fn, const char *msg) {
    luaL_where(L, 2);
    lua_pushfstring(L, "%s: %s", fn, msg);
    lua_concat(L, 2);
    return lua_error(L);
}

/* Reads the record table at 1 into the s2_record at light userdata 2, headers into the
 * array at light userdata 3 (room for 8) or a userdata it returns; 4: its index in a records
 * array (0: a lone record), for the messages. Run protected. */
static int fill_table_record(lua_State *L) {
    s2_record *r = lua_touserdata(L, 2);
    s2_header *hdrs = lua_touserdata(L, 3);
    size_t i = (size_t)lua_tointeger(L, 4);
    lua_settop(L, 1);
    size_t nh = s2l_scan_record(L, i);
    if (nh > 8) {
        hdrs = lua_newuserdatauv(L, nh * sizeof *hdrs, 0);
        lua_pushvalue(L, 1);
    }
    s2l_fill_record(L, i, r, hdrs);
    lua_pop(L, 1);
    return nh > 8 ? 1 : 0;
}

/* Reads the record at idx (records[i] of an array, or a lone one: i = 0); raises
 * "fn: record..." when it is malformed. Leaves one value on the stack (scratch memory, or
 * nil). */
static void read_record(lua_State *L, int idx, size_t i, const char *fn, s2_record *r,
                        s2_header *hdrs) {
    if (lua_type(L, idx) == LUA_TSTRING) { /* the common case: no table to read */
        memset(r, 0, sizeof *r);
        r->body = (const uint8_t *)lua_tolstring(L, idx, &r->body_len);
        lua_pushnil(L);
        return;
    }
    lua_pushcfunction(L, fill_table_record);
    lua_pushvalue(L, idx);
    lua_pushlightuserdata(L, r);
    lua_pushlightuserdata(L, hdrs);
    lua_pushinteger(L, (lua_Integer)i);
    if (lua_pcall(L, 4, 1, 0) != 0) raise_from(L, fn, lua_tostring(L, -1));
}

/* producer:submit(record [, nowait]) -> record ticket | nil, err
 * With nowait: false instead of waiting when max_inflight_bytes is reached. Misuse raises
 * "producer:submit: ..." at the position of its caller's caller (the Lua wrapper's). */
static int l_producer_submit(lua_State *L) {
    /* upvalue 2: the producer metatable (no registry look-up per record) */
    s2l_producer_ud *u = lua_touserdata(L, 1);
    bool ok = false;
    if (u && lua_getmetatable(L, 1)) {
        ok = lua_rawequal(L, -1, lua_upvalueindex(2));
        lua_pop(L, 1);
    }
    if (!ok) u = luaL_checkudata(L, 1, PRODUCER_MT); /* raises the usual message */
    if (!u->s) raise_from(L, "producer:submit", "producer is closed");
    if (!s2_producer_owned(u->s))
        raise_from(L, "producer:submit", "this object was created in another process (before a "
                                         "fork); make a new client in this one");
    lua_settop(L, 3);
    bool nowait = lua_toboolean(L, 3);
    s2_header hdrs[8];
    s2_record r;
    read_record(L, 2, 0, "producer:submit", &r, hdrs);
    s2_ticket *t;
    uint32_t index;
    s2_error err;
    if (s2_producer_submit(u->s, &r, nowait ? 0 : -1, u->batch, &t, &index, &err) != 0) {
        if (err.kind == S2_E_INVALID) return raise_from(L, "producer:submit", err.message);
        return s2l_submit_failed(L, &err, nowait);
    }
    if (t == u->batch) {
        push_holder(L);
    } else { /* a new batch: its ticket (holding t's reference) becomes the shared one */
        s2l_push_ticket_holder(L, t); /* keeps the producer alive */
        lua_pushvalue(L, -1);
        set_holder(L);
        u->batch = t;
    }
    s2l_push_record_ticket(L, -1, index);
    return 1;
}

/* producer:check_records(records) -> n: raises "producer:submit_many: records[i]..." on the
 * first malformed record or one over max_batch_bytes; submits nothing. */
static int l_producer_check_records(lua_State *L) {
    check_producer(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t max = (size_t)luaL_checkinteger(L, 3);
    size_t n = lua_rawlen(L, 2);
    s2_header hdrs[8];
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i);
        s2_record r;
        int top = lua_gettop(L);
        read_record(L, top, i, "producer:submit_many", &r, hdrs);
        size_t m = s2_record_metered_bytes(&r);
        if (m > max) {
            lua_pushfstring(L, "records[%d]: %d metered bytes is over max_batch_bytes (%d)",
                            (int)i, (int)m, (int)max);
            raise_from(L, "producer:submit_many", lua_tostring(L, -1));
        }
        lua_settop(L, top - 1);
    }
    lua_pushinteger(L, (lua_Integer)n);
    return 1;
}

static int l_producer_flush(lua_State *L) {
    s2l_producer_ud *u = check_producer(L);
    s2_error err;
    if (s2_producer_flush(u->s, s2l_opt_timeout(L, 2), &err) != 0) return s2l_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* producer:flush_start() -> ticket (the last sealed batch's: settled when everything
 * submitted so far is) | true (nothing was ever sealed) | nil, err (the producer failed) */
static int l_producer_flush_start(lua_State *L) {
    s2l_producer_ud *u = check_producer(L);
    s2_ticket *t = NULL;
    s2_error err;
    if (s2_producer_flush_start(u->s, &t, &err) != 0) return s2l_fail(L, &err);
    if (!t) {
        lua_pushboolean(L, 1);
        return 1;
    }
    s2l_push_ticket(L, t);
    return 1;
}

/* finished() -> whether close() would return at once (closed, failed, or released). */
static int l_producer_finished(lua_State *L) {
    s2l_producer_ud *u = luaL_checkudata(L, 1, PRODUCER_MT);
    lua_pushboolean(L, !u->s || !s2_producer_owned(u->s) || s2_producer_finished(u->s));
    return 1;
}

/* close([timeout]): seals the open batch without an extra linger, drains, then ends. */
static int l_producer_close(lua_State *L) {
    s2l_producer_ud *u = luaL_checkudata(L, 1, PRODUCER_MT);
    if (!u->s) {
        lua_pushboolean(L, 1);
        return 1;
    }
    s2_error err;
    if (s2_producer_close(u->s, s2l_opt_timeout(L, 2), &err) != 0) return s2l_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_producer_stats(lua_State *L) {
    s2_session_stats st;
    s2_producer_stats(check_producer(L)->s, &st);
    return s2l_push_session_stats(L, &st);
}

static int l_producer_gc(lua_State *L) {
    s2l_producer_ud *u = luaL_checkudata(L, 1, PRODUCER_MT);
    if (u->s && s2_producer_owned(u->s)) s2_producer_release(u->s);
    u->s = NULL;
    return 0;
}

static const luaL_Reg producer_methods[] = {
    {"submit", l_producer_submit},
    {"check_records", l_producer_check_records},
    {"flush", l_producer_flush},
    {"flush_start", l_producer_flush_start},
    {"finished", l_producer_finished},
    {"close", l_producer_close},
    {"stats", l_producer_stats},
    {NULL, NULL},
};

void s2l_open_producer(lua_State *L, int emt) {
    s2l_register_class(L, PRODUCER_MT, producer_methods, emt, l_producer_gc);
    /* submit again, with the metatable as upvalue 2 */
    luaL_getmetatable(L, PRODUCER_MT);
    lua_getfield(L, -1, "__index");
    lua_pushvalue(L, emt);
    lua_pushvalue(L, -3);
    lua_pushcclosure(L, l_producer_submit, 2);
    lua_setfield(L, -2, "submit");
    lua_pop(L, 2);
}
