/* lua_s2_conv.c — conversions of the binding: Lua arguments to core structs and core results
 * to Lua tables, error objects, and the argument checks the classes share.
 *
 * Core structs point into Lua strings, which stay anchored on the stack during a call.
 * Scratch memory is Lua userdata, so an error raised half-way through a conversion leaks
 * nothing. Misuse raises an error naming the argument and the limit. */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "lua_s2.h"

/* The error metatable: upvalue 1 of every function of the module and every method. */
#define ERROR_MT lua_upvalueindex(1)

/* ---- errors ----------------------------------------------------------------------------- */

void s2l_set_int(lua_State *L, const char *k, uint64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

void s2l_push_position(lua_State *L, const s2_position *pos) {
    lua_createtable(L, 0, 2);
    s2l_set_int(L, "seq_num", pos->seq_num);
    s2l_set_int(L, "timestamp", pos->timestamp);
}

/* Pushes an error object: { code, status, message, retryable, ... } with the error mt. */
void s2l_push_error(lua_State *L, const s2_error *err) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, err->code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, err->message);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, err->retryable);
    lua_setfield(L, -2, "retryable");
    if (err->status) s2l_set_int(L, "status", (uint64_t)err->status);
    if (err->has_expected_seq_num) s2l_set_int(L, "expected_seq_num", err->expected_seq_num);
    if (err->has_expected_fencing_token) {
        lua_pushstring(L, err->expected_fencing_token);
        lua_setfield(L, -2, "expected_fencing_token");
    }
    if (err->has_tail) {
        s2l_push_position(L, &err->tail);
        lua_setfield(L, -2, "tail");
    }
    lua_pushvalue(L, ERROR_MT);
    lua_setmetatable(L, -2);
}

int s2l_fail(lua_State *L, const s2_error *err) {
    lua_pushnil(L);
    s2l_push_error(L, err);
    return 2;
}

/* ---- argument checks -------------------------------------------------------------------- */

static uint64_t check_u64_field(lua_State *L, int idx, const char *name) {
    if (!lua_isinteger(L, idx))
        luaL_error(L, "%s: expected a non-negative integer, got %s", name, luaL_typename(L, idx));
    lua_Integer v = lua_tointeger(L, idx);
    if (v < 0) luaL_error(L, "%s: must be >= 0, got %s", name, lua_tostring(L, idx));
    return (uint64_t)v;
}

/* Reads optional integer field k of the table at idx. */
bool s2l_opt_u64(lua_State *L, int idx, const char *k, const char *ctx, uint64_t *out) {
    lua_getfield(L, idx, k);
    bool present = !lua_isnil(L, -1);
    if (present) {
        char name[96];
        snprintf(name, sizeof name, "%s%s", ctx, k);
        *out = check_u64_field(L, -1, name);
    }
    lua_pop(L, 1);
    return present;
}

double s2l_opt_number(lua_State *L, int idx, const char *k, double dflt) {
    lua_getfield(L, idx, k);
    double v = dflt;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TNUMBER)
            luaL_error(L, "%s: expected a number, got %s", k, luaL_typename(L, -1));
        v = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

const char *s2l_opt_string(lua_State *L, int idx, const char *k, size_t *len) {
    lua_getfield(L, idx, k);
    const char *s = NULL;
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "%s: expected a string, got %s", k, luaL_typename(L, -1));
        s = lua_tolstring(L, -1, len); /* anchored by the table at idx */
    }
    lua_pop(L, 1);
    return s;
}

const char *s2l_opt_encryption_key(lua_State *L, int idx) {
    size_t len;
    const char *key = s2l_opt_string(L, idx, "encryption_key", &len);
    if (key && (strlen(key) != len || !s2_encryption_key_valid(key)))
        luaL_error(L, "encryption_key: must be 1 to %d characters of base64 (A-Z a-z 0-9 + / =)",
                   (int)S2_MAX_ENCRYPTION_KEY);
    return key;
}

s2_compression s2l_opt_compression(lua_State *L, int idx) {
    size_t len;
    const char *comp = s2l_opt_string(L, idx, "compression", &len);
    if (!comp || strcmp(comp, "none") == 0) return S2_COMPRESSION_NONE;
    if (strcmp(comp, "zstd") == 0) return S2_COMPRESSION_ZSTD;
    if (strcmp(comp, "gzip") == 0) return S2_COMPRESSION_GZIP;
    luaL_error(L, "compression: expected \"none\", \"zstd\" or \"gzip\"");
    return S2_COMPRESSION_NONE;
}

