/*
 * The chain executor (chain.h): runs a node graph on a libuv loop as a tree of tasks.
 *
 * Every task ends exactly once, through task_end, which tells the parent (child_end) or,
 * for the root, the run's on_done. A parent that fails or is cancelled cancels its live
 * children (cancel_task), recursively, without telling anyone.
 *
 * Memory: a task that has ended may still be on the stack (a node that ends inside its own
 * start, a producer whose emitted chunk made the consumer fail and cancel it). Ended tasks
 * therefore go to the run's graveyard and are freed only when the outermost call into the
 * executor returns (enter / leave count the depth); the run itself is freed the same way
 * when ctn_run_free is called from a callback.
 */
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "chain_impl.h"
#include "error.h"
#include "kinds.h"
#include "str.h"

typedef struct timer_box {
    uv_timer_t h;
    ctn_task *t; /* NULL once the task no longer waits for it */
} timer_box;

struct ctn_task {
    ctn_run *run;
    ctn_task *parent;
    ctn_task *grave_next; /* in the run's graveyard, once ended and unlinked */
    const ctn_node *node;
    const ctn_val *config; /* the parent's, or own_config */
    ctn_val *own_config;
    ctn_val *input;  /* a reference, or NULL (streamed input) */
    const char *key; /* the parallel / assign key it runs under */
    size_t slot;     /* its place in the parent (step, child index, element) */
    int64_t span;    /* index of its span, or -1 */
    int ended, emitted, streamed;
    void *data;
    ctn_task **kids; /* live children */
    size_t nkids, capkids;
    /* per kind */
    size_t step, pending, running, next;
    int launching;
    ctn_val *acc;             /* PARALLEL, ASSIGN: the object; MAP: the array being filled */
    ctn_val **slots;          /* MAP: outputs by index */
    ctn_task **stasks;        /* SEQUENCE, streaming: per step, its streamed task, DONE, or NULL */
    ctn_chain_err *first_err; /* FALLBACKS */
    timer_box *timer;
};

struct ctn_run {
    uv_loop_t *loop;
    ctn_node *root;
    ctn_val *input, *config;
    ctn_run_callbacks cb;
    int flags;
    ctn_task *root_task;
    int ended, depth, free_requested;
    ctn_task *grave; /* ended tasks to free when the outermost call returns (a list through
                        grave_next, so that burying needs no memory) */
    ctn_span *spans;
    size_t nspans, capspans;
};

static void task_start(ctn_task *t);
static void task_end(ctn_task *t, ctn_val *out, ctn_chain_err *err);
static void child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err);
static void child_chunk(ctn_task *t, ctn_task *c, const ctn_val *chunk);
static void cancel_task(ctn_task *t, int detach);
static void run_free_now(ctn_run *r);

/* ==== errors ============================================================================ */

static void err_free(ctn_chain_err *e) {
    if (e == NULL) return;
    free(e->message);
    free(e->path);
    ctn_val_unref(e->detail);
    free(e);
}

/* The error every allocation failure degrades to: static, never freed. */
static ctn_chain_err oom_err = {CTN_ENOMEM, "out of memory", "", NULL};

static ctn_chain_err *err_new(const ctn_task *t, int code, const char *msg) {
    ctn_chain_err *e = ctn__calloc(1, sizeof *e);
    if (e == NULL) return &oom_err;
    e->code = code;
    e->message = ctn__strdup(msg != NULL ? msg : ctn_strerror(code));
    e->path = t != NULL ? ctn_task_path(t) : ctn__strdup("");
    if (e->message == NULL || e->path == NULL) {
        free(e->message);
        free(e->path);
        free(e);
        return &oom_err;
    }
    return e;
}

static void err_release(ctn_chain_err *e) {
    if (e != &oom_err) err_free(e);
}

/* ==== run depth and the graveyard ======================================================== */

static void enter(ctn_run *r) {
    r->depth++;
}

/* A streamed step that has ended (SEQUENCE stasks). */
static ctn_task done_marker;
#define DONE (&done_marker)

static void task_free(ctn_task *t) {
    ctn_val_unref(t->own_config);
    ctn_val_unref(t->input);
    ctn_val_unref(t->acc);
    if (t->slots != NULL) {
        const size_t n = ctn_val_len(t->input);
        for (size_t i = 0; i < n; i++)
            ctn_val_unref(t->slots[i]);
        free(t->slots);
    }
    err_release(t->first_err);
    free(t->stasks);
    free(t->kids);
    free(t);
}

static void leave(ctn_run *r) {
    if (--r->depth > 0) return;
    /* Freeing a task never calls back into the executor, so the graveyard cannot grow
     * while it is emptied. */
    while (r->grave != NULL) {
        ctn_task *t = r->grave;
        r->grave = t->grave_next;
        task_free(t);
    }
    if (r->free_requested) run_free_now(r);
}

static void bury(ctn_task *t) {
    ctn_run *r = t->run;
    t->grave_next = r->grave;
    r->grave = t;
}

/* ==== tracing ============================================================================= */

#define SUMMARY_MAX 200

/* A retriever's hits: up to this many, each its metadata's source, page, section and scores
 * and the start of its text, the whole cut at HITS_MAX bytes. */
#define HITS_SHOWN 20
#define HITS_TEXT 60
#define HITS_MAX 2000

static bool all_docs(const ctn_val *v) {
    if (v->kind != CTN_VARR || v->u.arr.n == 0) return false;
    for (size_t i = 0; i < v->u.arr.n; i++)
        if (v->u.arr.items[i]->kind != CTN_VDOC) return false;
    return true;
}

/* [{source, page, section, score, rerank_score, text}, ...] of an array of documents, or NULL. */
static ctn_val *hits_of(const ctn_val *v) {
    static const char *const keys[] = {"source", "page", "section", "score", "rerank_score"};
    ctn_val *a = ctn_val_arr();
    for (size_t i = 0; a != NULL && i < v->u.arr.n && i < HITS_SHOWN; i++) {
        const ctn_val *d = v->u.arr.items[i];
        ctn_val *o = ctn_val_obj();
        for (size_t k = 0; o != NULL && k < sizeof keys / sizeof keys[0]; k++) {
            ctn_val *x = ctn_val_get(d->u.doc.meta, keys[k]);
            if (x != NULL && ctn_val_set(o, keys[k], ctn_val_ref(x)) < 0) {
                ctn_val_unref(o);
                o = NULL;
            }
        }
        const ctn_val *t = d->u.doc.text;
        size_t n = t->u.str.len > HITS_TEXT ? HITS_TEXT : t->u.str.len;
        while (n < t->u.str.len && n > 0 && ((unsigned char)t->u.str.p[n] & 0xC0) == 0x80)
            n--;
        if (o != NULL && ctn_val_set(o, "text", ctn_val_str(t->u.str.p, n)) < 0) {
            ctn_val_unref(o);
            o = NULL;
        }
        if (o == NULL || ctn_val_push(a, o) < 0) {
            ctn_val_unref(a);
            a = NULL;
        }
    }
    return a;
}

