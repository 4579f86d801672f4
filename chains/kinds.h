/*
 * The table of node kinds, shared by node.c, exec.c and graph.c (not a public header).
 *
 * Each kind is one row of ctn__kinds (exec.c): its name, how the executor runs a task of
 * it, and how the drawings show it. Nothing else dispatches on a node's kind, so a new
 * kind is its enum value (chain.h), its constructor (node.c), its functions and its row:
 * the row is the one place that ties them in. CTN_NODE_CUSTOM's row forwards to the node's
 * own ctn_node_ops.
 */
#ifndef CTN_KINDS_H
#define CTN_KINDS_H

#include "chain_impl.h"

#define CTN__NKINDS (CTN_NODE_CUSTOM + 1) /* CUSTOM is the last kind */

enum {
    /* Unnamed, it is left out of the path of an error below it (chain.h). */
    CTN__KIND_OUT_OF_PATH = 1,
    /* Unnamed, the graph draws its children chained one after the other instead of a node
     * of its own. */
    CTN__KIND_CHAINED = 2,
};

typedef struct ctn__kind {
    const char *name; /* labels, traces, graphs; NULL: the node's ops->kind (CUSTOM) */
    int flags;        /* CTN__KIND_* */

    /* ---- the executor (exec.c) ---- */
    /* Begins a task of the kind and ends it, now or later, through the executor. */
    void (*start)(ctn_task *t);
    /* A child c of t (which has not ended) ended with out or err (both taken); c is NULL
     * when a fan-out started no child. */
    void (*child_end)(ctn_task *t, ctn_task *c, ctn_val *out, ctn_chain_err *err);
    /* A child c of t (which has not ended) emitted a chunk (borrowed). */
    void (*child_chunk)(ctn_task *t, ctn_task *c, const ctn_val *chunk);
    /* Optional (set where start starts a timer): the task's timer fired. */
    void (*timer)(ctn_task *t);
    /* Optional: the task is being cancelled (its children already are). */
    void (*cancel)(ctn_task *t);
    /* Optional: whether node n takes its input as a stream in a streaming sequence; then
     * its task starts without input and gets feed for each chunk of the step before and
     * feed_end with that step's whole output (both borrowed). */
    int (*takes_stream)(const ctn_node *n);
    void (*feed)(ctn_task *t, const ctn_val *chunk);
    void (*feed_end)(ctn_task *t, const ctn_val *whole);

    /* ---- the drawings (graph.c) ---- */
    /* Optional: the detail after the label in drawings (malloc'd; NULL: none). */
    char *(*detail)(const ctn_node *n);
    /* The children to draw, the default left out, into kids[] with the label of the edge
     * to each in labels[] (or NULL; made-up labels go to lbuf); returns how many. NULL: the
     * kind never has children. */
    size_t (*edges)(const ctn_node *n, const ctn_node **kids, const char **labels,
                    char (*lbuf)[32]);
} ctn__kind;

extern const ctn__kind ctn__kinds[CTN__NKINDS];

static inline const ctn__kind *ctn__kind_of(const ctn_node *n) {
    return &ctn__kinds[n->kind];
}

/* The kinds' drawing functions (graph.c), for their rows. */
char *ctn__detail_pick(const ctn_node *n);
char *ctn__detail_router(const ctn_node *n);
char *ctn__detail_retry(const ctn_node *n);
char *ctn__detail_timeout(const ctn_node *n);
char *ctn__detail_bind(const ctn_node *n);
char *ctn__detail_map(const ctn_node *n);
char *ctn__detail_custom(const ctn_node *n);
size_t ctn__edges_plain(const ctn_node *n, const ctn_node **kids, const char **labels,
                        char (*lbuf)[32]);
size_t ctn__edges_keyed(const ctn_node *n, const ctn_node **kids, const char **labels,
                        char (*lbuf)[32]);
size_t ctn__edges_branch(const ctn_node *n, const ctn_node **kids, const char **labels,
                         char (*lbuf)[32]);
size_t ctn__edges_fallbacks(const ctn_node *n, const ctn_node **kids, const char **labels,
                            char (*lbuf)[32]);

#endif