size_t s2l_opt_size(lua_State *L, int idx, const char *k, size_t dflt) {
    uint64_t v = dflt;
    s2l_opt_u64(L, idx, k, "", &v);
    return (size_t)v;
}

/* A timeout argument: nil waits forever; so does anything over a year (and inf). */
double s2l_opt_timeout(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return -1;
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "timeout: expected a number of seconds, got %s", luaL_typename(L, idx));
    double t = lua_tonumber(L, idx);
    if (t < 0 || t != t) luaL_error(L, "timeout: must be a number of seconds >= 0");
    return t > 31536000.0 ? -1 : t;
}

/* A submit that did not take: false when nowait found no room, an error raised for misuse
 * (a record over max_batch_bytes), else nil, err. */
int s2l_submit_failed(lua_State *L, const s2_error *err, bool nowait) {
    if (err->kind == S2_E_INVALID) return luaL_error(L, "%s", err->message);
    if (nowait && err->kind == S2_E_TIMEOUT) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return s2l_fail(L, err);
}

/* A basin name argument: it goes into a host name or a header, so it must follow S2's rule. */
const char *s2l_check_basin(lua_State *L, int idx) {
    const char *b = luaL_checkstring(L, idx);
    if (!s2_basin_name_valid(b))
        luaL_error(L, "basin: \"%s\" is not a basin name (8 to 48 of a-z, 0-9 and '-', "
                      "no '-' at either end)", b);
    return b;
}

/* A session made before a fork belongs to the parent: its thread does not exist here. */
void s2l_check_owned(lua_State *L, bool owned) {
    if (!owned)
        luaL_error(L, "this object was created in another process (before a fork); "
                      "make a new client in this one");
}

/* The options of a read (lua_s2.h), checked before anything is allocated. A unary read
 * caps wait at 60 s. */
void s2l_check_read_opts(lua_State *L, int idx, s2l_read_opts *o, bool unary) {
    static const char *const start_keys[] = {"seq_num", "timestamp", "tail_offset"};
    memset(o, 0, sizeof *o);
    o->start_key = "seq_num"; /* the SDKs' default start */
    int starts = 0;
    for (int i = 0; i < 3; i++) {
        if (s2l_opt_u64(L, idx, start_keys[i], "", &o->start)) {
            o->start_key = start_keys[i];
            starts++;
        }
    }
    if (starts > 1) luaL_error(L, "read: give at most one of seq_num, timestamp, tail_offset");
    o->has_count = s2l_opt_u64(L, idx, "count", "", &o->count);
    o->has_bytes = s2l_opt_u64(L, idx, "bytes", "", &o->bytes);
    o->has_until = s2l_opt_u64(L, idx, "until", "", &o->until);
    lua_getfield(L, idx, "clamp");
    o->clamp = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, idx, "wait");
    bool has_wait = !lua_isnil(L, -1);
    lua_pop(L, 1);
    o->wait = -1; /* not given */
    if (has_wait) {
        double w = s2l_opt_number(L, idx, "wait", 0);
        if (w < 0 || w != w) luaL_error(L, "wait: must be a number of seconds >= 0");
        double limit = unary ? 60 : 31536000.0;
        if (w > limit)
            luaL_error(L, "wait: %f seconds is over the limit of %s", w,
                       unary ? "60 for a unary read" : "31536000 (a year)");
        o->wait = w;
    }
}

/* ---- records: Lua -> core ----------------------------------------------------------------- */