static char *summary(const ctn_val *v) {
    if (v == NULL) return NULL;
    size_t max = SUMMARY_MAX;
    char *j = NULL;
    if (all_docs(v)) {
        ctn_val *h = hits_of(v);
        j = h != NULL ? ctn_val_to_json(h, 0) : NULL;
        ctn_val_unref(h);
        max = HITS_MAX;
    }
    if (j == NULL) {
        j = ctn_val_to_json(v, 0);
        max = SUMMARY_MAX;
    }
    if (j != NULL && strlen(j) > max) {
        /* Cut at a character boundary and mark the cut. */
        size_t n = max;
        while (n > 0 && ((unsigned char)j[n] & 0xC0) == 0x80)
            n--;
        memcpy(j + n, "...", 4);
    }
    return j;
}

static int traced(const ctn_run *r) {
    return (r->flags & (CTN_RUN_TRACE | CTN_RUN_EVENTS)) != 0;
}

static void span_begin(ctn_task *t) {
    ctn_run *r = t->run;
    t->span = -1;
    if (!traced(r)) return;
    if (r->nspans == r->capspans) {
        const size_t cap = r->capspans ? 2 * r->capspans : 16;
        ctn_span *s = ctn__realloc(r->spans, cap * sizeof *s);
        if (s == NULL) return; /* the trace misses this span; the run goes on */
        r->spans = s;
        r->capspans = cap;
    }
    ctn_span *s = &r->spans[r->nspans];
    memset(s, 0, sizeof *s);
    s->id = (int64_t)r->nspans;
    s->parent_id = t->parent != NULL ? t->parent->span : -1;
    s->label = ctn_node_label(t->node);
    s->kind = ctn__node_kind_name(t->node);
    s->key = t->key;
    s->start_ns = uv_hrtime();
    s->input = summary(t->input);
    t->span = (int64_t)r->nspans++;
    if ((r->flags & CTN_RUN_EVENTS) && r->cb.on_event != NULL) {
        const ctn_event ev = {CTN_EV_START, s, NULL};
        r->cb.on_event(r->cb.ud, &ev);
    }
}

static void span_end(ctn_task *t, const ctn_val *out, const ctn_chain_err *err) {
    ctn_run *r = t->run;
    if (t->span < 0) return;
    ctn_span *s = &r->spans[t->span];
    s->end_ns = uv_hrtime();
    if (s->end_ns == s->start_ns) s->end_ns++; /* 0 means running */
    s->output = summary(out);
    if (err != NULL) {
        s->err_code = err->code;
        s->err_message = ctn__strdup(err->message);
    }
    if ((r->flags & CTN_RUN_EVENTS) && r->cb.on_event != NULL) {
        const ctn_event ev = {CTN_EV_END, s, NULL};
        r->cb.on_event(r->cb.ud, &ev);
    }
}

/* ==== timer handles ======================================================================= */

static void box_closed(uv_handle_t *h) {
    free(h); /* the handle is the box's first member */
}

/* Stops t's timer; its memory goes when libuv has closed the handle. */
static void timer_release(ctn_task *t) {
    if (t->timer == NULL) return;
    t->timer->t = NULL;
    uv_timer_stop(&t->timer->h);
    uv_close((uv_handle_t *)&t->timer->h, box_closed);
    t->timer = NULL;
}

/* ==== tasks =============================================================================== */

static int kids_add(ctn_task *t, ctn_task *c) {
    if (t->nkids == t->capkids) {
        const size_t cap = t->capkids ? 2 * t->capkids : 4;
        ctn_task **k = ctn__realloc(t->kids, cap * sizeof *k);
        if (k == NULL) return CTN_ENOMEM;
        t->kids = k;
        t->capkids = cap;
    }
    t->kids[t->nkids++] = c;
    return 0;
}

static void kids_remove(ctn_task *t, ctn_task *c) {
    for (size_t i = 0; i < t->nkids; i++)
        if (t->kids[i] == c) {
            t->kids[i] = t->kids[--t->nkids];
            return;
        }
}

/* A new task for node under parent (NULL: the root), with input (a new reference is
 * taken; NULL: streamed). NULL when memory runs out. */
static ctn_task *task_new(ctn_run *r, ctn_task *parent, const ctn_node *node, ctn_val *input,
                          const char *key, size_t slot) {
    ctn_task *t = ctn__calloc(1, sizeof *t);
    if (t == NULL) return NULL;
    t->run = r;
    t->parent = parent;
    t->node = node;
    t->config = parent != NULL ? parent->config : r->config;
    t->input = ctn_val_ref(input);
    t->key = key;
    t->slot = slot;
    t->span = -1;
    if (parent != NULL && kids_add(parent, t) < 0) {
        ctn_val_unref(t->input);
        free(t);
        return NULL;
    }
    span_begin(t);
    return t;
}

/* Starts a child of t; on failure ends t with the error. Returns the child or NULL. */
static ctn_task *spawn(ctn_task *t, const ctn_node *node, ctn_val *input, const char *key,
                       size_t slot, int streamed) {
    ctn_task *c = task_new(t->run, t, node, input, key, slot);
    if (c == NULL) {
        task_end(t, NULL, &oom_err);
        return NULL;
    }
    c->streamed = streamed;
    task_start(c);
    return c;
}

