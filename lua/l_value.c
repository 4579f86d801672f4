/*
 * Conversions between Lua values and chain values (l_catena.h says which maps to which).
 */
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "l_catena.h"
#include "str.h"

/* The address whose light userdata is catena.null. */
static const char null_key = 0;

void ctn_l_push_null(lua_State *L) {
    lua_pushlightuserdata(L, (void *)&null_key);
}

static int is_null(lua_State *L, int idx) {
    return lua_type(L, idx) == LUA_TLIGHTUSERDATA && lua_touserdata(L, idx) == &null_key;
}

/* Whether the table at idx has the metatable registered under name. */
static int has_meta(lua_State *L, int idx, const char *name) {
    if (!lua_getmetatable(L, idx)) return 0;
    luaL_getmetatable(L, name);
    const int same = lua_rawequal(L, -1, -2);
    lua_pop(L, 2);
    return same;
}

void ctn_l_push_val(lua_State *L, const ctn_val *v, int top) {
    luaL_checkstack(L, 4, "catena: value too deep");
    switch (v->kind) {
    case CTN_VNULL:
        if (top)
            lua_pushnil(L);
        else
            ctn_l_push_null(L);
        return;
    case CTN_VBOOL: lua_pushboolean(L, v->u.b); return;
    case CTN_VINT: lua_pushinteger(L, (lua_Integer)v->u.i); return;
    case CTN_VNUM: lua_pushnumber(L, (lua_Number)v->u.num); return;
    case CTN_VSTR: lua_pushlstring(L, v->u.str.p, v->u.str.len); return;
    case CTN_VARR:
        lua_createtable(L, (int)v->u.arr.n, 0);
        for (size_t i = 0; i < v->u.arr.n; i++) {
            ctn_l_push_val(L, v->u.arr.items[i], 0);
            lua_rawseti(L, -2, (lua_Integer)i + 1);
        }
        if (v->u.arr.n == 0) luaL_setmetatable(L, CTN_L_ARRAY);
        return;
    case CTN_VOBJ:
        lua_createtable(L, 0, (int)v->u.obj.n);
        for (size_t i = 0; i < v->u.obj.n; i++) {
            lua_pushlstring(L, v->u.obj.keys[i]->u.str.p, v->u.obj.keys[i]->u.str.len);
            ctn_l_push_val(L, v->u.obj.vals[i], 0);
            lua_rawset(L, -3);
        }
        return;
    case CTN_VDOC:
        lua_createtable(L, 0, 2);
        ctn_l_push_val(L, v->u.doc.text, 0);
        lua_setfield(L, -2, "page_content");
        ctn_l_push_val(L, v->u.doc.meta, 0);
        lua_setfield(L, -2, "metadata");
        luaL_setmetatable(L, CTN_L_DOCUMENT);
        return;
    }
}

#define MAX_DEPTH 200

static ctn_val *to_val(lua_State *L, int idx, char *path, size_t plen, size_t pcap, int depth,
                       char *err, size_t errcap);

static ctn_val *fail(char *err, size_t errcap, const char *path, const char *what) {
    snprintf(err, errcap, "%s: %s", path, what);
    return NULL;
}

/* Appends a path element ("[3]" or ".key") for the duration of a call. */
static size_t path_push(char *path, size_t plen, size_t pcap, const char *fmt, const char *s,
                        long long i) {
    int n = s != NULL ? snprintf(path + plen, pcap - plen, fmt, s)
                      : snprintf(path + plen, pcap - plen, fmt, i);
    if (n < 0) n = 0;
    return plen + (size_t)n < pcap ? plen + (size_t)n : pcap - 1;
}

