/*
 * The chain graph and its executor. A chain is a graph of nodes (sequence, parallel,
 * passthrough, assign, pick, branch, router, fallbacks, retry, timeout, bind, map, and
 * nodes with their own operations: lambdas, prompts, models, parsers) run asynchronously on
 * one libuv loop. Nothing here knows Lua: the Lua binding defines its lambdas through
 * ctn_node_ops like any C service.
 *
 *     ctn_node *seq[2] = {ctn_node_custom(&upper_ops, NULL, NULL), ctn_node_passthrough()};
 *     ctn_node *chain = ctn_node_sequence(seq, 2);          // takes the two references
 *     ctn_run_callbacks cb = {.on_done = finished, .ud = &state};
 *     ctn_run *run;
 *     if (ctn_run_start(loop, chain, input, NULL, &cb, 0, &run) < 0) ...
 *     uv_run(loop, UV_RUN_DEFAULT);                          // finished() is called once
 *     ctn_run_free(run);
 *     ctn_node_unref(chain);
 *
 * Ownership: nodes are reference counted and immutable once built; constructors take over
 * the references to the children they are given (also when they fail: then they release
 * them) and return a node with one reference, or NULL when memory runs out or an argument
 * is bad. Values (value.h) passed to the executor are borrowed unless a function says it
 * takes them.
 *
 * Execution: every node execution is a task. A task gets its input and the run's config
 * (an object: tags, metadata, max_concurrency, run_name, and model settings such as
 * temperature, max_tokens, stop, seed, which bind nodes add to), may emit output chunks as
 * it goes (streaming) and ends exactly once, with a value or an error. Tasks run on the loop
 * thread only; waits (a model's tokens, a timer) never block it.
 *
 * Streaming: in a run started with CTN_RUN_STREAM, a sequence feeds each step's chunks to
 * the next step as they come when that step takes streamed input (ops.feed: parsers,
 * passthrough); other steps get the whole previous output. A node that emits no chunks
 * emits its output as one chunk when it ends. A parallel node's chunks are objects
 * {key: chunk}.
 *
 * Errors name the node path, root first: "rag > parallel.context > retriever". A node's
 * label is its name (ctn_node_named) or its kind; unnamed sequences and binds are left out
 * of the path (unless one failed itself), a node under a name shows only as the name, and a
 * branch of a parallel or assign node shows as "parallel.KEY". Fallbacks and retry catch errors (not cancellation); every other node
 * fails with the error of the child that failed and cancels its other children.
 */
#ifndef CTN_CHAIN_H
#define CTN_CHAIN_H

#include <stddef.h>
#include <stdint.h>
#include <uv.h>

#include "value.h"

typedef struct ctn_node ctn_node;
typedef struct ctn_task ctn_task;
typedef struct ctn_run ctn_run;

typedef enum {
    CTN_NODE_SEQUENCE,
    CTN_NODE_PARALLEL,
    CTN_NODE_PASSTHROUGH,
    CTN_NODE_ASSIGN,
    CTN_NODE_PICK,
    CTN_NODE_BRANCH,
    CTN_NODE_ROUTER,
    CTN_NODE_FALLBACKS,
    CTN_NODE_RETRY,
    CTN_NODE_TIMEOUT,
    CTN_NODE_BIND,
    CTN_NODE_MAP,
    CTN_NODE_CUSTOM, /* operations of its own (ctn_node_ops): lambda, prompt, model, parser */
} ctn_node_kind;

/*
 * The operations of a custom node. start begins one execution and must end it exactly once,
 * now or later on the loop thread, with ctn_task_done or ctn_task_fail; before that it may
 * emit chunks with ctn_task_emit. The input is borrowed until the task ends (take a
 * reference to keep it longer).
 */
typedef struct {
    const char *kind; /* "lambda", "prompt", "model", "parser", ...: labels, traces, graphs */
    void (*start)(ctn_task *t, ctn_val *input);
    /* Optional: the node takes streamed input. Then, in a streaming sequence, start is
     * called with a NULL input, followed by feed for each chunk of the step before (borrowed)
     * and feed_end with that step's whole output (borrowed); the node may emit as it goes
     * and ends as usual (after feed_end, or earlier on an error). */
    void (*feed)(ctn_task *t, const ctn_val *chunk);
    void (*feed_end)(ctn_task *t, const ctn_val *whole);
    /* Optional: stops a task that has not ended (its run was cancelled, a timeout fired, a
     * sibling failed). The executor ends the task itself right after: the node must not call
     * ctn_task_done / ctn_task_fail for it afterwards and must let go of the task pointer
     * (work still in flight must find out on its own that the task is gone). */
    void (*cancel)(ctn_task *t);
    /* Optional: releases the node's ud when the node is freed. */
    void (*free_ud)(void *ud);
    /* Optional: a one-line description for describe()/graph() (malloc'd; NULL: none). */
    char *(*describe)(const void *ud);
} ctn_node_ops;

