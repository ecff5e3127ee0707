/* lua_s2_client.c — the client userdata (s2.core.client): configuration, the runtime its
 * calls and sessions share, unary calls (append, read, request: started here, carried out
 * on the I/O thread, awaited through call objects), fork handling, stats and progress. The session kinds' constructors are its methods too; each
 * lives with its class. */
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "lua_s2.h"
#include "s2_events.h"

/* A client: its runtime (made with the client; its I/O thread starts with the first call
 * or session) belongs to the process that made it. */
struct s2l_client {
    s2_runtime *rt; /* NULL only if a fork child could not make its own */
    bool closed;
    pid_t pid;
};

/* A forked child must not use (or free) its parent's connections and thread: it leaves
 * them alone (abandoned, not freed: the sockets are shared) and makes its own runtime. */
static void client_after_fork(s2l_client *c) {
    if (c->pid == s2_process_id()) return;
    s2_error err;
    s2_runtime *parent = c->rt;
    c->rt = c->rt ? s2_runtime_new(s2_runtime_config(c->rt), &err) : NULL;
    if (c->rt) s2_events_enable(s2_runtime_events(c->rt), s2_events_on(s2_runtime_events(parent)));
    c->pid = s2_process_id();
}

s2l_client *s2l_check_client(lua_State *L) {
    s2l_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    client_after_fork(c);
    if (c->closed || !c->rt) luaL_error(L, "client is closed");
    return c;
}

/* The client at index 1 closed or not (progress waits outlive close_start). */
static s2l_client *client_any(lua_State *L) {
    s2l_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    client_after_fork(c);
    if (!c->rt) luaL_error(L, "client is closed");
    return c;
}

s2_runtime *s2l_client_runtime(s2l_client *c, s2_error *err) {
    if (!c->rt) s2_fail(err, S2_E_NOMEM, "out_of_memory", "the client has no runtime");
    return c->rt;
}

static void check_endpoint(lua_State *L, int idx, const char *k, s2_endpoint *ep) {
    size_t len;
    const char *s = s2l_opt_string(L, idx, k, &len);
    if (!s) luaL_error(L, "%s: required", k);
    s2_error err;
    if (s2_endpoint_parse(s, ep, &err) != 0) luaL_error(L, "%s: %s", k, err.message);
}

/* core.client{ access_token, account_endpoint, basin_endpoint, request_timeout,
 *              connection_timeout, max_attempts, min_base_delay, max_base_delay,
 *              append_retry_policy, ca_file, drain_timeout } -- validated and defaulted
 * by lua/s2 (drain_timeout defaults to request_timeout) */
int s2l_client_new(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    s2_config cfg;
    memset(&cfg, 0, sizeof cfg);
    size_t len;
    cfg.access_token = s2l_opt_string(L, 1, "access_token", &len);
    check_endpoint(L, 1, "account_endpoint", &cfg.account);
    check_endpoint(L, 1, "basin_endpoint", &cfg.basin);
    if (cfg.account.https != cfg.basin.https)
        luaL_error(L, "account_endpoint and basin_endpoint must use the same scheme");
    cfg.request_timeout = s2l_opt_number(L, 1, "request_timeout", 5);
    cfg.connection_timeout = s2l_opt_number(L, 1, "connection_timeout", 3);
    cfg.max_attempts = (unsigned)s2l_opt_number(L, 1, "max_attempts", 3);
    cfg.min_base_delay = s2l_opt_number(L, 1, "min_base_delay", 0.1);
    cfg.max_base_delay = s2l_opt_number(L, 1, "max_base_delay", 1);
    const char *policy = s2l_opt_string(L, 1, "append_retry_policy", &len);
    cfg.append_retry_policy = S2_RETRY_ALL;
    if (policy && strcmp(policy, "no_side_effects") == 0) cfg.append_retry_policy = S2_RETRY_NO_SIDE_EFFECTS;
    else if (policy && strcmp(policy, "all") != 0)
        luaL_error(L, "append_retry_policy: expected \"all\" or \"no_side_effects\", got \"%s\"", policy);
    cfg.ca_file = s2l_opt_string(L, 1, "ca_file", &len);
    cfg.drain_timeout = s2l_opt_number(L, 1, "drain_timeout", cfg.request_timeout);
    if (!(cfg.drain_timeout >= 0)) luaL_error(L, "drain_timeout: must be >= 0");

    s2l_client *c = lua_newuserdatauv(L, sizeof *c, 0);
    c->rt = NULL;
    c->closed = false;
    c->pid = s2_process_id();
    luaL_setmetatable(L, CLIENT_MT);
    s2_error err;
    c->rt = s2_runtime_new(&cfg, &err);
    if (!c->rt) return s2l_fail(L, &err);
    return 1;
}