static ctn_val *table_to_val(lua_State *L, int idx, char *path, size_t plen, size_t pcap, int depth,
                             char *err, size_t errcap) {
    if (depth > MAX_DEPTH) return fail(err, errcap, path, "tables nested too deeply (a cycle?)");
    idx = lua_absindex(L, idx);
    luaL_checkstack(L, 6, "catena: value too deep");
    if (has_meta(L, idx, CTN_L_DOCUMENT)) {
        /* Raw reads: a document is plain data, and no metamethod may run (or raise) here. */
        lua_pushliteral(L, "page_content");
        lua_rawget(L, idx);
        size_t n = 0;
        const char *s = lua_type(L, -1) == LUA_TSTRING ? lua_tolstring(L, -1, &n) : NULL;
        if (s == NULL) {
            lua_pop(L, 1);
            return fail(err, errcap, path, "a document's page_content must be a string");
        }
        lua_pushliteral(L, "metadata");
        lua_rawget(L, idx);
        ctn_val *meta = NULL;
        if (!lua_isnil(L, -1)) {
            const size_t pl = path_push(path, plen, pcap, "%s", ".metadata", 0);
            meta = to_val(L, -1, path, pl, pcap, depth + 1, err, errcap);
            path[plen] = 0;
            if (meta == NULL) {
                lua_pop(L, 2);
                return NULL;
            }
            if (meta->kind != CTN_VOBJ) {
                ctn_val_unref(meta);
                lua_pop(L, 2);
                return fail(err, errcap, path, "a document's metadata must be a table of keys");
            }
        }
        ctn_val *d = ctn_val_doc(s, n, meta);
        lua_pop(L, 2);
        return d != NULL ? d : fail(err, errcap, path, "out of memory");
    }
    /* An array when the keys are exactly 1..n (n >= 1), or the table is marked as one. */
    const lua_Integer n = (lua_Integer)lua_rawlen(L, idx);
    lua_Integer count = 0;
    int all_int = 1, all_str = 1;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        count++;
        if (lua_type(L, -2) == LUA_TNUMBER && lua_isinteger(L, -2)) {
            const lua_Integer k = lua_tointeger(L, -2);
            all_str = 0;
            if (k < 1 || k > n) all_int = 0;
        } else if (lua_type(L, -2) == LUA_TSTRING) {
            all_int = 0;
        } else {
            const char *tn = luaL_typename(L, -2);
            lua_pop(L, 2);
            char what[96];
            snprintf(what, sizeof what, "a table key of type %s cannot be a chain value key", tn);
            return fail(err, errcap, path, what);
        }
        lua_pop(L, 1);
    }
    if (count == 0) {
        ctn_val *v = has_meta(L, idx, CTN_L_ARRAY) ? ctn_val_arr() : ctn_val_obj();
        return v != NULL ? v : fail(err, errcap, path, "out of memory");
    }
    if (all_int && count == n) {
        ctn_val *a = ctn_val_arr();
        if (a == NULL) return fail(err, errcap, path, "out of memory");
        for (lua_Integer i = 1; i <= n; i++) {
            lua_rawgeti(L, idx, i);
            const size_t pl = path_push(path, plen, pcap, "[%lld]", NULL, (long long)i);
            ctn_val *e = to_val(L, -1, path, pl, pcap, depth + 1, err, errcap);
            path[plen] = 0;
            lua_pop(L, 1);
            if (e == NULL || ctn_val_push(a, e) < 0) {
                ctn_val_unref(a);
                return e == NULL ? NULL : fail(err, errcap, path, "out of memory");
            }
        }
        return a;
    }
    if (!all_str)
        return fail(err, errcap, path,
                    "a table mixing integer and string keys (or with holes) is neither an "
                    "array nor an object");
    ctn_val *o = ctn_val_obj();
    if (o == NULL) return fail(err, errcap, path, "out of memory");
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        size_t kl = 0;
        const char *k = lua_tolstring(L, -2, &kl);
        const size_t pl = path_push(path, plen, pcap, ".%s", k, 0);
        ctn_val *e = to_val(L, -1, path, pl, pcap, depth + 1, err, errcap);
        path[plen] = 0;
        lua_pop(L, 1);
        if (e == NULL || ctn_val_setk(o, k, kl, e) < 0) {
            lua_pop(L, 1);
            ctn_val_unref(o);
            return e == NULL ? NULL : fail(err, errcap, path, "out of memory");
        }
    }
    return o;
}

static ctn_val *to_val(lua_State *L, int idx, char *path, size_t plen, size_t pcap, int depth,
                       char *err, size_t errcap) {
    ctn_val *v = NULL;
    switch (lua_type(L, idx)) {
    case LUA_TNIL: v = ctn_val_null(); break;
    case LUA_TBOOLEAN: v = ctn_val_bool(lua_toboolean(L, idx)); break;
    case LUA_TNUMBER:
        v = lua_isinteger(L, idx) ? ctn_val_int((int64_t)lua_tointeger(L, idx))
                                  : ctn_val_num((double)lua_tonumber(L, idx));
        break;
    case LUA_TSTRING: {
        size_t n = 0;
        const char *s = lua_tolstring(L, idx, &n);
        v = ctn_val_str(s, n);
        break;
    }
    case LUA_TTABLE: return table_to_val(L, idx, path, plen, pcap, depth, err, errcap);
    case LUA_TLIGHTUSERDATA:
        if (is_null(L, idx)) {
            v = ctn_val_null();
            break;
        }
        /* fall through */
    default: {
        char what[96];
        snprintf(what, sizeof what, "a %s cannot be a chain value", luaL_typename(L, idx));
        return fail(err, errcap, path, what);
    }
    }
    return v != NULL ? v : fail(err, errcap, path, "out of memory");
}

ctn_val *ctn_l_to_val(lua_State *L, int idx, const char *where, char *err, size_t errcap) {
    char path[256];
    snprintf(path, sizeof path, "%s", where != NULL ? where : "value");
    return to_val(L, idx, path, strlen(path), sizeof path, 0, err, errcap);
}

int ctn_l_error(lua_State *L, const char *fmt, ...) {
    lua_Debug ar;
    int level = 1;
    while (lua_getstack(L, level, &ar) && lua_getinfo(L, "S", &ar) &&
           strncmp(ar.source, "=catena", 7) == 0)
        level++;
    luaL_where(L, level);
    va_list ap;
    va_start(ap, fmt);
    lua_pushvfstring(L, fmt, ap);
    va_end(ap);
    lua_concat(L, 2);
    return lua_error(L);
}

void ctn_l_check_options(lua_State *L, int idx, const char *what, const char *const *allowed,
                         size_t n) {
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            ctn_l_error(L, "%s: option names are strings, not a %s", what, luaL_typename(L, -1));
        const char *k = lua_tostring(L, -1);
        size_t i = 0;
        while (i < n && strcmp(allowed[i], k) != 0)
            i++;
        if (i < n) continue;
        const char *near = ctn_str_suggest(k, allowed, n);
        if (near != NULL)
            ctn_l_error(L, "%s: unknown option '%s' (did you mean '%s'?)", what, k, near);
        luaL_Buffer b;
        luaL_buffinit(L, &b);
        for (size_t j = 0; j < n; j++) {
            if (j > 0) luaL_addstring(&b, ", ");
            luaL_addstring(&b, allowed[j]);
        }
        luaL_pushresult(&b);
        ctn_l_error(L, "%s: unknown option '%s' (options: %s)", what, k, lua_tostring(L, -1));
    }
}
