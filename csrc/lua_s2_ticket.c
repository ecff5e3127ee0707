/* lua_s2_ticket.c — the ticket userdata (s2.core.ticket): the outcome of a submit, one class
 * for both kinds. A session's ticket stands for its batch; a producer's record ticket is the
 * same ticket plus the record's index in its batch, so its ack is the record's position and
 * the batch's ack. Tickets are cqueues pollables (pollfd, events, timeout). */
#include "lua_s2.h"

typedef struct ticket_ud {
    s2_ticket *t;    /* NULL once released */
    uint32_t index;  /* a record ticket's place in its batch */
    bool of_record;  /* a producer's record ticket (else a session's batch ticket) */
} ticket_ud;

/* Pushes a new ticket for t (its reference passes to the ticket), which keeps the object at
 * stack index 1 (its session or producer) alive. */
void s2l_push_ticket(lua_State *L, s2_ticket *t, bool of_record, uint32_t index) {
    ticket_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->t = t;
    u->index = index;
    u->of_record = of_record;
    luaL_setmetatable(L, TICKET_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
}

static ticket_ud *check_ticket(lua_State *L) {
    ticket_ud *u = luaL_checkudata(L, 1, TICKET_MT);
    /* NULL once released: by __gc, or by __close (`local t <close>`), after which Lua code
     * can still hold the ticket. */
    if (!u->t) luaL_error(L, "ticket is closed");
    if (!s2_ticket_owned(u->t))
        luaL_error(L, "this ticket was created in another process (before a fork)");
    return u;
}

/* Pushes the batch's outcome: ack | nil, err | false (pending). */
static int push_batch_result(lua_State *L, s2_ticket *t, bool pending_is_timeout, double timeout) {
    s2_append_ack ack;
    s2_error err;
    switch (s2_ticket_result(t, &ack, &err)) {
    case S2_TICKET_OK:
        s2l_push_ack(L, &ack);
        return 1;
    case S2_TICKET_FAILED:
        return s2l_fail(L, &err);
    default:
        if (!pending_is_timeout) {
            lua_pushboolean(L, 0);
            return 1;
        }
        s2_fail(&err, S2_E_TIMEOUT, "timeout",
                "no ack within %.3f s (the append is not cancelled and may still land)", timeout);
        err.retryable = true;
        return s2l_fail(L, &err);
    }
}

/* Pushes the ticket's outcome: the batch's ack, or for a record ticket
 * { seq_num = batch start + index, batch = <the batch's ack> }; nil, err; false (pending). */
static int push_result(lua_State *L, ticket_ud *u, bool pending_is_timeout, double timeout) {
    int n = push_batch_result(L, u->t, pending_is_timeout, timeout);
    if (u->of_record && n == 1 && lua_istable(L, -1)) {
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

/* ticket:ack([timeout]) -> ack | nil, err (blocks this thread; lua/s2/await.lua installs the
 * scheduler-aware ack, `wait` stays this one) */
static int l_ticket_ack(lua_State *L) {
    ticket_ud *u = check_ticket(L);
    double timeout = s2l_opt_timeout(L, 2);
    s2_ticket_wait(u->t, timeout);
    return push_result(L, u, true, timeout);
}

static int l_ticket_ready(lua_State *L) {
    ticket_ud *u = check_ticket(L);
    lua_pushboolean(L, s2_ticket_result(u->t, NULL, NULL) != S2_TICKET_PENDING);
    return 1;
}

static int l_ticket_result(lua_State *L) {
    return push_result(L, check_ticket(L), false, 0);
}

/* ticket:result_seq_num() -> seq_num | nil, err | false: like result() without the ack
 * tables (the cheap path for callers that only need the position). Record tickets only: a
 * batch ticket has no position of its own. */
static int l_ticket_result_seq(lua_State *L) {
    ticket_ud *u = check_ticket(L);
    if (!u->of_record)
        return luaL_error(L, "seq_num: a session ticket stands for a whole batch and has no "
                             "seq_num of its own; use ack() (its start and end)");
    s2_append_ack ack;
    s2_error err;
    switch (s2_ticket_result(u->t, &ack, &err)) {
    case S2_TICKET_OK:
        lua_pushinteger(L, (lua_Integer)(ack.start.seq_num + u->index));
        return 1;
    case S2_TICKET_FAILED:
        return s2l_fail(L, &err);
    default:
        lua_pushboolean(L, 0);
        return 1;
    }
}

/* cqueues' pollable protocol: pollfd(), events(), timeout(). The ticket's fd is made on the
 * first pollfd() and becomes readable once the ticket resolves. */
static int l_ticket_pollfd(lua_State *L) {
    int fd = s2_ticket_fd(check_ticket(L)->t);
    if (fd < 0) return luaL_error(L, "ticket:pollfd: no eventfd available");
    lua_pushinteger(L, fd);
    return 1;
}

static int l_ticket_events(lua_State *L) {
    check_ticket(L);
    lua_pushliteral(L, "r");
    return 1;
}

/* 0 once resolved (wake at once), nil while pending (wait for the fd). */
static int l_ticket_timeout(lua_State *L) {
    if (s2_ticket_result(check_ticket(L)->t, NULL, NULL) != S2_TICKET_PENDING) lua_pushnumber(L, 0);
    else lua_pushnil(L);
    return 1;
}

/* ticket:notice() -> id, path | nil, err (OpenResty's dispatcher, see s2_wait.h) */
static int l_ticket_notice(lua_State *L) {
    ticket_ud *u = check_ticket(L);
    return s2l_push_notice(L, s2_ticket_runtime(u->t), s2_ticket_notice(u->t));
}

static int l_ticket_gc(lua_State *L) {
    ticket_ud *u = luaL_checkudata(L, 1, TICKET_MT);
    s2_ticket_unref(u->t);
    u->t = NULL;
    return 0;
}

static const luaL_Reg ticket_methods[] = {
    {"ack", l_ticket_ack},
    {"wait", l_ticket_ack},
    {"ready", l_ticket_ready},
    {"result", l_ticket_result},
    {"result_seq_num", l_ticket_result_seq},
    {"pollfd", l_ticket_pollfd},
    {"events", l_ticket_events},
    {"timeout", l_ticket_timeout},
    {"notice", l_ticket_notice},
    {NULL, NULL},
};

void s2l_open_ticket(lua_State *L, int emt) {
    s2l_register_class(L, TICKET_MT, ticket_methods, emt, l_ticket_gc);
}
