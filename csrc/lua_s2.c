/* lua_s2.c — the Lua binding of the C core: module `s2.core`.
 *
 * The binding is the only code that includes lua.h: this file (the module, the error
 * metatable, the one way classes are built), lua_s2_conv.c (conversions and argument
 * checks), lua_s2_codec.c (codec functions) and one file per class: lua_s2_client.c,
 * lua_s2_session.c, lua_s2_producer.c, lua_s2_ticket.c, lua_s2_reader.c. Misuse raises an
 * error naming the argument and the limit; run-time failures return nil plus an error object.
 *
 * State lives in upvalues, not globals: every function of the module and every method has
 * the error metatable as upvalue 1. */
#include <dlfcn.h>

#include "lua_s2.h"

/* ---- the error metatable ------------------------------------------------------------------ */

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

/* ---- classes ------------------------------------------------------------------------------ */

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
void s2l_register_class(lua_State *L, const char *name, const luaL_Reg *methods, int emt,
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

/* ---- the module ---------------------------------------------------------------------------- */

/* methods(class) -> the method table of a class ("ticket", "client", ...), so the Lua layer
 * can install scheduler-aware waiting (lua/s2/await.lua). */
static int l_methods(lua_State *L) {
    static const char *const names[] = {"ticket", "append_session", "producer", "read_session",
                                        "client", NULL};
    static const char *const mts[] = {TICKET_MT, SESSION_MT, PRODUCER_MT, READER_MT, CLIENT_MT};
    int i = luaL_checkoption(L, 1, NULL, names);
    luaL_getmetatable(L, mts[i]);
    lua_getfield(L, -1, "__index");
    return 1;
}

static const luaL_Reg module_funcs[] = {
    {"methods", l_methods},
    {"metered_bytes", s2l_metered_bytes},
    {"encode_append_input", s2l_encode_append_input},
    {"decode_append_input", s2l_decode_append_input},
    {"encode_append_ack", s2l_encode_append_ack},
    {"decode_append_ack", s2l_decode_append_ack},
    {"encode_read_batch", s2l_encode_read_batch},
    {"decode_read_batch", s2l_decode_read_batch},
    {"error_from_response", s2l_error_from_response},
    {"random_token", s2l_random_token},
    {"new_encryption_key", s2l_new_encryption_key},
    {"now", s2l_now},
    {"parse_endpoint", s2l_parse_endpoint},
    {"backoff_delay", s2l_backoff_delay},
    {"encode_frame", s2l_encode_frame},
    {"decode_frames", s2l_decode_frames},
    {"client", s2l_client_new},
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

    s2l_open_client(L, emt);
    s2l_open_session(L, emt);
    s2l_open_ticket(L, emt);
    s2l_open_producer(L, emt);
    s2l_open_reader(L, emt);
    s2l_open_call(L, emt);

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
    lua_pushinteger(L, S2_MAX_ENCRYPTION_KEY);
    lua_setfield(L, -2, "MAX_ENCRYPTION_KEY");
    return 1;
}
