/*
 * The catena Lua module: runnables built from Lua and run by the chain executor
 * (chains/chain.h) on a libuv loop owned by the Lua state.
 *
 * Lua functions in a chain (lambdas) run in coroutines on the loop thread. Waiting inside
 * one (r:invoke, catena.sleep, catena.await, a stream) starts the work, yields, and the
 * completion callback resumes the coroutine (the OpenResty / luv pattern: STYLE.md). The
 * same calls made from plain code (the main chunk of a script, the REPL) run the loop
 * until the work is done instead.
 */
#include <lualib.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "alloc.h"
#include "components.h"
#include "error.h"
#include "l_catena.h"
#include "settings.h"
#include "trace_db.h"
#include "str.h"

#ifndef CTN_VERSION
#define CTN_VERSION "unknown"
#endif

/* ==== the per-state context ================================================================ */

typedef struct lco lco;

/* How many catena.trace.sqlite databases may be open at once. */
#define CTN_L_MAX_TRACE_DBS 16

typedef struct {
    uv_loop_t loop;
    lua_State *main;
    int running; /* uv_run calls in progress (the loop cannot be run again inside one) */
    lco *idle;   /* finished coroutines kept for reuse */
    int closed;
    int print_trace;    /* catena run --trace: each top-level run's trace tree to stderr */
    /* catena.trace.sqlite: the open databases, each recording every top-level run */
    ctn_trace_db *tdb[CTN_L_MAX_TRACE_DBS];
    int ntdb;
    uv_signal_t sigint; /* the REPL's Ctrl-C watch (ctn_l_watch_interrupt) */
    int watching;
    volatile sig_atomic_t interrupted; /* set by either watch, taken by pump */
    uv_async_t int_wake; /* catena run's Ctrl-C (ctn_l_catch_interrupt) wakes the loop */
    int catching;
} lctx;

#define CTX_KEY "catena.ctx"
#define COS_KEY "catena.coroutines" /* thread -> light userdata lco, for the ones we run */

/* A coroutine the module runs: a lambda's, or catena.spawn's. */
struct lco {
    lctx *ctx;
    lua_State *co;
    int ref;               /* registry reference anchoring co while it runs */
    ctn_task *task;        /* a lambda's task, NULL once it ended or was cancelled */
    struct handle *spawn;  /* catena.spawn's handle */
    int waiting;           /* yielded by one of our waits (not by coroutine.yield) */
    int dead;              /* its task was cancelled: never resume it */
    int holds;             /* waits in flight that point at it */
    ctn_run *sub;          /* a run it waits for (cancelled with it) */
    struct bstate *bstate; /* a batch it waits for (cancelled with it) */
    lco *next_idle;
};

static lctx *get_ctx(lua_State *L) {
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    lctx *c = lua_touserdata(L, -1);
    lua_pop(L, 1);
    return c;
}

uv_loop_t *ctn_l_loop(lua_State *L) {
    lctx *c = get_ctx(L);
    return c != NULL ? &c->loop : NULL;
}

/* The coroutine record of L when L is one of ours, else NULL. */
static lco *current_co(lua_State *L) {
    if (!lua_isyieldable(L)) return NULL;
    lua_getfield(L, LUA_REGISTRYINDEX, COS_KEY);
    lua_pushthread(L);
    lua_rawget(L, -2);
    lco *c = lua_touserdata(L, -1);
    lua_pop(L, 2);
    return c;
}

/* ==== errors ================================================================================= */

void ctn_l_push_err(lua_State *L, int code, const char *message, const char *path) {
    lua_createtable(L, 0, 4);
    lua_pushinteger(L, code);
    lua_setfield(L, -2, "code");
    lua_pushstring(L, ctn_strerror(code));
    lua_setfield(L, -2, "kind");
    lua_pushstring(L, message);
    lua_setfield(L, -2, "message");
    lua_pushstring(L, path != NULL ? path : "");
    lua_setfield(L, -2, "path");
    luaL_setmetatable(L, CTN_L_ERROR);
}

void ctn_l_push_err_detail(lua_State *L, int code, const char *message, const char *path,
                           const ctn_val *detail) {
    ctn_l_push_err(L, code, message, path);
    static const char *const keys[] = {"cause", "traceback"};
    for (size_t i = 0; i < 2; i++) {
        const ctn_val *v = detail != NULL ? ctn_val_get(detail, keys[i]) : NULL;
        if (v == NULL) continue;
        ctn_l_push_val(L, v, 1);
        lua_setfield(L, -2, keys[i]);
    }
}

int ctn_l_traceback(lua_State *L) {
    const char *msg = luaL_tolstring(L, 1, NULL);
    /* A cancelled run (Ctrl-C, a timeout) is one line: nothing failed, no stack to read. */
    if (lua_type(L, 1) == LUA_TTABLE && lua_getfield(L, 1, "code") == LUA_TNUMBER &&
        lua_tointeger(L, -1) == CTN_ECANCELED) {
        lua_pushstring(L, msg);
        return 1;
    }
    if (lua_type(L, 1) == LUA_TTABLE && lua_getfield(L, 1, "traceback") == LUA_TSTRING) {
        lua_pushfstring(L, "%s\n%s", msg, lua_tostring(L, -1));
        msg = lua_tostring(L, -1);
    }
    luaL_traceback(L, L, msg, 1);
    return 1;
}

/* Under pcall: the error object of (code, message, path, detail) as light userdata. */
static int push_err_p(lua_State *L) {
    ctn_l_push_err_detail(L, (int)lua_tointeger(L, 1), lua_tostring(L, 2), lua_tostring(L, 3),
                          lua_touserdata(L, 4));
    return 1;
}

/* Raises a catena error object {code, kind, message, path}. */
static int raise_err(lua_State *L, int code, const char *message, const char *path) {
    ctn_l_push_err(L, code, message, path);
    return lua_error(L);
}

static int err_tostring(lua_State *L) {
    lua_getfield(L, 1, "path");
    lua_getfield(L, 1, "message");
    const char *path = lua_tostring(L, -2), *msg = lua_tostring(L, -1);
    if (path != NULL && *path)
        lua_pushfstring(L, "%s: %s", path, msg ? msg : "?");
    else
        lua_pushstring(L, msg ? msg : "?");
    return 1;
}

/* ==== protected calls ========================================================================= */

typedef struct {
    ctn_l_protected_fn fn;
    void *ud;
    char *err;
    size_t errcap;
    int rc;
} protected_call;

static int protected_tramp(lua_State *L) {
    protected_call *p = lua_touserdata(L, 1);
    lua_pop(L, 1);
    p->rc = p->fn(L, p->ud, p->err, p->errcap);
    return 0;
}

int ctn_l_protect(lua_State *L, ctn_l_protected_fn fn, void *ud, char *err, size_t errcap) {
    const int top = lua_gettop(L);
    protected_call p = {.fn = fn, .ud = ud, .err = err, .errcap = errcap};
    if (errcap > 0) err[0] = '\0';
    /* Neither push allocates (a light C function, a light userdata); lua_checkstack does
     * not raise. */
    if (!lua_checkstack(L, 2 + LUA_MINSTACK)) {
        snprintf(err, errcap, "out of memory (Lua stack)");
        return CTN_ENOMEM;
    }
    lua_pushcfunction(L, protected_tramp);
    lua_pushlightuserdata(L, &p);
    const int st = lua_pcall(L, 1, 0, 0);
    if (st == LUA_OK) {
        lua_settop(L, top);
        return p.rc;
    }
    /* The error's text without running a metamethod: a string, a catena error's message, or
     * the kind of value raised. */
    const char *msg = NULL;
    if (lua_type(L, -1) == LUA_TSTRING) {
        msg = lua_tostring(L, -1);
    } else if (lua_type(L, -1) == LUA_TTABLE && lua_checkstack(L, 1)) {
        lua_pushliteral(L, "message"); /* cannot fail: the name is interned by the library */
        lua_rawget(L, -2);
        msg = lua_type(L, -1) == LUA_TSTRING ? lua_tostring(L, -1) : NULL;
    }
    if (msg != NULL)
        snprintf(err, errcap, "%s", msg);
    else
        snprintf(err, errcap, "a Lua error (%s)", st == LUA_ERRMEM ? "out of memory" : "not a string");
    lua_settop(L, top);
    return st == LUA_ERRMEM ? CTN_ENOMEM : CTN_ECHAIN;
}

/* ==== coroutines ============================================================================== */

static void co_release(lco *c);

/* Resumes c with nargs values on its stack and handles how it stops. */
static void co_resume(lco *c, int nargs);

/* Under ctn_l_protect: a new thread for c, anchored in the registry and in COS_KEY. */
static int co_new_p(lua_State *L, void *ud, char *err, size_t errcap) {
    (void)err, (void)errcap;
    lco *c = ud;
    lua_State *co = lua_newthread(L);
    c->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    c->co = co;
    lua_getfield(L, LUA_REGISTRYINDEX, COS_KEY);
    lua_pushthread(co);
    lua_xmove(co, L, 1);
    lua_pushlightuserdata(L, c);
    lua_rawset(L, -3);
    lua_pop(L, 1);
    return 0;
}

/* A coroutine record from the pool or new; NULL with the reason in err (out of memory).
 * Never raises: L is the main thread, and this may run inside the loop. */
static lco *co_new(lctx *ctx, lua_State *L, char *err, size_t errcap) {
    lco *c = ctx->idle;
    if (c != NULL) {
        ctx->idle = c->next_idle;
    } else {
        c = ctn__calloc(1, sizeof *c);
        if (c == NULL) {
            snprintf(err, errcap, "out of memory");
            return NULL;
        }
        c->ref = LUA_NOREF;
        if (ctn_l_protect(L, co_new_p, c, err, errcap) < 0) {
            if (c->co != NULL) luaL_unref(L, LUA_REGISTRYINDEX, c->ref); /* reuses a slot */
            free(c);
            return NULL;
        }
    }
    c->ctx = ctx;
    c->task = NULL;
    c->spawn = NULL;
    c->waiting = 0;
    c->dead = 0;
    c->holds = 0;
    c->sub = NULL;
    return c;
}

/* Forgets a coroutine that will not run again: back to the pool when it finished cleanly,
 * else dropped (its thread is collected). Waits still holding it keep the record. */
static void co_release(lco *c) {
    if (c->holds > 0) {
        c->dead = 1;
        return;
    }
    lua_State *L = c->ctx->main;
    if (!c->ctx->closed && lua_status(c->co) == LUA_OK && lua_gettop(c->co) == 0 &&
        c->spawn == NULL) {
        c->next_idle = c->ctx->idle;
        c->ctx->idle = c;
        return;
    }
    if (!c->ctx->closed) {
        lua_getfield(L, LUA_REGISTRYINDEX, COS_KEY);
        lua_pushthread(c->co);
        lua_xmove(c->co, L, 1);
        lua_pushnil(L);
        lua_rawset(L, -3);
        lua_pop(L, 1);
        luaL_unref(L, LUA_REGISTRYINDEX, c->ref);
    }
    free(c);
}

static void co_drop_hold(lco *c) {
    if (--c->holds == 0 && c->dead && c->task == NULL) co_release(c);
}

/* ==== lambdas ================================================================================ */

typedef struct {
    lua_State *L; /* the main state */
    lctx *ctx;    /* its context (looked up once, not per call) */
    int fn;       /* registry reference to the function */
} lambda_ud;

static void spawn_finished(lco *c, int ok, int nres, const char *msg);
static void cancel_batch(lco *c);

