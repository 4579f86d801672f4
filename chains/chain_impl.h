/*
 * The inside of chain nodes, shared by node.c, exec.c and graph.c (not a public header).
 */
#ifndef CTN_CHAIN_IMPL_H
#define CTN_CHAIN_IMPL_H

#include "chain.h"

struct ctn_node {
    ctn_node_kind kind;
    int refs;
    char *name; /* or NULL; a BIND with a name and no config is a named node */
    /* SEQUENCE: the steps; PARALLEL, ASSIGN: the children of keys[i]; BRANCH: cond 0,
     * branch 0, cond 1, ...; ROUTER: the routes of keys[i]; FALLBACKS: the primary, then
     * the fallbacks; RETRY, TIMEOUT, BIND, MAP: the one child. */
    ctn_node **kids;
    size_t nkids;
    char **keys; /* PARALLEL, ASSIGN, PICK keys; ROUTER route names */
    size_t nkeys;
    ctn_node *dflt;          /* BRANCH, ROUTER: the default, or NULL */
    const ctn_node_ops *ops; /* CUSTOM */
    void *ud;                /* CUSTOM */
    int attempts;            /* RETRY */
    double ms;               /* RETRY: the first backoff; TIMEOUT: the limit */
    int single;              /* PICK: one key, its value itself */
    int maxc;                /* MAP: concurrency (0: the config's, or all) */
    ctn_val *config;         /* BIND: the keys it sets, or NULL */
    char *rkey;              /* ROUTER: the input key that chooses */
};

const char *ctn__node_kind_name(const ctn_node *n);

#endif
