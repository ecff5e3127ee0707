/* lua_s2.c — the Lua binding of the C core: module `s2.core`.
 *
 * The only file that includes lua.h. It converts Lua values to core structs (pointing into
 * Lua strings, which stay anchored on the stack during a call) and core results back to
 * Lua tables. Misuse raises an error naming the argument and the limit; run-time failures
 * return nil plus an error object.
 *
 * State lives in upvalues, not globals: every function of the module and every method has
 * the error metatable as upvalue 1. Scratch memory is Lua userdata, so an error raised
 * half-way through a conversion leaks nothing. */
#include <dlfcn.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "compat.h"
#include "s2.h"
#include <unistd.h>

#define ERROR_MT lua_upvalueindex(1)
#define CLIENT_MT "s2.core.client"
#define SESSION_MT "s2.core.append_session"
#define TICKET_MT "s2.core.ticket"
#define PRODUCER_MT "s2.core.producer"
#define RECORD_TICKET_MT "s2.core.record_ticket"

/* ---- errors ----------------------------------------------------------------------------- */

static void set_int(lua_State *L, const char *k, uint64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static void push_position(lua_State *L, const s2_position *pos) {
    lua_createtable(L, 0, 2);
    set_int(L, "seq_num", pos->seq_num);
    set_int(L, "timestamp", pos->timestamp);
}

/* Pushes an error object: { code, status, message, retryable, ... } with the error mt. */
static void push_error(lua_State *L, const s2_error *err) {
    lua_createtable(L, 0, 6);
    lua_pushstring(L, err->code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, err->message);
    lua_setfield(L, -2, "message");
    lua_pushboolean(L, err->retryable);
    lua_setfield(L, -2, "retryable");
    if (err->status) set_int(L, "status", (uint64_t)err->status);
    if (err->has_expected_seq_num) set_int(L, "expected_seq_num", err->expected_seq_num);
    if (err->has_expected_fencing_token) {
        lua_pushstring(L, err->expected_fencing_token);
        lua_setfield(L, -2, "expected_fencing_token");
    }
    if (err->has_tail) {
        push_position(L, &err->tail);
        lua_setfield(L, -2, "tail");
    }
    lua_pushvalue(L, ERROR_MT);
    lua_setmetatable(L, -2);
}

static int fail(lua_State *L, const s2_error *err) {
    lua_pushnil(L);
    push_error(L, err);
    return 2;
}

/* One readable line: "code: message (HTTP status)". */
static int error_tostring(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "code");
    lua_getfield(L, 1, "message");
    lua_getfield(L, 1, "status");
    const char *code = lua_tostring(L, -3);
    const char *msg = lua_tostring(L, -2);
    if (lua_isnumber(L, -1))
        lua_pushfstring(L, "%s: %s (HTTP %d)", code ? code : "error", msg ? msg : "",
                        (int)lua_tointeger(L, -1));
    else
        lua_pushfstring(L, "%s: %s", code ? code : "error", msg ? msg : "");
    return 1;
}

static int error_concat(lua_State *L) {
    for (int i = 1; i <= 2; i++) {
        if (lua_type(L, i) == LUA_TTABLE) {
            lua_pushcfunction(L, error_tostring);
            lua_pushvalue(L, i);
            lua_call(L, 1, 1);
        } else {
            lua_pushvalue(L, i);
        }
    }
    lua_concat(L, 2);
    return 1;
}

/* ---- argument helpers ------------------------------------------------------------------- */

static uint64_t check_u64_field(lua_State *L, int idx, const char *name) {
    if (!lua_isinteger(L, idx))
        luaL_error(L, "%s: expected a non-negative integer, got %s", name, luaL_typename(L, idx));
    lua_Integer v = lua_tointeger(L, idx);
    if (v < 0) luaL_error(L, "%s: must be >= 0, got %s", name, lua_tostring(L, idx));
    return (uint64_t)v;
}

