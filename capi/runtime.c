/*
 * libcatena (include/catena.h): a runtime is a Lua state with the catena module, whose libuv
 * loop runs on a thread of the runtime's own. Every other thread talks to it through one
 * locked queue of operations and a uv_async handle that wakes the loop; only the loop thread
 * touches the Lua state, the chain nodes and the runs (STYLE.md: worker threads report back
 * with uv_async_send).
 *
 * A call is submitted on the caller's thread (its JSON parsed and checked there, so errors
 * come back at once), queued, started on the loop thread, and ends with its done callback
 * there. Calls in flight are kept in a list under the lock, so ctn_cancel can say from any
 * thread whether an id is still running.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <uv.h>

#include "alloc.h"
#include "chain.h"
#include "error.h"
#include "json.h"
#include "l_catena.h"
#include "lm.h"
#include "settings.h"
#include "str.h"
#include "value.h"

#include "catena.h"

#ifndef CTN_VERSION
#define CTN_VERSION "unknown"
#endif

/* ---- errors ---------------------------------------------------------------------------------- */

static _Thread_local char last_err[1024];

/* Records the calling thread's error message and returns code. */
static int fail(int code, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static int fail(int code, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(last_err, sizeof last_err, fmt, ap);
    va_end(ap);
    return code;
}

CTN_API const char *ctn_last_error(void) {
    return last_err;
}

CTN_API const char *ctn_version(void) {
    return CTN_VERSION;
}

/* ---- types ----------------------------------------------------------------------------------- */

enum { CALL_INVOKE, CALL_STREAM, CALL_BATCH };
enum { OP_CALL, OP_CANCEL, OP_MODEL, OP_CHAIN, OP_STOP };

typedef struct call call;

/* One queued operation. OP_CALL ops live in their call, OP_CANCEL ones are malloc'd (freed by
 * the loop), and the blocking ones (model, chain, stop) on their caller's stack. */
typedef struct op {
    int kind;
    struct op *next;
    call *c;              /* OP_CALL */
    uint64_t id;          /* OP_CANCEL */
    const char *path;     /* OP_MODEL, OP_CHAIN: borrowed, the caller waits */
    ctn_lm_params params; /* OP_MODEL */
    ctn_chain *chain;     /* OP_CHAIN: the result */
    int rc;
    bool done; /* the blocking ones: set under the lock, then the condition is broadcast */
    char *msg; /* the blocking ones: their error message, in the caller's buffer */
    size_t msgcap;
} op;

struct ctn_chain {
    ctn_runtime *rt;
    ctn_node *node; /* one reference */
    ctn_chain *next;
};

/* A run of a call: which call, which input. */
struct slot {
    call *c;
    size_t i;
    bool ended;
};

struct call {
    op op; /* its OP_CALL */
    ctn_runtime *rt;
    uint64_t id;
    int kind;
    ctn_chain *chain;
    ctn_val *input;  /* invoke / stream: the input; batch: the array of inputs */
    ctn_val *config; /* an object or NULL */
    ctn_chunk_fn chunk;
    ctn_done_fn done;
    void *ud;
    /* On the loop thread. */
    size_t n, next, running, max_running; /* runs: in all, started, running, allowed at once */
    ctn_run **runs;                       /* (n) */
    ctn_val **outs;                       /* (n) */
    struct slot *slots;                   /* (n) */
    int err;                              /* the first error: CTN_E*, and its message */
    char *errmsg;
    bool busy, cancel_sent, finished;
    /* Under rt->mu: the list of calls in flight. */
    call *prev, *lnext;
};

struct ctn_runtime {
    lua_State *L;
    uv_loop_t *loop;
    uv_async_t wake;
    uv_thread_t thread;
    uv_mutex_t mu;
    uv_cond_t cv;
    /* Under mu. */
    op *head, *tail; /* the queue */
    call *live;      /* calls in flight */
    uint64_t next_id;
    bool stopping;
    /* On the loop thread. */
    ctn_lm **models;
    char **model_paths;
    size_t n_models;
    ctn_chain *chains;
};

/* The runtime whose loop runs on this thread, if any. */
static _Thread_local ctn_runtime *loop_rt;

static bool on_loop(const ctn_runtime *rt) {
    return loop_rt == rt;
}

/* Queues o and wakes the loop; under rt->mu. */
static void enqueue_locked(ctn_runtime *rt, op *o) {
    o->next = NULL;
    if (rt->tail != NULL)
        rt->tail->next = o;
    else
        rt->head = o;
    rt->tail = o;
    uv_async_send(&rt->wake);
}

/* Queues a blocking operation and waits for the loop to carry it out. */
static void run_blocking(ctn_runtime *rt, op *o) {
    uv_mutex_lock(&rt->mu);
    enqueue_locked(rt, o);
    while (!o->done)
        uv_cond_wait(&rt->cv, &rt->mu);
    uv_mutex_unlock(&rt->mu);
}

static void finish_blocking(ctn_runtime *rt, op *o) {
    uv_mutex_lock(&rt->mu);
    o->done = true;
    uv_cond_broadcast(&rt->cv);
    uv_mutex_unlock(&rt->mu);
}

/* ---- calls on the loop thread ---------------------------------------------------------------- */

static void call_free(call *c) {
    for (size_t i = 0; i < c->n; i++) {
        if (c->runs != NULL && c->runs[i] != NULL) ctn_run_free(c->runs[i]);
        if (c->outs != NULL) ctn_val_unref(c->outs[i]);
    }
    free(c->runs);
    free(c->outs);
    free(c->slots);
    free(c->errmsg);
    ctn_val_unref(c->input);
    ctn_val_unref(c->config);
    free(c);
}

/* Sets the call's first error (a later one is dropped). */
static void call_error(call *c, int code, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void call_error(call *c, int code, const char *fmt, ...) {
    if (c->err != 0) return;
    c->err = code;
    char msg[1024];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    c->errmsg = ctn__strdup(msg); /* NULL: the code's own words stand in */
}

/* Every run has ended: the callback, then the call is gone. */
static void call_finish(call *c) {
    ctn_runtime *rt = c->rt;
    c->finished = true;
    uv_mutex_lock(&rt->mu);
    if (c->prev != NULL)
        c->prev->lnext = c->lnext;
    else
        rt->live = c->lnext;
    if (c->lnext != NULL) c->lnext->prev = c->prev;
    uv_mutex_unlock(&rt->mu);
    char *text = NULL;
    if (c->err == 0) {
        if (c->kind == CALL_BATCH) {
            ctn_val *arr = ctn_val_arr();
            for (size_t i = 0; arr != NULL && i < c->n; i++)
                if (ctn_val_push(arr, ctn_val_ref(c->outs[i])) < 0) {
                    ctn_val_unref(arr);
                    arr = NULL;
                }
            text = arr != NULL ? ctn_val_to_json(arr, 0) : NULL;
            ctn_val_unref(arr);
        } else {
            text = ctn_val_to_json(c->outs[0], 0);
        }
        if (text == NULL) call_error(c, CTN_ENOMEM, "out of memory writing the output");
    }
    if (c->err != 0)
        c->done(c->err, c->errmsg != NULL ? c->errmsg : ctn_strerror(c->err), c->ud);
    else
        c->done(CTN_OK, text, c->ud);
    free(text);
    call_free(c);
}

static void run_chunk(void *ud, const ctn_val *chunk) {
    call *c = ((struct slot *)ud)->c;
    if (c->chunk == NULL || c->err != 0) return;
    char *t = ctn_val_to_json(chunk, 0);
    if (t == NULL) {
        call_error(c, CTN_ENOMEM, "out of memory writing a chunk");
        return;
    }
    c->chunk(t, c->ud);
    free(t);
}

static void settle(call *c);

static void run_done(void *ud, const ctn_val *out, const ctn_chain_err *err) {
    struct slot *s = ud;
    call *c = s->c;
    s->ended = true;
    c->running--;
    if (err != NULL) {
        const bool path = err->path != NULL && *err->path;
        char where[32] = "";
        if (c->kind == CALL_BATCH) snprintf(where, sizeof where, "inputs[%zu]: ", s->i);
        call_error(c, err->code != 0 ? err->code : CTN_ECHAIN, "%s%s%s%s", where,
                   path ? err->path : "", path ? ": " : "",
                   err->message != NULL ? err->message : "failed");
    }
    c->outs[s->i] = out != NULL ? ctn_val_ref((ctn_val *)out) : ctn_val_null();
    if (c->outs[s->i] == NULL) call_error(c, CTN_ENOMEM, "out of memory");
    settle(c);
}

/*
 * Moves a call on: starts runs while the window allows, cancels the running ones once it has
 * failed, and finishes it when nothing runs any more. A run may end inside ctn_run_start or
 * ctn_run_cancel (run_done calls settle again): the busy flag makes that inner call a no-op,
 * and the loop here looks again.
 */
static void settle(call *c) {
    if (c->busy || c->finished) return;
    c->busy = true;
    for (;;) {
        if (c->err == 0 && c->next < c->n && c->running < c->max_running) {
            const size_t i = c->next++;
            c->slots[i] = (struct slot){c, i, false};
            const ctn_run_callbacks cb = {c->kind == CALL_STREAM ? run_chunk : NULL, NULL, run_done,
                                          &c->slots[i]};
            ctn_val *in = c->kind == CALL_BATCH ? ctn_val_at(c->input, i) : c->input;
            c->running++;
            const int rc = ctn_run_start(c->rt->loop, c->chain->node, in, c->config, &cb,
                                         c->kind == CALL_STREAM ? CTN_RUN_STREAM : 0, &c->runs[i]);
            if (rc < 0) {
                c->running--;
                c->slots[i].ended = true;
                call_error(c, rc, "cannot start the run: %s", ctn_strerror(rc));
            }
            continue;
        }
        if (c->err != 0 && c->running > 0 && !c->cancel_sent) {
            c->cancel_sent = true;
            for (size_t i = 0; i < c->next; i++)
                if (!c->slots[i].ended && c->runs[i] != NULL) ctn_run_cancel(c->runs[i]);
            continue;
        }
        break;
    }
    c->busy = false;
    if (c->running == 0 && (c->err != 0 || c->next == c->n)) call_finish(c);
}

static void call_start(call *c) {
    c->n = c->kind == CALL_BATCH ? ctn_val_len(c->input) : 1;
    c->runs = ctn__calloc(c->n, sizeof *c->runs);
    c->outs = ctn__calloc(c->n, sizeof *c->outs);
    c->slots = ctn__calloc(c->n, sizeof *c->slots);
    if (c->runs == NULL || c->outs == NULL || c->slots == NULL) {
        c->n = 0; /* nothing to free run by run */
        call_error(c, CTN_ENOMEM, "out of memory starting the call");
    }
    const ctn_val *mc = c->config != NULL ? ctn_val_get(c->config, "max_concurrency") : NULL;
    c->max_running = c->n;
    if (c->kind == CALL_BATCH && mc != NULL && mc->kind == CTN_VINT && mc->u.i > 0 &&
        (uint64_t)mc->u.i < c->n)
        c->max_running = (size_t)mc->u.i;
    settle(c);
}

/* Cancels every call in flight (the runtime is being freed). */
static void cancel_all(ctn_runtime *rt) {
    for (;;) {
        uv_mutex_lock(&rt->mu);
        call *c = rt->live;
        while (c != NULL && c->err != 0)
            c = c->lnext;
        uv_mutex_unlock(&rt->mu);
        if (c == NULL) break;
        call_error(c, CTN_ECANCELED, "cancelled: the runtime is being freed");
        settle(c);
    }
}

/* ---- the loop thread ------------------------------------------------------------------------- */

static void do_model(ctn_runtime *rt, op *o) {
    char **np = realloc(rt->model_paths, (rt->n_models + 1) * sizeof *np);
    if (np != NULL) rt->model_paths = np;
    ctn_lm **nm = realloc(rt->models, (rt->n_models + 1) * sizeof *nm);
    if (nm != NULL) rt->models = nm;
    char *path = ctn__strdup(o->path);
    if (np == NULL || nm == NULL || path == NULL) {
        free(path);
        o->rc = CTN_ENOMEM;
        snprintf(o->msg, o->msgcap, "out of memory");
        return;
    }
    ctn_lm *lm = NULL;
    o->rc = ctn_l_open_model(rt->L, o->path, &o->params, &lm, o->msg, o->msgcap);
    if (o->rc < 0) {
        free(path);
        return;
    }
    rt->models[rt->n_models] = lm;
    rt->model_paths[rt->n_models++] = path;
}

static void do_chain(ctn_runtime *rt, op *o) {
    ctn_chain *ch = calloc(1, sizeof *ch);
    if (ch == NULL) {
        o->rc = CTN_ENOMEM;
        snprintf(o->msg, o->msgcap, "out of memory");
        return;
    }
    o->rc = ctn_l_load_chain(rt->L, o->path, (const char *const *)rt->model_paths,
                             (int)rt->n_models, &ch->node, o->msg, o->msgcap);
    if (o->rc < 0) {
        free(ch);
        return;
    }
    ch->rt = rt;
    ch->next = rt->chains;
    rt->chains = ch;
    o->chain = ch;
}

/* Stops the loop: calls cancelled, models closed, the wake handle closed; the Lua state (and
 * with it the chains' nodes) is closed by ctn_runtime_free once this thread has ended. */
static void do_stop(ctn_runtime *rt) {
    cancel_all(rt);
    for (ctn_chain *ch = rt->chains; ch != NULL; ch = ch->next) {
        ctn_node_unref(ch->node);
        ch->node = NULL;
    }
    for (size_t i = 0; i < rt->n_models; i++) {
        ctn_lm_close(rt->models[i]);
        rt->models[i] = NULL; /* the paths stay, for ctn_runtime_free */
    }
    uv_close((uv_handle_t *)&rt->wake, NULL);
    /* Work the chain files left behind (a catena.spawn that never ends) must not keep the
     * thread: lua_close finishes the loop's handles. */
    uv_stop(rt->loop);
}

static void on_wake(uv_async_t *h) {
    ctn_runtime *rt = h->data;
    uv_mutex_lock(&rt->mu);
    op *o = rt->head;
    rt->head = rt->tail = NULL;
    uv_mutex_unlock(&rt->mu);
    while (o != NULL) {
        op *next = o->next;
        switch (o->kind) {
        case OP_CALL: call_start(o->c); break;
        case OP_CANCEL: {
            uv_mutex_lock(&rt->mu);
            call *c = rt->live;
            while (c != NULL && c->id != o->id)
                c = c->lnext;
            uv_mutex_unlock(&rt->mu);
            free(o);
            if (c != NULL) {
                call_error(c, CTN_ECANCELED, "cancelled");
                settle(c);
            }
            break;
        }
        case OP_MODEL:
            do_model(rt, o);
            finish_blocking(rt, o);
            break;
        case OP_CHAIN:
            do_chain(rt, o);
            finish_blocking(rt, o);
            break;
        case OP_STOP:
            do_stop(rt);
            finish_blocking(rt, o);
            break;
        }
        o = next;
    }
}

static void loop_main(void *arg) {
    ctn_runtime *rt = arg;
    loop_rt = rt;
    ctn_l_loop_enter(rt->L);
    uv_run(rt->loop, UV_RUN_DEFAULT);
    ctn_l_loop_leave(rt->L);
    loop_rt = NULL;
}

/* ---- the runtime ----------------------------------------------------------------------------- */

CTN_API int ctn_runtime_new(ctn_runtime **out) {
    if (out == NULL) return fail(CTN_EINVAL, "ctn_runtime_new: out is NULL");
    *out = NULL;
    ctn_runtime *rt = calloc(1, sizeof *rt);
    if (rt == NULL) return fail(CTN_ENOMEM, "out of memory");
    rt->L = ctn_l_new_state();
    rt->loop = rt->L != NULL ? ctn_l_loop(rt->L) : NULL;
    if (rt->loop == NULL) {
        if (rt->L != NULL) lua_close(rt->L);
        free(rt);
        return fail(CTN_ENOMEM, "out of memory creating the Lua state");
    }
    int rc = uv_mutex_init(&rt->mu);
    if (rc == 0 && (rc = uv_cond_init(&rt->cv)) != 0) uv_mutex_destroy(&rt->mu);
    if (rc != 0) {
        lua_close(rt->L);
        free(rt);
        return fail(CTN_EIO, "cannot create a lock: %s", uv_strerror(rc));
    }
    rt->wake.data = rt;
    if ((rc = uv_async_init(rt->loop, &rt->wake, on_wake)) == 0 &&
        (rc = uv_thread_create(&rt->thread, loop_main, rt)) != 0) {
        uv_close((uv_handle_t *)&rt->wake, NULL);
    }
    if (rc != 0) {
        lua_close(rt->L); /* runs the loop to finish the close */
        uv_cond_destroy(&rt->cv);
        uv_mutex_destroy(&rt->mu);
        free(rt);
        return fail(CTN_EIO, "cannot start the loop thread: %s", uv_strerror(rc));
    }
    *out = rt;
    return CTN_OK;
}

CTN_API int ctn_runtime_free(ctn_runtime *rt) {
    if (rt == NULL) return CTN_OK;
    if (on_loop(rt))
        return fail(CTN_EINVAL, "ctn_runtime_free: called on the runtime's loop thread (from a "
                                "callback); free it from another thread");
    op o = {.kind = OP_STOP};
    uv_mutex_lock(&rt->mu);
    rt->stopping = true; /* no call is queued after the stop */
    uv_mutex_unlock(&rt->mu);
    run_blocking(rt, &o);
    uv_thread_join(&rt->thread);
    lua_close(rt->L); /* the chains' nodes, then the loop, on this thread now */
    for (ctn_chain *ch = rt->chains; ch != NULL;) {
        ctn_chain *next = ch->next;
        free(ch);
        ch = next;
    }
    for (size_t i = 0; i < rt->n_models; i++)
        free(rt->model_paths[i]);
    free(rt->model_paths);
    free(rt->models);
    uv_cond_destroy(&rt->cv);
    uv_mutex_destroy(&rt->mu);
    free(rt);
    return CTN_OK;
}

/* A model setting's value through the one settings validator (engine/settings.h), which
 * names the key, its range and the value given. */
static int settings_check(const char *key, int64_t v) {
    ctn_settings probe;
    ctn_settings_init(&probe);
    const ctn_setting_value sv = {.kind = CTN_SET_INT, .i = v};
    char err[256];
    const int rc = ctn_settings_set(&probe, key, &sv, err, sizeof err);
    return rc < 0 ? fail(CTN_EINVAL, "options: %s (0: the default)", err) : CTN_OK;
}

/* The settings of a model from options_json (NULL: the defaults). */
static int model_options(const char *json, ctn_lm_params *p) {
    memset(p, 0, sizeof *p);
    if (json == NULL) return CTN_OK;
    char err[256];
    ctn_val *v;
    int rc = ctn_json_parse(json, strlen(json), &v, err, sizeof err);
    if (rc < 0) return fail(rc, "options: %s", err);
    if (v->kind != CTN_VOBJ) {
        rc = fail(CTN_ETYPE, "options: must be a JSON object, not %s", ctn_vkind_name(v->kind));
        ctn_val_unref(v);
        return rc;
    }
    static const char *const keys[] = {"threads", "ctx", "kv_memory", "lora_budget"};
    for (size_t i = 0; i < v->u.obj.n && rc == 0; i++) {
        const char *k = v->u.obj.keys[i]->u.str.p;
        const ctn_val *x = v->u.obj.vals[i];
        size_t j = 0;
        while (j < 4 && strcmp(k, keys[j]) != 0)
            j++;
        if (j == 4)
            rc = fail(CTN_EINVAL,
                      "options: unknown key '%s' (threads, ctx, kv_memory, lora_budget)", k);
        else if (x->kind != CTN_VINT)
            rc = fail(CTN_EINVAL, "options.%s: must be a whole number (0: the default), not %s", k,
                      ctn_vkind_name(x->kind));
        else
            rc = x->u.i != 0 ? settings_check(k, x->u.i) : 0;
        if (rc < 0) break;
        /* In range now: threads and ctx fit an int. */
        if (j == 0)
            p->threads = (int)x->u.i;
        else if (j == 1)
            p->n_ctx = (int)x->u.i;
        else if (j == 2)
            p->kv_memory_bytes = x->u.i;
        else
            p->lora_budget_bytes = x->u.i;
    }
    ctn_val_unref(v);
    return rc;
}

CTN_API int ctn_runtime_load_model(ctn_runtime *rt, const char *path, const char *options_json) {
    if (rt == NULL || path == NULL)
        return fail(CTN_EINVAL, "ctn_runtime_load_model: %s is NULL", rt == NULL ? "rt" : "path");
    if (on_loop(rt))
        return fail(CTN_EINVAL, "ctn_runtime_load_model: called on the runtime's loop thread (from "
                                "a callback), which would wait for itself");
    char msg[1024];
    op o = {.kind = OP_MODEL, .path = path, .msg = msg, .msgcap = sizeof msg};
    const int rc = model_options(options_json, &o.params);
    if (rc < 0) return rc;
    run_blocking(rt, &o);
    return o.rc < 0 ? fail(o.rc, "%s", o.msg) : CTN_OK;
}

CTN_API int ctn_runtime_load_chain(ctn_runtime *rt, const char *path, ctn_chain **out) {
    if (out != NULL) *out = NULL;
    if (rt == NULL || path == NULL || out == NULL)
        return fail(CTN_EINVAL, "ctn_runtime_load_chain: %s is NULL",
                    rt == NULL     ? "rt"
                    : path == NULL ? "path"
                                   : "out");
    if (on_loop(rt))
        return fail(CTN_EINVAL, "ctn_runtime_load_chain: called on the runtime's loop thread (from "
                                "a callback), which would wait for itself");
    char msg[1024];
    op o = {.kind = OP_CHAIN, .path = path, .msg = msg, .msgcap = sizeof msg};
    run_blocking(rt, &o);
    if (o.rc < 0) return fail(o.rc, "%s", o.msg);
    *out = o.chain;
    return CTN_OK;
}

/* ---- submitting calls ------------------------------------------------------------------------ */

/* The JSON text named what as a value: 0 and *out, or an error naming what and the place. */
static int parse_json(const char *what, const char *json, ctn_val **out) {
    char err[256];
    const int rc = ctn_json_parse(json, strlen(json), out, err, sizeof err);
    return rc < 0 ? fail(rc, "%s: %s", what, err) : CTN_OK;
}

/* A run's config: an object whose keys are a run's settings. */
static int parse_config(const char *json, ctn_val **out) {
    *out = NULL;
    if (json == NULL) return CTN_OK;
    ctn_val *v;
    int rc = parse_json("config", json, &v);
    if (rc < 0) return rc;
    if (v->kind != CTN_VOBJ) {
        rc = fail(CTN_ETYPE, "config: must be a JSON object, not %s", ctn_vkind_name(v->kind));
        ctn_val_unref(v);
        return rc;
    }
    /* The executor's keys and the model node's (as a Lua chain's config takes them). */
    static const char *const own[] = {"tags",    "metadata", "max_concurrency", "configurable",
                                      "session", "n",        "grammar"};
    for (size_t i = 0; i < v->u.obj.n; i++) {
        char err[256];
        const char *k = v->u.obj.keys[i]->u.str.p;
        if ((rc = ctn_settings_check_run_key(k, own, sizeof own / sizeof own[0], err, sizeof err)) <
            0) {
            ctn_val_unref(v);
            return fail(rc, "config: %s", err);
        }
    }
    const ctn_val *mc = ctn_val_get(v, "max_concurrency");
    if (mc != NULL && (mc->kind != CTN_VINT || mc->u.i < 0)) {
        ctn_val_unref(v);
        return fail(CTN_EINVAL, "config.max_concurrency: must be a whole number >= 0 (0: all)");
    }
    *out = v;
    return CTN_OK;
}

static int submit(int kind, ctn_chain *chain, const char *input_json, const char *config_json,
                  ctn_chunk_fn chunk, ctn_done_fn done, void *ud, uint64_t *id) {
    static const char *const fn[] = {"ctn_invoke", "ctn_stream", "ctn_batch"};
    if (id != NULL) *id = 0;
    if (chain == NULL || input_json == NULL || done == NULL)
        return fail(CTN_EINVAL, "%s: %s is NULL", fn[kind],
                    chain == NULL        ? "chain"
                    : input_json == NULL ? "the input"
                                         : "done");
    ctn_val *in, *cfg;
    int rc = parse_json(kind == CALL_BATCH ? "inputs" : "input", input_json, &in);
    if (rc < 0) return rc;
    if (kind == CALL_BATCH && (in->kind != CTN_VARR || ctn_val_len(in) == 0)) {
        rc = fail(CTN_ETYPE, "inputs: must be a non-empty JSON array, not %s",
                  in->kind == CTN_VARR ? "an empty one" : ctn_vkind_name(in->kind));
        ctn_val_unref(in);
        return rc;
    }
    if ((rc = parse_config(config_json, &cfg)) < 0) {
        ctn_val_unref(in);
        return rc;
    }
    call *c = calloc(1, sizeof *c);
    if (c == NULL) {
        ctn_val_unref(in);
        ctn_val_unref(cfg);
        return fail(CTN_ENOMEM, "out of memory");
    }
    ctn_runtime *rt = chain->rt;
    *c = (call){.rt = rt,
                .kind = kind,
                .chain = chain,
                .input = in,
                .config = cfg,
                .chunk = chunk,
                .done = done,
                .ud = ud};
    c->op.kind = OP_CALL;
    c->op.c = c;
    uv_mutex_lock(&rt->mu);
    if (rt->stopping) {
        uv_mutex_unlock(&rt->mu);
        call_free(c);
        return fail(CTN_EINVAL, "%s: the runtime is being freed", fn[kind]);
    }
    c->id = ++rt->next_id;
    c->lnext = rt->live;
    if (rt->live != NULL) rt->live->prev = c;
    rt->live = c;
    if (id != NULL) *id = c->id;
    enqueue_locked(rt, &c->op);
    uv_mutex_unlock(&rt->mu);
    return CTN_OK;
}

CTN_API int ctn_invoke(ctn_chain *chain, const char *input_json, const char *config_json,
                       ctn_done_fn done, void *ud, uint64_t *id) {
    return submit(CALL_INVOKE, chain, input_json, config_json, NULL, done, ud, id);
}

CTN_API int ctn_stream(ctn_chain *chain, const char *input_json, const char *config_json,
                       ctn_chunk_fn chunk, ctn_done_fn done, void *ud, uint64_t *id) {
    if (chunk == NULL) return fail(CTN_EINVAL, "ctn_stream: chunk is NULL");
    return submit(CALL_STREAM, chain, input_json, config_json, chunk, done, ud, id);
}

CTN_API int ctn_batch(ctn_chain *chain, const char *inputs_json, const char *config_json,
                      ctn_done_fn done, void *ud, uint64_t *id) {
    return submit(CALL_BATCH, chain, inputs_json, config_json, NULL, done, ud, id);
}

CTN_API int ctn_cancel(ctn_runtime *rt, uint64_t id) {
    if (rt == NULL) return fail(CTN_EINVAL, "ctn_cancel: rt is NULL");
    op *o = calloc(1, sizeof *o);
    if (o == NULL) return fail(CTN_ENOMEM, "out of memory");
    o->kind = OP_CANCEL;
    o->id = id;
    uv_mutex_lock(&rt->mu);
    const call *c = rt->live;
    while (c != NULL && c->id != id)
        c = c->lnext;
    if (c != NULL) enqueue_locked(rt, o);
    uv_mutex_unlock(&rt->mu);
    if (c == NULL) {
        free(o);
        return fail(CTN_ENOENT, "ctn_cancel: no call %llu is in flight (it ended, or never was)",
                    (unsigned long long)id);
    }
    return CTN_OK;
}

/* ---- waiting for a call ---------------------------------------------------------------------- */

typedef struct {
    ctn_runtime *rt;
    int status;
    char *text;
    bool done;
} sync_wait;

static void sync_done(int status, const char *text, void *ud) {
    sync_wait *w = ud;
    char *t = ctn__strdup(text);
    uv_mutex_lock(&w->rt->mu);
    w->status = t != NULL || text == NULL ? status : CTN_ENOMEM;
    w->text = t;
    w->done = true;
    uv_cond_broadcast(&w->rt->cv);
    uv_mutex_unlock(&w->rt->mu);
}

CTN_API int ctn_invoke_sync(ctn_chain *chain, const char *input_json, const char *config_json,
                            char **out) {
    if (out != NULL) *out = NULL;
    if (chain == NULL || out == NULL)
        return fail(CTN_EINVAL, "ctn_invoke_sync: %s is NULL", chain == NULL ? "chain" : "out");
    ctn_runtime *rt = chain->rt;
    if (on_loop(rt))
        return fail(CTN_EINVAL, "ctn_invoke_sync: called on the runtime's loop thread (from a "
                                "callback), which would wait for itself; use ctn_invoke");
    sync_wait w = {rt, 0, NULL, false};
    const int rc = submit(CALL_INVOKE, chain, input_json, config_json, NULL, sync_done, &w, NULL);
    if (rc < 0) {
        *out = ctn__strdup(last_err);
        return rc;
    }
    uv_mutex_lock(&rt->mu);
    while (!w.done)
        uv_cond_wait(&rt->cv, &rt->mu);
    uv_mutex_unlock(&rt->mu);
    *out = w.text;
    if (w.status < 0) fail(w.status, "%s", w.text != NULL ? w.text : ctn_strerror(w.status));
    return w.status;
}