/* client:close_start() -> true when the I/O thread has to finish first (await stopped()):
 * every call and session fails with "closed". */
static int l_client_close_start(lua_State *L) {
    s2l_client *c = client_any(L);
    c->closed = true;
    s2_runtime_shutdown_start(c->rt);
    lua_pushboolean(L, !s2_runtime_stopped(c->rt));
    return 1;
}

/* client:stopped() -> whether the I/O thread has finished (close() then returns at once). */
static int l_client_stopped(lua_State *L) {
    s2l_client *c = client_any(L);
    lua_pushboolean(L, s2_runtime_stopped(c->rt));
    return 1;
}

/* client:close(): ends every session (their tickets fail with "closed") and connection;
 * joins the I/O thread (lua/s2 awaits stopped() first, so that does not wait). */
static int l_client_close(lua_State *L) {
    s2l_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    client_after_fork(c);
    c->closed = true;
    s2_runtime_shutdown(c->rt);
    return 0;
}

/* __gc (also at lua_close, when every object is finalized): usually nothing refers to the
 * client any more, nor to its sessions and tickets (they keep their client alive through
 * their user values, so they were finalized first and their sessions are draining). Unlike
 * close(), it lets what they submitted drain for up to drain_timeout — on the I/O thread, so
 * the finalizer returns at once (it may run inside an event loop) — and what does not make
 * it is reported on stderr; at process exit the drain is waited for. Sessions finalized
 * after it (an order lua_close does not promise) still find their runtime: it lives until
 * the last of them is released. */