static void fail_task(ctn_task *t, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;

static void fail_task(ctn_task *t, int code, const char *fmt, ...) {
    char msg[512];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    task_end(t, NULL, err_new(t, code, msg));
}

static void run_finish(ctn_run *r, ctn_val *out, ctn_chain_err *err) {
    r->ended = 1;
    r->root_task = NULL;
    if (r->cb.on_done != NULL) r->cb.on_done(r->cb.ud, err == NULL ? out : NULL, err);
    ctn_val_unref(out);
    err_release(err);
}

static void deliver_chunk(ctn_task *t, const ctn_val *chunk) {
    ctn_run *r = t->run;
    if (t->span >= 0 && (r->flags & CTN_RUN_EVENTS) && r->cb.on_event != NULL) {
        const ctn_event ev = {CTN_EV_STREAM, &r->spans[t->span], chunk};
        r->cb.on_event(r->cb.ud, &ev);
    }
    if (t->parent != NULL)
        child_chunk(t->parent, t, chunk);
    else if (r->cb.on_chunk != NULL)
        r->cb.on_chunk(r->cb.ud, chunk);
}

/* Ends t with out or err (both taken). */
static void task_end(ctn_task *t, ctn_val *out, ctn_chain_err *err) {
    if (t->ended) {
        ctn_val_unref(out);
        err_release(err);
        return;
    }
    ctn_run *r = t->run;
    /* A task that streamed nothing streams its output as one chunk. */
    if (err == NULL && out != NULL && !t->emitted && (r->flags & CTN_RUN_STREAM)) {
        t->emitted = 1;
        deliver_chunk(t, out);
        if (t->ended) { /* the chunk made someone cancel t */
            ctn_val_unref(out);
            return;
        }
    }
    t->ended = 1;
    timer_release(t);
    for (size_t i = 0; i < t->nkids; i++) /* a node may end before its children */
        cancel_task(t->kids[i], 0);
    t->nkids = 0;
    span_end(t, out, err);
    bury(t);
    if (t->parent != NULL) {
        kids_remove(t->parent, t);
        child_end(t->parent, t, out, err);
    } else {
        run_finish(r, out, err);
    }
}

/* Stops t and its children without telling anyone; detach: also drop it from its parent's
 * live children. */
static void cancel_task(ctn_task *t, int detach) {
    if (t->ended) return;
    t->ended = 1;
    for (size_t i = 0; i < t->nkids; i++)
        cancel_task(t->kids[i], 0);
    t->nkids = 0;
    timer_release(t);
    const ctn__kind *k = ctn__kind_of(t->node);
    if (k->cancel != NULL) k->cancel(t);
    if (t->span >= 0) {
        ctn_chain_err e = {CTN_ECANCELED, (char *)"cancelled", (char *)"", NULL};
        span_end(t, NULL, &e);
    }
    if (detach && t->parent != NULL) kids_remove(t->parent, t);
    bury(t);
}

static void cancel_kids(ctn_task *t) {
    for (size_t i = 0; i < t->nkids; i++)
        cancel_task(t->kids[i], 0);
    t->nkids = 0;
}

/* ==== timers ============================================================================== */

static void on_timer(uv_timer_t *h);

static int timer_start(ctn_task *t, double ms) {
    timer_box *b = ctn__malloc(sizeof *b);
    if (b == NULL) return CTN_ENOMEM;
    uv_timer_init(t->run->loop, &b->h);
    /* The loop's clock is read once per iteration: update it, or the wait would count from
     * the start of this iteration (it could be over early). */
    uv_update_time(t->run->loop);
    b->t = t;
    t->timer = b;
    const uint64_t wait = ms < 1 ? (ms > 0 ? 1 : 0) : (uint64_t)(ms + 0.5);
    uv_timer_start(&b->h, on_timer, wait, 0);
    return 0;
}

static void on_timer(uv_timer_t *h) {
    timer_box *b = (timer_box *)h;
    ctn_task *t = b->t;
    if (t == NULL) return;
    ctn_run *r = t->run;
    enter(r);
    timer_release(t);
    if (!t->ended) ctn__kind_of(t->node)->timer(t);
    leave(r);
}

/* ==== node kinds ========================================================================== */

/* Each kind's functions, by kind, then their rows in ctn__kinds (kinds.h), through which
 * task_start, child_end, child_chunk and the rest dispatch. */

static int truthy(const ctn_val *v) {
    return v != NULL && v->kind != CTN_VNULL && !(v->kind == CTN_VBOOL && !v->u.b);
}

/* Whether a node takes its input as a stream in a streaming sequence. */
static int takes_stream(const ctn_node *n) {
    const ctn__kind *k = ctn__kind_of(n);
    return k->takes_stream != NULL && k->takes_stream(n);
}

static void feed(ctn_task *t, const ctn_val *chunk) {
    if (t->ended) return;
    ctn__kind_of(t->node)->feed(t, chunk);
}

static void feed_end(ctn_task *t, const ctn_val *whole) {
    if (t->ended) return;
    ctn__kind_of(t->node)->feed_end(t, whole);
}

/* Sets object o's keys from the config of t plus add: tags append, metadata merges. */
static ctn_val *merge_config(const ctn_val *base, const ctn_val *add) {
    ctn_val *c = ctn_val_obj();
    if (c == NULL) return NULL;
    for (size_t i = 0; base != NULL && i < base->u.obj.n; i++) {
        const ctn_val *k = base->u.obj.keys[i];
        if (ctn_val_setk(c, k->u.str.p, k->u.str.len, ctn_val_ref(base->u.obj.vals[i])) < 0)
            goto oom;
    }
    for (size_t i = 0; i < add->u.obj.n; i++) {
        const ctn_val *k = add->u.obj.keys[i];
        ctn_val *v = add->u.obj.vals[i];
        ctn_val *old = ctn_val_getk(c, k->u.str.p, k->u.str.len);
        ctn_val *nv;
        if (old != NULL && old->kind == CTN_VARR && v->kind == CTN_VARR &&
            strcmp(k->u.str.p, "tags") == 0) {
            nv = ctn_val_arr();
            for (size_t j = 0; nv != NULL && j < old->u.arr.n + v->u.arr.n; j++) {
                ctn_val *e =
                    j < old->u.arr.n ? old->u.arr.items[j] : v->u.arr.items[j - old->u.arr.n];
                if (ctn_val_push(nv, ctn_val_ref(e)) < 0) {
                    ctn_val_unref(nv);
                    nv = NULL;
                }
            }
        } else if (old != NULL && old->kind == CTN_VOBJ && v->kind == CTN_VOBJ &&
                   strcmp(k->u.str.p, "metadata") == 0) {
            nv = merge_config(old, v);
        } else {
            nv = ctn_val_ref(v);
        }
        if (ctn_val_setk(c, k->u.str.p, k->u.str.len, nv) < 0) goto oom;
    }
    return c;
oom:
    ctn_val_unref(c);
    return NULL;
}

static size_t config_concurrency(const ctn_task *t, size_t dflt) {
    const ctn_val *m = ctn_task_setting(t, "max_concurrency");
    if (m != NULL && m->kind == CTN_VINT && m->u.i > 0) return (size_t)m->u.i;
    return dflt;
}

/* ---- shared by several kinds ------------------------------------------------------------ */

/* The first child on the input: a sequence's first step, the primary of fallbacks, a try
 * of retry (also when its backoff is over), the child of timeout and bind. */
static void start_first(ctn_task *t) {
    spawn(t, t->node->kids[0], t->input, NULL, 0, 0);
}

/* The child's end is the node's (router, timeout, bind; kinds without children). */
static void end_with_child(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    (void)c;
    task_end(t, out, err);
}

/* The child's chunks are the node's. */
static void pass_chunk(ctn_task *t, ctn_task *c, const ctn_val *chunk) {
    (void)c;
    ctn_task_emit(t, ctn_val_ref((ctn_val *)chunk));
}

/* The node's output is emitted whole when it ends (assign, map; kinds without children). */
static void drop_chunk(ctn_task *t, ctn_task *c, const ctn_val *chunk) {
    (void)t, (void)c, (void)chunk;
}

/* ---- sequence ---------------------------------------------------------------------------- */

static void sequence_child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    const ctn_node *n = t->node;
    if (err != NULL) {
        cancel_kids(t);
        task_end(t, NULL, err);
        return;
    }
    const size_t k = c->slot;
    if (c->streamed && t->stasks != NULL) {
        /* A streamed step ended: the steps before it are no longer needed (it may end
         * before them, a parser that has what it wants). */
        t->stasks[k] = DONE;
        for (size_t i = 0; i < t->nkids;) {
            ctn_task *x = t->kids[i];
            if (x->slot < k)
                cancel_task(x, 1); /* removes it from t->kids */
            else
                i++;
        }
    }
    if (k + 1 == n->nkids) {
        task_end(t, out, NULL);
        return;
    }
    ctn_task *next = t->stasks != NULL ? t->stasks[k + 1] : NULL;
    CTN_ASSERT(next != DONE); /* step k was cancelled when it ended */
    if (next == DONE) {
        ctn_val_unref(out);
    } else if (next != NULL) { /* the next step streamed: it gets the whole output */
        feed_end(next, out);
        ctn_val_unref(out);
    } else {
        spawn(t, n->kids[k + 1], out, NULL, k + 1, 0);
        ctn_val_unref(out);
    }
}

