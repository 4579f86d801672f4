/*
 * Chain nodes (chain.h): construction, reference counting, labels. The executor is in
 * exec.c, the drawings of a graph in graph.c.
 */
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "chain_impl.h"
#include "kinds.h"
#include "str.h"

static void unref_all(ctn_node *const *v, size_t n) {
    for (size_t i = 0; v != NULL && i < n; i++)
        ctn_node_unref(v[i]);
}

/* A node of kind k with room for nk children and nkeys keys; on failure releases the
 * given children (and dflt) as the constructors promise. */
static ctn_node *node_new(ctn_node_kind k, ctn_node *const *kids, size_t nk,
                          const char *const *keys, size_t nkeys, ctn_node *dflt) {
    int bad = 0;
    for (size_t i = 0; i < nk; i++)
        if (kids == NULL || kids[i] == NULL) bad = 1;
    for (size_t i = 0; i < nkeys; i++)
        if (keys == NULL || keys[i] == NULL) bad = 1;
    ctn_node *n = bad ? NULL : ctn__calloc(1, sizeof *n);
    if (n != NULL) {
        n->kind = k;
        n->refs = 1;
        n->kids = nk ? ctn__calloc(nk, sizeof *n->kids) : NULL;
        n->keys = nkeys ? ctn__calloc(nkeys, sizeof *n->keys) : NULL;
        if ((nk && n->kids == NULL) || (nkeys && n->keys == NULL)) {
            free(n->kids);
            free(n->keys);
            free(n);
            n = NULL;
        }
    }
    if (n != NULL) {
        for (size_t i = 0; i < nkeys; i++)
            if ((n->keys[i] = ctn__strdup(keys[i])) == NULL) bad = 1;
        n->nkeys = nkeys;
        if (bad) {
            for (size_t i = 0; i < nkeys; i++)
                free(n->keys[i]);
            free(n->keys);
            free(n->kids);
            free(n);
            n = NULL;
        }
    }
    if (n == NULL) {
        unref_all(kids, nk);
        ctn_node_unref(dflt);
        return NULL;
    }
    for (size_t i = 0; i < nk; i++)
        n->kids[i] = kids[i];
    n->nkids = nk;
    n->dflt = dflt;
    return n;
}

ctn_node *ctn_node_custom(const ctn_node_ops *ops, void *ud, const char *name) {
    if (ops == NULL || ops->start == NULL || ops->kind == NULL) return NULL;
    ctn_node *n = node_new(CTN_NODE_CUSTOM, NULL, 0, NULL, 0, NULL);
    if (n == NULL) return NULL;
    n->ops = ops;
    n->ud = ud;
    if (name != NULL && (n->name = ctn__strdup(name)) == NULL) {
        n->ops = NULL; /* ud stays the caller's */
        ctn_node_unref(n);
        return NULL;
    }
    return n;
}

ctn_node *ctn_node_sequence(ctn_node *const *steps, size_t n) {
    if (n == 0) return NULL;
    return node_new(CTN_NODE_SEQUENCE, steps, n, NULL, 0, NULL);
}

ctn_node *ctn_node_parallel(const char *const *keys, ctn_node *const *children, size_t n) {
    return node_new(CTN_NODE_PARALLEL, children, n, keys, n, NULL);
}

ctn_node *ctn_node_passthrough(void) {
    return node_new(CTN_NODE_PASSTHROUGH, NULL, 0, NULL, 0, NULL);
}

ctn_node *ctn_node_assign(const char *const *keys, ctn_node *const *children, size_t n) {
    return node_new(CTN_NODE_ASSIGN, children, n, keys, n, NULL);
}

ctn_node *ctn_node_pick(const char *const *keys, size_t n, int single) {
    if (n == 0 || (single && n != 1)) return NULL;
    ctn_node *p = node_new(CTN_NODE_PICK, NULL, 0, keys, n, NULL);
    if (p != NULL) p->single = single != 0;
    return p;
}

ctn_node *ctn_node_branch(ctn_node *const *conds, ctn_node *const *branches, size_t n,
                          ctn_node *dflt) {
    /* kids: cond 0, branch 0, cond 1, branch 1, ... */
    ctn_node **kids = n ? ctn__malloc(2 * n * sizeof *kids) : NULL;
    if ((n && kids == NULL) || dflt == NULL) {
        unref_all(conds, n);
        unref_all(branches, n);
        ctn_node_unref(dflt);
        free(kids);
        return NULL;
    }
    for (size_t i = 0; i < n; i++) {
        kids[2 * i] = conds != NULL ? conds[i] : NULL;
        kids[2 * i + 1] = branches != NULL ? branches[i] : NULL;
    }
    ctn_node *b = node_new(CTN_NODE_BRANCH, kids, 2 * n, NULL, 0, dflt);
    free(kids);
    return b;
}