#define SELF_YIELD                                                                             \
    "a chain lambda yielded by itself (coroutine.yield); only catena's waits (invoke, sleep, " \
    "await, stream) may suspend it"

/* How a lambda's coroutine ended, read under ctn_l_protect (finish_p). */
typedef struct {
    lua_State *co;
    int st, nres;
    ctn_val *out; /* LUA_OK: the result */
    int code;     /* an error: its code and text (msg, malloc'd) */
    char *msg;
    ctn_val *detail; /* and its cause (a value that was not a string) and traceback */
} finish_args;

/* Sets detail[key] = the value at the top of L's stack (popped) when it converts; a value
 * that does not (a function in a table) is left out. */
static void detail_set(lua_State *L, ctn_val **detail, const char *key) {
    char err[128];
    ctn_val *v = ctn_l_to_val(L, -1, key, err, sizeof err);
    lua_pop(L, 1);
    if (v == NULL) return;
    if (*detail == NULL) *detail = ctn_val_obj();
    if (*detail == NULL) ctn_val_unref(v);
    else (void)ctn_val_set(*detail, key, v); /* takes v, also when it fails: left out */
}

/* Moves the coroutine's results (or its error) to the main thread and reads them there. */
static int finish_p(lua_State *L, void *ud, char *err, size_t errcap) {
    finish_args *a = ud;
    const int n = a->st == LUA_OK ? a->nres : 1;
    luaL_checkstack(L, n + 4, "catena: too many results");
    lua_xmove(a->co, L, n);
    if (a->st == LUA_OK) {
        a->out = n > 0 ? ctn_l_to_val(L, -n, "the lambda's result", err, errcap) : ctn_val_null();
        if (a->out == NULL && n == 0) snprintf(err, errcap, "out of memory");
        return a->out != NULL ? 0 : n > 0 ? CTN_ETYPE : CTN_ENOMEM;
    }
    /*
     * An error. A catena error object keeps its code, its fields (cause, traceback) and its
     * path in the message. Any other value that is not a string becomes the cause (a table
     * as a value), its message the table's message field, its __tostring, or a note; the
     * lambda's own frames become the traceback.
     */
    a->code = CTN_ECHAIN;
    const int ev = lua_gettop(L);
    if (lua_type(L, ev) == LUA_TTABLE && lua_getmetatable(L, ev)) {
        luaL_getmetatable(L, CTN_L_ERROR);
        const int ours = lua_rawequal(L, -1, -2);
        lua_pop(L, 2);
        if (ours) {
            lua_getfield(L, ev, "code");
            if (lua_isinteger(L, -1)) a->code = (int)lua_tointeger(L, -1);
            lua_pop(L, 1);
            lua_getfield(L, ev, "cause");
            if (!lua_isnil(L, -1)) detail_set(L, &a->detail, "cause");
            else lua_pop(L, 1);
            lua_getfield(L, ev, "traceback");
            if (lua_type(L, -1) == LUA_TSTRING) detail_set(L, &a->detail, "traceback");
            else lua_pop(L, 1);
            lua_getfield(L, ev, "message");
            lua_getfield(L, ev, "path");
            const char *p = lua_tostring(L, -1);
            if (p != NULL && *p)
                lua_pushfstring(L, "%s: %s", p, lua_tostring(L, -2));
            else
                lua_pushvalue(L, -2);
            goto have_msg;
        }
    }
    if (lua_type(L, ev) != LUA_TSTRING && lua_type(L, ev) != LUA_TNUMBER) {
        lua_pushvalue(L, ev);
        detail_set(L, &a->detail, "cause");
        const int is_table = lua_type(L, ev) == LUA_TTABLE;
        if (is_table && lua_getfield(L, ev, "message") == LUA_TSTRING) {
            /* {message = "...", ...}: that text */
        } else {
            if (is_table) lua_pop(L, 1);
            if (luaL_getmetafield(L, ev, "__tostring") != LUA_TNIL) {
                lua_pushvalue(L, ev);
                lua_call(L, 1, 1);
            } else {
                lua_pushfstring(L, "a %s was raised as the error (it is the error's cause)",
                                luaL_typename(L, ev));
            }
        }
        if (lua_type(L, -1) != LUA_TSTRING) {
            lua_pop(L, 1);
            lua_pushfstring(L, "a %s was raised as the error (it is the error's cause)",
                            luaL_typename(L, ev));
        }
    } else {
        lua_pushvalue(L, ev);
    }
    /* The lambda's frames: its coroutine's stack is kept until it is reset. */
    luaL_traceback(L, a->co, NULL, 0);
    if (strncmp(lua_tostring(L, -1), "stack traceback:", 16) == 0) {
        lua_pushfstring(L, "stack traceback (in the lambda):%s", lua_tostring(L, -1) + 16);
        lua_remove(L, -2);
    }
    detail_set(L, &a->detail, "traceback");
have_msg:;
    const char *msg = lua_tostring(L, -1);
    a->msg = ctn__strdup(msg != NULL ? msg : "(error object is not a string)");
    if (a->msg == NULL) {
        snprintf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    return 0;
}

/* Resumes c with nargs values on its stack and handles how it stops. Runs inside the loop:
 * nothing here raises (the Lua work on the main thread is under ctn_l_protect). */
static void co_resume(lco *c, int nargs) {
    lua_State *co = c->co;
    int nres = 0;
    c->waiting = 0;
    const int st = lua_resume(co, c->ctx->main, nargs, &nres);
    if (st == LUA_YIELD) {
        if (c->waiting) return; /* one of our waits: its callback resumes */
        lua_pop(co, nres);
        if (c->task != NULL) {
            ctn_task *t = c->task;
            c->task = NULL;
            ctn_task_fail(t, CTN_ECHAIN, "%s", SELF_YIELD);
        } else if (c->spawn != NULL) {
            spawn_finished(c, 0, 0, SELF_YIELD);
        }
        lua_settop(co, 0);
        lua_resetthread(co);
        co_release(c);
        return;
    }
    if (c->spawn != NULL) {
        spawn_finished(c, st == LUA_OK, st == LUA_OK ? nres : 1, NULL);
        lua_settop(co, 0);
        if (st != LUA_OK) lua_resetthread(co);
        co_release(c);
        return;
    }
    ctn_task *t = c->task;
    c->task = NULL;
    finish_args a = {.co = co, .st = st, .nres = nres};
    char err[512];
    const int rc = ctn_l_protect(c->ctx->main, finish_p, &a, err, sizeof err);
    lua_settop(co, 0);
    if (st != LUA_OK) lua_resetthread(co);
    co_release(c);
    if (t == NULL) {
        /* cancelled meanwhile: nobody takes the result */
    } else if (rc < 0) {
        ctn_task_fail(t, rc, "%s", err);
    } else if (st == LUA_OK) {
        ctn_task_done(t, a.out);
        a.out = NULL;
    } else {
        ctn_task_fail_with(t, a.code, a.detail, "%s", a.msg);
        a.detail = NULL;
    }
    ctn_val_unref(a.out);
    ctn_val_unref(a.detail);
    free(a.msg);
}

typedef struct {
    lua_State *co;
    int fn;
    const ctn_val *input, *cfg;
    int nargs;
} lambda_args;

/* Under ctn_l_protect: the function and its arguments onto the coroutine's stack. */
static int lambda_args_p(lua_State *L, void *ud, char *err, size_t errcap) {
    (void)L, (void)err, (void)errcap;
    lambda_args *a = ud;
    luaL_checkstack(a->co, 3, "catena: a lambda's arguments");
    lua_rawgeti(a->co, LUA_REGISTRYINDEX, a->fn);
    ctn_l_push_val(a->co, a->input, 1);
    a->nargs = 1;
    /* The config as a second argument when there is one (LangChain passes it the same way). */
    if (a->cfg != NULL && ctn_val_len(a->cfg) > 0) {
        ctn_l_push_val(a->co, a->cfg, 1);
        a->nargs = 2;
    }
    return 0;
}

static void lambda_start(ctn_task *t, ctn_val *input) {
    lambda_ud *u = ctn_node_ud(ctn_task_node(t));
    char err[512];
    lco *c = co_new(u->ctx, u->L, err, sizeof err);
    if (c == NULL) {
        ctn_task_fail(t, CTN_ENOMEM, "%s", err);
        return;
    }
    lambda_args a = {.co = c->co, .fn = u->fn, .input = input, .cfg = ctn_task_config(t)};
    const int rc = ctn_l_protect(u->L, lambda_args_p, &a, err, sizeof err);
    if (rc < 0) {
        lua_settop(c->co, 0);
        lua_resetthread(c->co);
        co_release(c);
        ctn_task_fail(t, rc, "%s", err);
        return;
    }
    c->task = t;
    ctn_task_set_data(t, c);
    co_resume(c, a.nargs);
}

static void lambda_cancel(ctn_task *t) {
    lco *c = ctn_task_data(t);
    if (c == NULL || c->task != t) return;
    c->task = NULL;
    c->dead = 1;
    c->holds++; /* the cancelled wait drops its hold: keep c until this function is done */
    if (c->sub != NULL) {
        ctn_run *s = c->sub;
        c->sub = NULL;
        ctn_run_cancel(s);
    }
    if (c->bstate != NULL) cancel_batch(c);
    c->holds--;
    co_release(c);
}

static void lambda_free(void *p) {
    lambda_ud *u = p;
    lctx *ctx = get_ctx(u->L);
    if (ctx != NULL && !ctx->closed) luaL_unref(u->L, LUA_REGISTRYINDEX, u->fn);
    free(u);
}

static const ctn_node_ops lambda_ops = {
    .kind = "lambda", .start = lambda_start, .cancel = lambda_cancel, .free_ud = lambda_free};

/* ==== runnables ============================================================================== */

static ctn_node **check_runnable(lua_State *L, int idx) {
    return luaL_checkudata(L, idx, CTN_L_RUNNABLE);
}

/* The box of a runnable, made under lua_pcall so that a memory error cannot lose the node:
 * it is owned by the box (whose __gc releases it) only once nothing more can fail. */
static int box_runnable(lua_State *L) {
    ctn_node *node = lua_touserdata(L, 1);
    ctn_node **p = lua_newuserdatauv(L, sizeof *p, 0);
    *p = NULL;
    luaL_setmetatable(L, CTN_L_RUNNABLE);
    *p = node;
    return 1;
}

/* Pushes a runnable for node (taken, also when this raises; NULL: raises out of memory). */
static void push_runnable(lua_State *L, ctn_node *node) {
    if (node == NULL) luaL_error(L, "catena: out of memory (or a bad argument) building a node");
    if (!lua_checkstack(L, 3)) {
        ctn_node_unref(node);
        luaL_error(L, "catena: out of memory");
    }
    lua_pushcfunction(L, box_runnable);
    lua_pushlightuserdata(L, node);
    if (lua_pcall(L, 1, 1, 0) != LUA_OK) {
        ctn_node_unref(node);
        lua_error(L);
    }
}

static ctn_node *coerce(lua_State *L, int idx, const char *what);

/* A parallel node from a table of key = runnable-like. Each child is boxed on the stack as it
 * is made, so a Lua error on the way (a bad value, memory) loses nothing. */
static ctn_node *table_parallel(lua_State *L, int idx, int assign, const char *what) {
    idx = lua_absindex(L, idx);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING) {
            lua_pop(L, 2);
            luaL_error(L, "catena: %s: the keys of a parallel table must be strings", what);
        }
        n++;
        lua_pop(L, 1);
    }
    /* Key pointers live in a userdata (collected), the strings in the table itself. */
    const char **keys = lua_newuserdatauv(L, (n + 1) * sizeof *keys, 0);
    const int keys_at = lua_gettop(L);
    /* Keys in sorted order, so the output's key order does not depend on the table's hash. */
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        keys[i++] = lua_tostring(L, -2);
        lua_pop(L, 1);
    }
    for (size_t a = 1; a < n; a++)
        for (size_t b = a; b > 0 && strcmp(keys[b - 1], keys[b]) > 0; b--) {
            const char *x = keys[b];
            keys[b] = keys[b - 1], keys[b - 1] = x;
        }
    luaL_checkstack(L, (int)n + 4, "catena: a parallel table this large");
    for (i = 0; i < n; i++) {
        lua_getfield(L, idx, keys[i]);
        char w[128];
        snprintf(w, sizeof w, "%s.%s", what, keys[i]);
        if (!lua_isfunction(L, -1) && !lua_istable(L, -1) &&
            !luaL_testudata(L, -1, CTN_L_RUNNABLE))
            luaL_error(L,
                       "catena: %s: a %s is not a runnable (use a function, a table or a runnable)",
                       w, luaL_typename(L, -1));
        ctn_node *kid = coerce(L, -1, w);
        lua_pop(L, 1);
        push_runnable(L, kid); /* at keys_at + 1 + i */
    }
    ctn_node **kids = calloc(n + 1, sizeof *kids);
    if (kids == NULL) luaL_error(L, "catena: out of memory");
    for (i = 0; i < n; i++)
        kids[i] = ctn_node_ref(*check_runnable(L, keys_at + 1 + (int)i));
    ctn_node *p = assign ? ctn_node_assign(keys, kids, n) : ctn_node_parallel(keys, kids, n);
    free(kids);
    lua_settop(L, keys_at - 1);
    return p;
}