/* Each step that takes a stream is started at the first chunk of the step before and fed
 * as that one goes, so chunks flow down any run of streaming steps. */
static void sequence_chunk(ctn_task *t, ctn_task *c, const ctn_val *chunk) {
    const ctn_node *n = t->node;
    if (c->slot + 1 == n->nkids) {
        ctn_task_emit(t, ctn_val_ref((ctn_val *)chunk));
        return;
    }
    if (!takes_stream(n->kids[c->slot + 1])) return;
    if (t->stasks == NULL && (t->stasks = ctn__calloc(n->nkids, sizeof *t->stasks)) == NULL) {
        cancel_kids(t);
        task_end(t, NULL, &oom_err);
        return;
    }
    ctn_task *next = t->stasks[c->slot + 1];
    if (next == DONE) return;
    if (next == NULL) {
        next = task_new(t->run, t, n->kids[c->slot + 1], NULL, NULL, c->slot + 1);
        if (next == NULL) {
            cancel_kids(t);
            task_end(t, NULL, &oom_err);
            return;
        }
        next->streamed = 1;
        t->stasks[c->slot + 1] = next;
        task_start(next);
    }
    if (!next->ended) feed(next, chunk);
}

/* ---- parallel and assign: every child on the input at once ------------------------------ */

static void fanout_start(ctn_task *t) {
    const ctn_node *n = t->node;
    t->acc = ctn_val_obj();
    for (size_t i = 0; t->acc != NULL && i < n->nkids; i++)
        if (ctn_val_set(t->acc, n->keys[i], ctn_val_null()) < 0) {
            ctn_val_unref(t->acc);
            t->acc = NULL;
        }
    if (t->acc == NULL) {
        task_end(t, NULL, &oom_err);
        return;
    }
    t->pending = n->nkids;
    t->launching = 1;
    for (size_t i = 0; i < n->nkids && !t->ended; i++)
        spawn(t, n->kids[i], t->input, n->keys[i], i, 0);
    t->launching = 0;
    if (!t->ended && t->pending == 0) child_end(t, NULL, NULL, NULL);
}

/* Keeps a child's output in t->acc; whether all children have ended (t goes on). */
static int fanout_child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    if (err != NULL) {
        cancel_kids(t);
        task_end(t, NULL, err);
        return 0;
    }
    if (c != NULL) {
        ctn_val_unref(t->acc->u.obj.vals[c->slot]);
        t->acc->u.obj.vals[c->slot] = out;
        t->pending--;
    }
    return t->pending == 0 && !t->launching;
}

static void parallel_child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    if (!fanout_child_end(t, c, out, err)) return;
    ctn_val *o = t->acc;
    t->acc = NULL;
    task_end(t, o, NULL);
}

static void parallel_chunk(ctn_task *t, ctn_task *c, const ctn_val *chunk) {
    ctn_val *o = ctn_val_obj();
    if (o != NULL && ctn_val_set(o, c->key, ctn_val_ref((ctn_val *)chunk)) == 0)
        ctn_task_emit(t, o);
    else
        ctn_val_unref(o);
}

static void assign_start(ctn_task *t) {
    if (t->input == NULL || t->input->kind != CTN_VOBJ) {
        fail_task(t, CTN_ETYPE, "needs an object as input, got %s",
                  t->input ? ctn_vkind_name(t->input->kind) : "nothing");
        return;
    }
    /* Streaming as LangChain's RunnableAssign: first the input's keys that no branch
     * replaces, as one chunk, then each branch's chunks as {key = chunk}, as parallel. */
    if (t->run->flags & CTN_RUN_STREAM) {
        const ctn_node *n = t->node;
        const ctn_val *in = t->input;
        ctn_val *first = ctn_val_obj();
        for (size_t i = 0; first != NULL && i < in->u.obj.n; i++) {
            const ctn_val *k = in->u.obj.keys[i];
            bool replaced = false;
            for (size_t j = 0; j < n->nkids && !replaced; j++)
                replaced = strlen(n->keys[j]) == k->u.str.len &&
                           memcmp(n->keys[j], k->u.str.p, k->u.str.len) == 0;
            if (!replaced &&
                ctn_val_setk(first, k->u.str.p, k->u.str.len, ctn_val_ref(in->u.obj.vals[i])) < 0) {
                ctn_val_unref(first);
                first = NULL;
            }
        }
        if (first == NULL) {
            task_end(t, NULL, &oom_err);
            return;
        }
        if (ctn_val_len(first) > 0)
            ctn_task_emit(t, first);
        else
            ctn_val_unref(first);
        if (t->ended) return; /* the chunk made someone cancel t */
    }
    fanout_start(t);
}