static int l_client_gc(lua_State *L) {
    s2l_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    client_after_fork(c);
    if (c->rt) {
        s2_runtime_release(c->rt, "the client was garbage-collected");
        c->rt = NULL;
    }
    c->closed = true;
    return 0;
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

/* Starts req on the I/O thread and pushes its call object, or nil, err. The request is
 * copied: the caller's buffers may go at once. */
static int start_call(lua_State *L, s2l_client *c, const s2_request *req, s2l_call_kind kind,
                      size_t num_records) {
    s2_error err;
    s2_call *call = s2_call_start(c->rt, req, &err);
    if (!call) return s2l_fail(L, &err);
    s2l_push_call(L, call, kind, num_records);
    return 1;
}

/* client:append(basin, stream, records [, opts]) -> call | nil, err (its result: the ack)
 * opts: match_seq_num, fencing_token; compression ("zstd" | "gzip": the body goes out
 * compressed, with Content-Encoding, whatever its size, as the SDKs send it); encryption_key */
static int l_client_append(lua_State *L) {
    s2l_client *c = s2l_check_client(L);
    const char *basin = s2l_check_basin(L, 2);
    luaL_checkstring(L, 3);
    lua_settop(L, 5);
    s2_append_input in;
    s2l_check_append_input(L, 4, 5, &in);
    const char *key = NULL;
    s2_compression comp = S2_COMPRESSION_NONE;
    if (lua_istable(L, 5)) {
        key = s2l_opt_encryption_key(L, 5);
        comp = s2l_opt_compression(L, 5);
    }
    size_t len = s2_append_input_encoded_len(&in);
    uint8_t *body = lua_newuserdatauv(L, len ? len : 1, 0);
    s2_append_input_encode(&in, body);

    s2_buf path, packed;
    s2_buf_init(&packed);
    stream_path(L, 3, "/records", &path);
    s2_request req = {
        .method = "POST",
        .basin = basin,
        .path = (const char *)path.data,
        .content_type = "application/protobuf",
        .accept = "application/protobuf",
        .body = body,
        .body_len = len,
        .encryption_key = key,
        .kind = S2_CALL_APPEND,
    };
    if (comp != S2_COMPRESSION_NONE) {
        s2_error err;
        if (s2_compress(comp, body, len, &packed, &err) != 0) {
            s2_buf_free(&path);
            s2_buf_free(&packed);
            return s2l_fail(L, &err);
        }
        req.body = packed.data;
        req.body_len = packed.len;
        req.content_encoding = s2_compression_name(comp);
    }
    int n = start_call(L, c, &req, S2L_CALL_APPEND, in.num_records);
    s2_buf_free(&path);
    s2_buf_free(&packed);
    return n;
}

/* Appends the query string of o to path; -1 when out of memory. */
static int read_query(const s2l_read_opts *o, s2_buf *path) {
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

/* client:read(basin, stream, opts) -> call | nil, err (its result: the batch)
 * opts: seq_num | timestamp | tail_offset, clamp, count, bytes, until, wait (seconds),
 *       encryption_key */
static int l_client_read(lua_State *L) {
    s2l_client *c = s2l_check_client(L);
    const char *basin = s2l_check_basin(L, 2);
    luaL_checkstring(L, 3);
    luaL_checktype(L, 4, LUA_TTABLE);
    s2l_read_opts o;
    s2l_check_read_opts(L, 4, &o, true);
    const char *key = s2l_opt_encryption_key(L, 4);

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
        .encryption_key = key,
        .kind = S2_CALL_IDEMPOTENT,
        .extra_timeout = o.wait > 0 ? ceil(o.wait) : 0,
    };
    int n = start_call(L, c, &req, S2L_CALL_READ, 0);
    s2_buf_free(&path);
    return n;
}

/* client:request{ method, basin?, path, body?, content_type?, accept?, request_token?,
 *                 encryption_key? }
 *   -> call | nil, err; its result: status, body, provision_result (management calls) */
static int l_client_request(lua_State *L) {
    s2l_client *c = s2l_check_client(L);
    luaL_checktype(L, 2, LUA_TTABLE);
    size_t len, blen = 0;
    s2_request req;
    memset(&req, 0, sizeof req);
    req.method = s2l_opt_string(L, 2, "method", &len);
    req.path = s2l_opt_string(L, 2, "path", &len);
    if (!req.method || !req.path) luaL_error(L, "request: method and path are required");
    req.basin = s2l_opt_string(L, 2, "basin", &len);
    if (req.basin && !s2_basin_name_valid(req.basin))
        luaL_error(L, "basin: \"%s\" is not a basin name (8 to 48 of a-z, 0-9 and '-', "
                      "no '-' at either end)", req.basin);
    req.body = (const uint8_t *)s2l_opt_string(L, 2, "body", &blen);
    req.body_len = blen;
    req.content_type = s2l_opt_string(L, 2, "content_type", &len);
    req.accept = s2l_opt_string(L, 2, "accept", &len);
    req.request_token = s2l_opt_string(L, 2, "request_token", &len);
    req.encryption_key = s2l_opt_encryption_key(L, 2);
    req.kind = S2_CALL_IDEMPOTENT;
    return start_call(L, c, &req, S2L_CALL_REQUEST, 0);
}

/* client:stats() -> { connections_opened, connections_open, loop_turns, op_runs } */
static int l_client_stats(lua_State *L) {
    s2l_client *c = s2l_check_client(L);
    s2_runtime_stats st = {0};
    s2_runtime_get_stats(c->rt, &st);
    lua_createtable(L, 0, 4);
    s2l_set_int(L, "connections_opened", st.connections_opened);
    s2l_set_int(L, "loop_turns", st.loop_turns);
    s2l_set_int(L, "op_runs", st.op_runs);
    s2l_set_int(L, "connections_open", st.connections_open);
    return 1;
}

/* client:progress() -> n; client:progress_fd() -> fd (see s2_runtime_progress) */
static int l_client_progress(lua_State *L) {
    s2l_client *c = client_any(L);
    lua_pushinteger(L, (lua_Integer)s2_runtime_progress(c->rt));
    return 1;
}

/* client:progress_notice() -> id, path: a notice at the next progress (OpenResty). */
static int l_client_progress_notice(lua_State *L) {
    s2l_client *c = client_any(L);
    return s2l_push_notice(L, c->rt, s2_runtime_progress_notice(c->rt));
}

static int l_client_progress_fd(lua_State *L) {
    s2l_client *c = client_any(L);
    s2_error err;
    if (!s2l_client_runtime(c, &err)) return s2l_fail(L, &err);
    int fd = s2_runtime_progress_fd(c->rt);
    if (fd < 0) return luaL_error(L, "progress_fd: no eventfd available");
    lua_pushinteger(L, fd);
    return 1;
}

/* ---- events (s2_events.h): the Lua side (lua/s2/events.lua) delivers them ---- */

/* client:events_enable(on): queue events (a handler exists) or not (what waits is dropped). */
static int l_client_events_enable(lua_State *L) {
    s2l_client *c = client_any(L);
    s2_events_enable(s2_runtime_events(c->rt), lua_toboolean(L, 2));
    return 0;
}

static const char *const EVENT_TYPES[] = {
    [S2_EVENT_RETRY] = "retry",
    [S2_EVENT_RECONNECT] = "reconnect",
    [S2_EVENT_CONNECTION_OPENED] = "connection_opened",
    [S2_EVENT_CONNECTION_RETIRED] = "connection_retired",
    [S2_EVENT_SESSION_FAILED] = "session_failed",
    [S2_EVENT_RECORDS_DISCARDED] = "records_discarded",
    [S2_EVENT_EVENTS_DROPPED] = "events_dropped",
};

static void set_str(lua_State *L, const char *k, const char *v) {
    if (!v[0]) return;
    lua_pushstring(L, v);
    lua_setfield(L, -2, k);
}

static void push_event(lua_State *L, const s2_event *e) {
    lua_createtable(L, 0, 8);
    lua_pushstring(L, EVENT_TYPES[e->type]);
    lua_setfield(L, -2, "type");
    lua_pushnumber(L, e->time);
    lua_setfield(L, -2, "time");
    set_str(L, "what", e->what);
    set_str(L, "basin", e->basin);
    set_str(L, "stream", e->stream);
    set_str(L, "method", e->method);
    set_str(L, "path", e->path);
    set_str(L, "host", e->host);
    set_str(L, "http", e->http);
    set_str(L, "reason", e->reason);
    if (e->type == S2_EVENT_RETRY) {
        s2l_set_int(L, "attempt", e->attempt);
        if (e->max_attempts == S2_RETRY_FOREVER) { /* as the option was given: math.huge */
            lua_pushnumber(L, HUGE_VAL);
            lua_setfield(L, -2, "max_attempts");
        } else {
            s2l_set_int(L, "max_attempts", e->max_attempts);
        }
        lua_pushnumber(L, e->delay);
        lua_setfield(L, -2, "delay");
    }
    if (e->has_error) {
        set_str(L, "code", e->code);
        set_str(L, "message", e->message);
        if (e->status) s2l_set_int(L, "status", (uint64_t)e->status);
    }
    if (e->type == S2_EVENT_RECORDS_DISCARDED) {
        s2l_set_int(L, "count", e->count);
        s2l_set_int(L, "batches", e->batches);
    }
    if (e->type == S2_EVENT_EVENTS_DROPPED) s2l_set_int(L, "count", e->count);
}

/* client:take_events() -> { event, ... } | nil (nothing queued): cheap when empty. */
static int l_client_take_events(lua_State *L) {
    s2l_client *c = luaL_checkudata(L, 1, CLIENT_MT);
    if (!c->rt || c->pid != s2_process_id()) return 0;
    s2_events *q = s2_runtime_events(c->rt);
    s2_event *list = s2_events_take(q);
    if (!list) return 0;
    lua_newtable(L);
    lua_Integer i = 0;
    for (s2_event *e = list; e; e = e->next) {
        push_event(L, e); /* may raise (no memory): the list leaks then, a few KiB at most */
        lua_rawseti(L, -2, ++i);
    }
    s2_events_list_free(list);
    return 1;
}

static const luaL_Reg client_methods[] = {
    {"events_enable", l_client_events_enable},
    {"take_events", l_client_take_events},
    {"progress", l_client_progress},
    {"progress_fd", l_client_progress_fd},
    {"progress_notice", l_client_progress_notice},
    {"close_start", l_client_close_start},
    {"stopped", l_client_stopped},
    {"append_session", s2l_client_append_session},
    {"producer", s2l_client_producer},
    {"read_session", s2l_client_read_session},
    {"stats", l_client_stats},
    {"append", l_client_append},
    {"read", l_client_read},
    {"request", l_client_request},
    {"close", l_client_close},
    {NULL, NULL},
};

void s2l_open_client(lua_State *L, int emt) {
    s2l_register_class(L, CLIENT_MT, client_methods, emt, l_client_gc);
}