/* A lambda node for the function at idx (a new reference; raises when memory runs out). */
static ctn_node *lambda_node(lua_State *L, int idx, const char *name) {
    /* The Lua side first (it may raise), then what C owns. */
    lua_pushvalue(L, idx);
    const int fn = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
    lua_State *main = lua_tothread(L, -1);
    lua_pop(L, 1);
    lctx *ctx = get_ctx(L);
    lambda_ud *u = malloc(sizeof *u);
    if (u == NULL) {
        luaL_unref(L, LUA_REGISTRYINDEX, fn);
        luaL_error(L, "catena: out of memory");
    }
    u->fn = fn;
    u->L = main;
    u->ctx = ctx;
    ctn_node *n = ctn_node_custom(&lambda_ops, u, name);
    if (n == NULL) {
        luaL_unref(L, LUA_REGISTRYINDEX, u->fn);
        free(u);
        luaL_error(L, "catena: out of memory");
    }
    return n;
}

/* A node for the runnable-like value at idx (a runnable, a function, a table of them); a
 * new reference. Raises on anything else. */
static ctn_node *coerce(lua_State *L, int idx, const char *what) {
    ctn_node **r = luaL_testudata(L, idx, CTN_L_RUNNABLE);
    if (r != NULL) return ctn_node_ref(*r);
    if (lua_isfunction(L, idx)) return lambda_node(L, idx, NULL);
    if (lua_istable(L, idx)) {
        ctn_node *p = table_parallel(L, idx, 0, what);
        if (p == NULL) luaL_error(L, "catena: out of memory");
        return p;
    }
    return (ctn_node *)(intptr_t)luaL_error(
        L, "catena: %s: a %s is not a runnable (use a function, a table or a runnable)", what,
        luaL_typename(L, idx));
}

/* Appends the steps of n (flattening unnamed sequences) to v. */
static int add_steps(ctn_node ***v, size_t *n, size_t *cap, ctn_node *node) {
    if (ctn_node_get_kind(node) == CTN_NODE_SEQUENCE && ctn_node_name(node) == NULL) {
        for (size_t i = 0; i < ctn_node_nkids(node); i++)
            if (add_steps(v, n, cap, ctn_node_ref(ctn_node_kid(node, i))) < 0) {
                ctn_node_unref(node);
                return -1;
            }
        ctn_node_unref(node);
        return 0;
    }
    if (*n == *cap) {
        const size_t c = *cap ? 2 * *cap : 8;
        ctn_node **p = realloc(*v, c * sizeof *p);
        if (p == NULL) {
            ctn_node_unref(node);
            return -1;
        }
        *v = p, *cap = c;
    }
    (*v)[(*n)++] = node;
    return 0;
}

static int r_bor(lua_State *L) {
    ctn_node *a = coerce(L, 1, "left of |");
    ctn_node *b = NULL;
    /* coerce raises; keep a alive on the Lua stack meanwhile. */
    push_runnable(L, a);
    b = coerce(L, 2, "right of |");
    ctn_node **v = NULL;
    size_t n = 0, cap = 0;
    int bad = add_steps(&v, &n, &cap, ctn_node_ref(a)) < 0;
    bad = bad || add_steps(&v, &n, &cap, b) < 0;
    /* A model followed by a parser with a grammar decodes under that grammar. */
    bad = bad || ctn_sequence_bind_grammars(v, n) < 0;
    if (bad) {
        for (size_t i = 0; i < n; i++)
            ctn_node_unref(v[i]);
        free(v);
        luaL_error(L, "catena: out of memory");
    }
    ctn_node *s = ctn_node_sequence(v, n);
    free(v);
    push_runnable(L, s);
    return 1;
}

static int r_gc(lua_State *L) {
    ctn_node **p = check_runnable(L, 1);
    ctn_node_unref(*p);
    *p = NULL;
    return 0;
}

static int r_tostring(lua_State *L) {
    ctn_node **p = check_runnable(L, 1);
    lua_pushfstring(L, "catena.runnable(%s)", ctn_node_label(*p));
    return 1;
}

/* ==== waiting for runs ======================================================================== */

/* One run a Lua caller waits for. */
typedef struct run_wait {
    lctx *ctx;
    ctn_run *run;
    lco *co; /* the coroutine to resume at the end, or NULL (the loop is pumped) */
    int done;
    ctn_val *out;
    int code;
    char *message, *path;
    ctn_val *detail; /* the error's cause and traceback, or NULL */
    /* streaming */
    ctn_val **chunks;
    size_t nchunks, capchunks, head;
    int events;
    int print_trace; /* print the trace tree when it ends */
    int cbref;       /* config.callbacks: registry reference, or LUA_NOREF */
    int record;      /* record it in the context's trace database */
    int own;         /* who frees it: OWN_CALL (the waiting call), OWN_BOX (a stream), OWN_BATCH */
    struct bstate *batch; /* the batch it belongs to, or NULL */
} run_wait;

enum { OWN_CALL, OWN_BOX, OWN_BATCH };

/* A batch in progress: its waits, and how many of the current window are running. */
typedef struct bstate {
    run_wait **w;
    int n, next, maxc, rex, pending;
    ctn_node *root;
    int inputs, cfg; /* registry references */
    lco *co;
} bstate;

static void wait_free(run_wait *w);

static void queue_chunk(run_wait *w, ctn_val *v) {
    if (w->nchunks == w->capchunks) {
        const size_t cap = w->capchunks ? 2 * w->capchunks : 16;
        ctn_val **p = realloc(w->chunks, cap * sizeof *p);
        if (p == NULL) { /* a lost chunk is reported as an error at the end */
            ctn_val_unref(v);
            if (w->code == 0) w->code = CTN_ENOMEM;
            return;
        }
        w->chunks = p, w->capchunks = cap;
    }
    w->chunks[w->nchunks++] = v;
}

/* Resumes the coroutine waiting for w, if any (for a batch: when its window is done). A
 * dead coroutine is not resumed; an invoke's wait is then freed here (nobody else will). */
static void wake(run_wait *w) {
    lco *c = w->co;
    if (c == NULL) return;
    w->co = NULL;
    if (w->batch != NULL && --w->batch->pending > 0) return;
    c->sub = NULL;
    if (c->dead) {
        if (w->own == OWN_CALL) wait_free(w);
        co_drop_hold(c);
        return;
    }
    c->holds--;
    co_resume(c, 0);
}

static void w_done(void *ud, const ctn_val *out, const ctn_chain_err *err) {
    run_wait *w = ud;
    w->done = 1;
    if (err != NULL) {
        w->code = err->code;
        w->message = ctn__strdup(err->message);
        w->path = ctn__strdup(err->path);
        w->detail = ctn_val_ref(err->detail);
    } else {
        w->out = ctn_val_ref((ctn_val *)out);
    }
    wake(w);
}

static void w_chunk(void *ud, const ctn_val *chunk) {
    run_wait *w = ud;
    queue_chunk(w, ctn_val_ref((ctn_val *)chunk));
    if (w->co != NULL && w->batch == NULL) wake(w);
}

/* config.callbacks: calls on_start / on_stream / on_end (when given) with the event table.
 * Handlers run inside the loop and must not wait; an error in one is reported on stderr and
 * does not fail the run (as LangChain's callback handlers). */
typedef struct {
    int cbref;
    const char *name;
    const ctn_val *ev;
} handler_args;

/* Under ctn_l_protect: callbacks[name](ev), when it is a function. */
static int call_handler_p(lua_State *L, void *ud, char *err, size_t errcap) {
    (void)err, (void)errcap;
    handler_args *a = ud;
    lua_rawgeti(L, LUA_REGISTRYINDEX, a->cbref);
    lua_getfield(L, -1, a->name);
    if (lua_isfunction(L, -1)) {
        ctn_l_push_val(L, a->ev, 1);
        lua_call(L, 1, 0);
    }
    return 0;
}

static void call_handler(run_wait *w, const char *event, const ctn_val *ev) {
    if (w->ctx->closed) return;
    char name[16], err[512];
    snprintf(name, sizeof name, "on_%s", event);
    handler_args a = {.cbref = w->cbref, .name = name, .ev = ev};
    if (ctn_l_protect(w->ctx->main, call_handler_p, &a, err, sizeof err) < 0)
        fprintf(stderr, "catena: callbacks.%s failed: %s\n", name, err);
}

/* A stream event as a chain value {event, name, kind, run_id, parent_id, key?, data}. */
static void w_event(void *ud, const ctn_event *ev) {
    run_wait *w = ud;
    ctn_val *o = ctn_val_obj();
    if (o == NULL) return;
    static const char *names[3] = {"start", "stream", "end"};
    const ctn_span *s = ev->span;
    ctn_val_set(o, "event", ctn_val_cstr(names[ev->kind]));
    ctn_val_set(o, "name", ctn_val_cstr(s->label));
    ctn_val_set(o, "kind", ctn_val_cstr(s->kind));
    ctn_val_set(o, "run_id", ctn_val_int(s->id));
    ctn_val_set(o, "parent_id", ctn_val_int(s->parent_id));
    if (s->key != NULL) ctn_val_set(o, "key", ctn_val_cstr(s->key));
    if (ev->kind == CTN_EV_STREAM && ev->chunk != NULL)
        ctn_val_set(o, "chunk", ctn_val_copy(ev->chunk));
    if (ev->kind == CTN_EV_START && s->input != NULL)
        ctn_val_set(o, "input", ctn_val_cstr(s->input));
    if (ev->kind == CTN_EV_END) {
        ctn_val_set(o, "duration_ms", ctn_val_num((double)(s->end_ns - s->start_ns) / 1e6));
        if (s->output != NULL) ctn_val_set(o, "output", ctn_val_cstr(s->output));
        if (s->err_code != 0)
            ctn_val_set(o, "error", ctn_val_cstr(s->err_message ? s->err_message : ""));
        if (s->prompt_tokens || s->completion_tokens) {
            ctn_val_set(o, "prompt_tokens", ctn_val_int(s->prompt_tokens));
            ctn_val_set(o, "completion_tokens", ctn_val_int(s->completion_tokens));
        }
    }
    if (w->cbref != LUA_NOREF) {
        call_handler(w, names[ev->kind], o);
        ctn_val_unref(o);
        return;
    }
    queue_chunk(w, o);
    if (w->co != NULL && w->batch == NULL) wake(w);
}