/* Raises "records[i]<fmt...>" (or "record<fmt...>" for a lone record, i == 0). */
static int rec_error(lua_State *L, size_t i, const char *fmt, ...) {
    char label[32];
    if (i) snprintf(label, sizeof label, "records[%zu]", i);
    else snprintf(label, sizeof label, "record");
    va_list ap;
    va_start(ap, fmt);
    lua_pushstring(L, label);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

/* Counts the headers of record i (the value on top of the stack) and checks its shape. */
size_t s2l_scan_record(lua_State *L, size_t i) {
    int t = lua_type(L, -1);
    if (t == LUA_TSTRING) return 0;
    if (t != LUA_TTABLE)
        rec_error(L, i, ": expected a string or a record table, got %s", lua_typename(L, t));
    lua_pushnil(L);
    while (lua_next(L, -2)) {
        const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
        if (!k || (strcmp(k, "body") && strcmp(k, "headers") && strcmp(k, "timestamp")))
            rec_error(L, i, ": unknown field '%s' (expected body, headers, timestamp)",
                      k ? k : luaL_typename(L, -2));
        lua_pop(L, 1);
    }
    lua_getfield(L, -1, "headers");
    size_t n = 0;
    if (!lua_isnil(L, -1)) {
        if (!lua_istable(L, -1))
            rec_error(L, i, ".headers: expected a table of {name, value} pairs, got %s",
                      luaL_typename(L, -1));
        n = lua_rawlen(L, -1);
    }
    lua_pop(L, 1);
    return n;
}

void s2l_fill_record(lua_State *L, size_t i, s2_record *r, s2_header *hdrs) {
    memset(r, 0, sizeof *r);
    if (lua_type(L, -1) == LUA_TSTRING) {
        r->body = (const uint8_t *)lua_tolstring(L, -1, &r->body_len);
        return;
    }
    lua_getfield(L, -1, "body");
    if (!lua_isnil(L, -1)) {
        if (lua_type(L, -1) != LUA_TSTRING)
            rec_error(L, i, ".body: expected a string, got %s", luaL_typename(L, -1));
        r->body = (const uint8_t *)lua_tolstring(L, -1, &r->body_len);
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "timestamp");
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 0)
            rec_error(L, i, ".timestamp: expected a non-negative integer (milliseconds)");
        r->timestamp = (uint64_t)lua_tointeger(L, -1);
        r->has_timestamp = true;
    }
    lua_pop(L, 1);
    lua_getfield(L, -1, "headers");
    if (!lua_isnil(L, -1)) {
        size_t n = lua_rawlen(L, -1);
        for (size_t j = 0; j < n; j++) {
            lua_rawgeti(L, -1, (lua_Integer)j + 1);
            if (!lua_istable(L, -1) || lua_rawlen(L, -1) != 2)
                rec_error(L, i, ".headers[%d]: expected a {name, value} pair of strings",
                          (int)j + 1);
            lua_rawgeti(L, -1, 1);
            lua_rawgeti(L, -2, 2);
            if (lua_type(L, -2) != LUA_TSTRING || lua_type(L, -1) != LUA_TSTRING)
                rec_error(L, i, ".headers[%d]: name and value must be strings, got %s and %s",
                          (int)j + 1, luaL_typename(L, -2), luaL_typename(L, -1));
            hdrs[j].name = (const uint8_t *)lua_tolstring(L, -2, &hdrs[j].name_len);
            hdrs[j].value = (const uint8_t *)lua_tolstring(L, -1, &hdrs[j].value_len);
            lua_pop(L, 3);
        }
        r->headers = n ? hdrs : NULL;
        r->num_headers = n;
    }
    lua_pop(L, 1);
}

/* Reads the records table at idx and the append options table at opt_idx (may be none)
 * into *in. Scratch memory is a userdata pushed on the stack (left there). Raises on misuse,
 * including the batch limits. Returns the batch's metered size. */
size_t s2l_check_append_input(lua_State *L, int idx, int opt_idx, s2_append_input *in) {
    memset(in, 0, sizeof *in);
    luaL_checktype(L, idx, LUA_TTABLE);
    size_t n = lua_rawlen(L, idx);
    s2_error err;
    if (n == 0 || n > S2_MAX_BATCH_RECORDS) {
        s2_append_input probe = {.num_records = n};
        s2_append_input_validate(&probe, NULL, &err);
        luaL_error(L, "%s", err.message);
    }
    size_t nh = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        nh += s2l_scan_record(L, i);
        lua_pop(L, 1);
    }
    s2_record *recs = lua_newuserdatauv(L, n * sizeof *recs + nh * sizeof(s2_header), 0);
    s2_header *hdrs = (s2_header *)(recs + n);
    size_t used = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        s2l_fill_record(L, i, &recs[i - 1], hdrs + used);
        used += recs[i - 1].num_headers;
        lua_pop(L, 1);
    }
    in->records = recs;
    in->num_records = n;
    if (opt_idx && lua_istable(L, opt_idx)) {
        in->has_match_seq_num = s2l_opt_u64(L, opt_idx, "match_seq_num", "", &in->match_seq_num);
        in->fencing_token = s2l_opt_string(L, opt_idx, "fencing_token", &in->fencing_token_len);
    } else if (opt_idx && !lua_isnoneornil(L, opt_idx)) {
        luaL_error(L, "options: expected a table, got %s", luaL_typename(L, opt_idx));
    }
    size_t metered;
    if (s2_append_input_validate(in, &metered, &err) != 0) luaL_error(L, "%s", err.message);
    return metered;
}