/* ---- building nodes ---------------------------------------------------------------------- */

ctn_node *ctn_node_custom(const ctn_node_ops *ops, void *ud, const char *name);
/* steps[0..n-1] in order (n >= 1). */
ctn_node *ctn_node_sequence(ctn_node *const *steps, size_t n);
/* An object {keys[i]: output of children[i]}, all run at once on the same input. */
ctn_node *ctn_node_parallel(const char *const *keys, ctn_node *const *children, size_t n);
ctn_node *ctn_node_passthrough(void);
/* The input object with keys[i] set to the output of children[i] (run in parallel). */
ctn_node *ctn_node_assign(const char *const *keys, ctn_node *const *children, size_t n);
/* An object of the given keys of the input object (missing keys are left out); with one
 * key and single != 0, that key's value itself. */
ctn_node *ctn_node_pick(const char *const *keys, size_t n, int single);
/* The first branch whose condition (a node run on the input) gives a value other than
 * null or false runs on the input; otherwise the default (required). */
ctn_node *ctn_node_branch(ctn_node *const *conds, ctn_node *const *branches, size_t n,
                          ctn_node *dflt);
/* routes[i] runs when input[key] is the string names[i]; dflt (or NULL: an error naming the
 * value and the routes) otherwise. */
ctn_node *ctn_node_router(const char *key, const char *const *names, ctn_node *const *routes,
                          size_t n, ctn_node *dflt);
/* primary, then each fallback in turn after an error. */
ctn_node *ctn_node_fallbacks(ctn_node *primary, ctn_node *const *fallbacks, size_t n);
/* Up to attempts runs of child; before try k (k >= 1) a wait of backoff_ms * 2^(k-1). */
ctn_node *ctn_node_retry(ctn_node *child, int attempts, double backoff_ms);
/* child, cancelled and failed with CTN_ETIMEDOUT when it has not ended after ms. */
ctn_node *ctn_node_timeout(ctn_node *child, double ms);
/* child with config's keys set on the config it runs with (takes config, an object). */
ctn_node *ctn_node_bind(ctn_node *child, ctn_val *config);
/* child on each element of an array input (at most max_concurrency at once, 0: the
 * config's max_concurrency or all), the outputs in order. */
ctn_node *ctn_node_map(ctn_node *child, int max_concurrency);

/* The same node under a name (shown in paths, traces and graphs): a new node sharing
 * node's children (node itself is not changed: it may be shared); takes node. */
ctn_node *ctn_node_named(ctn_node *node, const char *name);

ctn_node *ctn_node_ref(ctn_node *n);
void ctn_node_unref(ctn_node *n);

ctn_node_kind ctn_node_get_kind(const ctn_node *n);
/* The name given with ctn_node_named (on the named node), or NULL. */
const char *ctn_node_name(const ctn_node *n);
/* A node's children in construction order (a sequence's steps, ...): count and borrow. */
size_t ctn_node_nkids(const ctn_node *n);
ctn_node *ctn_node_kid(const ctn_node *n, size_t i);
/* The label: the name if any, else the kind ("sequence", "lambda", ...). */
const char *ctn_node_label(const ctn_node *n);
void *ctn_node_ud(const ctn_node *n); /* a custom node's ud */
/* Whether n is a custom node with these operations. */
int ctn_node_is_custom(const ctn_node *n, const ctn_node_ops *ops);

/* ---- inside a task (custom nodes) ------------------------------------------------------- */

/* Ends the task with out (taken). */
void ctn_task_done(ctn_task *t, ctn_val *out);
/* Ends the task with an error: code (CTN_E*) and a message (printf format). */
void ctn_task_fail(ctn_task *t, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 3, 4)))
#endif
    ;