/* The input's keys, then the children's outputs. */
static void assign_child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    if (!fanout_child_end(t, c, out, err)) return;
    ctn_val *acc = t->acc;
    t->acc = NULL;
    ctn_val *o = ctn_val_obj();
    const ctn_val *in = t->input;
    for (size_t i = 0; o != NULL && i < in->u.obj.n; i++) {
        const ctn_val *k = in->u.obj.keys[i];
        if (ctn_val_setk(o, k->u.str.p, k->u.str.len, ctn_val_ref(in->u.obj.vals[i])) < 0) {
            ctn_val_unref(o);
            o = NULL;
        }
    }
    for (size_t i = 0; o != NULL && i < acc->u.obj.n; i++) {
        const ctn_val *k = acc->u.obj.keys[i];
        if (ctn_val_setk(o, k->u.str.p, k->u.str.len, ctn_val_ref(acc->u.obj.vals[i])) < 0) {
            ctn_val_unref(o);
            o = NULL;
        }
    }
    ctn_val_unref(acc);
    if (o == NULL) {
        task_end(t, NULL, &oom_err);
        return;
    }
    task_end(t, o, NULL);
}

/* ---- passthrough ------------------------------------------------------------------------- */

static void passthrough_start(ctn_task *t) {
    if (!t->streamed) task_end(t, ctn_val_ref(t->input), NULL);
}

static int passthrough_takes_stream(const ctn_node *n) {
    (void)n;
    return 1;
}

static void passthrough_feed(ctn_task *t, const ctn_val *chunk) {
    ctn_task_emit(t, ctn_val_ref((ctn_val *)chunk));
}

static void passthrough_feed_end(ctn_task *t, const ctn_val *whole) {
    task_end(t, ctn_val_ref((ctn_val *)whole), NULL);
}

/* ---- pick -------------------------------------------------------------------------------- */

static void pick_start(ctn_task *t) {
    const ctn_node *n = t->node;
    if (t->input == NULL || (t->input->kind != CTN_VOBJ && t->input->kind != CTN_VDOC)) {
        fail_task(t, CTN_ETYPE, "needs an object as input, got %s",
                  t->input ? ctn_vkind_name(t->input->kind) : "nothing");
        return;
    }
    if (n->single) {
        ctn_val *v = ctn_val_get(t->input, n->keys[0]);
        v = v != NULL ? ctn_val_ref(v) : ctn_val_null();
        task_end(t, v, v == NULL ? &oom_err : NULL);
        return;
    }
    ctn_val *o = ctn_val_obj();
    for (size_t i = 0; o != NULL && i < n->nkeys; i++) {
        ctn_val *v = ctn_val_get(t->input, n->keys[i]);
        if (v != NULL && ctn_val_set(o, n->keys[i], ctn_val_ref(v)) < 0) {
            ctn_val_unref(o);
            o = NULL;
        }
    }
    task_end(t, o, o == NULL ? &oom_err : NULL);
}

/* ---- branch: conditions in turn, then the branch of the first that holds ---------------- */

static void branch_start(ctn_task *t) {
    const ctn_node *n = t->node;
    t->step = 0;
    if (n->nkids == 0)
        spawn(t, n->dflt, t->input, NULL, SIZE_MAX, 0);
    else
        spawn(t, n->kids[0], t->input, NULL, 0, 0);
}

/* A branch runs in an odd slot, the default in slot SIZE_MAX, a condition in an even one. */
static int is_branch(const ctn_task *c) {
    return c->slot == SIZE_MAX || (c->slot & 1);
}

static void branch_child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    const ctn_node *n = t->node;
    if (err != NULL || is_branch(c)) {
        task_end(t, out, err); /* a branch's end is the node's */
        return;
    }
    /* A condition ended. */
    const int holds = truthy(out);
    ctn_val_unref(out);
    if (holds)
        spawn(t, n->kids[c->slot + 1], t->input, NULL, c->slot + 1, 0);
    else if (c->slot + 2 < n->nkids)
        spawn(t, n->kids[c->slot + 2], t->input, NULL, c->slot + 2, 0);
    else
        spawn(t, n->dflt, t->input, NULL, SIZE_MAX, 0);
}

static void branch_chunk(ctn_task *t, ctn_task *c, const ctn_val *chunk) {
    if (is_branch(c)) ctn_task_emit(t, ctn_val_ref((ctn_val *)chunk));
}

/* ---- router ------------------------------------------------------------------------------ */

static void router_start(ctn_task *t) {
    const ctn_node *n = t->node;
    const ctn_val *v = ctn_val_get(t->input, n->rkey);
    if (t->input == NULL || (t->input->kind != CTN_VOBJ && t->input->kind != CTN_VDOC)) {
        fail_task(t, CTN_ETYPE, "needs an object as input, got %s",
                  t->input ? ctn_vkind_name(t->input->kind) : "nothing");
        return;
    }
    const ctn_node *route = NULL;
    if (v != NULL && v->kind == CTN_VSTR)
        for (size_t i = 0; i < n->nkids && route == NULL; i++)
            if (strlen(n->keys[i]) == v->u.str.len &&
                memcmp(n->keys[i], v->u.str.p, v->u.str.len) == 0)
                route = n->kids[i];
    if (route == NULL) route = n->dflt;
    if (route == NULL) {
        char names[256] = "";
        for (size_t i = 0; i < n->nkids; i++) {
            if (i > 0) strncat(names, ", ", sizeof names - strlen(names) - 1);
            strncat(names, n->keys[i], sizeof names - strlen(names) - 1);
        }
        if (v == NULL || v->kind != CTN_VSTR) {
            fail_task(t, CTN_ETYPE, "input key '%s' must be a string, got %s (routes: %s)",
                      n->rkey, v ? ctn_vkind_name(v->kind) : "nothing", names);
        } else {
            fail_task(t, CTN_ENOENT, "no route '%.*s' for key '%s' (routes: %s)",
                      (int)(v->u.str.len > 100 ? 100 : v->u.str.len), v->u.str.p, n->rkey, names);
        }
        return;
    }
    spawn(t, route, t->input, NULL, 0, 0);
}

/* ---- fallbacks --------------------------------------------------------------------------- */

