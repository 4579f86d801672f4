/*
 * Allocation failures under the Lua binding, as SQLite tests them: a script builds a chain
 * (lambdas, a parallel map, assign and pick, a retry) and runs it with chain:invoke and
 * chain:batch, while
 *   - the Lua state's allocator (lua_Alloc) fails its N-th allocation, once or from then on;
 *   - the C side's hook (kernels/alloc.h: the executor, values, the loop) does the same;
 * for every N until the run makes no more allocations. Each case must end with the right
 * answer or an error that says memory ran out, never a crash, a hang or a wrong answer; the
 * state then closes (and LeakSanitizer, in the asan copy, finds nothing left).
 */
#include <lauxlib.h>
#include <lua.h>
#include <lualib.h>
#include <limits.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "l_catena.h"
#include "test.h"

/* The allocator under test: fails allocation number fail_at (counting from 0 once armed),
 * and every later one too unless once. Frees and shrinks always succeed (Lua requires it). */
typedef struct {
    bool armed, once;
    long count, fail_at, n_failed;
} ctl;

static void *failing_alloc(void *ud, void *ptr, size_t osize, size_t nsize) {
    ctl *c = ud;
    if (nsize == 0) {
        free(ptr);
        return NULL;
    }
    const bool grows = ptr == NULL || nsize > osize;
    if (c->armed && grows) {
        const long k = c->count++;
        if (k == c->fail_at || (!c->once && k > c->fail_at)) {
            c->n_failed++;
            return NULL;
        }
    }
    return realloc(ptr, nsize);
}

static const char SCRIPT[] =
    "local catena = require 'catena'\n"
    "local add = function(n) return catena.lambda(function(x) return x + n end) end\n"
    "local tries = 0\n"
    "local flaky = catena.lambda(function(x)\n"
    "  tries = tries + 1\n"
    "  if tries == 1 then error('flaky') end\n"
    "  return x\n"
    "end):with_retry{ attempts = 2, backoff_ms = 1 }\n"
    "local chain = add(1) | { sq = function(x) return x * x end, same = catena.passthrough() }\n"
    "  | catena.assign{ sum = function(t) return t.sq + t.same end } | catena.pick('sum') | flaky\n"
    "local one = chain:invoke(3)\n"
    "local many = chain:batch{ 1, 2, 3, 4 }\n"
    "return string.format('%d %d,%d,%d,%d', one, many[1], many[2], many[3], many[4])\n";

/* 4 -> 16 + 4 = 20; 1..4 -> 6, 12, 20, 30 */
static const char WANT[] = "20 6,12,20,30";

typedef enum { OK, NOMEM, OTHER } outcome;

static lua_State *new_state(ctl *c) {
    lua_State *L = lua_newstate(failing_alloc, c);
    if (L == NULL) return NULL;
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_catena);
    lua_setfield(L, -2, "catena");
    lua_pop(L, 1);
    return L;
}

/* Runs the script once; *msg gets the error's text (static storage) for OTHER. */
static outcome run_once(lua_State *L, ctl *c, bool lua_side, long n, bool once,
                        const char **msg) {
    static char text[512];
    *msg = "";
    if (luaL_loadstring(L, SCRIPT) != LUA_OK) {
        snprintf(text, sizeof text, "load: %s", lua_tostring(L, -1));
        *msg = text;
        return OTHER;
    }
    if (lua_side) {
        c->count = 0, c->fail_at = n, c->once = once, c->armed = true;
    } else {
        ctn__alloc_fail_once = once;
        ctn__alloc_fail_after = n;
    }
    const int st = lua_pcall(L, 0, 1, 0);
    c->armed = false;
    ctn__alloc_fail_after = -1;
    ctn__alloc_fail_once = false;
    outcome r;
    if (st == LUA_OK) {
        const char *s = lua_tostring(L, -1);
        r = s != NULL && strcmp(s, WANT) == 0 ? OK : OTHER;
        snprintf(text, sizeof text, "wrong answer: %s", s ? s : "(not a string)");
    } else {
        /* A memory error from Lua itself, or a catena error object that names it. */
        const char *s = luaL_tolstring(L, -1, NULL);
        r = st == LUA_ERRMEM || (s != NULL && (strstr(s, "memory") != NULL)) ? NOMEM : OTHER;
        snprintf(text, sizeof text, "error %d: %s", st, s ? s : "(no text)");
        lua_pop(L, 1);
    }
    lua_pop(L, 1);
    *msg = text;
    return r;
}

static void failure_loop(bool lua_side, bool once) {
    long n = 0;
    int ok = 0, nomem = 0;
    for (; n < 200000; n++) {
        ctl c = {0};
        lua_State *L = new_state(&c);
        CHECK(L != NULL);
        if (L == NULL) return;
        const long c_failed = ctn__alloc_n_failed;
        const char *msg;
        const outcome r = run_once(L, &c, lua_side, n, once, &msg);
        const bool touched = lua_side ? c.n_failed > 0 : ctn__alloc_n_failed > c_failed;
        if (r == OTHER) printf("  %s side, N=%ld%s: %s\n", lua_side ? "Lua" : "C", n,
                               once ? " once" : "", msg);
        CHECK(r != OTHER);
        ok += r == OK;
        nomem += r == NOMEM;
        /* A failure that hit nothing must leave the right answer. */
        if (!touched) CHECK(r == OK);
        lua_close(L);
        if (!touched) break;
    }
    printf("  %s allocator%s: %ld allocations, %d runs failed cleanly, %d gave the answer\n",
           lua_side ? "Lua" : "C", once ? " (each failing once)" : "", n, nomem, ok);
    /* Lua answers a failed allocation with an emergency collection and one more try, so a
     * failure that happens once never reaches the script; persistent ones must. */
    CHECK(n > 10 && n < 200000 && (nomem > 0 || (lua_side && once)));
    if (lua_side && once) CHECK(ok == n + 1);
}

TEST(script_gives_the_answer) {
    ctl c = {0};
    lua_State *L = new_state(&c);
    const char *msg;
    CHECK(run_once(L, &c, true, LONG_MAX, true, &msg) == OK);
    lua_close(L);
}

TEST(lua_allocator_fails_persistently) {
    failure_loop(true, false);
}
TEST(lua_allocator_fails_once) {
    failure_loop(true, true);
}
TEST(c_allocations_fail_persistently) {
    failure_loop(false, false);
}
TEST(c_allocations_fail_once) {
    failure_loop(false, true);
}

int main(void) {
    RUN(script_gives_the_answer);
    RUN(lua_allocator_fails_persistently);
    RUN(lua_allocator_fails_once);
    RUN(c_allocations_fail_persistently);
    RUN(c_allocations_fail_once);
    return test_summary();
}
