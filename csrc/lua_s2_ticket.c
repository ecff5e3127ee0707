/* lua_s2_ticket.c — the ticket userdata: the outcome of a submit. Two classes share one
 * method table (core.methods("ticket"), so lua/s2/await.lua's scheduler-aware ack covers both):
 *
 *  - s2.core.ticket: a batch ticket (a session's submit, a producer's flush_start, and the
 *    batch behind a producer's record tickets). It holds a reference on the core ticket
 *    (dropped by __gc) and keeps the object it came from (session or producer) alive. Once
 *    acked it keeps the ack, so later looks take no lock.
 *  - s2.core.record_ticket: a producer's record ticket, the record's index in its batch and
 *    nothing else: no C struct of its own, no finalizer. Its user value is its batch ticket
 *    (on Lua 5.1/LuaJIT: the batch's one environment table { batch ticket }, shared by every
 *    record ticket of the batch), so the record's ack is the batch's ack plus its index. */
#include "lua_s2.h"

typedef struct ticket_ud {
    s2_ticket *t;      /* NULL once released */
    bool acked;        /* ack holds the batch's ack (it settles once, so it stays) */
    s2_append_ack ack;
} ticket_ud;

typedef struct record_ud {
    uint32_t index; /* the record's place in its batch */
    bool closed;    /* by __close */
} record_ud;

#define RECORD_TICKET_MT "s2.core.record_ticket"

/* Pushes a new batch ticket for t (its reference passes to the ticket), which keeps the
 * object at stack index 1 (its session or producer) alive. */
void s2l_push_ticket(lua_State *L, s2_ticket *t) {
    ticket_ud *u = lua_newuserdatauv(L, sizeof *u, 1);
    u->t = t;
    u->acked = false;
    luaL_setmetatable(L, TICKET_MT);
    lua_pushvalue(L, 1);
    lua_setiuservalue(L, -2, 1);
}

/* Pushes the holder of a new batch ticket for t (see s2l_push_ticket): what record tickets
 * of that batch point to. 5.3/5.4: the batch ticket; 5.1: the table { batch ticket }. */
void s2l_push_ticket_holder(lua_State *L, s2_ticket *t) {
#if LUA_VERSION_NUM < 502
    lua_createtable(L, 1, 0);
    s2l_push_ticket(L, t);
    lua_rawseti(L, -2, 1);
#else
    s2l_push_ticket(L, t);
#endif
}

/* Pushes a record ticket for the record at index of the batch whose holder is at stack
 * index holder. */
void s2l_push_record_ticket(lua_State *L, int holder, uint32_t index) {
    if (holder < 0) holder = lua_gettop(L) + holder + 1;
    record_ud *r = lua_newuserdatauv(L, sizeof *r, 1);
    r->index = index;
    r->closed = false;
    luaL_setmetatable(L, RECORD_TICKET_MT);
    lua_pushvalue(L, holder);
#if LUA_VERSION_NUM < 502
    lua_setfenv(L, -2);
#elif LUA_VERSION_NUM < 504
    lua_setuservalue(L, -2);
#else
    lua_setiuservalue(L, -2, 1);
#endif
}

/* What a method is called on: the batch ticket, and for a record ticket its index. */
typedef struct tref {
    ticket_ud *b;
    bool of_record;
    uint32_t index;
} tref;

static ticket_ud *checked_batch(lua_State *L, ticket_ud *b) {
    /* NULL once released: by __gc, or by __close (`local t <close>`), after which Lua code
     * can still hold the ticket. */
    if (!b->t) luaL_error(L, "ticket is closed");
    if (!s2_ticket_owned(b->t))
        luaL_error(L, "this ticket was created in another process (before a fork)");
    return b;
}

/* The ticket at stack index 1, either class; a record ticket's batch ticket is left on the
 * top of the stack (so it stays alive while in use). The methods carry the two metatables
 * as upvalues 2 (batch) and 3 (record): no registry look-up per call. */
static tref check_ticket(lua_State *L) {
    tref r = {NULL, false, 0};
    void *p = lua_touserdata(L, 1);
    bool rec = false, batch = false;
    if (p && lua_getmetatable(L, 1)) {
        rec = lua_rawequal(L, -1, lua_upvalueindex(3));
        batch = !rec && lua_rawequal(L, -1, lua_upvalueindex(2));
        lua_pop(L, 1);
    }
    if (rec) {
        record_ud *ru = p;
        if (ru->closed) luaL_error(L, "ticket is closed");
#if LUA_VERSION_NUM < 502
        lua_getfenv(L, 1);
        lua_rawgeti(L, -1, 1);
        lua_remove(L, -2);
#elif LUA_VERSION_NUM < 504
        lua_getuservalue(L, 1);
#else
        lua_getiuservalue(L, 1, 1);
#endif
        r.b = checked_batch(L, lua_touserdata(L, -1));
        r.of_record = true;
        r.index = ru->index;
        return r;
    }
    if (!batch) p = luaL_checkudata(L, 1, TICKET_MT); /* raises the usual message */
    r.b = checked_batch(L, p);
    return r;
}