/* After an error the next alternative runs; when none is left, the node fails with the
 * first error. */
static void fallbacks_child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    const ctn_node *n = t->node;
    if (err == NULL) {
        task_end(t, out, NULL);
        return;
    }
    if (t->first_err == NULL)
        t->first_err = err;
    else
        err_release(err);
    if (c->slot + 1 < n->nkids) {
        spawn(t, n->kids[c->slot + 1], t->input, NULL, c->slot + 1, 0);
    } else {
        ctn_chain_err *e = t->first_err;
        t->first_err = NULL;
        task_end(t, NULL, e);
    }
}

/* ---- retry (t->step: the tries made after the first) ------------------------------------ */

static void retry_child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    const ctn_node *n = t->node;
    (void)c;
    if (err == NULL || t->step + 1 >= (size_t)n->attempts) {
        task_end(t, out, err);
        return;
    }
    err_release(err);
    const double wait = n->ms * (double)(1ull << (t->step < 30 ? t->step : 30));
    t->step++;
    if (wait > 0) {
        if (timer_start(t, wait) < 0) task_end(t, NULL, &oom_err);
    } else {
        start_first(t);
    }
}

/* ---- timeout ----------------------------------------------------------------------------- */

static void timeout_start(ctn_task *t) {
    if (timer_start(t, t->node->ms) < 0) {
        task_end(t, NULL, &oom_err);
        return;
    }
    start_first(t);
}

static void timeout_timer(ctn_task *t) {
    cancel_kids(t);
    char ms[32];
    snprintf(ms, sizeof ms, "%g", t->node->ms);
    fail_task(t, CTN_ETIMEDOUT, "timed out after %s ms", ms);
}

/* ---- bind -------------------------------------------------------------------------------- */

static void bind_start(ctn_task *t) {
    const ctn_node *n = t->node;
    if (n->config != NULL) {
        t->own_config = merge_config(t->config, n->config);
        if (t->own_config == NULL) {
            task_end(t, NULL, &oom_err);
            return;
        }
        t->config = t->own_config;
    }
    start_first(t);
}

/* ---- map --------------------------------------------------------------------------------- */

/* Starts elements while the concurrency allows. Children that end at once are counted
 * here, not launched again from child_end (launching is set): no recursion however long
 * the array. */
static void map_launch(ctn_task *t) {
    const size_t n = ctn_val_len(t->input);
    const size_t maxc = t->node->maxc > 0 ? (size_t)t->node->maxc : config_concurrency(t, n);
    t->launching = 1;
    while (!t->ended && t->next < n && t->running < maxc) {
        const size_t i = t->next++;
        t->running++;
        spawn(t, t->node->kids[0], ctn_val_at(t->input, i), NULL, i, 0);
    }
    t->launching = 0;
}

static void map_start(ctn_task *t) {
    if (t->input == NULL || t->input->kind != CTN_VARR) {
        fail_task(t, CTN_ETYPE, "needs an array as input, got %s",
                  t->input ? ctn_vkind_name(t->input->kind) : "nothing");
        return;
    }
    const size_t n = ctn_val_len(t->input);
    if (n == 0) {
        ctn_val *a = ctn_val_arr();
        task_end(t, a, a == NULL ? &oom_err : NULL);
        return;
    }
    t->slots = ctn__calloc(n, sizeof *t->slots);
    if (t->slots == NULL) {
        task_end(t, NULL, &oom_err);
        return;
    }
    t->pending = n;
    map_launch(t);
}

static void map_child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    if (err != NULL) {
        cancel_kids(t);
        task_end(t, NULL, err);
        return;
    }
    t->slots[c->slot] = out;
    t->running--;
    if (--t->pending == 0) {
        ctn_val *a = ctn_val_arr();
        const size_t len = ctn_val_len(t->input);
        for (size_t i = 0; i < len; i++) {
            ctn_val *v = t->slots[i];
            t->slots[i] = NULL;
            if (a != NULL && ctn_val_push(a, v) < 0) {
                ctn_val_unref(a);
                a = NULL;
            } else if (a == NULL) {
                ctn_val_unref(v);
            }
        }
        task_end(t, a, a == NULL ? &oom_err : NULL);
    } else if (!t->launching) {
        map_launch(t);
    }
}

/* ---- custom: the node's own operations (chain.h) ---------------------------------------- */

static void custom_start(ctn_task *t) {
    t->node->ops->start(t, t->streamed ? NULL : t->input);
}

static void custom_cancel(ctn_task *t) {
    if (t->node->ops->cancel != NULL) t->node->ops->cancel(t);
}

static int custom_takes_stream(const ctn_node *n) {
    return n->ops->feed != NULL && n->ops->feed_end != NULL;
}

static void custom_feed(ctn_task *t, const ctn_val *chunk) {
    t->node->ops->feed(t, chunk);
}

static void custom_feed_end(ctn_task *t, const ctn_val *whole) {
    t->node->ops->feed_end(t, whole);
}

/* ---- the table ---------------------------------------------------------------------------- */

