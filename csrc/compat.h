/* compat.h — the few Lua C API differences between 5.1 (LuaJIT), 5.3 and 5.4 that the
 * binding uses. Written against 5.4; older versions get shims here and nowhere else. */
#ifndef S2_COMPAT_H
#define S2_COMPAT_H

#include <lauxlib.h>
#include <lua.h>

#if LUA_VERSION_NUM < 504
#define lua_newuserdatauv(L, sz, nuv) lua_newuserdata((L), (sz))
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
#define luaL_setfuncs(L, l, nup) s2_compat_setfuncs((L), (l), (nup))
static inline void s2_compat_setfuncs(lua_State *L, const luaL_Reg *l, int nup) {
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
#define luaL_newlibtable(L, l) lua_createtable((L), 0, sizeof(l) / sizeof((l)[0]) - 1)
#endif

#endif /* S2_COMPAT_H */