/* The batch's state; *ack filled when acked (from the kept copy once known). */
static s2_ticket_state batch_result(ticket_ud *b, s2_append_ack *ack, s2_error *err) {
    if (b->acked) {
        if (ack) *ack = b->ack;
        return S2_TICKET_OK;
    }
    s2_append_ack a;
    s2_ticket_state st = s2_ticket_result(b->t, &a, err);
    if (st == S2_TICKET_OK) {
        b->ack = a;
        b->acked = true;
        if (ack) *ack = a;
    }
    return st;
}

/* Pushes the ticket's outcome: the batch's ack, or for a record ticket
 * { seq_num = batch start + index, batch = <the batch's ack> }; nil, err; false (pending). */
static int push_result(lua_State *L, tref r, bool pending_is_timeout, double timeout) {
    s2_append_ack ack;
    s2_error err;
    switch (batch_result(r.b, &ack, &err)) {
    case S2_TICKET_OK:
        if (r.of_record) {
            lua_createtable(L, 0, 2);
            lua_pushinteger(L, (lua_Integer)(ack.start.seq_num + r.index));
            lua_setfield(L, -2, "seq_num");
            s2l_push_ack(L, &ack);
            lua_setfield(L, -2, "batch");
        } else {
            s2l_push_ack(L, &ack);
        }
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

/* ticket:ack([timeout]) -> ack | nil, err (blocks this thread; lua/s2/await.lua installs the
 * scheduler-aware ack, `wait` stays this one) */
static int l_ticket_ack(lua_State *L) {
    tref r = check_ticket(L);
    double timeout = s2l_opt_timeout(L, 2);
    if (!r.b->acked) s2_ticket_wait(r.b->t, timeout);
    return push_result(L, r, true, timeout);
}

static int l_ticket_ready(lua_State *L) {
    tref r = check_ticket(L);
    lua_pushboolean(L, batch_result(r.b, NULL, NULL) != S2_TICKET_PENDING);
    return 1;
}

static int l_ticket_result(lua_State *L) {
    return push_result(L, check_ticket(L), false, 0);
}

/* ticket:result_seq_num() -> seq_num | nil, err | false: like result() without the ack
 * tables (the cheap path for callers that only need the position). Record tickets only: a
 * batch ticket has no position of its own. */
static int l_ticket_result_seq(lua_State *L) {
    tref r = check_ticket(L);
    if (!r.of_record)
        return luaL_error(L, "seq_num: a session ticket stands for a whole batch and has no "
                             "seq_num of its own; use ack() (its start and end)");
    s2_append_ack ack;
    s2_error err;
    switch (batch_result(r.b, &ack, &err)) {
    case S2_TICKET_OK:
        lua_pushinteger(L, (lua_Integer)(ack.start.seq_num + r.index));
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
    int fd = s2_ticket_fd(check_ticket(L).b->t);
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
    if (batch_result(check_ticket(L).b, NULL, NULL) != S2_TICKET_PENDING) lua_pushnumber(L, 0);
    else lua_pushnil(L);
    return 1;
}

/* ticket:notice() -> id, path | nil, err (OpenResty's dispatcher, see s2_wait.h) */
static int l_ticket_notice(lua_State *L) {
    ticket_ud *b = check_ticket(L).b;
    return s2l_push_notice(L, s2_ticket_runtime(b->t), s2_ticket_notice(b->t));
}

static int l_ticket_gc(lua_State *L) {
    ticket_ud *u = luaL_checkudata(L, 1, TICKET_MT);
    s2_ticket_unref(u->t);
    u->t = NULL;
    return 0;
}

/* A record ticket's __close: it holds nothing of its own; later use raises like a closed
 * batch ticket's (the batch ticket goes when its last record ticket is collected). */
static int l_record_ticket_close(lua_State *L) {
    record_ud *r = luaL_checkudata(L, 1, RECORD_TICKET_MT);
    r->closed = true;
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
    /* The record class: the same method table, no __gc. */
    if (!luaL_newmetatable(L, RECORD_TICKET_MT)) {
        lua_pop(L, 1);
        return;
    }
    luaL_getmetatable(L, TICKET_MT);
    lua_getfield(L, -1, "__index");
    lua_pushvalue(L, -1);
    lua_setfield(L, -4, "__index");
    lua_pushcfunction(L, l_record_ticket_close);
    lua_setfield(L, -4, "__close");
    /* stack: record mt, batch mt, methods. The methods again, with both metatables. */
    lua_pushvalue(L, emt);
    lua_pushvalue(L, -3);
    lua_pushvalue(L, -5);
    luaL_setfuncs(L, ticket_methods, 3);
    lua_pop(L, 3);
}
