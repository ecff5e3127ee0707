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
    s2l_producer_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->s = NULL;
    luaL_setmetatable(L, PRODUCER_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
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

/* producer:submit(record [, nowait]) -> record ticket | nil, err
 * With nowait: false instead of waiting when max_inflight_bytes is reached. */
static int l_producer_submit(lua_State *L) {
    s2l_producer_ud *u = check_producer(L);
    lua_settop(L, 3);
    bool nowait = lua_toboolean(L, 3);
    lua_pushvalue(L, 2); /* the record readers work on the top of the stack */
    size_t nh = s2l_scan_record(L, 0);
    lua_pop(L, 1);
    s2_header stack_hdrs[8];
    s2_header *hdrs = nh <= 8 ? stack_hdrs : lua_newuserdatauv(L, nh * sizeof *hdrs, 0);
    lua_pushvalue(L, 2);
    s2_record r;
    s2l_fill_record(L, 0, &r, hdrs);
    s2_ticket *t;
    uint32_t index;
    s2_error err;
    if (s2_producer_submit(u->s, &r, nowait ? 0 : -1, &t, &index, &err) != 0)
        return s2l_submit_failed(L, &err, nowait);
    s2l_push_ticket(L, t, true, index); /* it keeps its producer alive */
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
    s2l_push_ticket(L, t, false, 0);
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
    {"flush", l_producer_flush},
    {"flush_start", l_producer_flush_start},
    {"finished", l_producer_finished},
    {"close", l_producer_close},
    {"stats", l_producer_stats},
    {NULL, NULL},
};

void s2l_open_producer(lua_State *L, int emt) {
    s2l_register_class(L, PRODUCER_MT, producer_methods, emt, l_producer_gc);
}