/* One row per kind, the one place to add a kind (kinds.h). */
const ctn__kind ctn__kinds[CTN__NKINDS] = {
    [CTN_NODE_SEQUENCE] = {.name = "sequence",
                           .flags = CTN__KIND_OUT_OF_PATH | CTN__KIND_CHAINED,
                           .start = start_first,
                           .child_end = sequence_child_end,
                           .child_chunk = sequence_chunk,
                           .edges = ctn__edges_plain},
    [CTN_NODE_PARALLEL] = {.name = "parallel",
                           .start = fanout_start,
                           .child_end = parallel_child_end,
                           .child_chunk = parallel_chunk,
                           .edges = ctn__edges_keyed},
    [CTN_NODE_PASSTHROUGH] = {.name = "passthrough",
                              .start = passthrough_start,
                              .child_end = end_with_child,
                              .child_chunk = drop_chunk,
                              .takes_stream = passthrough_takes_stream,
                              .feed = passthrough_feed,
                              .feed_end = passthrough_feed_end,
                              .edges = ctn__edges_plain},
    [CTN_NODE_ASSIGN] = {.name = "assign",
                         .start = assign_start,
                         .child_end = assign_child_end,
                         .child_chunk = parallel_chunk,
                         .edges = ctn__edges_keyed},
    [CTN_NODE_PICK] = {.name = "pick",
                       .start = pick_start,
                       .child_end = end_with_child,
                       .child_chunk = drop_chunk,
                       .detail = ctn__detail_pick,
                       .edges = ctn__edges_plain},
    [CTN_NODE_BRANCH] = {.name = "branch",
                         .start = branch_start,
                         .child_end = branch_child_end,
                         .child_chunk = branch_chunk,
                         .edges = ctn__edges_branch},
    [CTN_NODE_ROUTER] = {.name = "router",
                         .start = router_start,
                         .child_end = end_with_child,
                         .child_chunk = pass_chunk,
                         .detail = ctn__detail_router,
                         .edges = ctn__edges_keyed},
    [CTN_NODE_FALLBACKS] = {.name = "fallbacks",
                            .start = start_first,
                            .child_end = fallbacks_child_end,
                            .child_chunk = pass_chunk,
                            .edges = ctn__edges_fallbacks},
    [CTN_NODE_RETRY] = {.name = "retry",
                        .start = start_first,
                        .child_end = retry_child_end,
                        .child_chunk = pass_chunk,
                        .timer = start_first, /* the backoff is over: the next try */
                        .detail = ctn__detail_retry,
                        .edges = ctn__edges_plain},
    [CTN_NODE_TIMEOUT] = {.name = "timeout",
                          .start = timeout_start,
                          .child_end = end_with_child,
                          .child_chunk = pass_chunk,
                          .timer = timeout_timer,
                          .detail = ctn__detail_timeout,
                          .edges = ctn__edges_plain},
    [CTN_NODE_BIND] = {.name = "bind",
                       .flags = CTN__KIND_OUT_OF_PATH,
                       .start = bind_start,
                       .child_end = end_with_child,
                       .child_chunk = pass_chunk,
                       .detail = ctn__detail_bind,
                       .edges = ctn__edges_plain},
    [CTN_NODE_MAP] = {.name = "map",
                      .start = map_start,
                      .child_end = map_child_end,
                      .child_chunk = drop_chunk,
                      .detail = ctn__detail_map,
                      .edges = ctn__edges_plain},
    [CTN_NODE_CUSTOM] = {.name = NULL, /* the node's ops->kind */
                         .start = custom_start,
                         .child_end = end_with_child,
                         .child_chunk = drop_chunk,
                         .cancel = custom_cancel,
                         .takes_stream = custom_takes_stream,
                         .feed = custom_feed,
                         .feed_end = custom_feed_end,
                         .detail = ctn__detail_custom},
};

/* ---- dispatch ----------------------------------------------------------------------------- */

static void task_start(ctn_task *t) {
    CTN_ASSERT(ctn__kind_of(t->node)->start != NULL); /* a kind without its row */
    ctn__kind_of(t->node)->start(t);
}

/* A child of t ended with out or err (both taken). */
static void child_end(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err) {
    if (t->ended) { /* t was ended by one of its children already */
        ctn_val_unref(out);
        err_release(err);
        return;
    }
    ctn__kind_of(t->node)->child_end(t, c, out, err);
}

/* A child of t emitted a chunk (borrowed). */
static void child_chunk(ctn_task *t, ctn_task *c, const ctn_val *chunk) {
    if (t->ended) return;
    ctn__kind_of(t->node)->child_chunk(t, c, chunk);
}

/* ==== the task API ======================================================================== */

void ctn_task_done(ctn_task *t, ctn_val *out) {
    ctn_run *r = t->run;
    enter(r);
    if (out == NULL)
        task_end(t, NULL, &oom_err);
    else
        task_end(t, out, NULL);
    leave(r);
}

void ctn_task_fail(ctn_task *t, int code, const char *fmt, ...) {
    ctn_run *r = t->run;
    enter(r);
    if (!t->ended) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        task_end(t, NULL, err_new(t, code < 0 ? code : CTN_ECHAIN, msg));
    }
    leave(r);
}

void ctn_task_fail_with(ctn_task *t, int code, ctn_val *detail, const char *fmt, ...) {
    ctn_run *r = t->run;
    enter(r);
    if (!t->ended) {
        char msg[1024];
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(msg, sizeof msg, fmt, ap);
        va_end(ap);
        ctn_chain_err *e = err_new(t, code < 0 ? code : CTN_ECHAIN, msg);
        if (e != &oom_err) e->detail = detail, detail = NULL;
        task_end(t, NULL, e);
    }
    ctn_val_unref(detail);
    leave(r);
}

void ctn_task_emit(ctn_task *t, ctn_val *chunk) {
    ctn_run *r = t->run;
    if (chunk == NULL) return;
    if (t->ended || !(r->flags & CTN_RUN_STREAM)) {
        ctn_val_unref(chunk);
        return;
    }
    enter(r);
    t->emitted = 1;
    deliver_chunk(t, chunk);
    ctn_val_unref(chunk);
    leave(r);
}

const ctn_val *ctn_task_config(const ctn_task *t) {
    return t->config;
}

const ctn_val *ctn_task_setting(const ctn_task *t, const char *key) {
    return ctn_val_get(t->config, key);
}

const ctn_node *ctn_task_node(const ctn_task *t) {
    return t->node;
}

ctn_run *ctn_task_run(const ctn_task *t) {
    return t->run;
}

uv_loop_t *ctn_task_loop(const ctn_task *t) {
    return t->run->loop;
}

void *ctn_task_data(const ctn_task *t) {
    return t->data;
}

void ctn_task_set_data(ctn_task *t, void *data) {
    t->data = data;
}

void ctn_task_add_tokens(ctn_task *t, int64_t prompt_tokens, int64_t completion_tokens) {
    if (t->span < 0) return;
    ctn_span *s = &t->run->spans[t->span];
    s->prompt_tokens += prompt_tokens;
    s->completion_tokens += completion_tokens;
}

/* The path element of task x, reached from its child c (NULL: x is the task itself), or
 * NULL when x is left out of the path. A child with a key runs under that key of its
 * parent (parallel, assign), which shows as "label.KEY". */
static char *path_element(const ctn_task *x, const ctn_task *c) {
    const ctn_node *n = x->node;
    if (n->name == NULL && (ctn__kind_of(n)->flags & CTN__KIND_OUT_OF_PATH) && c != NULL)
        return NULL;
    /* A named node shows under its name only: the node it names is left out. */
    if (x->parent != NULL && x->parent->node->kind == CTN_NODE_BIND && x->parent->node->name)
        return NULL;
    const char *label = ctn_node_label(n);
    if (c != NULL && c->key != NULL) {
        const size_t len = strlen(label) + strlen(c->key) + 2;
        char *e = ctn__malloc(len);
        if (e != NULL) snprintf(e, len, "%s.%s", label, c->key);
        return e;
    }
    return ctn__strdup(label);
}