static void wait_free(run_wait *w) {
    if (w == NULL) return;
    if (w->cbref != LUA_NOREF && !w->ctx->closed)
        luaL_unref(w->ctx->main, LUA_REGISTRYINDEX, w->cbref);
    w->cbref = LUA_NOREF;
    w->co = NULL; /* its run's cancellation below must not wake anyone */
    /* catena run --trace: every top-level run's tree when it has ended, whatever started it
     * (invoke, each item of a batch, stream, stream_events). */
    if (w->print_trace && w->run != NULL && ctn_run_ended(w->run)) {
        char *t = ctn_run_trace_text(w->run);
        if (t != NULL) fprintf(stderr, "-- trace\n%s", t);
        free(t);
    }
    if (w->record && w->run != NULL && ctn_run_ended(w->run)) {
        ctn_chain_err e = {w->code, w->message, w->path, w->detail};
        for (int i = 0; i < w->ctx->ntdb; i++)
            ctn_trace_db_record(w->ctx->tdb[i], w->run, NULL, w->code != 0 ? &e : NULL);
    }
    if (w->run != NULL) ctn_run_free(w->run);
    ctn_val_unref(w->out);
    for (size_t i = w->head; i < w->nchunks; i++)
        ctn_val_unref(w->chunks[i]);
    free(w->chunks);
    free(w->message);
    ctn_val_unref(w->detail);
    free(w->path);
    free(w);
}

/* Runs the loop once; raises when nothing is left that could finish the wait. */
/* Runs the loop once for a wait in plain code; returns 1 when Ctrl-C was pressed (the
 * REPL's interrupt watch): the caller cancels what it waits for. */
static int pump(lua_State *L, lctx *ctx) {
    if (ctx->running > 0)
        luaL_error(L, "catena: cannot wait here: this code runs inside the event loop but not "
                      "in a chain lambda or catena.spawn (wait there, or spawn)");
    if (!uv_loop_alive(&ctx->loop))
        luaL_error(L, "catena: nothing is left that could finish this wait (a task that waits "
                      "for itself, or for a task that never ends)");
    ctx->running++;
    uv_run(&ctx->loop, UV_RUN_ONCE);
    ctx->running--;
    if (ctx->interrupted) {
        ctx->interrupted = 0;
        return 1;
    }
    return 0;
}

/* Starts root on the value at input_idx with the config table at cfg_idx (0: none). */
/*
 * The keys a run's config may have besides the request settings of engine/settings.h: the
 * executor's (tags append, metadata merges, max_concurrency), the user's own under
 * configurable (as LangChain's), the model node's session and n (stdlib/components.c), and, given to invoke / batch / stream only, callbacks and
 * run_name. Raises, naming the key and the nearest known one, for anything else.
 */
static void check_run_config(lua_State *L, int idx, const char *what, bool top) {
    static const char *const keys[] = {"tags",    "metadata", "max_concurrency", "configurable",
                                       "session", "n",        "callbacks",       "run_name"};
    const size_t n = top ? 8 : 6;
    idx = lua_absindex(L, idx);
    lua_pushnil(L);
    while (lua_next(L, idx) != 0) {
        lua_pop(L, 1);
        if (lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "catena: %s: setting names are strings, not a %s", what,
                       luaL_typename(L, -1));
        char err[256];
        const int rc = ctn_settings_check_run_key(lua_tostring(L, -1), keys, n, err, sizeof err);
        if (rc == CTN_ENOENT && strstr(err, "did you mean") == NULL)
            luaL_error(L, "catena: %s: %s (a chain's own keys go under configurable = {...})", what,
                       err);
        if (rc < 0) luaL_error(L, "catena: %s: %s", what, err);
    }
}

/* A flag of start_wait's alone (not the executor's): streaming inside, no chunks queued. */
#define CTN_RUN_NO_CHUNKS (1 << 20)

static run_wait *start_wait(lua_State *L, ctn_node *root, int input_idx, int cfg_idx, int flags) {
    lctx *ctx = get_ctx(L);
    char err[512];
    /*
     * Everything that may raise (config fields read through metamethods, the copy without
     * callbacks, the callbacks' reference) runs before any C value is made, so an error
     * leaves nothing behind; the conversions themselves report errors in err, not by
     * raising.
     */
    ctn_val *cfg = NULL;
    int cbref = LUA_NOREF;
    const char *run_name = NULL;
    int copy = 0; /* stack index of the config without callbacks and run_name */
    if (cfg_idx != 0 && !lua_isnil(L, cfg_idx)) {
        if (!lua_istable(L, cfg_idx)) luaL_error(L, "catena: config: must be a table of keys");
        check_run_config(L, cfg_idx, "config", true);
        /* callbacks (functions) and run_name stay on the Lua side; the rest goes down the
         * graph as the run's config. */
        lua_getfield(L, cfg_idx, "callbacks");
        lua_getfield(L, cfg_idx, "run_name");
        const int has_cb = !lua_isnil(L, -2), has_name = !lua_isnil(L, -1);
        if (has_cb && !lua_istable(L, -2))
            luaL_error(L, "catena: config.callbacks: a table {on_start =, on_stream =, on_end =}");
        if (has_name && lua_type(L, -1) != LUA_TSTRING)
            luaL_error(L, "catena: config.run_name must be a string");
        if (has_cb || has_name) {
            lua_newtable(L); /* a copy without them */
            lua_pushnil(L);
            while (lua_next(L, cfg_idx) != 0) {
                const char *k = lua_type(L, -2) == LUA_TSTRING ? lua_tostring(L, -2) : NULL;
                if (k != NULL && (!strcmp(k, "callbacks") || !strcmp(k, "run_name"))) {
                    lua_pop(L, 1);
                    continue;
                }
                lua_pushvalue(L, -2);
                lua_insert(L, -2);
                lua_rawset(L, -4);
            }
            copy = lua_gettop(L);
        }
        if (has_cb) {
            /* on_stream fires for model tokens in every kind of run: an invoke or batch
             * with it runs streaming inside (the output is the same), without a chunk
             * queue of its own (on_chunk stays unset below). Read raw: a callbacks table's
             * metamethods run only inside the loop, under protection. */
            lua_pushliteral(L, "on_stream");
            lua_rawget(L, copy - 2);
            if (!lua_isnil(L, -1) && !(flags & CTN_RUN_STREAM))
                flags |= CTN_RUN_STREAM | CTN_RUN_NO_CHUNKS;
            lua_pop(L, 1);
            lua_pushvalue(L, copy - 2);
            cbref = luaL_ref(L, LUA_REGISTRYINDEX); /* the last call that may raise */
            flags |= CTN_RUN_EVENTS;
        }
        cfg = ctn_l_to_val(L, copy != 0 ? copy : cfg_idx, "config", err, sizeof err);
        if (copy != 0) lua_pop(L, 1);
        if (has_name) run_name = lua_tostring(L, -1); /* stays on the stack meanwhile */
        if (cfg == NULL || cfg->kind != CTN_VOBJ) {
            luaL_unref(L, LUA_REGISTRYINDEX, cbref);
            ctn_val_unref(cfg);
            lua_pop(L, 2);
            luaL_error(L, "catena: %s", cfg == NULL ? err : "config: must be a table of keys");
        }
    }
    ctn_val *in = ctn_l_to_val(L, input_idx, "input", err, sizeof err);
    if (in == NULL) {
        luaL_unref(L, LUA_REGISTRYINDEX, cbref);
        ctn_val_unref(cfg);
        luaL_error(L, "catena: %s", err);
    }
    run_wait *w = calloc(1, sizeof *w);
    if (w == NULL) {
        ctn_val_unref(in);
        ctn_val_unref(cfg);
        luaL_unref(L, LUA_REGISTRYINDEX, cbref);
        luaL_error(L, "catena: out of memory");
    }
    w->ctx = ctx;
    w->cbref = cbref;
    w->events = (flags & CTN_RUN_EVENTS) != 0 && cbref == LUA_NOREF;
    ctn_node *named = run_name != NULL ? ctn_node_named(ctn_node_ref(root), run_name) : NULL;
    if (named != NULL) root = named;
    if (cfg_idx != 0 && !lua_isnil(L, cfg_idx)) lua_pop(L, 2);
    if (current_co(L) == NULL) {
        if (ctx->print_trace) w->print_trace = 1;
        if (ctx->ntdb > 0) w->record = 1;
        if (w->print_trace || w->record) flags |= CTN_RUN_TRACE;
    }
    const bool chunks = (flags & CTN_RUN_STREAM) && !(flags & CTN_RUN_NO_CHUNKS) && !w->events;
    flags &= ~CTN_RUN_NO_CHUNKS;
    ctn_run_callbacks cb = {.on_done = w_done,
                            .on_chunk = chunks ? w_chunk : NULL,
                            .on_event = (flags & CTN_RUN_EVENTS) ? w_event : NULL,
                            .ud = w};
    const int rc = ctn_run_start(&ctx->loop, root, in, cfg, &cb, flags, &w->run);
    ctn_node_unref(named); /* the run holds its own reference */
    ctn_val_unref(in);
    ctn_val_unref(cfg);
    if (rc < 0) {
        luaL_unref(L, LUA_REGISTRYINDEX, cbref);
        free(w);
        luaL_error(L, "catena: cannot start the run: %s", ctn_strerror(rc));
    }
    return w;
}

/* The output value (light userdata; NULL: nil) as a Lua value, for finish_wait's pcall. */
static int push_out_p(lua_State *L) {
    const ctn_val *v = lua_touserdata(L, 1);
    if (v != NULL) ctn_l_push_val(L, v, 1);
    else lua_pushnil(L);
    return 1;
}

/* Pushes a finished wait's result, or raises its error (freeing w either way). */
static int finish_wait(lua_State *L, run_wait *w) {
    if (w->code != 0) {
        char msg[1024], path[512];
        snprintf(msg, sizeof msg, "%s", w->message ? w->message : ctn_strerror(w->code));
        snprintf(path, sizeof path, "%s", w->path ? w->path : "");
        const int code = w->code;
        ctn_val *detail = ctn_val_ref(w->detail);
        wait_free(w);
        /* Converting the detail may raise (memory): under pcall, so it is released either way. */
        lua_pushcfunction(L, push_err_p);
        lua_pushinteger(L, code);
        lua_pushstring(L, msg);
        lua_pushstring(L, path);
        lua_pushlightuserdata(L, detail);
        lua_pcall(L, 4, 1, 0);
        ctn_val_unref(detail);
        return lua_error(L);
    }
    /* Converting the output may raise (memory): under pcall, so w is freed either way. */
    if (!lua_checkstack(L, 3)) {
        wait_free(w);
        return luaL_error(L, "catena: out of memory");
    }
    lua_pushcfunction(L, push_out_p);
    lua_pushlightuserdata(L, w->out);
    const int st = lua_pcall(L, 1, 1, 0);
    wait_free(w);
    return st == LUA_OK ? 1 : lua_error(L);
}