/* Reads optional integer field k of the table at idx. */
static bool opt_u64(lua_State *L, int idx, const char *k, const char *ctx, uint64_t *out) {
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

static double opt_number(lua_State *L, int idx, const char *k, double dflt) {
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

static const char *opt_string(lua_State *L, int idx, const char *k, size_t *len) {
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
static size_t scan_record(lua_State *L, size_t i) {
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

static void fill_record(lua_State *L, size_t i, s2_record *r, s2_header *hdrs) {
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
static size_t check_append_input(lua_State *L, int idx, int opt_idx, s2_append_input *in) {
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
        nh += scan_record(L, i);
        lua_pop(L, 1);
    }
    s2_record *recs = lua_newuserdatauv(L, n * sizeof *recs + nh * sizeof(s2_header), 0);
    s2_header *hdrs = (s2_header *)(recs + n);
    size_t used = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, idx, (lua_Integer)i);
        fill_record(L, i, &recs[i - 1], hdrs + used);
        used += recs[i - 1].num_headers;
        lua_pop(L, 1);
    }
    in->records = recs;
    in->num_records = n;
    if (opt_idx && lua_istable(L, opt_idx)) {
        in->has_match_seq_num = opt_u64(L, opt_idx, "match_seq_num", "", &in->match_seq_num);
        in->fencing_token = opt_string(L, opt_idx, "fencing_token", &in->fencing_token_len);
    } else if (opt_idx && !lua_isnoneornil(L, opt_idx)) {
        luaL_error(L, "options: expected a table, got %s", luaL_typename(L, opt_idx));
    }
    size_t metered;
    if (s2_append_input_validate(in, &metered, &err) != 0) luaL_error(L, "%s", err.message);
    return metered;
}

/* ---- core -> Lua ------------------------------------------------------------------------ */

static void push_headers(lua_State *L, const s2_header *h, size_t n) {
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

static void push_ack(lua_State *L, const s2_append_ack *ack) {
    lua_createtable(L, 0, 3);
    push_position(L, &ack->start);
    lua_setfield(L, -2, "start");
    push_position(L, &ack->end);
    lua_setfield(L, -2, "end");
    push_position(L, &ack->tail);
    lua_setfield(L, -2, "tail");
}

static void push_record(lua_State *L, const s2_sequenced_record *r) {
    lua_createtable(L, 0, 4);
    set_int(L, "seq_num", r->seq_num);
    set_int(L, "timestamp", r->timestamp);
    push_headers(L, r->headers, r->num_headers);
    lua_setfield(L, -2, "headers");
    lua_pushlstring(L, (const char *)r->body, r->body_len);
    lua_setfield(L, -2, "body");
}

static void push_read_batch(lua_State *L, const s2_read_batch *b) {
    lua_createtable(L, 0, 2);
    lua_createtable(L, (int)b->num_records, 0);
    for (size_t i = 0; i < b->num_records; i++) {
        push_record(L, &b->records[i]);
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_setfield(L, -2, "records");
    if (b->has_tail) {
        push_position(L, &b->tail);
        lua_setfield(L, -2, "tail");
    }
}

/* ---- codec functions (s2.core.*) ---------------------------------------------------------- */

static int l_metered_bytes(lua_State *L) {
    lua_settop(L, 1);
    size_t nh = scan_record(L, 0);
    s2_header *hdrs = lua_newuserdatauv(L, (nh ? nh : 1) * sizeof *hdrs, 0);
    lua_pushvalue(L, 1);
    s2_record r;
    fill_record(L, 0, &r, hdrs);
    lua_pushinteger(L, (lua_Integer)s2_record_metered_bytes(&r));
    return 1;
}

static int l_encode_append_input(lua_State *L) {
    lua_settop(L, 2);
    s2_append_input in;
    check_append_input(L, 1, 2, &in);
    size_t len = s2_append_input_encoded_len(&in);
    uint8_t *out = lua_newuserdatauv(L, len ? len : 1, 0);
    s2_append_input_encode(&in, out);
    lua_pushlstring(L, (const char *)out, len);
    return 1;
}

static int l_decode_append_input(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    s2_append_input in;
    s2_error err;
    if (s2_append_input_decode(p, len, &in, &err) != 0) return fail(L, &err);
    lua_createtable(L, (int)in.num_records, 0);
    for (size_t i = 0; i < in.num_records; i++) {
        const s2_record *r = &in.records[i];
        lua_createtable(L, 0, 3);
        if (r->has_timestamp) set_int(L, "timestamp", r->timestamp);
        push_headers(L, r->headers, r->num_headers);
        lua_setfield(L, -2, "headers");
        lua_pushlstring(L, (const char *)r->body, r->body_len);
        lua_setfield(L, -2, "body");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_createtable(L, 0, 2);
    if (in.has_match_seq_num) set_int(L, "match_seq_num", in.match_seq_num);
    if (in.fencing_token) {
        lua_pushlstring(L, in.fencing_token, in.fencing_token_len);
        lua_setfield(L, -2, "fencing_token");
    }
    s2_append_input_free(&in);
    return 2;
}

static void check_position(lua_State *L, int idx, const char *k, s2_position *pos) {
    lua_getfield(L, idx, k);
    memset(pos, 0, sizeof *pos);
    if (lua_istable(L, -1)) {
        char ctx[32];
        snprintf(ctx, sizeof ctx, "%s.", k);
        opt_u64(L, -1, "seq_num", ctx, &pos->seq_num);
        opt_u64(L, -1, "timestamp", ctx, &pos->timestamp);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "%s: expected a {seq_num, timestamp} table", k);
    }
    lua_pop(L, 1);
}

static int l_encode_append_ack(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    s2_append_ack ack;
    check_position(L, 1, "start", &ack.start);
    check_position(L, 1, "end", &ack.end);
    check_position(L, 1, "tail", &ack.tail);
    uint8_t out[S2_APPEND_ACK_MAX_LEN];
    size_t n = s2_append_ack_encode(&ack, out);
    lua_pushlstring(L, (const char *)out, n);
    return 1;
}

static int l_decode_append_ack(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    s2_append_ack ack;
    s2_error err;
    if (s2_append_ack_decode(p, len, &ack, &err) != 0) return fail(L, &err);
    push_ack(L, &ack);
    return 1;
}

/* encode_read_batch{ records = { {seq_num=, timestamp=, headers=, body=}, ... }, tail = } */
static int l_encode_read_batch(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_getfield(L, 1, "records");
    int ridx = lua_gettop(L);
    size_t n = lua_istable(L, ridx) ? lua_rawlen(L, ridx) : 0;
    size_t nh = 0;
    for (size_t i = 1; i <= n; i++) {
        lua_rawgeti(L, ridx, (lua_Integer)i);
        luaL_checktype(L, -1, LUA_TTABLE);
        lua_getfield(L, -1, "headers");
        nh += lua_istable(L, -1) ? lua_rawlen(L, -1) : 0;
        lua_pop(L, 2);
    }
    s2_sequenced_record *recs =
        lua_newuserdatauv(L, (n ? n : 1) * sizeof *recs + nh * sizeof(s2_header), 0);
    s2_header *hdrs = (s2_header *)(recs + (n ? n : 1));
    size_t used = 0;
    for (size_t i = 1; i <= n; i++) {
        s2_sequenced_record *r = &recs[i - 1];
        lua_rawgeti(L, ridx, (lua_Integer)i);
        s2_record tmp; /* the append-record reader gives body and headers */
        fill_record(L, i, &tmp, hdrs + used);
        memset(r, 0, sizeof *r);
        opt_u64(L, -1, "seq_num", "", &r->seq_num);
        opt_u64(L, -1, "timestamp", "", &r->timestamp);
        r->body = tmp.body;
        r->body_len = tmp.body_len;
        r->headers = tmp.headers;
        r->num_headers = tmp.num_headers;
        used += tmp.num_headers;
        lua_pop(L, 1);
    }
    s2_read_batch b = {.records = recs, .num_records = n};
    lua_getfield(L, 1, "tail");
    if (!lua_isnil(L, -1)) {
        b.has_tail = true;
        check_position(L, 1, "tail", &b.tail);
    }
    lua_pop(L, 1);
    size_t len = s2_read_batch_encoded_len(&b);
    uint8_t *out = lua_newuserdatauv(L, len ? len : 1, 0);
    s2_read_batch_encode(&b, out);
    lua_pushlstring(L, (const char *)out, len);
    return 1;
}

static int l_decode_read_batch(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    s2_read_batch b;
    s2_error err;
    if (s2_read_batch_decode(p, len, &b, &err) != 0) return fail(L, &err);
    push_read_batch(L, &b);
    s2_read_batch_free(&b);
    return 1;
}

static int l_error_from_response(lua_State *L) {
    int status = (int)luaL_checkinteger(L, 1);
    size_t len;
    const char *body = luaL_optlstring(L, 2, "", &len);
    s2_error err;
    s2_error_from_response(&err, status, (const uint8_t *)body, len);
    push_error(L, &err);
    return 1;
}

static s2_compression check_compression(lua_State *L, int idx) {
    const char *c = luaL_optstring(L, idx, "none");
    if (strcmp(c, "zstd") == 0) return S2_COMPRESSION_ZSTD;
    if (strcmp(c, "gzip") == 0) return S2_COMPRESSION_GZIP;
    if (strcmp(c, "none") != 0) luaL_error(L, "compression: expected \"none\", \"zstd\" or \"gzip\"");
    return S2_COMPRESSION_NONE;
}

/* encode_frame(payload [, flags [, compression]]) -> bytes (flags: terminal 0x80 etc.) */
static int l_encode_frame(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    lua_Integer flags = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, flags >= 0 && flags <= 255, 2, "flags must be a byte");
    s2_compression c = check_compression(L, 3);
    s2_buf b;
    s2_buf_init(&b);
    s2_error err;
    if (s2_frame_encode(p, len, (uint8_t)flags, c, &b, &err) != 0) return fail(L, &err);
    lua_pushlstring(L, (const char *)b.data, b.len);
    s2_buf_free(&b);
    return 1;
}

/* decode_frames(bytes) -> { {terminal=, reconnect=, payload=, status=}, ... }, rest_len
 *   | nil, err   (rest_len: bytes of an incomplete last frame) */
static int l_decode_frames(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    s2_frame_decoder *d = lua_newuserdatauv(L, sizeof *d, 0); /* scratch: see below */
    s2_frame_decoder_init(d);
    s2_error err;
    if (s2_frame_feed(d, p, len, &err) != 0) {
        s2_frame_decoder_free(d);
        return fail(L, &err);
    }
    lua_newtable(L);
    s2_frame f;
    int rc, n = 0;
    /* Nothing below raises except on Lua OOM, so the decoder's buffers are freed below. */
    while ((rc = s2_frame_next(d, &f, &err)) > 0) {
        lua_createtable(L, 0, 4);
        lua_pushboolean(L, f.terminal);
        lua_setfield(L, -2, "terminal");
        lua_pushboolean(L, f.reconnect);
        lua_setfield(L, -2, "reconnect");
        lua_pushlstring(L, (const char *)f.payload, f.len);
        lua_setfield(L, -2, "payload");
        if (f.terminal) set_int(L, "status", (uint64_t)f.status);
        lua_rawseti(L, -2, ++n);
    }
    size_t rest = d->in.len - d->off;
    s2_frame_decoder_free(d);
    if (rc < 0) return fail(L, &err);
    lua_pushinteger(L, (lua_Integer)rest);
    return 2;
}

/* parse_endpoint(text) -> { https, host, port, path, basin_template } | nil, err */
static int l_parse_endpoint(lua_State *L) {
    s2_endpoint ep;
    s2_error err;
    if (s2_endpoint_parse(luaL_checkstring(L, 1), &ep, &err) != 0) return fail(L, &err);
    lua_createtable(L, 0, 5);
    lua_pushboolean(L, ep.https);
    lua_setfield(L, -2, "https");
    lua_pushboolean(L, ep.basin_template);
    lua_setfield(L, -2, "basin_template");
    lua_pushstring(L, ep.host);
    lua_setfield(L, -2, "host");
    set_int(L, "port", (uint64_t)ep.port);
    lua_pushstring(L, ep.path);
    lua_setfield(L, -2, "path");
    return 1;
}

/* backoff_delay(min_base, max_base, retry, retry_after_ms) -> seconds (for tests) */
static int l_backoff_delay(lua_State *L) {
    s2_config cfg;
    memset(&cfg, 0, sizeof cfg);
    cfg.min_base_delay = luaL_checknumber(L, 1);
    cfg.max_base_delay = luaL_checknumber(L, 2);
    lua_Integer retry = luaL_checkinteger(L, 3);
    lua_Integer after = luaL_optinteger(L, 4, 0);
    luaL_argcheck(L, retry >= 0 && after >= 0, 3, "must be >= 0");
    lua_pushnumber(L, s2_backoff_delay(&cfg, (unsigned)retry, (uint64_t)after));
    return 1;
}

/* now() -> monotonic seconds (benchmarks and deadlines) */
static int l_now(lua_State *L) {
    lua_pushnumber(L, s2_now());
    return 1;
}

static int l_random_token(lua_State *L) {
    char tok[33];
    if (s2_random_token(tok) != 0) return luaL_error(L, "no randomness available for a request token");
    lua_pushstring(L, tok);
    return 1;
}

/* ---- client ------------------------------------------------------------------------------ */

/* A client: unary calls run on the caller's thread (http); sessions on the runtime's I/O
 * thread, created with the first session. Both belong to the process that made them. */
typedef struct client_ud {
    s2_http *http;
    s2_runtime *rt;
    pid_t pid;
} client_ud;

/* A forked child must not use (or free) its parent's connections and thread: it leaves
 * them alone and starts its own on next use. */
static void client_after_fork(client_ud *c) {
    if (c->pid == s2_process_id()) return;
    if (c->http) {
        s2_error err;
        s2_http *fresh = s2_http_new(s2_http_config(c->http), &err);
        c->http = fresh; /* the parent's handle is abandoned, not freed: its sockets are shared */
    }
    c->rt = NULL;
    c->pid = s2_process_id();
}

static client_ud *check_client(lua_State *L) {
    client_ud *c = luaL_checkudata(L, 1, CLIENT_MT);
    client_after_fork(c);
    if (!c->http) luaL_error(L, "client is closed");
    return c;
}

static void check_endpoint(lua_State *L, int idx, const char *k, s2_endpoint *ep) {
    size_t len;
    const char *s = opt_string(L, idx, k, &len);
    if (!s) luaL_error(L, "%s: required", k);
    s2_error err;
    if (s2_endpoint_parse(s, ep, &err) != 0) luaL_error(L, "%s: %s", k, err.message);
}

/* core.client{ access_token, account_endpoint, basin_endpoint, request_timeout,
 *              connection_timeout, max_attempts, min_base_delay, max_base_delay,
 *              append_retry_policy, ca_file, drain_timeout } -- validated and defaulted
 * by lua/s2 (drain_timeout defaults to request_timeout) */
static int l_client(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    s2_config cfg;
    memset(&cfg, 0, sizeof cfg);
    size_t len;
    cfg.access_token = opt_string(L, 1, "access_token", &len);
    check_endpoint(L, 1, "account_endpoint", &cfg.account);
    check_endpoint(L, 1, "basin_endpoint", &cfg.basin);
    if (cfg.account.https != cfg.basin.https)
        luaL_error(L, "account_endpoint and basin_endpoint must use the same scheme");
    cfg.request_timeout = opt_number(L, 1, "request_timeout", 5);
    cfg.connection_timeout = opt_number(L, 1, "connection_timeout", 3);
    cfg.max_attempts = (unsigned)opt_number(L, 1, "max_attempts", 3);
    cfg.min_base_delay = opt_number(L, 1, "min_base_delay", 0.1);
    cfg.max_base_delay = opt_number(L, 1, "max_base_delay", 1);
    const char *policy = opt_string(L, 1, "append_retry_policy", &len);
    cfg.append_retry_policy = S2_RETRY_ALL;
    if (policy && strcmp(policy, "no_side_effects") == 0) cfg.append_retry_policy = S2_RETRY_NO_SIDE_EFFECTS;
    else if (policy && strcmp(policy, "all") != 0)
        luaL_error(L, "append_retry_policy: expected \"all\" or \"no_side_effects\", got \"%s\"", policy);
    cfg.ca_file = opt_string(L, 1, "ca_file", &len);
    cfg.drain_timeout = opt_number(L, 1, "drain_timeout", cfg.request_timeout);
    if (!(cfg.drain_timeout >= 0)) luaL_error(L, "drain_timeout: must be >= 0");

    client_ud *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->http = NULL;
    c->rt = NULL;
    c->pid = s2_process_id();
    luaL_setmetatable(L, CLIENT_MT);
    s2_error err;
    c->http = s2_http_new(&cfg, &err);
    if (!c->http) return fail(L, &err);
    return 1;
}

/* client:close(): ends every session (their tickets fail with "closed") and connection. */
static int l_client_close(lua_State *L) {
    client_ud *c = luaL_checkudata(L, 1, CLIENT_MT);
    client_after_fork(c);
    if (c->rt) s2_runtime_shutdown(c->rt);
    s2_http_free(c->http);
    c->http = NULL;
    return 0;
}

/* __gc (also at lua_close, when every object is finalized): usually nothing refers to the
 * client any more, nor to its sessions and tickets (they keep their client alive through
 * their user values, so they were finalized first and their sessions are draining). Unlike
 * close(), it lets what they submitted drain for up to drain_timeout, and what does not
 * make it is reported on stderr. Sessions finalized after it (an order lua_close does not
 * promise) still find their runtime: it lives until the last of them is released. */
static int l_client_gc(lua_State *L) {
    client_ud *c = luaL_checkudata(L, 1, CLIENT_MT);
    client_after_fork(c);
    if (c->rt) {
        s2_runtime_drain(c->rt, "the client was garbage-collected");
        s2_runtime_free(c->rt);
        c->rt = NULL;
    }
    s2_http_free(c->http);
    c->http = NULL;
    return 0;
}

/* A basin name argument: it goes into a host name or a header, so it must follow S2's rule. */
static const char *check_basin(lua_State *L, int idx) {
    const char *b = luaL_checkstring(L, idx);
    if (!s2_basin_name_valid(b))
        luaL_error(L, "basin: \"%s\" is not a basin name (8 to 48 of a-z, 0-9 and '-', "
                      "no '-' at either end)", b);
    return b;
}

/* Path "/streams/<encoded name>" + suffix. */
static void stream_path(lua_State *L, int idx, const char *suffix, s2_buf *path) {
    size_t n;
    const char *stream = luaL_checklstring(L, idx, &n);
    s2_buf_init(path);
    if (s2_buf_append_str(path, "/streams/") != 0 ||
        s2_buf_append_urlencoded(path, (const uint8_t *)stream, n) != 0 ||
        s2_buf_append_str(path, suffix) != 0) {
        s2_buf_free(path);
        luaL_error(L, "out of memory");
    }
}

/* Runs a call and copies the answer into Lua before anything can raise. Returns 0 with the
 * body pushed, or -1 with nil, err pushed. */
static int run_call(lua_State *L, client_ud *c, const s2_request *req, s2_response *resp) {
    s2_error err;
    int rc = s2_http_call(c->http, req, resp, &err);
    if (rc != 0) {
        s2_buf_free(&resp->body);
        fail(L, &err);
        return -1;
    }
    lua_pushlstring(L, resp->body.data ? (const char *)resp->body.data : "", resp->body.len);
    s2_buf_free(&resp->body);
    return 0;
}

/* client:append(basin, stream, records [, opts]) -> ack | nil, err */
static int l_client_append(lua_State *L) {
    client_ud *c = check_client(L);
    const char *basin = check_basin(L, 2);
    luaL_checkstring(L, 3);
    lua_settop(L, 5);
    s2_append_input in;
    check_append_input(L, 4, 5, &in);
    size_t len = s2_append_input_encoded_len(&in);
    uint8_t *body = lua_newuserdatauv(L, len ? len : 1, 0);
    s2_append_input_encode(&in, body);

    s2_buf path;
    stream_path(L, 3, "/records", &path);
    s2_request req = {
        .method = "POST",
        .basin = basin,
        .path = (const char *)path.data,
        .content_type = "application/protobuf",
        .accept = "application/protobuf",
        .body = body,
        .body_len = len,
        .kind = S2_CALL_APPEND,
    };
    s2_response resp;
    int rc = run_call(L, c, &req, &resp);
    s2_buf_free(&path);
    if (rc != 0) return 2;
    size_t n;
    const uint8_t *p = (const uint8_t *)lua_tolstring(L, -1, &n);
    s2_append_ack ack;
    s2_error err;
    if (s2_append_ack_decode(p, n, &ack, &err) != 0) return fail(L, &err);
    if (ack.end.seq_num - ack.start.seq_num != in.num_records) {
        s2_fail(&err, S2_E_PROTOCOL, "protocol_error",
                "ack covers %llu records, the batch had %zu",
                (unsigned long long)(ack.end.seq_num - ack.start.seq_num), in.num_records);
        return fail(L, &err);
    }
    push_ack(L, &ack);
    return 1;
}

/* The options of a read, checked before anything is allocated. */
typedef struct read_opts {
    const char *start_key; /* "seq_num", "timestamp" or "tail_offset" */
    uint64_t start;
    bool has_count, has_bytes, has_until, clamp;
    uint64_t count, bytes, until;
    double wait; /* < 0: not given */
} read_opts;

static void check_read_opts(lua_State *L, int idx, read_opts *o, bool unary) {
    static const char *const start_keys[] = {"seq_num", "timestamp", "tail_offset"};
    memset(o, 0, sizeof *o);
    o->start_key = "seq_num"; /* the SDKs' default start */
    int starts = 0;
    for (int i = 0; i < 3; i++) {
        if (opt_u64(L, idx, start_keys[i], "", &o->start)) {
            o->start_key = start_keys[i];
            starts++;
        }
    }
    if (starts > 1) luaL_error(L, "read: give at most one of seq_num, timestamp, tail_offset");
    o->has_count = opt_u64(L, idx, "count", "", &o->count);
    o->has_bytes = opt_u64(L, idx, "bytes", "", &o->bytes);
    o->has_until = opt_u64(L, idx, "until", "", &o->until);
    lua_getfield(L, idx, "clamp");
    o->clamp = lua_toboolean(L, -1);
    lua_pop(L, 1);
    lua_getfield(L, idx, "wait");
    bool has_wait = !lua_isnil(L, -1);
    lua_pop(L, 1);
    o->wait = -1; /* not given */
    if (has_wait) {
        double w = opt_number(L, idx, "wait", 0);
        if (w < 0 || w != w) luaL_error(L, "wait: must be a number of seconds >= 0");
        double limit = unary ? 60 : 31536000.0;
        if (w > limit)
            luaL_error(L, "wait: %f seconds is over the limit of %s", w,
                       unary ? "60 for a unary read" : "31536000 (a year)");
        o->wait = w;
    }
}

/* Appends the query string of o to path; -1 when out of memory. */
static int read_query(const read_opts *o, s2_buf *path) {
    char part[64];
    int rc = 0;
    snprintf(part, sizeof part, "?%s=%llu", o->start_key, (unsigned long long)o->start);
    rc |= s2_buf_append_str(path, part);
#define Q(flag, name, val)                                                                     \
    if (flag) {                                                                                \
        snprintf(part, sizeof part, "&" name "=%llu", (unsigned long long)(val));             \
        rc |= s2_buf_append_str(path, part);                                                   \
    }
    Q(o->has_count, "count", o->count)
    Q(o->has_bytes, "bytes", o->bytes)
    Q(o->has_until, "until", o->until)
    Q(o->wait >= 0, "wait", (uint64_t)ceil(o->wait))
#undef Q
    if (o->clamp) rc |= s2_buf_append_str(path, "&clamp=true");
    return rc ? -1 : 0;
}

/* client:read(basin, stream, opts) -> batch | nil, err
 * opts: seq_num | timestamp | tail_offset, clamp, count, bytes, until, wait (seconds) */
static int l_client_read(lua_State *L) {
    client_ud *c = check_client(L);
    const char *basin = check_basin(L, 2);
    luaL_checkstring(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    read_opts o;
    check_read_opts(L, 4, &o, true);

    s2_buf path;
    stream_path(L, 3, "/records", &path);
    if (read_query(&o, &path) != 0) {
        s2_buf_free(&path);
        return luaL_error(L, "out of memory");
    }
    s2_request req = {
        .method = "GET",
        .basin = basin,
        .path = (const char *)path.data,
        .accept = "application/protobuf",
        .kind = S2_CALL_IDEMPOTENT,
        .extra_timeout = o.wait > 0 ? ceil(o.wait) : 0,
    };
    s2_response resp;
    int rc = run_call(L, c, &req, &resp);
    s2_buf_free(&path);
    if (rc != 0) return 2;
    size_t n;
    const uint8_t *p = (const uint8_t *)lua_tolstring(L, -1, &n);
    s2_read_batch b;
    s2_error err;
    if (s2_read_batch_decode(p, n, &b, &err) != 0) return fail(L, &err);
    push_read_batch(L, &b);
    s2_read_batch_free(&b);
    return 1;
}

/* client:request{ method, basin?, path, body?, content_type?, accept?, request_token? }
 *   -> status, body, provision_result | nil, err   (management calls; JSON bodies) */
static int l_client_request(lua_State *L) {
    client_ud *c = check_client(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t len, blen = 0;
    s2_request req;
    memset(&req, 0, sizeof req);
    req.method = opt_string(L, 2, "method", &len);
    req.path = opt_string(L, 2, "path", &len);
    if (!req.method || !req.path) luaL_error(L, "request: method and path are required");
    req.basin = opt_string(L, 2, "basin", &len);
    if (req.basin && !s2_basin_name_valid(req.basin))
        luaL_error(L, "basin: \"%s\" is not a basin name (8 to 48 of a-z, 0-9 and '-', "
                      "no '-' at either end)", req.basin);
    req.body = (const uint8_t *)opt_string(L, 2, "body", &blen);
    req.body_len = blen;
    req.content_type = opt_string(L, 2, "content_type", &len);
    req.accept = opt_string(L, 2, "accept", &len);
    req.request_token = opt_string(L, 2, "request_token", &len);
    req.kind = S2_CALL_IDEMPOTENT;
    s2_response resp;
    if (run_call(L, c, &req, &resp) != 0) return 2;
    lua_pushinteger(L, resp.status);
    lua_insert(L, -2);
    if (resp.provision_result[0]) lua_pushstring(L, resp.provision_result);
    else lua_pushnil(L);
    return 3;
}

/* ---- append sessions and tickets --------------------------------------------------------- */

typedef struct session_ud {
    s2_append_session *s;
} session_ud;

typedef struct producer_ud {
    s2_producer *s;
} producer_ud;

typedef struct reader_ud {
    s2_read_session *s;
} reader_ud;

typedef struct ticket_ud {
    s2_ticket *t;
} ticket_ud;

/* A producer's record ticket: its batch's ticket and its place in the batch. */
typedef struct record_ticket_ud {
    s2_ticket *t;
    uint32_t index;
} record_ticket_ud;

static size_t opt_size(lua_State *L, int idx, const char *k, size_t dflt) {
    uint64_t v = dflt;
    opt_u64(L, idx, k, "", &v);
    return (size_t)v;
}

/* client:append_session(basin, stream, { max_inflight_bytes, max_inflight_batches,
 *                                        compression }) -> session | nil, err */
static int l_client_append_session(lua_State *L) {
    client_ud *c = check_client(L);
    const char *basin = check_basin(L, 2);
    const char *stream = luaL_checkstring(L, 3);
    s2_session_options o = {0};
    if (lua_istable(L, 4)) {
        o.max_inflight_bytes = opt_size(L, 4, "max_inflight_bytes", 5u * 1024 * 1024);
        o.max_inflight_batches = opt_size(L, 4, "max_inflight_batches", 0);
        size_t len;
        const char *comp = opt_string(L, 4, "compression", &len);
        if (comp && strcmp(comp, "zstd") == 0) o.compression = S2_COMPRESSION_ZSTD;
        else if (comp && strcmp(comp, "gzip") == 0) o.compression = S2_COMPRESSION_GZIP;
        else if (comp && strcmp(comp, "none") != 0)
            return luaL_error(L, "compression: expected \"none\", \"zstd\" or \"gzip\"");
        lua_getfield(L, 4, "http1");
        o.http1 = lua_toboolean(L, -1);
        lua_pop(L, 1);
    } else {
        o.max_inflight_bytes = 5u * 1024 * 1024;
    }
    s2_error err;
    if (!c->rt && !(c->rt = s2_runtime_new(s2_http_config(c->http), &err))) return fail(L, &err);
    session_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->s = NULL;
    luaL_setmetatable(L, SESSION_MT);
    lua_pushvalue(L, 1); /* the session keeps its client (and runtime) alive */
    lua_setiuservalue(L, -2, 1);
    u->s = s2_append_session_open(c->rt, basin, stream, &o, &err);
    if (!u->s) return fail(L, &err);
    return 1;
}

/* A session made before a fork belongs to the parent: its thread does not exist here. */
static void check_owned(lua_State *L, bool owned) {
    if (!owned)
        luaL_error(L, "this object was created in another process (before a fork); "
                      "make a new client in this one");
}

static void check_owner(lua_State *L, s2_append_session *s) {
    check_owned(L, s2_append_session_owned(s));
}

static session_ud *check_session(lua_State *L) {
    session_ud *u = luaL_checkudata(L, 1, SESSION_MT);
    if (!u->s) luaL_error(L, "append session is closed");
    check_owner(L, u->s);
    return u;
}

/* A timeout argument: nil waits forever; so does anything over a year (and inf). */
static double opt_timeout(lua_State *L, int idx) {
    if (lua_isnoneornil(L, idx)) return -1;
    if (lua_type(L, idx) != LUA_TNUMBER)
        luaL_error(L, "timeout: expected a number of seconds, got %s", luaL_typename(L, idx));
    double t = lua_tonumber(L, idx);
    if (t < 0 || t != t) luaL_error(L, "timeout: must be a number of seconds >= 0");
    return t > 31536000.0 ? -1 : t;
}

/* A submit that did not take: false when nowait found no room, an error raised for misuse
 * (a record over max_batch_bytes), else nil, err. */
static int submit_failed(lua_State *L, const s2_error *err, bool nowait) {
    if (err->kind == S2_E_INVALID) return luaL_error(L, "%s", err->message);
    if (nowait && err->kind == S2_E_TIMEOUT) {
        lua_pushboolean(L, 0);
        return 1;
    }
    return fail(L, err);
}

/* session:submit(records [, opts [, nowait]]) -> ticket | nil, err
 * With nowait: false instead of waiting when the session is full. */
static int l_session_submit(lua_State *L) {
    session_ud *u = check_session(L);
    lua_settop(L, 4);
    bool nowait = lua_toboolean(L, 4);
    s2_append_input in;
    check_append_input(L, 2, 3, &in);
    s2_ticket *t;
    s2_error err;
    if (s2_append_session_submit(u->s, &in, nowait ? 0 : -1, &t, &err) != 0)
        return submit_failed(L, &err, nowait);
    ticket_ud *tu = lua_newuserdatauv(L, sizeof *tu, 1);
    tu->t = t;
    luaL_setmetatable(L, TICKET_MT);
    lua_pushvalue(L, 1); /* the ticket keeps its session alive */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

/* close([timeout]) of a session: drains, then ends. true | nil, err */
static int l_session_close(lua_State *L) {
    session_ud *u = luaL_checkudata(L, 1, SESSION_MT);
    if (!u->s) {
        lua_pushboolean(L, 1);
        return 1;
    }
    s2_error err;
    if (s2_append_session_close(u->s, opt_timeout(L, 2), &err) != 0) return fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static void set_size(lua_State *L, const char *k, uint64_t v) {
    lua_pushinteger(L, (lua_Integer)v);
    lua_setfield(L, -2, k);
}

static int push_session_stats(lua_State *L, const s2_session_stats *stp) {
    s2_session_stats st = *stp;
    lua_createtable(L, 0, 9);
    set_size(L, "records_submitted", st.records_submitted);
    set_size(L, "inflight_bytes", st.inflight_bytes);
    set_size(L, "inflight_batches", st.inflight_batches);
    set_size(L, "peak_inflight_bytes", st.peak_inflight_bytes);
    set_size(L, "peak_inflight_batches", st.peak_inflight_batches);
    set_size(L, "batches_submitted", st.batches_submitted);
    set_size(L, "batches_acked", st.batches_acked);
    set_size(L, "batches_resent", st.batches_resent);
    set_size(L, "reconnects", st.reconnects);
    return 1;
}

static int l_session_stats(lua_State *L) {
    s2_session_stats st;
    s2_append_session_stats(check_session(L)->s, &st);
    return push_session_stats(L, &st);
}

static int l_session_gc(lua_State *L) {
    session_ud *u = luaL_checkudata(L, 1, SESSION_MT);
    if (u->s && s2_append_session_owned(u->s)) s2_append_session_release(u->s);
    u->s = NULL;
    return 0;
}

static s2_ticket *owned_ticket(lua_State *L, s2_ticket *t);

static ticket_ud *check_ticket(lua_State *L) {
    ticket_ud *u = luaL_checkudata(L, 1, TICKET_MT);
    owned_ticket(L, u->t);
    return u;
}

static record_ticket_ud *check_record_ticket(lua_State *L) {
    record_ticket_ud *u = luaL_checkudata(L, 1, RECORD_TICKET_MT);
    owned_ticket(L, u->t);
    return u;
}

/* Pushes the ticket's outcome: ack | nil, err | false (pending). */
static int push_ticket_result(lua_State *L, s2_ticket *t, bool pending_is_timeout, double timeout) {
    s2_append_ack ack;
    s2_error err;
    switch (s2_ticket_result(t, &ack, &err)) {
    case S2_TICKET_OK:
        push_ack(L, &ack);
        return 1;
    case S2_TICKET_FAILED:
        return fail(L, &err);
    default:
        if (!pending_is_timeout) {
            lua_pushboolean(L, 0);
            return 1;
        }
        s2_fail(&err, S2_E_TIMEOUT, "timeout",
                "no ack within %.3f s (the append is not cancelled and may still land)", timeout);
        err.retryable = true;
        return fail(L, &err);
    }
}

/* ticket:ack([timeout]) -> ack | nil, err (blocks this thread) */
static int l_ticket_ack(lua_State *L) {
    ticket_ud *u = check_ticket(L);
    double timeout = opt_timeout(L, 2);
    s2_ticket_wait(u->t, timeout);
    return push_ticket_result(L, u->t, true, timeout);
}

static int l_ticket_ready(lua_State *L) {
    ticket_ud *u = check_ticket(L);
    lua_pushboolean(L, s2_ticket_result(u->t, NULL, NULL) != S2_TICKET_PENDING);
    return 1;
}

static int l_ticket_result(lua_State *L) {
    return push_ticket_result(L, check_ticket(L)->t, false, 0);
}

/* cqueues' pollable protocol: pollfd(), events(), timeout(). The ticket's fd is made on the
 * first pollfd() and becomes readable once the ticket resolves. */
static s2_ticket *owned_ticket(lua_State *L, s2_ticket *t) {
    /* NULL once released: by __gc, or by __close (`local t <close>`), after which Lua code
     * can still hold the ticket. */
    if (!t) luaL_error(L, "ticket is closed");
    if (!s2_ticket_owned(t))
        luaL_error(L, "this ticket was created in another process (before a fork)");
    return t;
}

static s2_ticket *any_ticket(lua_State *L) {
    void *p = luaL_testudata(L, 1, TICKET_MT);
    if (p) return owned_ticket(L, ((ticket_ud *)p)->t);
    return owned_ticket(L, ((record_ticket_ud *)luaL_checkudata(L, 1, RECORD_TICKET_MT))->t);
}

static int l_ticket_pollfd(lua_State *L) {
    int fd = s2_ticket_fd(any_ticket(L));
    if (fd < 0) return luaL_error(L, "ticket:pollfd: no eventfd available");
    lua_pushinteger(L, fd);
    return 1;
}

static int l_ticket_events(lua_State *L) {
    any_ticket(L);
    lua_pushliteral(L, "r");
    return 1;
}

/* 0 once resolved (wake at once), nil while pending (wait for the fd). */
static int l_ticket_timeout(lua_State *L) {
    if (s2_ticket_result(any_ticket(L), NULL, NULL) != S2_TICKET_PENDING) lua_pushnumber(L, 0);
    else lua_pushnil(L);
    return 1;
}

static int l_ticket_gc(lua_State *L) {
    ticket_ud *u = luaL_checkudata(L, 1, TICKET_MT);
    s2_ticket_unref(u->t);
    u->t = NULL;
    return 0;
}

/* ---- producer and record tickets --------------------------------------------------------- */

/* client:producer(basin, stream, { linger, max_batch_records, max_batch_bytes,
 *   max_inflight_bytes, idempotent, match_seq_num, fencing_token, compression, http1 })
 *   -> producer | nil, err  (options checked and defaulted by lua/s2/producer.lua) */
static int l_client_producer(lua_State *L) {
    client_ud *c = check_client(L);
    const char *basin = check_basin(L, 2);
    const char *stream = luaL_checkstring(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    s2_producer_options o;
    memset(&o, 0, sizeof o);
    o.session.max_inflight_bytes = opt_size(L, 4, "max_inflight_bytes", 5u * 1024 * 1024);
    size_t len;
    const char *comp = opt_string(L, 4, "compression", &len);
    if (comp && strcmp(comp, "zstd") == 0) o.session.compression = S2_COMPRESSION_ZSTD;
    else if (comp && strcmp(comp, "gzip") == 0) o.session.compression = S2_COMPRESSION_GZIP;
    lua_getfield(L, 4, "http1");
    o.session.http1 = lua_toboolean(L, -1);
    lua_getfield(L, 4, "idempotent");
    o.idempotent = lua_toboolean(L, -1);
    lua_pop(L, 2);
    o.linger = opt_number(L, 4, "linger", 0.005);
    o.max_batch_records = opt_size(L, 4, "max_batch_records", S2_MAX_BATCH_RECORDS);
    o.max_batch_bytes = opt_size(L, 4, "max_batch_bytes", S2_MAX_BATCH_BYTES);
    o.has_match_seq_num = opt_u64(L, 4, "match_seq_num", "", &o.match_seq_num);
    o.fencing_token = opt_string(L, 4, "fencing_token", &o.fencing_token_len);
    s2_error err;
    if (!c->rt && !(c->rt = s2_runtime_new(s2_http_config(c->http), &err))) return fail(L, &err);
    producer_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->s = NULL;
    luaL_setmetatable(L, PRODUCER_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    u->s = s2_producer_open(c->rt, basin, stream, &o, &err);
    if (!u->s) {
        if (err.kind == S2_E_INVALID) return luaL_error(L, "%s", err.message);
        return fail(L, &err);
    }
    return 1;
}

static producer_ud *check_producer(lua_State *L) {
    producer_ud *u = luaL_checkudata(L, 1, PRODUCER_MT);
    if (!u->s) luaL_error(L, "producer is closed");
    check_owned(L, s2_producer_owned(u->s));
    return u;
}

/* producer:submit(record [, nowait]) -> record ticket | nil, err
 * With nowait: false instead of waiting when max_inflight_bytes is reached. */
static int l_producer_submit(lua_State *L) {
    producer_ud *u = check_producer(L);
    lua_settop(L, 3);
    bool nowait = lua_toboolean(L, 3);
    lua_pushvalue(L, 2); /* the record readers work on the top of the stack */
    size_t nh = scan_record(L, 0);
    lua_pop(L, 1);
    s2_header stack_hdrs[8];
    s2_header *hdrs = nh <= 8 ? stack_hdrs : lua_newuserdatauv(L, nh * sizeof *hdrs, 0);
    lua_pushvalue(L, 2);
    s2_record r;
    fill_record(L, 0, &r, hdrs);
    s2_ticket *t;
    uint32_t index;
    s2_error err;
    if (s2_producer_submit(u->s, &r, nowait ? 0 : -1, &t, &index, &err) != 0)
        return submit_failed(L, &err, nowait);
    record_ticket_ud *tu = lua_newuserdatauv(L, sizeof *tu, 1);
    tu->t = t;
    tu->index = index;
    luaL_setmetatable(L, RECORD_TICKET_MT);
    lua_pushvalue(L, 1); /* the ticket keeps its producer alive */
    lua_setiuservalue(L, -2, 1);
    return 1;
}

static int l_producer_flush(lua_State *L) {
    producer_ud *u = check_producer(L);
    s2_error err;
    if (s2_producer_flush(u->s, opt_timeout(L, 2), &err) != 0) return fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

/* close([timeout]): seals the open batch without an extra linger, drains, then ends. */
static int l_producer_close(lua_State *L) {
    producer_ud *u = luaL_checkudata(L, 1, PRODUCER_MT);
    if (!u->s) {
        lua_pushboolean(L, 1);
        return 1;
    }
    s2_error err;
    if (s2_producer_close(u->s, opt_timeout(L, 2), &err) != 0) return fail(L, &err);
    lua_pushboolean(L, 1);
    return 1;
}

static int l_producer_stats(lua_State *L) {
    s2_session_stats st;
    s2_producer_stats(check_producer(L)->s, &st);
    return push_session_stats(L, &st);
}

static int l_producer_gc(lua_State *L) {
    producer_ud *u = luaL_checkudata(L, 1, PRODUCER_MT);
    if (u->s && s2_producer_owned(u->s)) s2_producer_release(u->s);
    u->s = NULL;
    return 0;
}

/* A record's ack: { seq_num = batch start + index, batch = <the batch's ack> }. */
static int push_record_result(lua_State *L, record_ticket_ud *u, bool pending_is_timeout,
                              double timeout) {
    int n = push_ticket_result(L, u->t, pending_is_timeout, timeout);
    if (n == 1 && lua_istable(L, -1)) {
        lua_createtable(L, 0, 2);
        lua_getfield(L, -2, "start");
        lua_getfield(L, -1, "seq_num");
        lua_Integer start = lua_tointeger(L, -1);
        lua_pop(L, 2);
        lua_pushinteger(L, start + (lua_Integer)u->index);
        lua_setfield(L, -2, "seq_num");
        lua_insert(L, -2);
        lua_setfield(L, -2, "batch");
    }
    return n;
}

static int l_record_ticket_ack(lua_State *L) {
    record_ticket_ud *u = check_record_ticket(L);
    double timeout = opt_timeout(L, 2);
    s2_ticket_wait(u->t, timeout);
    return push_record_result(L, u, true, timeout);
}

/* record_ticket:result_seq_num() -> seq_num | nil, err | false: like result() without the
 * ack tables (the cheap path for callers that only need the position). */
static int l_record_ticket_result_seq(lua_State *L) {
    record_ticket_ud *u = check_record_ticket(L);
    s2_append_ack ack;
    s2_error err;
    switch (s2_ticket_result(u->t, &ack, &err)) {
    case S2_TICKET_OK:
        lua_pushinteger(L, (lua_Integer)(ack.start.seq_num + u->index));
        return 1;
    case S2_TICKET_FAILED:
        return fail(L, &err);
    default:
        lua_pushboolean(L, 0);
        return 1;
    }
}

static int l_record_ticket_ready(lua_State *L) {
    record_ticket_ud *u = check_record_ticket(L);
    lua_pushboolean(L, s2_ticket_result(u->t, NULL, NULL) != S2_TICKET_PENDING);
    return 1;
}

static int l_record_ticket_result(lua_State *L) {
    return push_record_result(L, check_record_ticket(L), false, 0);
}

static int l_record_ticket_gc(lua_State *L) {
    record_ticket_ud *u = luaL_checkudata(L, 1, RECORD_TICKET_MT);
    s2_ticket_unref(u->t);
    u->t = NULL;
    return 0;
}

/* ---- read sessions ------------------------------------------------------------------------ */

#define READER_MT "s2.core.read_session"

/* client:read_session(basin, stream, opts) -> reader | nil, err
 * opts: the read options (no 60 s cap on wait), ignore_command_records, compression */
static int l_client_read_session(lua_State *L) {
    client_ud *c = check_client(L);
    const char *basin = check_basin(L, 2);
    const char *stream = luaL_checkstring(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    read_opts o;
    check_read_opts(L, 4, &o, false);
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
    size_t len;
    const char *comp = opt_string(L, 4, "compression", &len);
    if (comp && strcmp(comp, "zstd") == 0) ro.compression = S2_COMPRESSION_ZSTD;
    else if (comp && strcmp(comp, "gzip") == 0) ro.compression = S2_COMPRESSION_GZIP;
    s2_error err;
    if (!c->rt && !(c->rt = s2_runtime_new(s2_http_config(c->http), &err))) return fail(L, &err);
    reader_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->s = NULL;
    luaL_setmetatable(L, READER_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
    u->s = s2_read_session_open(c->rt, basin, stream, &ro, &err);
    if (!u->s) return fail(L, &err);
    return 1;
}

static reader_ud *check_reader(lua_State *L) {
    reader_ud *u = luaL_checkudata(L, 1, READER_MT);
    if (!u->s) luaL_error(L, "read session is closed");
    check_owned(L, s2_read_session_owned(u->s));
    return u;
}

/* reader:next([timeout]) -> record | nil (a limit was reached) | nil, err */
static int l_reader_next(lua_State *L) {
    reader_ud *u = check_reader(L);
    s2_sequenced_record r;
    s2_error err;
    int rc = s2_read_session_next(u->s, opt_timeout(L, 2), &r, &err);
    if (rc < 0) return fail(L, &err);
    if (rc == 0) {
        lua_pushnil(L);
        return 1;
    }
    push_record(L, &r);
    return 1;
}

/* reader:status() -> { caught_up, tail, ended, delivered, reconnects, buffered_bytes } */
static int l_reader_status(lua_State *L) {
    reader_ud *u = check_reader(L);
    s2_read_status st;
    s2_read_session_status(u->s, &st);
    lua_createtable(L, 0, 5);
    lua_pushboolean(L, st.caught_up);
    lua_setfield(L, -2, "caught_up");
    lua_pushboolean(L, st.ended);
    lua_setfield(L, -2, "ended");
    set_size(L, "delivered", st.delivered);
    set_size(L, "reconnects", st.reconnects);
    set_size(L, "buffered_bytes", st.buffered_bytes);
    if (st.has_tail) {
        push_position(L, &st.tail);
        lua_setfield(L, -2, "tail");
    }
    return 1;
}

static int l_reader_close(lua_State *L) {
    reader_ud *u = luaL_checkudata(L, 1, READER_MT);
    if (u->s && !s2_read_session_owned(u->s)) u->s = NULL; /* the parent's: leave it alone */
    if (u->s) {
        s2_read_session_release(u->s);
        u->s = NULL;
    }
    return 0;
}

static const luaL_Reg reader_methods[] = {
    {"next", l_reader_next},
    {"status", l_reader_status},
    {"close", l_reader_close},
    {NULL, NULL},
};

static const luaL_Reg producer_methods[] = {
    {"submit", l_producer_submit},
    {"flush", l_producer_flush},
    {"close", l_producer_close},
    {"stats", l_producer_stats},
    {NULL, NULL},
};

static const luaL_Reg record_ticket_methods[] = {
    {"ack", l_record_ticket_ack},
    {"wait", l_record_ticket_ack},
    {"ready", l_record_ticket_ready},
    {"result", l_record_ticket_result},
    {"result_seq_num", l_record_ticket_result_seq},
    {"pollfd", l_ticket_pollfd},
    {"events", l_ticket_events},
    {"timeout", l_ticket_timeout},
    {NULL, NULL},
};

static const luaL_Reg session_methods[] = {
    {"submit", l_session_submit},
    {"close", l_session_close},
    {"stats", l_session_stats},
    {NULL, NULL},
};

/* `wait` blocks the thread; `ack` is the same until lua/s2 installs the scheduler-aware one. */
static const luaL_Reg ticket_methods[] = {
    {"ack", l_ticket_ack},
    {"wait", l_ticket_ack},
    {"ready", l_ticket_ready},
    {"result", l_ticket_result},
    {"pollfd", l_ticket_pollfd},
    {"events", l_ticket_events},
    {"timeout", l_ticket_timeout},
    {NULL, NULL},
};

/* __close(obj, err) of a class with close(): Lua 5.4 passes the error that is unwinding the
 * scope (nil on a normal exit) as the second argument. It is not a timeout: drop it and
 * close() the default way; close()'s results are ignored, so that error propagates as is.
 * Upvalue 1: the class's close method. */
static int close_scope(lua_State *L) {
    lua_settop(L, 1);
    lua_pushvalue(L, lua_upvalueindex(1));
    lua_insert(L, 1);
    lua_call(L, 1, 0);
    return 0;
}

/* One way to build every class: methods in __index (error mt as upvalue 1), __gc, and
 * __close doing what close() does for sessions, release for others. */
static void register_class(lua_State *L, const char *name, const luaL_Reg *methods, int emt,
                           lua_CFunction gc) {
    if (!luaL_newmetatable(L, name)) {
        lua_pop(L, 1);
        return;
    }
    lua_newtable(L);
    lua_pushvalue(L, emt);
    luaL_setfuncs(L, methods, 1);
    lua_getfield(L, -1, "close");
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        lua_pushcfunction(L, gc); /* takes only its object */
    } else {
        lua_pushcclosure(L, close_scope, 1);
    }
    lua_setfield(L, -3, "__close");
    lua_setfield(L, -2, "__index");
    lua_pushcfunction(L, gc);
    lua_setfield(L, -2, "__gc");
    lua_pop(L, 1);
}

/* client:stats() -> { connections_opened, connections_open } (sessions' transport) */
static int l_client_stats(lua_State *L) {
    client_ud *c = check_client(L);
    s2_runtime_stats st = {0};
    if (c->rt) s2_runtime_get_stats(c->rt, &st);
    lua_createtable(L, 0, 2);
    set_size(L, "connections_opened", st.connections_opened);
    set_size(L, "connections_open", st.connections_open);
    return 1;
}

/* client:progress() -> n; client:progress_fd() -> fd (see s2_runtime_progress) */
static int l_client_progress(lua_State *L) {
    client_ud *c = check_client(L);
    lua_pushinteger(L, c->rt ? (lua_Integer)s2_runtime_progress(c->rt) : 0);
    return 1;
}

static int l_client_progress_fd(lua_State *L) {
    client_ud *c = check_client(L);
    s2_error err;
    if (!c->rt && !(c->rt = s2_runtime_new(s2_http_config(c->http), &err))) return fail(L, &err);
    int fd = s2_runtime_progress_fd(c->rt);
    if (fd < 0) return luaL_error(L, "progress_fd: no eventfd available");
    lua_pushinteger(L, fd);
    return 1;
}

static const luaL_Reg client_methods[] = {
    {"progress", l_client_progress},
    {"progress_fd", l_client_progress_fd},
    {"append_session", l_client_append_session},
    {"producer", l_client_producer},
    {"read_session", l_client_read_session},
    {"stats", l_client_stats},
    {"append", l_client_append},
    {"read", l_client_read},
    {"request", l_client_request},
    {"close", l_client_close},
    {NULL, NULL},
};

/* methods(class) -> the method table of a class ("ticket", "record_ticket", ...), so the
 * Lua layer can install scheduler-aware waiting (lua/s2/await.lua). */
static int l_methods(lua_State *L) {
    static const char *const names[] = {"ticket", "record_ticket", "append_session",
                                        "producer", "read_session", "client", NULL};
    static const char *const mts[] = {TICKET_MT, RECORD_TICKET_MT, SESSION_MT,
                                      PRODUCER_MT, READER_MT, CLIENT_MT};
    int i = luaL_checkoption(L, 1, NULL, names);
    luaL_getmetatable(L, mts[i]);
    lua_getfield(L, -1, "__index");
    return 1;
}

static const luaL_Reg module_funcs[] = {
    {"methods", l_methods},
    {"metered_bytes", l_metered_bytes},
    {"encode_append_input", l_encode_append_input},
    {"decode_append_input", l_decode_append_input},
    {"encode_append_ack", l_encode_append_ack},
    {"decode_append_ack", l_decode_append_ack},
    {"encode_read_batch", l_encode_read_batch},
    {"decode_read_batch", l_decode_read_batch},
    {"error_from_response", l_error_from_response},
    {"random_token", l_random_token},
    {"now", l_now},
    {"parse_endpoint", l_parse_endpoint},
    {"backoff_delay", l_backoff_delay},
    {"encode_frame", l_encode_frame},
    {"decode_frames", l_decode_frames},
    {"client", l_client},
    {NULL, NULL},
};

__attribute__((visibility("default"))) int luaopen_s2_core(lua_State *L);

int luaopen_s2_core(lua_State *L) {
    /* Pin this library: the core registers a fork handler (s2_process_id) that must never
     * point into an unloaded object, whatever the host does with its Lua states. */
    Dl_info self;
    if (dladdr((void *)luaopen_s2_core, &self) && self.dli_fname)
        dlopen(self.dli_fname, RTLD_NOW | RTLD_NODELETE | RTLD_NOLOAD);
    s2_process_id();
    /* The error metatable: upvalue 1 of every function below. */
    lua_createtable(L, 0, 3);
    lua_pushcfunction(L, error_tostring);
    lua_setfield(L, -2, "__tostring");
    lua_pushcfunction(L, error_concat);
    lua_setfield(L, -2, "__concat");
    lua_pushstring(L, "s2.error");
    lua_setfield(L, -2, "__name");
    int emt = lua_gettop(L);

    if (luaL_newmetatable(L, CLIENT_MT)) {
        lua_createtable(L, 0, sizeof client_methods / sizeof client_methods[0]);
        lua_pushvalue(L, emt);
        luaL_setfuncs(L, client_methods, 1);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, l_client_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, l_client_close);
        lua_setfield(L, -2, "__close");
    }
    lua_pop(L, 1);
    register_class(L, SESSION_MT, session_methods, emt, l_session_gc);
    register_class(L, TICKET_MT, ticket_methods, emt, l_ticket_gc);
    register_class(L, PRODUCER_MT, producer_methods, emt, l_producer_gc);
    register_class(L, READER_MT, reader_methods, emt, l_reader_close);
    register_class(L, RECORD_TICKET_MT, record_ticket_methods, emt, l_record_ticket_gc);

    luaL_newlibtable(L, module_funcs);
    lua_pushvalue(L, emt);
    luaL_setfuncs(L, module_funcs, 1);
    lua_pushvalue(L, emt);
    lua_setfield(L, -2, "error_mt");
    lua_pushstring(L, S2_VERSION);
    lua_setfield(L, -2, "VERSION");
    lua_pushinteger(L, S2_MAX_BATCH_RECORDS);
    lua_setfield(L, -2, "MAX_BATCH_RECORDS");
    lua_pushinteger(L, S2_MAX_BATCH_BYTES);
    lua_setfield(L, -2, "MAX_BATCH_BYTES");
    lua_pushinteger(L, S2_MAX_FENCING_TOKEN);
    lua_setfield(L, -2, "MAX_FENCING_TOKEN");
    return 1;
}