ctn_node *ctn_node_router(const char *key, const char *const *names, ctn_node *const *routes,
                          size_t n, ctn_node *dflt) {
    if (key == NULL) {
        unref_all(routes, n);
        ctn_node_unref(dflt);
        return NULL;
    }
    ctn_node *r = node_new(CTN_NODE_ROUTER, routes, n, names, n, dflt);
    if (r != NULL && (r->rkey = ctn__strdup(key)) == NULL) {
        ctn_node_unref(r);
        return NULL;
    }
    return r;
}

ctn_node *ctn_node_fallbacks(ctn_node *primary, ctn_node *const *fallbacks, size_t n) {
    ctn_node **kids = ctn__malloc((n + 1) * sizeof *kids);
    if (kids == NULL || primary == NULL) {
        free(kids);
        ctn_node_unref(primary);
        unref_all(fallbacks, n);
        return NULL;
    }
    kids[0] = primary;
    for (size_t i = 0; i < n; i++)
        kids[i + 1] = fallbacks != NULL ? fallbacks[i] : NULL;
    ctn_node *f = node_new(CTN_NODE_FALLBACKS, kids, n + 1, NULL, 0, NULL);
    free(kids);
    return f;
}

static ctn_node *wrap(ctn_node_kind k, ctn_node *child) {
    if (child == NULL) return NULL;
    return node_new(k, &child, 1, NULL, 0, NULL);
}

ctn_node *ctn_node_retry(ctn_node *child, int attempts, double backoff_ms) {
    if (attempts < 1 || !(backoff_ms >= 0)) {
        ctn_node_unref(child);
        return NULL;
    }
    ctn_node *n = wrap(CTN_NODE_RETRY, child);
    if (n != NULL) n->attempts = attempts, n->ms = backoff_ms;
    return n;
}

ctn_node *ctn_node_timeout(ctn_node *child, double ms) {
    if (!(ms > 0)) {
        ctn_node_unref(child);
        return NULL;
    }
    ctn_node *n = wrap(CTN_NODE_TIMEOUT, child);
    if (n != NULL) n->ms = ms;
    return n;
}

ctn_node *ctn_node_bind(ctn_node *child, ctn_val *config) {
    if (config != NULL && config->kind != CTN_VOBJ) {
        ctn_node_unref(child);
        ctn_val_unref(config);
        return NULL;
    }
    ctn_node *n = wrap(CTN_NODE_BIND, child);
    if (n == NULL) {
        ctn_val_unref(config);
        return NULL;
    }
    n->config = config;
    return n;
}

ctn_node *ctn_node_map(ctn_node *child, int max_concurrency) {
    if (max_concurrency < 0) {
        ctn_node_unref(child);
        return NULL;
    }
    ctn_node *n = wrap(CTN_NODE_MAP, child);
    if (n != NULL) n->maxc = max_concurrency;
    return n;
}

ctn_node *ctn_node_named(ctn_node *node, const char *name) {
    if (name == NULL) {
        ctn_node_unref(node);
        return NULL;
    }
    ctn_node *n = wrap(CTN_NODE_BIND, node);
    if (n != NULL && (n->name = ctn__strdup(name)) == NULL) {
        ctn_node_unref(n);
        return NULL;
    }
    return n;
}

ctn_node *ctn_node_ref(ctn_node *n) {
    if (n != NULL) n->refs++;
    return n;
}

void ctn_node_unref(ctn_node *n) {
    if (n == NULL || --n->refs > 0) return;
    for (size_t i = 0; i < n->nkids; i++)
        ctn_node_unref(n->kids[i]);
    free(n->kids);
    for (size_t i = 0; i < n->nkeys; i++)
        free(n->keys[i]);
    free(n->keys);
    ctn_node_unref(n->dflt);
    ctn_val_unref(n->config);
    free(n->rkey);
    free(n->name);
    if (n->ops != NULL && n->ops->free_ud != NULL) n->ops->free_ud(n->ud);
    free(n);
}

ctn_node_kind ctn_node_get_kind(const ctn_node *n) {
    return n->kind;
}

const char *ctn__node_kind_name(const ctn_node *n) {
    const char *name = ctn__kind_of(n)->name;
    return name != NULL ? name : n->ops->kind; /* a custom node's kind is in its ops */
}

const char *ctn_node_label(const ctn_node *n) {
    return n->name != NULL ? n->name : ctn__node_kind_name(n);
}

void *ctn_node_ud(const ctn_node *n) {
    return n->kind == CTN_NODE_CUSTOM ? n->ud : NULL;
}

const char *ctn_node_name(const ctn_node *n) {
    return n->name;
}

size_t ctn_node_nkids(const ctn_node *n) {
    return n->nkids;
}

ctn_node *ctn_node_kid(const ctn_node *n, size_t i) {
    return i < n->nkids ? n->kids[i] : NULL;
}

int ctn_node_is_custom(const ctn_node *n, const ctn_node_ops *ops) {
    return n != NULL && n->kind == CTN_NODE_CUSTOM && n->ops == ops;
}