static int invoke_k(lua_State *L, int status, lua_KContext k) {
    (void)status;
    return finish_wait(L, (run_wait *)k);
}

/* Suspends the current coroutine c until w wakes it, then continues in k. */
static int yield_for(lua_State *L, lco *c, run_wait *w, lua_KFunction k) {
    w->co = c;
    c->holds++;
    c->sub = w->run;
    c->waiting = 1;
    return lua_yieldk(L, 0, (lua_KContext)w, k);
}

static int r_invoke(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    lua_settop(L, 3);
    run_wait *w = start_wait(L, *r, 2, 3, 0);
    if (!w->done) {
        lco *c = current_co(L);
        if (c != NULL) return yield_for(L, c, w, invoke_k);
        while (!w->done)
            if (pump(L, w->ctx)) ctn_run_cancel(w->run);
    }
    return finish_wait(L, w);
}

/* ---- batch ---- */

/* The results table of batch_results (under pcall: light userdata w, n); takes the waits it
 * has converted (w[i] = NULL). */
static int results_table_p(lua_State *L) {
    run_wait **w = lua_touserdata(L, 1);
    const int n = (int)lua_tointeger(L, 2);
    lua_createtable(L, n, 0);
    for (int i = 0; i < n; i++) {
        if (w[i]->code != 0) {
            ctn_l_push_err_detail(L, w[i]->code, w[i]->message ? w[i]->message : "", w[i]->path,
                                  w[i]->detail);
        } else if (w[i]->out != NULL) {
            ctn_l_push_val(L, w[i]->out, 0);
        } else {
            ctn_l_push_null(L);
        }
        lua_rawseti(L, -2, i + 1);
        wait_free(w[i]);
        w[i] = NULL;
    }
    return 1;
}

/* Pushes the results table (raising the first error unless return_exceptions); frees the
 * waits and the array w. */
static int batch_results(lua_State *L, run_wait **w, int n, int return_exceptions) {
    int first_err = -1;
    for (int i = 0; i < n; i++)
        if (w[i]->code != 0 && first_err < 0) first_err = i;
    if (first_err >= 0 && !return_exceptions) {
        run_wait *e = w[first_err];
        for (int i = 0; i < n; i++)
            if (i != first_err) wait_free(w[i]);
        free(w);
        return finish_wait(L, e); /* raises */
    }
    /* The table is built under pcall (it may raise: memory); what it did not take is freed
     * after, either way. */
    if (!lua_checkstack(L, 4)) {
        for (int i = 0; i < n; i++)
            wait_free(w[i]);
        free(w);
        return luaL_error(L, "catena: out of memory");
    }
    lua_pushcfunction(L, results_table_p);
    lua_pushlightuserdata(L, w);
    lua_pushinteger(L, n);
    const int st = lua_pcall(L, 2, 1, 0);
    for (int i = 0; i < n; i++)
        wait_free(w[i]);
    free(w);
    return st == LUA_OK ? 1 : lua_error(L);
}

static void bstate_free(lua_State *L, bstate *b) {
    for (int i = 0; i < b->n; i++)
        if (b->w[i] != NULL) wait_free(b->w[i]);
    free(b->w);
    ctn_node_unref(b->root);
    if (!get_ctx(L)->closed) {
        luaL_unref(L, LUA_REGISTRYINDEX, b->inputs);
        luaL_unref(L, LUA_REGISTRYINDEX, b->cfg);
    }
    free(b);
}

/* A cancelled lambda's batch: its runs stop and its memory goes. */
static void cancel_batch(lco *c) {
    bstate *b = c->bstate;
    c->bstate = NULL;
    if (b->co == c && b->pending > 0) c->holds--; /* the batch's hold */
    b->co = NULL;
    bstate_free(c->ctx->main, b);
}

static int batch_k(lua_State *L, int status, lua_KContext k);

/* start_wait for batch_go under lua_pcall: (root light userdata, input, config or nil). */
static int start_wait_p(lua_State *L) {
    ctn_node *root = lua_touserdata(L, 1);
    run_wait *w = start_wait(L, root, 2, lua_isnil(L, 3) ? 0 : 3, 0);
    lua_pushlightuserdata(L, w);
    return 1;
}

/* Runs the batch from window b->next on; returns through lua_yieldk inside a coroutine. */
static int batch_go(lua_State *L, bstate *b) {
    lco *c = current_co(L);
    lctx *ctx = get_ctx(L);
    while (b->next < b->n) {
        const int from = b->next, upto = from + b->maxc < b->n ? from + b->maxc : b->n;
        lua_rawgeti(L, LUA_REGISTRYINDEX, b->inputs);
        lua_rawgeti(L, LUA_REGISTRYINDEX, b->cfg);
        for (int i = from; i < upto; i++) {
            /* A bad input (or config) raises: under pcall, so the batch is released first
             * (its runs cancelled) and the error goes on. */
            lua_pushcfunction(L, start_wait_p);
            lua_pushlightuserdata(L, b->root);
            lua_rawgeti(L, -4, i + 1);
            lua_pushvalue(L, -4);
            if (lua_pcall(L, 3, 1, 0) != LUA_OK) {
                if (c != NULL) c->bstate = NULL;
                bstate_free(L, b);
                return lua_error(L);
            }
            b->w[i] = lua_touserdata(L, -1);
            b->w[i]->own = OWN_BATCH;
            lua_pop(L, 1);
        }
        lua_pop(L, 2);
        b->next = upto;
        if (c == NULL) {
            for (int i = from; i < upto; i++)
                while (!b->w[i]->done)
                    if (pump(L, ctx))
                        for (int j = from; j < upto; j++)
                            ctn_run_cancel(b->w[j]->run);
            continue;
        }
        b->pending = 0;
        for (int i = from; i < upto; i++)
            if (!b->w[i]->done) {
                b->w[i]->batch = b;
                b->w[i]->co = c;
                b->pending++;
            }
        if (b->pending > 0) {
            b->co = c;
            c->bstate = b;
            c->holds++;
            c->waiting = 1;
            return lua_yieldk(L, 0, (lua_KContext)b, batch_k);
        }
    }
    if (c != NULL) c->bstate = NULL;
    run_wait **w = b->w;
    b->w = NULL;
    const int n = b->n, rex = b->rex;
    b->n = 0;
    bstate_free(L, b);
    return batch_results(L, w, n, rex); /* frees w and the waits; may raise */
}

static int batch_k(lua_State *L, int status, lua_KContext k) {
    (void)status;
    return batch_go(L, (bstate *)k);
}

static int r_batch(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    lua_settop(L, 4);
    int maxc = 0, rex = 0;
    if (lua_istable(L, 3)) {
        static const char *const opts[] = {"max_concurrency", "return_exceptions"};
        ctn_l_check_options(L, 3, "catena: batch", opts, 2);
        lua_getfield(L, 3, "max_concurrency");
        if (!lua_isnil(L, -1)) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1)
                luaL_error(L, "catena: batch: max_concurrency must be a positive integer");
            maxc = (int)lua_tointeger(L, -1);
        }
        lua_getfield(L, 3, "return_exceptions");
        rex = lua_toboolean(L, -1);
        lua_pop(L, 2);
    } else if (!lua_isnil(L, 3)) {
        luaL_argerror(L, 2, "options must be a table {max_concurrency =, return_exceptions =}");
    }
    /* The references first (they may raise), then what C owns. */
    lua_pushvalue(L, 2);
    const int inputs = luaL_ref(L, LUA_REGISTRYINDEX);
    lua_pushvalue(L, 4);
    const int cfg = lua_isnil(L, -1) ? (lua_pop(L, 1), LUA_REFNIL) : luaL_ref(L, LUA_REGISTRYINDEX);
    bstate *b = calloc(1, sizeof *b);
    const int n = (int)lua_rawlen(L, 2);
    if (b == NULL || (b->w = calloc((size_t)n + 1, sizeof *b->w)) == NULL) {
        free(b);
        luaL_unref(L, LUA_REGISTRYINDEX, inputs);
        luaL_unref(L, LUA_REGISTRYINDEX, cfg);
        luaL_error(L, "catena: out of memory");
    }
    b->n = n;
    b->maxc = maxc > 0 ? maxc : (n > 0 ? n : 1);
    b->rex = rex;
    b->root = ctn_node_ref(*r);
    b->inputs = inputs;
    b->cfg = cfg;
    return batch_go(L, b);
}

/* ---- stream ---- */

static int stream_next_k(lua_State *L, int status, lua_KContext k);

/* The iterator of r:stream / r:stream_events: the wait in upvalue 1 (a userdata box). */
static int stream_iter(lua_State *L) {
    run_wait **box = lua_touserdata(L, lua_upvalueindex(1));
    run_wait *w = *box;
    if (w == NULL) return 0;
    for (;;) {
        if (w->head < w->nchunks) {
            ctn_val *v = w->chunks[w->head];
            w->chunks[w->head++] = NULL;
            ctn_l_push_val(L, v, 1);
            ctn_val_unref(v);
            return 1;
        }
        if (w->done) {
            *box = NULL;
            if (w->code != 0) return finish_wait(L, w);
            wait_free(w);
            return 0;
        }
        lco *c = current_co(L);
        if (c != NULL) {
            w->co = c;
            c->holds++;
            c->sub = w->run;
            c->waiting = 1;
            return lua_yieldk(L, 0, (lua_KContext)box, stream_next_k);
        }
        if (pump(L, w->ctx)) ctn_run_cancel(w->run);
    }
}

static int stream_next_k(lua_State *L, int status, lua_KContext k) {
    (void)status;
    (void)k;
    return stream_iter(L);
}

static int stream_box_gc(lua_State *L) {
    run_wait **box = lua_touserdata(L, 1);
    if (*box != NULL) {
        run_wait *w = *box;
        *box = NULL;
        if (w->co != NULL) { /* a coroutine waits on it: it will not be resumed */
            w->co->holds--;
            w->co = NULL;
        }
        wait_free(w); /* cancels the run if it still goes */
    }
    return 0;
}

static int start_stream(lua_State *L, int flags) {
    ctn_node **r = check_runnable(L, 1);
    lua_settop(L, 3);
    run_wait *w = start_wait(L, *r, 2, 3, flags);
    w->own = OWN_BOX;
    run_wait **box = lua_newuserdatauv(L, sizeof *box, 0);
    *box = w;
    lua_newtable(L);
    lua_pushcfunction(L, stream_box_gc);
    lua_setfield(L, -2, "__gc");
    lua_pushcfunction(L, stream_box_gc);
    lua_setfield(L, -2, "__close");
    lua_setmetatable(L, -2);
    lua_pushvalue(L, -1);
    lua_pushcclosure(L, stream_iter, 1);
    /* for x in r:stream(v) do ... end: iterator, state, control, closing value (a break out
     * of the loop cancels the run). */
    lua_pushnil(L);
    lua_pushnil(L);
    lua_pushvalue(L, -4);
    return 4;
}

static int r_stream(lua_State *L) {
    return start_stream(L, CTN_RUN_STREAM);
}

static int r_stream_events(lua_State *L) {
    return start_stream(L, CTN_RUN_STREAM | CTN_RUN_EVENTS);
}

/* ==== combinators ============================================================================ */

static int r_with(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    check_run_config(L, 2, "with{...}", false);
    char err[256];
    ctn_val *cfg = ctn_l_to_val(L, 2, "with{...}", err, sizeof err);
    if (cfg == NULL) luaL_error(L, "catena: %s", err);
    if (cfg->kind != CTN_VOBJ) {
        ctn_val_unref(cfg);
        luaL_error(L, "catena: with{...}: expected a table of settings");
    }
    push_runnable(L, ctn_node_bind(ctn_node_ref(*r), cfg));
    return 1;
}