char *ctn_task_path(const ctn_task *t) {
    char *path = ctn__strdup("");
    const ctn_task *c = NULL;
    const char *carry = NULL; /* the key of a named parallel's branch, for the name */
    for (const ctn_task *x = t; x != NULL && path != NULL; c = x, x = x->parent) {
        const ctn_node *n = x->node;
        char *e = path_element(x, c);
        if (e == NULL) {
            if (c != NULL && c->key != NULL) carry = c->key;
            continue;
        }
        if (carry != NULL && n->kind == CTN_NODE_BIND && n->name != NULL) {
            const size_t len = strlen(e) + strlen(carry) + 2;
            char *k = ctn__malloc(len);
            if (k != NULL) snprintf(k, len, "%s.%s", e, carry);
            free(e);
            e = k;
            if (e == NULL) {
                free(path);
                return NULL;
            }
        }
        carry = NULL;
        const size_t len = strlen(e) + strlen(path) + 4;
        char *p = ctn__malloc(len);
        if (p != NULL) snprintf(p, len, "%s%s%s", e, *path ? " > " : "", path);
        free(e);
        free(path);
        path = p;
    }
    return path;
}

/* ==== runs ================================================================================ */

int ctn_run_start(uv_loop_t *loop, ctn_node *root, ctn_val *input, const ctn_val *config,
                  const ctn_run_callbacks *cb, int flags, ctn_run **out) {
    if (loop == NULL || root == NULL || input == NULL || out == NULL ||
        (config != NULL && config->kind != CTN_VOBJ))
        return CTN_EINVAL;
    ctn_run *r = ctn__calloc(1, sizeof *r);
    if (r == NULL) return CTN_ENOMEM;
    r->loop = loop;
    r->root = ctn_node_ref(root);
    r->input = ctn_val_ref(input);
    r->config = config != NULL ? ctn_val_ref((ctn_val *)config) : ctn_val_obj();
    if (cb != NULL) r->cb = *cb;
    r->flags = flags & CTN_RUN_EVENTS ? flags | CTN_RUN_TRACE : flags;
    if (r->config == NULL) {
        run_free_now(r);
        return CTN_ENOMEM;
    }
    ctn_task *t = task_new(r, NULL, root, input, NULL, 0);
    if (t == NULL) {
        run_free_now(r);
        return CTN_ENOMEM;
    }
    r->root_task = t;
    *out = r;
    enter(r);
    task_start(t);
    leave(r);
    return 0;
}

void ctn_run_cancel(ctn_run *r) {
    if (r == NULL || r->ended || r->root_task == NULL) return;
    enter(r);
    ctn_task *t = r->root_task;
    cancel_task(t, 0);
    ctn_chain_err *e = err_new(NULL, CTN_ECANCELED, "cancelled");
    if (e != &oom_err) {
        free(e->path);
        e->path = ctn_task_path(t);
        if (e->path == NULL) {
            err_release(e);
            e = &oom_err;
        }
    }
    run_finish(r, NULL, e);
    leave(r);
}

int ctn_run_ended(const ctn_run *r) {
    return r->ended;
}

static void run_free_now(ctn_run *r) {
    while (r->grave != NULL) {
        ctn_task *t = r->grave;
        r->grave = t->grave_next;
        task_free(t);
    }
    for (size_t i = 0; i < r->nspans; i++) {
        free(r->spans[i].input);
        free(r->spans[i].output);
        free(r->spans[i].err_message);
    }
    free(r->spans);
    ctn_node_unref(r->root);
    ctn_val_unref(r->input);
    ctn_val_unref(r->config);
    free(r);
}

void ctn_run_free(ctn_run *r) {
    if (r == NULL || r->free_requested) return;
    /* Freed by leave, now or (from a callback) when the outermost executor call returns;
     * a second call from on_done finds free_requested set. */
    enter(r);
    r->free_requested = 1;
    if (!r->ended) {
        r->cb.on_chunk = NULL;
        ctn_run_cancel(r);
    }
    leave(r);
}

const ctn_span *ctn_run_spans(const ctn_run *r, size_t *n) {
    if (n != NULL) *n = r->nspans;
    return r->spans;
}

/* Appends to a growing string; on failure frees it and returns NULL. */
static char *appendf(char *buf, size_t *len, size_t *cap, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

static char *appendf(char *buf, size_t *len, size_t *cap, const char *fmt, ...) {
    if (buf == NULL) return NULL;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        const int n = vsnprintf(buf + *len, *cap - *len, fmt, ap);
        va_end(ap);
        if (n < 0) {
            free(buf);
            return NULL;
        }
        if ((size_t)n < *cap - *len) {
            *len += (size_t)n;
            return buf;
        }
        const size_t cap2 = 2 * *cap + (size_t)n;
        char *p = ctn__realloc(buf, cap2);
        if (p == NULL) {
            free(buf);
            return NULL;
        }
        buf = p;
        *cap = cap2;
    }
}

char *ctn_run_trace_text(const ctn_run *r) {
    size_t len = 0, cap = 256;
    char *out = ctn__malloc(cap);
    if (out == NULL) return NULL;
    out[0] = 0;
    for (size_t i = 0; i < r->nspans; i++) {
        const ctn_span *s = &r->spans[i];
        int depth = 0;
        for (int64_t p = s->parent_id; p >= 0 && depth < 1000; p = r->spans[p].parent_id)
            depth++;
        out = appendf(out, &len, &cap, "%*s%s%s%s", 2 * depth, "", s->key ? s->key : "",
                      s->key ? ": " : "", s->label);
        if (strcmp(s->label, s->kind) != 0) out = appendf(out, &len, &cap, " (%s)", s->kind);
        if (s->end_ns != 0)
            out = appendf(out, &len, &cap, "  %.3f ms", (double)(s->end_ns - s->start_ns) / 1e6);
        else
            out = appendf(out, &len, &cap, "  running");
        if (s->prompt_tokens || s->completion_tokens)
            out = appendf(out, &len, &cap, "  tokens %lld+%lld", (long long)s->prompt_tokens,
                          (long long)s->completion_tokens);
        if (s->err_code != 0)
            out = appendf(out, &len, &cap, "  error: %s", s->err_message ? s->err_message : "");
        else if (s->output != NULL)
            out = appendf(out, &len, &cap, "  -> %s", s->output);
        out = appendf(out, &len, &cap, "\n");
        if (out == NULL) return NULL;
    }
    return out;
}
