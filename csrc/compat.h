/* compat.h — the few Lua C API differences between 5.1 (LuaJIT 2.1), 5.3 and 5.4 that the
 * binding uses. Written against 5.4; older versions get shims here and nowhere else. */
#ifndef S2_COMPAT_H
#define S2_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM < 504
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata((L), (sz))
#endif

#if LUA_VERSION_NUM == 503
/* One user value: the binding only ever uses slot 1. */
static inline int lua_setiuservalue(lua_State *L, int idx, int n) {
    (void)n;
    lua_setuservalue(L, idx);
    return 1;
}
#endif

#if LUA_VERSION_NUM < 503
static inline int lua_isinteger(lua_State *L, int idx) {
    if (lua_type(L, idx) != LUA_TNUMBER) return 0;
    lua_Number n = lua_tonumber(L, idx);
    return n == (lua_Number)(lua_Integer)n;
}
#endif

#if LUA_VERSION_NUM < 502
#define lua_rawlen(L, i) lua_objlen((L), (i))
/* User values are the userdata's environment table: slot n of it. */
static inline int lua_setiuservalue(lua_State *L, int idx, int n) {
    idx = idx < 0 ? lua_gettop(L) + idx + 1 : idx;
    lua_createtable(L, n, 0);
    lua_insert(L, -2);
    lua_rawseti(L, -2, n);
    lua_setfenv(L, idx);
    return 1;
}
#ifndef luaL_newlibtable
/* LuaJIT 2.1 has these 5.2 functions (and the luaL_newlibtable macro); plain 5.1 does not. */
static inline void luaL_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
    for (; l->name; l++) {
        for (int i = 0; i < nup; i++) lua_pushvalue(L, -nup);
        lua_pushcclosure(L, l->func, nup);
        lua_setfield(L, -(nup + 2), l->name);
    }
    lua_pop(L, nup);
}
static inline void luaL_setmetatable(lua_State *L, const char *tname) {
    luaL_getmetatable(L, tname);
    lua_setmetatable(L, -2);
}
static inline void *luaL_testudata(lua_State *L, int ud, const char *tname) {
    void *p = lua_touserdata(L, ud);
    if (!p || !lua_getmetatable(L, ud)) return NULL;
    luaL_getmetatable(L, tname);
    int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same ? p : NULL;
}
#define luaL_newlibtable(L, l) lua_createtable((L), 0, sizeof(l) / sizeof((l)[0]) - 1)
#endif
#endif

#endif /* S2_COMPAT_H */
