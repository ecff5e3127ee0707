/* lua_s2_session.c — the append session userdata (s2.core.append_session): submit batches,
 * get a ticket per batch; close drains. Its close and stats serve the producer too. */
#include <string.h>

#include "lua_s2.h"

void s2l_opt_retry(lua_State *L, int idx, s2_retry_options *o) {
    memset(o, 0, sizeof *o);
    lua_getfield(L, idx, "retry");
    if (lua_istable(L, -1)) {
        int t = lua_gettop(L);
        double max = s2l_opt_number(L, t, "max_attempts", 3);
        if (!(max >= 1)) luaL_error(L, "retry.max_attempts: expected a number >= 1");
        o->max_attempts = max >= 1e9 ? S2_RETRY_FOREVER : (unsigned)max; /* math.huge */
        o->min_base_delay = s2l_opt_number(L, t, "min_base_delay", 0.1);
        o->max_base_delay = s2l_opt_number(L, t, "max_base_delay", 1);
        size_t len;
        const char *policy = s2l_opt_string(L, t, "append_retry_policy", &len);
        o->append_retry_policy = policy && strcmp(policy, "no_side_effects") == 0
                                     ? S2_RETRY_NO_SIDE_EFFECTS
                                     : S2_RETRY_ALL;
    }
    lua_pop(L, 1);
}

/* client:append_session(basin, stream, { max_inflight_bytes, max_inflight_batches,
 *                                        compression, http1, encryption_key, retry })
 *   -> session | nil, err */
int s2l_client_append_session(lua_State *L) {
    s2l_client *c = s2l_check_client(L);
    const char *basin = s2l_check_basin(L, 2);
    const char *stream = luaL_checkstring(L, 3);
    s2_session_options o = {0};
    if (lua_istable(L, 4)) {
        o.max_inflight_bytes = s2l_opt_size(L, 4, "max_inflight_bytes", 5u * 1024 * 1024);
        o.max_inflight_batches = s2l_opt_size(L, 4, "max_inflight_batches", 0);
        size_t len;
        const char *comp = s2l_opt_string(L, 4, "compression", &len);
        if (comp && strcmp(comp, "zstd") == 0) o.compression = S2_COMPRESSION_ZSTD;
        else if (comp && strcmp(comp, "gzip") == 0) o.compression = S2_COMPRESSION_GZIP;
        else if (comp && strcmp(comp, "none") != 0)
            return luaL_error(L, "compression: expected \"none\", \"zstd\" or \"gzip\"");
        lua_getfield(L, 4, "http1");
        o.http1 = lua_toboolean(L, -1);
        lua_pop(L, 1);
        o.encryption_key = s2l_opt_encryption_key(L, 4);
        s2l_opt_retry(L, 4, &o.retry);
    } else {
        o.max_inflight_bytes = 5u * 1024 * 1024;
    }
    s2_error err;
    s2_runtime *rt = s2l_client_runtime(c, &err);
    if (!rt) return s2l_fail(L, &err);
    s2l_session_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->s = NULL;
    luaL_setmetatable(L, SESSION_MT);
    lua_pushvalue(L, 1); /* the session keeps its client (and runtime) alive */
    lua_setiuservalue(L, -2, 1);
    u->s = s2_append_session_open(rt, basin, stream, &o, &err);
    if (!u->s) return s2l_fail(L, &err);
    return 1;
}

static s2l_session_ud *check_session(lua_State *L) {
    s2l_session_ud *u = luaL_checkudata(L, 1, SESSION_MT);
    if (!u->s) luaL_error(L, "append session is closed");
    s2l_check_owned(L, s2_append_session_owned(u->s));
    return u;
}

/* session:submit(records [, opts [, nowait]]) -> ticket | nil, err
 * With nowait: false instead of waiting when the session is full. */
static int l_session_submit(lua_State *L) {
    s2l_session_ud *u = check_session(L);
    lua_settop(L, 4);
    bool nowait = lua_toboolean(L, 4);
    s2_append_input in;
    s2l_check_append_input(L, 2, 3, &in);
    s2_ticket *t;
    s2_error err;
    if (s2_append_session_submit(u->s, &in, nowait ? 0 : -1, &t, &err) != 0)
        return s2l_submit_failed(L, &err, nowait);
    s2l_push_ticket(L, t); /* it keeps its session alive */
    return 1;
}

/* close([timeout]) of a session: drains, then ends. true | nil, err */
int s2l_close_session_of(lua_State *L, const char *mt) {
    s2l_session_ud *u = luaL_checkudata(L, 1, mt);
    if (!u->s) {
        lua_pushboolean(L, 1);
        return 1;
    }
    s2_error err;
    if (s2_append_session_close(u->s, s2l_opt_timeout(L, 2), &err) != 0) return s2l_fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* finished() -> whether close() would return at once (closed, failed, or released). */
int s2l_session_finished_of(lua_State *L, const char *mt) {
    s2l_session_ud *u = luaL_checkudata(L, 1, mt);
    lua_pushboolean(L, !u->s || !s2_append_session_owned(u->s) || s2_append_session_finished(u->s));
    return 1;
}

static int l_session_finished(lua_State *L) {
    return s2l_session_finished_of(L, SESSION_MT);
}

static int l_session_close(lua_State *L) {
    return s2l_close_session_of(L, SESSION_MT);
}

/* Pushes the stats table of an append session or a producer. */
int s2l_push_session_stats(lua_State *L, const s2_session_stats *stp) {
    s2_session_stats st = *stp;
    lua_createtable(L, 0, 9);
    s2l_set_int(L, "records_submitted", st.records_submitted);
    s2l_set_int(L, "inflight_bytes", st.inflight_bytes);
    s2l_set_int(L, "inflight_batches", st.inflight_batches);
    s2l_set_int(L, "peak_inflight_bytes", st.peak_inflight_bytes);
    s2l_set_int(L, "peak_inflight_batches", st.peak_inflight_batches);
    s2l_set_int(L, "batches_submitted", st.batches_submitted);
    s2l_set_int(L, "batches_acked", st.batches_acked);
    s2l_set_int(L, "batches_resent", st.batches_resent);
    s2l_set_int(L, "reconnects", st.reconnects);
    return 1;
}

static int l_session_stats(lua_State *L) {
    s2_session_stats st;
    s2_append_session_stats(check_session(L)->s, &st);
    return s2l_push_session_stats(L, &st);
}

static int l_session_gc(lua_State *L) {
    s2l_session_ud *u = luaL_checkudata(L, 1, SESSION_MT);
    if (u->s && s2_append_session_owned(u->s)) s2_append_session_release(u->s);
    u->s = NULL;
    return 0;
}

static const luaL_Reg session_methods[] = {
    {"submit", l_session_submit},
    {"close", l_session_close},
    {"finished", l_session_finished},
    {"stats", l_session_stats},
    {NULL, NULL},
};

void s2l_open_session(lua_State *L, int emt) {
    s2l_register_class(L, SESSION_MT, session_methods, emt, l_session_gc);
}
