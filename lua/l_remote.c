/*
 * catena.remote{...} and catena.remote_embeddings{...}: the remote model nodes of
 * stdlib/remote.h for Lua.
 */
#include <string.h>

#include "error.h"
#include "l_catena.h"
#include "remote.h"
#include "settings.h"

/* An integer option of the table at 1 (nil: dflt) from lo to hi; raises naming it. */
static int64_t int_opt(lua_State *L, const char *what, const char *key, int64_t dflt, int64_t lo,
                       int64_t hi) {
    lua_getfield(L, 1, key);
    int64_t v = dflt;
    if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < lo || lua_tointeger(L, -1) > hi)
            luaL_error(L, "%s: %s must be an integer from %I to %I", what, key, (lua_Integer)lo,
                       (lua_Integer)hi);
        v = (int64_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    return v;
}

/* A string option of the table at 1, or NULL when nil; raises for another type. The string
 * stays on the table (the caller copies it before the table goes). */
static const char *str_opt(lua_State *L, const char *what, const char *key) {
    lua_getfield(L, 1, key);
    const char *s = NULL;
    if (lua_type(L, -1) == LUA_TSTRING)
        s = lua_tostring(L, -1);
    else if (!lua_isnil(L, -1))
        luaL_error(L, "%s: %s must be a string, not %s", what, key, luaL_typename(L, -1));
    lua_pop(L, 1);
    return s;
}

/* The options both constructors share, read into o. */
static void common_opts(lua_State *L, const char *what, ctn_remote_opts *o) {
    o->base_url = str_opt(L, what, "base_url");
    o->model = str_opt(L, what, "model");
    o->api_key_env = str_opt(L, what, "api_key_env");
    if (o->base_url == NULL) luaL_error(L, "%s: base_url must be an http:// or https:// URL", what);
    if (o->model == NULL) luaL_error(L, "%s: model must name the server's model", what);
    o->timeout_ms = int_opt(L, what, "timeout_ms", CTN_REMOTE_DEFAULT_TIMEOUT_MS, 1, 86400000);
    o->max_retries =
        (int)int_opt(L, what, "max_retries", CTN_REMOTE_DEFAULT_RETRIES, 0, CTN_REMOTE_MAX_RETRIES);
    lua_getfield(L, 1, "max_response_bytes");
    if (lua_type(L, -1) == LUA_TSTRING) {
        if (ctn_parse_size(lua_tostring(L, -1), &o->max_response_bytes) < 0)
            luaL_error(L, "%s: max_response_bytes must be a size such as \"64M\", not '%s'", what,
                       lua_tostring(L, -1));
    } else if (!lua_isnil(L, -1)) {
        if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
            luaL_error(L,
                       "%s: max_response_bytes must be a positive integer or a size such as "
                       "\"64M\"",
                       what);
        o->max_response_bytes = (int64_t)lua_tointeger(L, -1);
    }
    lua_pop(L, 1);
    lua_getfield(L, 1, "backoff_ms");
    if (!lua_isnil(L, -1)) {
        if (!lua_isnumber(L, -1) || !(lua_tonumber(L, -1) >= 0 && lua_tonumber(L, -1) <= 600000))
            luaL_error(L, "%s: backoff_ms must be a number from 0 to 600000", what);
        o->backoff_ms = lua_tonumber(L, -1);
    }
    lua_pop(L, 1);
}

static void push_remote(lua_State *L, const char *what, const ctn_remote_opts *o) {
    char err[512] = "";
    ctn_node *node = ctn_remote_node(o, err, sizeof err);
    if (node == NULL) luaL_error(L, "%s: %s", what, err[0] ? err : "out of memory");
    ctn_node **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = node;
    luaL_setmetatable(L, CTN_L_RUNNABLE);
}

/* catena.remote{base_url =, model =, api_key_env =, kind = "chat" | "completion", output =
 * "text" | "message", timeout_ms =, max_retries =, max_response_bytes =, backoff_ms =} */
static int m_remote(lua_State *L) {
    static const char *const what = "catena.remote";
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const opts[] = {
        "base_url",   "model",       "api_key_env",        "kind",      "output",
        "timeout_ms", "max_retries", "max_response_bytes", "backoff_ms"};
    ctn_l_check_options(L, 1, what, opts, sizeof opts / sizeof opts[0]);
    ctn_remote_opts o = ctn_remote_opts_default();
    common_opts(L, what, &o);
    const char *kind = str_opt(L, what, "kind");
    if (kind != NULL && strcmp(kind, "completion") == 0)
        o.kind = CTN_REMOTE_COMPLETION;
    else if (kind != NULL && strcmp(kind, "chat") != 0)
        luaL_error(L,
                   "%s: kind must be \"chat\" (the default: /chat/completions) or "
                   "\"completion\" (/completions), not '%s'",
                   what, kind);
    const char *out = str_opt(L, what, "output");
    if (out != NULL && strcmp(out, "message") == 0)
        o.message = true;
    else if (out != NULL && strcmp(out, "text") != 0)
        luaL_error(L,
                   "%s: output must be \"text\" (the default: the answer's text) or "
                   "\"message\" (an AI message with finish reason and token usage), not '%s'",
                   what, out);
    push_remote(L, what, &o);
    return 1;
}

/* catena.remote_embeddings{base_url =, model =, api_key_env =, timeout_ms =, max_retries =,
 * max_response_bytes =, backoff_ms =} */
static int m_remote_embeddings(lua_State *L) {
    static const char *const what = "catena.remote_embeddings";
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const opts[] = {"base_url",   "model",       "api_key_env",
                                       "timeout_ms", "max_retries", "max_response_bytes",
                                       "backoff_ms"};
    ctn_l_check_options(L, 1, what, opts, sizeof opts / sizeof opts[0]);
    ctn_remote_opts o = ctn_remote_opts_default();
    o.kind = CTN_REMOTE_EMBEDDINGS;
    common_opts(L, what, &o);
    push_remote(L, what, &o);
    return 1;
}

void ctn_l_open_remote(lua_State *L) {
    lua_pushcfunction(L, m_remote);
    lua_setfield(L, -2, "remote");
    lua_pushcfunction(L, m_remote_embeddings);
    lua_setfield(L, -2, "remote_embeddings");
}