static int r_named(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    const char *name = luaL_checkstring(L, 2);
    push_runnable(L, ctn_node_named(ctn_node_ref(*r), name));
    return 1;
}

static int r_with_fallbacks(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    luaL_checktype(L, 2, LUA_TTABLE);
    const size_t n = lua_rawlen(L, 2);
    if (n == 0) luaL_error(L, "catena: with_fallbacks{...}: give at least one fallback");
    ctn_node **f = calloc(n, sizeof *f);
    if (f == NULL) luaL_error(L, "catena: out of memory");
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 2, (lua_Integer)i + 1);
        ctn_node **x = luaL_testudata(L, -1, CTN_L_RUNNABLE);
        if (x == NULL && !lua_isfunction(L, -1) && !lua_istable(L, -1)) {
            for (size_t j = 0; j < i; j++)
                ctn_node_unref(f[j]);
            free(f);
            luaL_error(L, "catena: with_fallbacks: fallback %d is a %s, not a runnable", (int)i + 1,
                       luaL_typename(L, -1));
        }
        f[i] = coerce(L, -1, "fallback");
        lua_pop(L, 1);
    }
    ctn_node *fb = ctn_node_fallbacks(ctn_node_ref(*r), f, n);
    free(f);
    push_runnable(L, fb);
    return 1;
}

static int r_with_retry(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    int attempts = 3;
    double backoff = 0;
    if (!lua_isnoneornil(L, 2)) {
        luaL_checktype(L, 2, LUA_TTABLE);
        static const char *const opts[] = {"attempts", "backoff_ms"};
        ctn_l_check_options(L, 2, "catena: with_retry", opts, 2);
        lua_getfield(L, 2, "attempts");
        if (!lua_isnil(L, -1)) {
            if (!lua_isinteger(L, -1) || lua_tointeger(L, -1) < 1 || lua_tointeger(L, -1) > 1000)
                luaL_error(L, "catena: with_retry: attempts must be an integer from 1 to 1000");
            attempts = (int)lua_tointeger(L, -1);
        }
        lua_getfield(L, 2, "backoff_ms");
        if (!lua_isnil(L, -1)) {
            if (!lua_isnumber(L, -1) || lua_tonumber(L, -1) < 0)
                luaL_error(L, "catena: with_retry: backoff_ms must be a number >= 0");
            backoff = lua_tonumber(L, -1);
        }
        lua_pop(L, 2);
    }
    push_runnable(L, ctn_node_retry(ctn_node_ref(*r), attempts, backoff));
    return 1;
}

static int r_with_timeout(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    const double ms = luaL_checknumber(L, 2);
    if (!(ms > 0)) luaL_argerror(L, 2, "the timeout must be a number of milliseconds > 0");
    push_runnable(L, ctn_node_timeout(ctn_node_ref(*r), ms));
    return 1;
}

static int r_map(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    const lua_Integer maxc = luaL_optinteger(L, 2, 0);
    if (maxc < 0 || maxc > 1 << 20) luaL_argerror(L, 2, "max concurrency must be 0..2^20");
    push_runnable(L, ctn_node_map(ctn_node_ref(*r), (int)maxc));
    return 1;
}