/* ctn_task_fail with more fields for the error (detail, an object, taken; NULL for none). */
void ctn_task_fail_with(ctn_task *t, int code, ctn_val *detail, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;
/* Emits one output chunk (taken). */
void ctn_task_emit(ctn_task *t, ctn_val *chunk);
/* The config the task runs with (an object; borrowed), a key of it, or NULL. */
const ctn_val *ctn_task_config(const ctn_task *t);
const ctn_val *ctn_task_setting(const ctn_task *t, const char *key);
const ctn_node *ctn_task_node(const ctn_task *t);
ctn_run *ctn_task_run(const ctn_task *t);
uv_loop_t *ctn_task_loop(const ctn_task *t);
/* A pointer the node keeps per task (NULL at start). */
void *ctn_task_data(const ctn_task *t);
void ctn_task_set_data(ctn_task *t, void *data);
/* The node path of the task ("rag > parallel.context > retriever"), malloc'd. */
char *ctn_task_path(const ctn_task *t);
/* Counts tokens against the task in the trace (model nodes). */
void ctn_task_add_tokens(ctn_task *t, int64_t prompt_tokens, int64_t completion_tokens);

/* ---- runs ------------------------------------------------------------------------------ */

/* An error as a run reports it. */
typedef struct {
    int code;       /* CTN_E* */
    char *message;  /* the cause */
    char *path;     /* the node path */
    ctn_val *detail; /* NULL, or an object of more fields: a lambda's error value that was not
                      * a string (cause) and the lambda's Lua traceback (traceback) */
} ctn_chain_err;

/* One span of the trace: a task from start to end. */
typedef struct {
    int64_t id, parent_id;     /* parent_id -1: the root */
    const char *label;         /* the node's label (ctn_node_label) */
    const char *kind;          /* "sequence", "lambda", "model", ... */
    const char *key;           /* the parallel/assign key it ran under, or NULL */
    uint64_t start_ns, end_ns; /* uv_hrtime; end_ns 0 while running */
    char *input, *output;      /* JSON summaries (at most 200 bytes; documents: their
                                  metadata and text starts, 2000), or NULL */
    int64_t prompt_tokens, completion_tokens;
    int err_code; /* 0: ended with a value */
    char *err_message;
} ctn_span;

typedef enum { CTN_EV_START, CTN_EV_STREAM, CTN_EV_END } ctn_event_kind;

/* A live trace event (stream_events): the span (as far as it is known), and for
 * CTN_EV_STREAM the chunk (borrowed). */
typedef struct {
    ctn_event_kind kind;
    const ctn_span *span;
    const ctn_val *chunk;
} ctn_event;

typedef struct {
    /* The run's output chunks (streaming runs; borrowed during the call). */
    void (*on_chunk)(void *ud, const ctn_val *chunk);
    /* Trace events (runs with CTN_RUN_EVENTS). */
    void (*on_event)(void *ud, const ctn_event *ev);
    /* The end, exactly once: out (borrowed; take a reference to keep it) or err. The run may
     * be freed from here. */
    void (*on_done)(void *ud, const ctn_val *out, const ctn_chain_err *err);
    void *ud;
} ctn_run_callbacks;

enum {
    CTN_RUN_STREAM = 1, /* stream between nodes and to on_chunk */
    CTN_RUN_TRACE = 2,  /* keep the trace tree with input/output summaries */
    CTN_RUN_EVENTS = 4, /* call on_event (implies CTN_RUN_TRACE) */
};

/*
 * Starts root on input (borrowed: the run takes its own reference) with config (borrowed;
 * NULL: empty). The run holds a reference to root. Returns 0 and *out, or CTN_ENOMEM /
 * CTN_EINVAL (nothing is called then).
 */
int ctn_run_start(uv_loop_t *loop, ctn_node *root, ctn_val *input, const ctn_val *config,
                  const ctn_run_callbacks *cb, int flags, ctn_run **out);
/* Cancels a run that has not ended: every task stops, and on_done comes with CTN_ECANCELED
 * (from inside this call). Nothing happens when the run has ended. */
void ctn_run_cancel(ctn_run *r);
/* Whether on_done has been called. */
int ctn_run_ended(const ctn_run *r);
/* Frees a run. A run that has not ended is cancelled first (on_done is called). */
void ctn_run_free(ctn_run *r);

/* The spans of the run (traced runs; all of them once the run has ended), in start order. */
const ctn_span *ctn_run_spans(const ctn_run *r, size_t *n);
/* The trace as an indented tree, one span per line (malloc'd). */
char *ctn_run_trace_text(const ctn_run *r);

/* ---- introspection ------------------------------------------------------------------- */

/* The graph as ASCII art (describe), as JSON {"nodes": [...], "edges": [...]} (graph), and
 * as a Mermaid flowchart. malloc'd; NULL when memory runs out. */
char *ctn_node_describe(const ctn_node *n);
ctn_val *ctn_node_graph(const ctn_node *n);
char *ctn_node_mermaid(const ctn_node *n);

#endif