/* ---- core -> Lua ------------------------------------------------------------------------ */

void s2l_push_headers(lua_State *L, const s2_header *h, size_t n) {
    lua_createtable(L, (int)n, 0);
    for (size_t j = 0; j < n; j++) {
        lua_createtable(L, 2, 0);
        lua_pushlstring(L, (const char *)h[j].name, h[j].name_len);
        lua_rawseti(L, -2, 1);
        lua_pushlstring(L, (const char *)h[j].value, h[j].value_len);
        lua_rawseti(L, -2, 2);
        lua_rawseti(L, -2, (lua_Integer)j + 1);
    }
}

void s2l_push_ack(lua_State *L, const s2_append_ack *ack) {
    lua_createtable(L, 0, 3);
    s2l_push_position(L, &ack->start);
    lua_setfield(L, -2, "start");
    s2l_push_position(L, &ack->end);
    lua_setfield(L, -2, "end");
    s2l_push_position(L, &ack->tail);
    lua_setfield(L, -2, "tail");
}

/* Record tables are made in bulk (a read session's batch, a unary page): the four keys are
 * pushed once, at keys .. keys+3, and each record table is filled with lua_rawset, which
 * looks no C string up (lua_setfield interns its key on every call). The shape is the same
 * as s2l_push_record's. */
void s2l_push_record_keys(lua_State *L) {
    lua_pushliteral(L, "seq_num");
    lua_pushliteral(L, "timestamp");
    lua_pushliteral(L, "headers");
    lua_pushliteral(L, "body");
}

void s2l_push_record_k(lua_State *L, int keys, const s2_sequenced_record *r) {
    lua_createtable(L, 0, 4);
    lua_pushvalue(L, keys);
    lua_pushinteger(L, (lua_Integer)r->seq_num);
    lua_rawset(L, -3);
    lua_pushvalue(L, keys + 1);
    lua_pushinteger(L, (lua_Integer)r->timestamp);
    lua_rawset(L, -3);
    lua_pushvalue(L, keys + 2);
    s2l_push_headers(L, r->headers, r->num_headers);
    lua_rawset(L, -3);
    lua_pushvalue(L, keys + 3);
    lua_pushlstring(L, (const char *)r->body, r->body_len); /* straight from the frame */
    lua_rawset(L, -3);
}

/* One record (reader:next): pushing the keys first would cost more than it saves. */
void s2l_push_record(lua_State *L, const s2_sequenced_record *r) {
    lua_createtable(L, 0, 4);
    s2l_set_int(L, "seq_num", r->seq_num);
    s2l_set_int(L, "timestamp", r->timestamp);
    s2l_push_headers(L, r->headers, r->num_headers);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, (const char *)r->body, r->body_len);
    lua_setfield(L, -2, "body");
}

void s2l_push_read_batch(lua_State *L, const s2_read_batch *b) {
    lua_createtable(L, 0, 2);
    s2l_push_record_keys(L);
    int keys = lua_gettop(L) - 3;
    lua_createtable(L, (int)b->num_records, 0);
    for (size_t i = 0; i < b->num_records; i++) {
        s2l_push_record_k(L, keys, &b->records[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_replace(L, keys); /* the list over the first key; the other three go */
    lua_pop(L, 3);
    lua_setfield(L, -2, "records");
    if (b->has_tail) {
        s2l_push_position(L, &b->tail);
        lua_setfield(L, -2, "tail");
    }
}

int s2l_push_notice(lua_State *L, s2_runtime *rt, uint64_t id) {
    s2_error err;
    char path[128];
    if (!id) {
        s2_fail(&err, S2_E_CONNECTION, "connection_failed", "no notice could be armed");
        return s2l_fail(L, &err);
    }
    if (s2_runtime_notice_path(rt, path, sizeof path, &err) != 0) return s2l_fail(L, &err);
    char hex[17];
    snprintf(hex, sizeof hex, "%016llx", (unsigned long long)id);
    lua_pushlstring(L, hex, 16);
    lua_pushstring(L, path);
    return 2;
}