static int r_describe(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    char *s = ctn_node_describe(*r);
    if (s == NULL) luaL_error(L, "catena: out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

static int r_graph(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    ctn_val *g = ctn_node_graph(*r);
    if (g == NULL) luaL_error(L, "catena: out of memory");
    ctn_l_push_val(L, g, 1);
    ctn_val_unref(g);
    return 1;
}

static int r_mermaid(lua_State *L) {
    ctn_node **r = check_runnable(L, 1);
    char *s = ctn_node_mermaid(*r);
    if (s == NULL) luaL_error(L, "catena: out of memory");
    lua_pushstring(L, s);
    free(s);
    return 1;
}

/* ---- module functions ---- */

/* catena.lambda(fn [, name]) */
static int m_lambda(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    const char *name = luaL_optstring(L, 2, NULL);
    push_runnable(L, lambda_node(L, 1, name));
    return 1;
}

static int m_runnable(lua_State *L) {
    push_runnable(L, coerce(L, 1, "runnable"));
    return 1;
}

static int m_passthrough(lua_State *L) {
    push_runnable(L, ctn_node_passthrough());
    return 1;
}

static int m_parallel(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    push_runnable(L, table_parallel(L, 1, 0, "parallel"));
    return 1;
}

static int m_assign(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    push_runnable(L, table_parallel(L, 1, 1, "assign"));
    return 1;
}

static int m_pick(lua_State *L) {
    if (lua_type(L, 1) == LUA_TSTRING) {
        const char *k = lua_tostring(L, 1);
        push_runnable(L, ctn_node_pick(&k, 1, 1));
        return 1;
    }
    luaL_checktype(L, 1, LUA_TTABLE);
    const size_t n = lua_rawlen(L, 1);
    if (n == 0) luaL_argerror(L, 1, "give a key or a list of keys");
    const char **keys = calloc(n, sizeof *keys);
    if (keys == NULL) luaL_error(L, "catena: out of memory");
    for (size_t i = 0; i < n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        keys[i] = lua_tostring(L, -1);
        lua_pop(L, 1); /* the string stays in the table */
        if (keys[i] == NULL) {
            free(keys);
            luaL_error(L, "catena: pick: key %d is not a string", (int)i + 1);
        }
    }
    ctn_node *p = ctn_node_pick(keys, n, 0);
    free(keys);
    push_runnable(L, p);
    return 1;
}

/* catena.branch{{cond, r}, ..., default} */
static int m_branch(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    const size_t n = lua_rawlen(L, 1);
    if (n < 1) luaL_error(L, "catena: branch{...}: give {condition, runnable} pairs and a default");
    lua_rawgeti(L, 1, (lua_Integer)n);
    if (lua_istable(L, -1) && !luaL_testudata(L, -1, CTN_L_RUNNABLE) && lua_rawlen(L, -1) == 2)
        luaL_error(L, "catena: branch{...}: the last entry must be the default runnable");
    lua_pop(L, 1);
    ctn_node **conds = calloc(n, sizeof *conds), **brs = calloc(n, sizeof *brs);
    if (conds == NULL || brs == NULL) {
        free(conds), free(brs);
        luaL_error(L, "catena: out of memory");
    }
    for (size_t i = 0; i + 1 < n; i++) {
        lua_rawgeti(L, 1, (lua_Integer)i + 1);
        if (!lua_istable(L, -1) || lua_rawlen(L, -1) != 2) {
            for (size_t j = 0; j < i; j++)
                ctn_node_unref(conds[j]), ctn_node_unref(brs[j]);
            free(conds), free(brs);
            luaL_error(L, "catena: branch{...}: entry %d must be {condition, runnable}",
                       (int)i + 1);
        }
        lua_rawgeti(L, -1, 1);
        conds[i] = coerce(L, -1, "branch condition");
        lua_rawgeti(L, -2, 2);
        brs[i] = coerce(L, -1, "branch");
        lua_pop(L, 3);
    }
    lua_rawgeti(L, 1, (lua_Integer)n);
    ctn_node *d = coerce(L, -1, "branch default");
    lua_pop(L, 1);
    ctn_node *b = ctn_node_branch(conds, brs, n - 1, d);
    free(conds), free(brs);
    push_runnable(L, b);
    return 1;
}

/* catena.router{key = "topic", routes = {name = r, ...}, default = r} */
static int m_router(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    static const char *const opts[] = {"key", "routes", "default"};
    ctn_l_check_options(L, 1, "catena: router{...}", opts, 3);
    lua_getfield(L, 1, "key");
    const char *key = lua_tostring(L, -1);
    if (key == NULL) luaL_error(L, "catena: router{...}: key must be the input key that chooses");
    lua_getfield(L, 1, "routes");
    if (!lua_istable(L, -1))
        luaL_error(L, "catena: router{...}: routes must be a table name = runnable");
    const int rt = lua_gettop(L);
    size_t n = 0;
    lua_pushnil(L);
    while (lua_next(L, rt) != 0) {
        if (lua_type(L, -2) != LUA_TSTRING)
            luaL_error(L, "catena: router: route names must be strings");
        n++;
        lua_pop(L, 1);
    }
    const char **names = calloc(n + 1, sizeof *names);
    ctn_node **routes = calloc(n + 1, sizeof *routes);
    if (names == NULL || routes == NULL) {
        free(names), free(routes);
        luaL_error(L, "catena: out of memory");
    }
    size_t i = 0;
    lua_pushnil(L);
    while (lua_next(L, rt) != 0) {
        names[i] = lua_tostring(L, -2);
        routes[i] = coerce(L, -1, names[i]);
        i++;
        lua_pop(L, 1);
    }
    /* Sorted, so messages list the routes in a stable order. */
    for (size_t a = 1; a < n; a++)
        for (size_t b = a; b > 0 && strcmp(names[b - 1], names[b]) > 0; b--) {
            const char *x = names[b];
            names[b] = names[b - 1], names[b - 1] = x;
            ctn_node *y = routes[b];
            routes[b] = routes[b - 1], routes[b - 1] = y;
        }
    lua_getfield(L, 1, "default");
    ctn_node *d = lua_isnil(L, -1) ? NULL : coerce(L, -1, "router default");
    ctn_node *r = ctn_node_router(key, names, routes, n, d);
    free(names), free(routes);
    push_runnable(L, r);
    return 1;
}

/* ---- spawn / await / gather / sleep ---- */

typedef struct handle {
    lctx *ctx;
    int done, ok;
    int lost;    /* finished, but its results could not be kept (out of memory) */
    int results; /* registry reference to a table of the results (or {error}) */
    int nres;
    lco *waiter; /* a coroutine waiting in await */
    lco *runner; /* the coroutine running it, NULL once finished */
} handle;

#define HANDLE_MT "catena.task"

typedef struct {
    lua_State *co;
    int nres;
    const char *msg; /* an error of catena's own, instead of the coroutine's values */
    int ref;
} spawn_args;

/* Under ctn_l_protect: a table of the coroutine's values (or of msg), in the registry. */
static int spawn_results_p(lua_State *L, void *ud, char *err, size_t errcap) {
    (void)err, (void)errcap;
    spawn_args *a = ud;
    luaL_checkstack(L, a->nres + 4, "catena: too many results");
    const int base = lua_gettop(L);
    if (a->msg != NULL) {
        lua_pushstring(L, a->msg);
        a->nres = 1;
    } else {
        lua_xmove(a->co, L, a->nres);
    }
    lua_createtable(L, a->nres, 0);
    for (int i = 0; i < a->nres; i++) {
        lua_pushvalue(L, base + 1 + i);
        lua_rawseti(L, -2, i + 1);
    }
    a->ref = luaL_ref(L, LUA_REGISTRYINDEX);
    return 0;
}

/* Records how c's spawned function ended (ok, its nres values on its stack, or msg) in its
 * handle and wakes a waiter. When the values cannot be kept (out of memory), awaiting the
 * handle raises that instead. */
static void spawn_finished(lco *c, int ok, int nres, const char *msg) {
    handle *h = c->spawn;
    c->spawn = NULL;
    if (h == NULL) return;
    h->runner = NULL;
    spawn_args a = {.co = c->co, .nres = nres, .msg = msg, .ref = LUA_NOREF};
    char err[512];
    const int rc = ctn_l_protect(c->ctx->main, spawn_results_p, &a, err, sizeof err);
    h->results = rc < 0 ? LUA_NOREF : a.ref;
    h->lost = rc < 0;
    h->nres = a.nres;
    h->ok = ok;
    h->done = 1;
    lco *w = h->waiter;
    h->waiter = NULL;
    if (w != NULL) {
        if (w->dead) {
            co_drop_hold(w);
        } else {
            w->holds--;
            co_resume(w, 0);
        }
    }
}

static int m_spawn(lua_State *L) {
    luaL_checktype(L, 1, LUA_TFUNCTION);
    const int nargs = lua_gettop(L) - 1;
    lctx *ctx = get_ctx(L);
    handle *h = lua_newuserdatauv(L, sizeof *h, 0);
    memset(h, 0, sizeof *h);
    h->ctx = ctx;
    h->results = LUA_NOREF;
    luaL_setmetatable(L, HANDLE_MT);
    char err[512];
    lco *c = co_new(ctx, ctx->main, err, sizeof err);
    if (c == NULL) return raise_err(L, CTN_ENOMEM, err, NULL);
    c->spawn = h;
    h->runner = c;
    lua_pushvalue(L, 1);
    lua_xmove(L, c->co, 1);
    for (int i = 0; i < nargs; i++) {
        lua_pushvalue(L, 2 + i);
        lua_xmove(L, c->co, 1);
    }
    /* The handle must outlive the coroutine's run: anchor it in the coroutine's registry
     * slot table? The handle userdata is referenced from the Lua side by the caller; if it
     * is dropped the results are simply never read. Keep it alive while running. */
    lua_pushvalue(L, -1);
    const int href = luaL_ref(L, LUA_REGISTRYINDEX);
    co_resume(c, nargs);
    luaL_unref(L, LUA_REGISTRYINDEX, href);
    return 1;
}

static int await_k(lua_State *L, int status, lua_KContext k);
static int gather_k(lua_State *L, int status, lua_KContext k);

static int push_handle_results(lua_State *L, handle *h) {
    if (h->lost)
        return raise_err(L, CTN_ENOMEM, "the task finished, but its results were lost (out of memory)",
                         NULL);
    lua_rawgeti(L, LUA_REGISTRYINDEX, h->results);
    if (!h->ok) {
        lua_rawgeti(L, -1, 1);
        return lua_error(L);
    }
    for (int i = 1; i <= h->nres; i++)
        lua_rawgeti(L, -i, i);
    return h->nres;
}

static int m_await(lua_State *L) {
    handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    if (!h->done) {
        lco *c = current_co(L);
        if (c != NULL) {
            if (h->waiter != NULL)
                luaL_error(L, "catena: await: another coroutine awaits this task");
            h->waiter = c;
            c->holds++;
            c->waiting = 1;
            return lua_yieldk(L, 0, (lua_KContext)h, await_k);
        }
        while (!h->done)
            if (pump(L, h->ctx)) luaL_error(L, "catena: interrupted (the task goes on)");
    }
    return push_handle_results(L, h);
}

static int await_k(lua_State *L, int status, lua_KContext k) {
    (void)status;
    return push_handle_results(L, (handle *)k);
}

static int handle_gc(lua_State *L) {
    handle *h = luaL_checkudata(L, 1, HANDLE_MT);
    if (h->results != LUA_NOREF && !h->ctx->closed) luaL_unref(L, LUA_REGISTRYINDEX, h->results);
    h->results = LUA_NOREF;
    if (h->runner != NULL) h->runner->spawn = NULL;
    return 0;
}

/* catena.gather(h1, h2, ...) or catena.gather{h1, h2, ...}: a table of the first result of
 * each, awaited in order. The stack is [handles, results] so the loop can go on after an
 * await yields (gather_k). */
static int gather_from(lua_State *L, lua_Integer i) {
    const lua_Integer n = (lua_Integer)lua_rawlen(L, 1);
    for (; i <= n; i++) {
        lua_pushcfunction(L, m_await);
        lua_rawgeti(L, 1, i);
        lua_callk(L, 1, 1, (lua_KContext)i, gather_k);
        lua_rawseti(L, 2, i);
    }
    lua_settop(L, 2);
    return 1;
}

static int gather_k(lua_State *L, int status, lua_KContext k) {
    (void)status;
    lua_rawseti(L, 2, (lua_Integer)k); /* the await that yielded has returned its value */
    return gather_from(L, (lua_Integer)k + 1);
}

static int m_gather(lua_State *L) {
    const int list = lua_gettop(L) == 1 && lua_istable(L, 1) && !luaL_testudata(L, 1, HANDLE_MT);
    if (!list) {
        const int n = lua_gettop(L);
        lua_createtable(L, n, 0);
        for (int i = 1; i <= n; i++) {
            lua_pushvalue(L, i);
            lua_rawseti(L, -2, i);
        }
        lua_replace(L, 1);
    }
    lua_settop(L, 1);
    lua_createtable(L, (int)lua_rawlen(L, 1), 0);
    return gather_from(L, 1);
}

typedef struct {
    uv_timer_t h;
    lco *co;
    int *fired; /* plain code's flag, or NULL */
} sleeper;

/* Marks the handles of sleepers (their data), so that closing the state frees them. */
static const char sleeper_tag = 0;

static void sleeper_closed(uv_handle_t *h) {
    sleeper *s = (sleeper *)h;
    if (s->co != NULL) co_drop_hold(s->co); /* closed before it fired: the state is closing */
    free(h);
}

static void sleeper_fire(uv_timer_t *t) {
    sleeper *s = (sleeper *)t;
    if (s->fired != NULL) *s->fired = 1;
    lco *c = s->co;
    s->co = NULL;
    uv_close((uv_handle_t *)t, sleeper_closed);
    if (c != NULL) {
        if (c->dead) {
            co_drop_hold(c);
        } else {
            c->holds--;
            co_resume(c, 0);
        }
    }
}

static int sleep_k(lua_State *L, int status, lua_KContext k) {
    (void)L, (void)status, (void)k;
    return 0;
}

static int m_sleep(lua_State *L) {
    const double ms = luaL_checknumber(L, 1);
    if (!(ms >= 0)) luaL_argerror(L, 1, "milliseconds must be >= 0");
    lctx *ctx = get_ctx(L);
    sleeper *s = calloc(1, sizeof *s);
    if (s == NULL) luaL_error(L, "catena: out of memory");
    uv_timer_init(&ctx->loop, &s->h);
    s->h.data = (void *)&sleeper_tag;
    uv_update_time(&ctx->loop);
    uv_timer_start(&s->h, sleeper_fire, (uint64_t)(ms + 0.5), 0);
    lco *c = current_co(L);
    if (c != NULL) {
        s->co = c;
        c->holds++;
        c->waiting = 1;
        return lua_yieldk(L, 0, 0, sleep_k);
    }
    /* Plain code: run the loop (other chains go on) until the timer fires; s is freed by
     * its close callback. */
    int fired = 0;
    s->fired = &fired;
    while (!fired)
        if (pump(L, ctx)) {
            s->fired = NULL; /* the timer outlives this frame */
            luaL_error(L, "catena: interrupted");
        }
    return 0;
}

static int m_array(lua_State *L) {
    if (lua_isnoneornil(L, 1)) lua_newtable(L);
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    luaL_setmetatable(L, CTN_L_ARRAY);
    return 1;
}

static int m_document(lua_State *L) {
    luaL_checktype(L, 1, LUA_TTABLE);
    lua_settop(L, 1);
    static const char *const opts[] = {"page_content", "metadata"};
    ctn_l_check_options(L, 1, "catena.document{...}", opts, 2);
    lua_getfield(L, 1, "page_content");
    if (lua_type(L, -1) != LUA_TSTRING)
        luaL_error(L, "catena.document{...}: page_content must be a string");
    lua_pop(L, 1);
    lua_getfield(L, 1, "metadata");
    if (lua_isnil(L, -1)) {
        lua_newtable(L);
        lua_setfield(L, 1, "metadata");
    }
    lua_pop(L, 1);
    luaL_setmetatable(L, CTN_L_DOCUMENT);
    return 1;
}

/* ---- catena.trace ---- */

#define TRACEDB_MT "catena.tracedb"

/* catena.trace.sqlite(path): records every top-level run of this state into path; returns
 * a handle (:runs(), :error(), :close()). Several may be open: each records every run. */
static int m_trace_sqlite(lua_State *L) {
    const char *path = luaL_checkstring(L, 1);
    lctx *ctx = get_ctx(L);
    if (ctx->ntdb == CTN_L_MAX_TRACE_DBS)
        return luaL_error(L, "catena.trace.sqlite: %d trace databases are open already; close one",
                          CTN_L_MAX_TRACE_DBS);
    char err[512];
    ctn_trace_db *db = NULL;
    if (ctn_trace_db_open(&ctx->loop, path, &db, err, sizeof err) < 0)
        return raise_err(L, CTN_EIO, err, "");
    ctx->tdb[ctx->ntdb++] = db;
    ctn_trace_db **h = lua_newuserdatauv(L, sizeof *h, 0);
    *h = db;
    luaL_setmetatable(L, TRACEDB_MT);
    return 1;
}

static int tdb_index(const lctx *ctx, const ctn_trace_db *db) {
    for (int i = 0; i < ctx->ntdb; i++)
        if (ctx->tdb[i] == db) return i;
    return -1;
}

/* Lets db's queued writes finish, unless this is called from inside the loop. */
static void tdb_flush(lctx *ctx, const ctn_trace_db *db) {
    if (ctx->running != 0 || ctx->closed) return;
    while (ctn_trace_db_pending(db) > 0 && uv_run(&ctx->loop, UV_RUN_ONCE) != 0) {
    }
}

static ctn_trace_db *check_tdb(lua_State *L) {
    ctn_trace_db **h = luaL_checkudata(L, 1, TRACEDB_MT);
    lctx *ctx = get_ctx(L);
    if (*h == NULL || tdb_index(ctx, *h) < 0)
        luaL_error(L, "catena: this trace database is closed");
    return *h;
}

static int tdb_runs(lua_State *L) {
    ctn_trace_db *db = check_tdb(L);
    /* Writes go through the thread pool: the runs recorded so far are counted once their
     * writes are done. */
    tdb_flush(get_ctx(L), db);
    lua_pushinteger(L, ctn_trace_db_runs(db));
    return 1;
}

static int tdb_error(lua_State *L) {
    const char *e = ctn_trace_db_error(check_tdb(L));
    if (e == NULL) return 0;
    lua_pushstring(L, e);
    return 1;
}

static int tdb_close(lua_State *L) {
    ctn_trace_db **h = luaL_checkudata(L, 1, TRACEDB_MT);
    lctx *ctx = get_ctx(L);
    const int i = *h != NULL ? tdb_index(ctx, *h) : -1;
    if (i >= 0) {
        ctn_trace_db_close(*h);
        ctx->tdb[i] = ctx->tdb[--ctx->ntdb];
        /* Let the queued writes finish, so the file is complete when close returns. */
        if (ctx->running == 0 && !ctx->closed)
            while (uv_run(&ctx->loop, UV_RUN_ONCE) != 0 && uv_loop_alive(&ctx->loop))
                ;
    }
    *h = NULL;
    return 0;
}

/* ==== the module ============================================================================ */

/* Closes the module's own handles (sleepers, the Ctrl-C watch); handles of others (a
 * model's, a run's timers) are closed by their owners as they are freed. */
/* ---- catena run's Ctrl-C ---- */

/*
 * A signal handler of our own (not libuv's, whose callback runs only when the loop runs):
 * inside a wait it marks the interrupt and wakes the loop (uv_async_send is async-signal-
 * safe), so pump cancels the run and the script sees a cancellation error; in plain Lua
 * code it sets a hook (as lua.c does) that raises one at the next instruction. A second
 * Ctrl-C before the first was taken kills the process as SIGINT does by default.
 */
static lctx *volatile int_ctx;
static volatile sig_atomic_t int_count;

static void int_hook(lua_State *L, lua_Debug *ar) {
    (void)ar;
    lua_sethook(L, NULL, 0, 0);
    if (int_ctx != NULL) int_ctx->interrupted = 0;
    ctn_l_push_err(L, CTN_ECANCELED, "interrupted (Ctrl-C)", "");
    lua_error(L);
}

static void int_handler(int sig) {
    lctx *ctx = int_ctx;
    int_count++;
    if (ctx == NULL || ctx->interrupted) {
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    ctx->interrupted = 1;
    if (ctx->running == 0)
        lua_sethook(ctx->main, int_hook, LUA_MASKCALL | LUA_MASKRET | LUA_MASKCOUNT, 1);
    uv_async_send(&ctx->int_wake);
}

static void int_woken(uv_async_t *h) {
    (void)h; /* pump sees ctx->interrupted when uv_run returns */
}

static void int_stop(lctx *ctx) {
    signal(SIGINT, SIG_DFL);
    int_ctx = NULL;
    ctx->catching = 0;
}

int ctn_l_catch_interrupt(lua_State *L) {
    lctx *ctx = get_ctx(L);
    if (ctx == NULL) return -1;
    if (ctx->catching) return 0;
    if (uv_async_init(&ctx->loop, &ctx->int_wake, int_woken) != 0) return -1;
    uv_unref((uv_handle_t *)&ctx->int_wake); /* it does not keep the loop alive */
    ctx->catching = 1;
    int_ctx = ctx;
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = int_handler;
    sigemptyset(&sa.sa_mask);
    sa.sa_flags = SA_RESTART;
    return sigaction(SIGINT, &sa, NULL) == 0 ? 0 : -1;
}

int ctn_l_interrupts(void) {
    return (int)int_count;
}

static void close_handle(uv_handle_t *h, void *arg) {
    lctx *ctx = arg;
    if (uv_is_closing(h)) return;
    if (h->data == &sleeper_tag)
        uv_close(h, sleeper_closed);
    else if (h == (uv_handle_t *)&ctx->sigint || h == (uv_handle_t *)&ctx->int_wake)
        uv_close(h, NULL);
}

static int ctx_gc(lua_State *L) {
    lctx *ctx = lua_touserdata(L, 1);
    if (ctx->closed) return 0;
    if (ctx->catching) int_stop(ctx);
    for (int i = 0; i < ctx->ntdb; i++)
        ctn_trace_db_close(ctx->tdb[i]); /* freed when its writes are done */
    ctx->ntdb = 0;
    ctx->closed = 1;
    /* Close what is left (timers of abandoned waits) and let libuv finish the closes. */
    uv_walk(&ctx->loop, close_handle, ctx);
    uv_run(&ctx->loop, UV_RUN_DEFAULT);
    uv_loop_close(&ctx->loop);
    for (lco *c = ctx->idle; c != NULL;) {
        lco *n = c->next_idle;
        free(c);
        c = n;
    }
    ctx->idle = NULL;
    return 0;
}

static const luaL_Reg runnable_methods[] = {
    {"invoke", r_invoke},
    {"batch", r_batch},
    {"stream", r_stream},
    {"stream_events", r_stream_events},
    {"with", r_with},
    {"named", r_named},
    {"with_fallbacks", r_with_fallbacks},
    {"with_retry", r_with_retry},
    {"with_timeout", r_with_timeout},
    {"map", r_map},
    {"describe", r_describe},
    {"graph", r_graph},
    {"mermaid", r_mermaid},
    {"pipe", r_bor},
    {NULL, NULL},
};

static const luaL_Reg module_functions[] = {
    {"lambda", m_lambda},     {"runnable", m_runnable}, {"passthrough", m_passthrough},
    {"parallel", m_parallel}, {"assign", m_assign},     {"pick", m_pick},
    {"branch", m_branch},     {"router", m_router},     {"spawn", m_spawn},
    {"await", m_await},       {"gather", m_gather},     {"sleep", m_sleep},
    {"array", m_array},       {"document", m_document}, {NULL, NULL},
};

static void on_sigint(uv_signal_t *h, int signum) {
    (void)signum;
    lctx *ctx = h->data;
    ctx->interrupted = 1;
}

int ctn_l_watch_interrupt(lua_State *L) {
    lctx *ctx = get_ctx(L);
    if (ctx == NULL || ctx->watching) return ctx == NULL ? -1 : 0;
    if (uv_signal_init(&ctx->loop, &ctx->sigint) != 0) return -1;
    ctx->sigint.data = ctx;
    if (uv_signal_start(&ctx->sigint, on_sigint, SIGINT) != 0) return -1;
    uv_unref((uv_handle_t *)&ctx->sigint); /* it does not keep the loop alive */
    ctx->watching = 1;
    return 0;
}

int ctn_l_take_interrupt(lua_State *L) {
    lctx *ctx = get_ctx(L);
    if (ctx == NULL || !ctx->interrupted) return 0;
    ctx->interrupted = 0;
    return 1;
}

void ctn_l_loop_enter(lua_State *L) {
    lctx *ctx = get_ctx(L);
    if (ctx != NULL) ctx->running++;
}

void ctn_l_loop_leave(lua_State *L) {
    lctx *ctx = get_ctx(L);
    if (ctx != NULL && ctx->running > 0) ctx->running--;
}

lua_State *ctn_l_new_state(void) {
    lua_State *L = luaL_newstate();
    if (L == NULL) return NULL;
    luaL_openlibs(L);
    luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_PRELOAD_TABLE);
    lua_pushcfunction(L, luaopen_catena);
    lua_setfield(L, -2, "catena");
    lua_pop(L, 1);
    luaL_requiref(L, "catena", luaopen_catena, 0);
    lua_pop(L, 1);
    return L;
}

int ctn_l_load_chain(lua_State *L, const char *path, const char *const *args, int nargs,
                     ctn_node **out, char *err, size_t errcap) {
    *out = NULL;
    lua_pushcfunction(L, ctn_l_traceback);
    int st = luaL_loadfile(L, path);
    if (st == LUA_OK) {
        for (int i = 0; i < nargs; i++)
            lua_pushstring(L, args[i]);
        st = lua_pcall(L, nargs, 1, -nargs - 2);
    }
    if (st != LUA_OK) {
        const char *msg = lua_tostring(L, -1);
        ctn__errf(err, errcap, "%s", msg != NULL ? msg : "an error that is not a string");
        lua_pop(L, 2);
        return st == LUA_ERRMEM ? CTN_ENOMEM : st == LUA_ERRFILE ? CTN_ENOENT : CTN_ECHAIN;
    }
    ctn_node **pn = luaL_testudata(L, -1, CTN_L_RUNNABLE);
    if (pn == NULL) {
        ctn__errf(err, errcap, "%s: the file must return a runnable (return chain), not %s", path,
                  luaL_typename(L, -1));
        lua_pop(L, 2);
        return CTN_ETYPE;
    }
    *out = ctn_node_ref(*pn);
    lua_pop(L, 2);
    return 0;
}

int ctn_l_open_model(lua_State *L, const char *path, const ctn_lm_params *p, ctn_lm **out,
                     char *err, size_t errcap) {
    lctx *ctx = get_ctx(L);
    return ctn_lm_open(&ctx->loop, path, p, out, err, errcap);
}

void ctn_l_run_glue(lua_State *L, const char *src, size_t n, const char *name,
                    const luaL_Reg *prims) {
    const int module = lua_absindex(L, -1);
    if (luaL_loadbuffer(L, src, n, name) != LUA_OK) lua_error(L);
    lua_newtable(L);
    luaL_setfuncs(L, prims, 0);
    lua_pushvalue(L, module);
    luaL_getmetatable(L, CTN_L_RUNNABLE);
    lua_getfield(L, -1, "__index");
    lua_remove(L, -2);
    lua_call(L, 3, 0);
}

void ctn_l_set_print_trace(lua_State *L, int on) {
    lctx *ctx = get_ctx(L);
    if (ctx != NULL) ctx->print_trace = on;
}

int luaopen_catena(lua_State *L) {
    /* The context: one loop per Lua state, created once. */
    lua_getfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    if (lua_isnil(L, -1)) {
        lua_pop(L, 1);
        /* Each step may raise (memory): the coroutine table first, then the context with
         * its __gc set before the loop exists (the __gc closes only an opened loop), and
         * the registry entry that makes it the state's last. */
        lua_newtable(L);
        lua_setfield(L, LUA_REGISTRYINDEX, COS_KEY);
        lctx *ctx = lua_newuserdatauv(L, sizeof *ctx, 0);
        memset(ctx, 0, sizeof *ctx);
        ctx->closed = 1; /* nothing to close yet */
        lua_newtable(L);
        lua_pushcfunction(L, ctx_gc);
        lua_setfield(L, -2, "__gc");
        lua_setmetatable(L, -2);
        lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_MAINTHREAD);
        ctx->main = lua_tothread(L, -1);
        lua_pop(L, 1);
        if (uv_loop_init(&ctx->loop) != 0) luaL_error(L, "catena: cannot create the event loop");
        ctx->closed = 0;
        lua_setfield(L, LUA_REGISTRYINDEX, CTX_KEY);
    } else {
        lua_pop(L, 1);
    }
    if (luaL_newmetatable(L, CTN_L_RUNNABLE)) {
        luaL_newlib(L, runnable_methods);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, r_bor);
        lua_setfield(L, -2, "__bor");
        lua_pushcfunction(L, r_gc);
        lua_setfield(L, -2, "__gc");
        lua_pushcfunction(L, r_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, CTN_L_ERROR)) {
        lua_pushcfunction(L, err_tostring);
        lua_setfield(L, -2, "__tostring");
    }
    lua_pop(L, 1);
    luaL_newmetatable(L, CTN_L_DOCUMENT);
    lua_pop(L, 1);
    luaL_newmetatable(L, CTN_L_ARRAY);
    lua_pop(L, 1);
    if (luaL_newmetatable(L, HANDLE_MT)) {
        lua_pushcfunction(L, handle_gc);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    if (luaL_newmetatable(L, TRACEDB_MT)) {
        static const luaL_Reg m[] = {
            {"runs", tdb_runs}, {"error", tdb_error}, {"close", tdb_close}, {NULL, NULL}};
        luaL_newlib(L, m);
        lua_setfield(L, -2, "__index");
        lua_pushcfunction(L, tdb_close);
        lua_setfield(L, -2, "__gc");
    }
    lua_pop(L, 1);
    luaL_newlib(L, module_functions);
    ctn_l_open_components(L);
    ctn_l_open_rag(L);
    ctn_l_open_remote(L);
    ctn_l_open_history(L);
    ctn_l_open_tools(L);
    lua_newtable(L);
    lua_pushcfunction(L, m_trace_sqlite);
    lua_setfield(L, -2, "sqlite");
    lua_setfield(L, -2, "trace");
    ctn_l_push_null(L);
    lua_setfield(L, -2, "null");
    lua_pushstring(L, CTN_VERSION);
    lua_setfield(L, -2, "version");
    return 1;
}
