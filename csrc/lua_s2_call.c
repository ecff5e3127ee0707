/* lua_s2_call.c — the call userdata (s2.core.call): a unary request the client's I/O thread
 * carries out. lua/s2/await.lua waits for it (it is a cqueues pollable and has a notice for
 * OpenResty), then result() decodes the answer for the kind of call it is. */
#include <string.h>

#include "lua_s2.h"

typedef struct call_ud {
    s2_call *c;          /* NULL once released */
    s2l_call_kind kind;
    size_t num_records;  /* appends: the ack must cover exactly these */
} call_ud;

void s2l_push_call(lua_State *L, s2_call *c, s2l_call_kind kind, size_t num_records) {
    call_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->c = c;
    u->kind = kind;
    u->num_records = num_records;
    luaL_setmetatable(L, CALL_MT);
    lua_pushvalue(L, 1); /* the call keeps its client (and runtime) alive */
    lua_setiuservalue(L, -2, 1);
}

static call_ud *check_call(lua_State *L) {
    call_ud *u = luaL_checkudata(L, 1, CALL_MT);
    if (!u->c) luaL_error(L, "call is closed");
    if (!s2_call_owned(u->c))
        luaL_error(L, "this call was started in another process (before a fork)");
    return u;
}

static int l_call_ready(lua_State *L) {
    lua_pushboolean(L, s2_call_result(check_call(L)->c, NULL, NULL) != S2_TICKET_PENDING);
    return 1;
}

/* call:wait([timeout]) -> true | nil, err: blocks this thread (plain scripts). */
static int l_call_wait(lua_State *L) {
    call_ud *u = check_call(L);
    double timeout = s2l_opt_timeout(L, 2);
    if (s2_call_wait(u->c, timeout) == S2_TICKET_PENDING) {
        s2_error err;
        s2_fail(&err, S2_E_TIMEOUT, "timeout", "no answer within %.3f s", timeout);
        err.retryable = true;
        return s2l_fail(L, &err);
    }
    lua_pushboolean(L, 1);
    return 1;
}

static int push_append(lua_State *L, call_ud *u, const s2_response *resp) {
    s2_append_ack ack;
    s2_error err;
    if (s2_append_ack_decode(resp->body.data, resp->body.len, &ack, &err) != 0)
        return s2l_fail(L, &err);
    if (ack.end.seq_num - ack.start.seq_num != u->num_records) {
        s2_fail(&err, S2_E_PROTOCOL, "protocol_error", "ack covers %llu records, the batch had %zu",
                (unsigned long long)(ack.end.seq_num - ack.start.seq_num), u->num_records);
        return s2l_fail(L, &err);
    }
    s2l_push_ack(L, &ack);
    return 1;
}

static int push_read(lua_State *L, const s2_response *resp) {
    s2_read_batch b;
    s2_error err;
    if (s2_read_batch_decode(resp->body.data, resp->body.len, &b, &err) != 0)
        return s2l_fail(L, &err);
    s2l_push_read_batch(L, &b);
    s2_read_batch_free(&b);
    return 1;
}

/* call:result() -> the answer | nil, err | false (still pending). The answer: an append's
 * ack, a read's batch, or a request's status, body, provision_result. */
static int l_call_result(lua_State *L) {
    call_ud *u = check_call(L);
    const s2_response *resp;
    s2_error err;
    switch (s2_call_result(u->c, &resp, &err)) {
    case S2_TICKET_PENDING:
        lua_pushboolean(L, 0);
        return 1;
    case S2_TICKET_FAILED:
        return s2l_fail(L, &err);
    default:
        break;
    }
    switch (u->kind) {
    case S2L_CALL_APPEND:
        return push_append(L, u, resp);
    case S2L_CALL_READ:
        return push_read(L, resp);
    default:
        lua_pushinteger(L, resp->status);
        lua_pushlstring(L, resp->body.data ? (const char *)resp->body.data : "", resp->body.len);
        if (resp->provision_result[0]) lua_pushstring(L, resp->provision_result);
        else lua_pushnil(L);
        return 3;
    }
}

/* cqueues' pollable protocol. */
static int l_call_pollfd(lua_State *L) {
    int fd = s2_call_fd(check_call(L)->c);
    if (fd < 0) return luaL_error(L, "call:pollfd: no eventfd available");
    lua_pushinteger(L, fd);
    return 1;
}

static int l_call_events(lua_State *L) {
    check_call(L);
    lua_pushliteral(L, "r");
    return 1;
}

static int l_call_timeout(lua_State *L) {
    if (s2_call_result(check_call(L)->c, NULL, NULL) != S2_TICKET_PENDING) lua_pushnumber(L, 0);
    else lua_pushnil(L);
    return 1;
}

/* call:notice() -> id, path | nil, err (OpenResty's dispatcher, see s2_wait.h) */
static int l_call_notice(lua_State *L) {
    call_ud *u = check_call(L);
    return s2l_push_notice(L, s2_call_runtime(u->c), s2_call_notice(u->c));
}

/* Lets go of the call; one still pending is abandoned (the I/O thread drops it). */
static int l_call_gc(lua_State *L) {
    call_ud *u = luaL_checkudata(L, 1, CALL_MT);
    if (u->c && s2_call_owned(u->c)) s2_call_release(u->c);
    u->c = NULL;
    return 0;
}

static const luaL_Reg call_methods[] = {
    {"ready", l_call_ready},
    {"wait", l_call_wait},
    {"result", l_call_result},
    {"pollfd", l_call_pollfd},
    {"events", l_call_events},
    {"timeout", l_call_timeout},
    {"notice", l_call_notice},
    {"abandon", l_call_gc},
    {NULL, NULL},
};

void s2l_open_call(lua_State *L, int emt) {
    s2l_register_class(L, CALL_MT, call_methods, emt, l_call_gc);
}
