/* lua_s2_codec.c — the codec functions of s2.core (tools and specs use them): append inputs,
 * acks, read batches and frames to and from bytes, endpoint parsing, backoff, tokens. */
#include <string.h>

#include "lua_s2.h"

int s2l_metered_bytes(lua_State *L) {
    lua_settop(L, 1);
    size_t nh = s2l_scan_record(L, 0);
    s2_header *hdrs = lua_newuserdatauv(L, (nh ? nh : 1) * sizeof *hdrs, 0);
    lua_pushvalue(L, 1);
    s2_record r;
    s2l_fill_record(L, 0, &r, hdrs);
    lua_pushinteger(L, (lua_Integer)s2_record_metered_bytes(&r));
    return 1;
}

int s2l_encode_append_input(lua_State *L) {
    lua_settop(L, 2);
    s2_append_input in;
    s2l_check_append_input(L, 1, 2, &in);
    size_t len = s2_append_input_encoded_len(&in);
    uint8_t *out = lua_newuserdatauv(L, len ? len : 1, 0);
    s2_append_input_encode(&in, out);
    lua_pushlstring(L, (const char *)out, len);
    return 1;
}

int s2l_decode_append_input(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    s2_append_input in;
    s2_error err;
    if (s2_append_input_decode(p, len, &in, &err) != 0) return s2l_fail(L, &err);
    lua_createtable(L, (int)in.num_records, 0);
    for (size_t i = 0; i < in.num_records; i++) {
        const s2_record *r = &in.records[i];
        lua_createtable(L, 0, 3);
        if (r->has_timestamp) s2l_set_int(L, "timestamp", r->timestamp);
        s2l_push_headers(L, r->headers, r->num_headers);
        lua_setfield(L, -2, "headers");
        lua_pushlstring(L, (const char *)r->body, r->body_len);
        lua_setfield(L, -2, "body");
        lua_rawseti(L, -2, (lua_Integer)i + 1);
    }
    lua_createtable(L, 0, 2);
    if (in.has_match_seq_num) s2l_set_int(L, "match_seq_num", in.match_seq_num);
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
        s2l_opt_u64(L, -1, "seq_num", ctx, &pos->seq_num);
        s2l_opt_u64(L, -1, "timestamp", ctx, &pos->timestamp);
    } else if (!lua_isnil(L, -1)) {
        luaL_error(L, "%s: expected a {seq_num, timestamp} table", k);
    }
    lua_pop(L, 1);
}

int s2l_encode_append_ack(lua_State *L) {
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

int s2l_decode_append_ack(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    s2_append_ack ack;
    s2_error err;
    if (s2_append_ack_decode(p, len, &ack, &err) != 0) return s2l_fail(L, &err);
    s2l_push_ack(L, &ack);
    return 1;
}

/* encode_read_batch{ records = { {seq_num=, timestamp=, headers=, body=}, ... }, tail = } */
int s2l_encode_read_batch(lua_State *L) {
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
        s2l_fill_record(L, i, &tmp, hdrs + used);
        memset(r, 0, sizeof *r);
        s2l_opt_u64(L, -1, "seq_num", "", &r->seq_num);
        s2l_opt_u64(L, -1, "timestamp", "", &r->timestamp);
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

int s2l_decode_read_batch(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    s2_read_batch b;
    s2_error err;
    if (s2_read_batch_decode(p, len, &b, &err) != 0) return s2l_fail(L, &err);
    s2l_push_read_batch(L, &b);
    s2_read_batch_free(&b);
    return 1;
}

int s2l_error_from_response(lua_State *L) {
    int status = (int)luaL_checkinteger(L, 1);
    size_t len;
    const char *body = luaL_optlstring(L, 2, "", &len);
    s2_error err;
    s2_error_from_response(&err, status, (const uint8_t *)body, len);
    s2l_push_error(L, &err);
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
int s2l_encode_frame(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    lua_Integer flags = luaL_optinteger(L, 2, 0);
    luaL_argcheck(L, flags >= 0 && flags <= 255, 2, "flags must be a byte");
    s2_compression c = check_compression(L, 3);
    s2_buf b;
    s2_buf_init(&b);
    s2_error err;
    if (s2_frame_encode(p, len, (uint8_t)flags, c, &b, &err) != 0) return s2l_fail(L, &err);
    lua_pushlstring(L, (const char *)b.data, b.len);
    s2_buf_free(&b);
    return 1;
}

/* decode_frames(bytes) -> { {terminal=, reconnect=, payload=, status=}, ... }, rest_len
 *   | nil, err   (rest_len: bytes of an incomplete last frame) */
int s2l_decode_frames(lua_State *L) {
    size_t len;
    const uint8_t *p = (const uint8_t *)luaL_checklstring(L, 1, &len);
    s2_frame_decoder *d = lua_newuserdatauv(L, sizeof *d, 0); /* scratch: see below */
    s2_frame_decoder_init(d);
    s2_error err;
    if (s2_frame_feed(d, p, len, &err) != 0) {
        s2_frame_decoder_free(d);
        return s2l_fail(L, &err);
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
        if (f.terminal) s2l_set_int(L, "status", (uint64_t)f.status);
        lua_rawseti(L, -2, ++n);
    }
    size_t rest = d->in.len - d->off;
    s2_frame_decoder_free(d);
    if (rc < 0) return s2l_fail(L, &err);
    lua_pushinteger(L, (lua_Integer)rest);
    return 2;
}

/* parse_endpoint(text) -> { https, host, port, path, basin_template } | nil, err */
int s2l_parse_endpoint(lua_State *L) {
    s2_endpoint ep;
    s2_error err;
    if (s2_endpoint_parse(luaL_checkstring(L, 1), &ep, &err) != 0) return s2l_fail(L, &err);
    lua_createtable(L, 0, 5);
    lua_pushboolean(L, ep.https);
    lua_setfield(L, -2, "https");
    lua_pushboolean(L, ep.basin_template);
    lua_setfield(L, -2, "basin_template");
    lua_pushstring(L, ep.host);
    lua_setfield(L, -2, "host");
    s2l_set_int(L, "port", (uint64_t)ep.port);
    lua_pushstring(L, ep.path);
    lua_setfield(L, -2, "path");
    return 1;
}

/* backoff_delay(min_base, max_base, retry, retry_after_ms) -> seconds (for tests) */
int s2l_backoff_delay(lua_State *L) {
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
int s2l_now(lua_State *L) {
    lua_pushnumber(L, s2_now());
    return 1;
}

int s2l_new_encryption_key(lua_State *L) {
    char key[45];
    if (s2_random_encryption_key(key) != 0)
        return luaL_error(L, "no randomness available for an encryption key");
    lua_pushlstring(L, key, 44);
    memset(key, 0, sizeof key);
    return 1;
}

int s2l_random_token(lua_State *L) {
    char tok[33];
    if (s2_random_token(tok) != 0) return luaL_error(L, "no randomness available for a request token");
    lua_pushstring(L, tok);
    return 1;
}
