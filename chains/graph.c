/*
 * Drawings of a chain graph (chain.h): an indented tree (describe), nodes and edges
 * (graph), and a Mermaid flowchart made from those.
 *
 * In the graph, a sequence is not a node of its own: its steps are chained, each step's
 * exits joined to the next step's entry. A parallel node fans out to its branches (edges
 * labelled with their keys) and every branch's exits lead on; branch, router and fallbacks
 * nodes lead to each alternative; retry, timeout, bind and map lead to their child.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "chain_impl.h"
#include "error.h"
#include "kinds.h"
#include "str.h"

/* ==== describe ============================================================================ */

/* A detail made in buf, malloc'd (NULL: none). */
static char *detail_dup(const char *buf) {
    if (buf[0] == 0) return NULL;
    const size_t len = strlen(buf) + 1;
    char *p = ctn__malloc(len);
    if (p != NULL) memcpy(p, buf, len);
    return p;
}

/* The details of the kinds (their rows in ctn__kinds). */
char *ctn__detail_pick(const ctn_node *n) {
    char buf[160];
    buf[0] = 0;
    size_t len = 0;
    for (size_t i = 0; i < n->nkeys && len + 4 < sizeof buf; i++)
        len += (size_t)snprintf(buf + len, sizeof buf - len, "%s%s", i ? ", " : "", n->keys[i]);
    return detail_dup(buf);
}

char *ctn__detail_router(const ctn_node *n) {
    char buf[160];
    snprintf(buf, sizeof buf, "on '%s'", n->rkey);
    return detail_dup(buf);
}

char *ctn__detail_retry(const ctn_node *n) {
    char buf[160];
    snprintf(buf, sizeof buf, "%d attempts, backoff %g ms", n->attempts, n->ms);
    return detail_dup(buf);
}

char *ctn__detail_timeout(const ctn_node *n) {
    char buf[160];
    snprintf(buf, sizeof buf, "%g ms", n->ms);
    return detail_dup(buf);
}

char *ctn__detail_bind(const ctn_node *n) {
    if (n->config == NULL) return NULL;
    char *j = ctn_val_to_json(n->config, 0);
    if (j != NULL && strlen(j) > 120) memcpy(j + 117, "...", 4);
    return j;
}

char *ctn__detail_map(const ctn_node *n) {
    char buf[160];
    buf[0] = 0;
    if (n->maxc > 0) snprintf(buf, sizeof buf, "max concurrency %d", n->maxc);
    return detail_dup(buf);
}

char *ctn__detail_custom(const ctn_node *n) {
    return n->ops->describe != NULL ? n->ops->describe(n->ud) : NULL;
}

/* The detail after a node's label: a custom node's own description, a router's key, ... */
static char *detail(const ctn_node *n) {
    const ctn__kind *k = ctn__kind_of(n);
    return k->detail != NULL ? k->detail(n) : NULL;
}

/* The children to draw of the kinds (their rows in ctn__kinds; kinds.h). */
size_t ctn__edges_plain(const ctn_node *n, const ctn_node **kids, const char **labels,
                        char (*lbuf)[32]) {
    (void)lbuf;
    for (size_t i = 0; i < n->nkids; i++)
        kids[i] = n->kids[i], labels[i] = NULL;
    return n->nkids;
}

/* Edges labelled with the node's keys (parallel, assign, router). */
size_t ctn__edges_keyed(const ctn_node *n, const ctn_node **kids, const char **labels,
                        char (*lbuf)[32]) {
    (void)lbuf;
    for (size_t i = 0; i < n->nkids; i++)
        kids[i] = n->kids[i], labels[i] = n->keys[i];
    return n->nkids;
}

size_t ctn__edges_branch(const ctn_node *n, const ctn_node **kids, const char **labels,
                         char (*lbuf)[32]) {
    size_t k = 0;
    for (size_t i = 0; i + 1 < n->nkids; i += 2) {
        snprintf(lbuf[k], 32, "if %zu", i / 2 + 1);
        kids[k] = n->kids[i], labels[k] = lbuf[k], k++;
        snprintf(lbuf[k], 32, "then %zu", i / 2 + 1);
        kids[k] = n->kids[i + 1], labels[k] = lbuf[k], k++;
    }
    return k;
}

size_t ctn__edges_fallbacks(const ctn_node *n, const ctn_node **kids, const char **labels,
                            char (*lbuf)[32]) {
    for (size_t i = 0; i < n->nkids; i++) {
        if (i == 0)
            snprintf(lbuf[i], 32, "first");
        else
            snprintf(lbuf[i], 32, "fallback %zu", i);
        kids[i] = n->kids[i], labels[i] = lbuf[i];
    }
    return n->nkids;
}

/* The children of n to draw, in arrays of nchildren(n), with the label of the edge to
 * each (or NULL; lbuf holds the labels made up here). */
static size_t nchildren(const ctn_node *n) {
    return n->nkids + (n->dflt != NULL);
}

static size_t children(const ctn_node *n, const ctn_node **kids, const char **labels,
                       char (*lbuf)[32]) {
    const ctn__kind *kind = ctn__kind_of(n);
    size_t k = kind->edges != NULL ? kind->edges(n, kids, labels, lbuf) : 0;
    if (n->dflt != NULL) kids[k] = n->dflt, labels[k] = "default", k++;
    return k;
}

/* The arrays for children(); 0, or -1 when memory runs out. */
typedef struct {
    const ctn_node **kids;
    const char **labels;
    char (*lbuf)[32];
    size_t n;
} kidlist;

static int kidlist_get(const ctn_node *n, kidlist *l) {
    const size_t m = nchildren(n) + 1;
    l->kids = ctn__malloc(m * sizeof *l->kids);
    l->labels = ctn__malloc(m * sizeof *l->labels);
    l->lbuf = ctn__malloc(m * sizeof *l->lbuf);
    if (l->kids == NULL || l->labels == NULL || l->lbuf == NULL) {
        free(l->kids), free(l->labels), free(l->lbuf);
        return -1;
    }
    l->n = children(n, l->kids, l->labels, l->lbuf);
    return 0;
}

static void kidlist_free(kidlist *l) {
    free(l->kids), free(l->labels), free(l->lbuf);
}

static void describe_node(ctn_strbuf *b, const ctn_node *n, const char *prefix, const char *edge,
                          int depth) {
    ctn_sb_puts(b, edge != NULL ? edge : "");
    ctn_sb_puts(b, ctn_node_label(n));
    if (n->name != NULL && !(n->kind == CTN_NODE_BIND && n->config == NULL)) {
        ctn_sb_puts(b, " (");
        ctn_sb_puts(b, ctn__node_kind_name(n));
        ctn_sb_puts(b, ")");
    }
    char *d = detail(n);
    if (d != NULL) {
        ctn_sb_puts(b, ": ");
        ctn_sb_puts(b, d);
        free(d);
    }
    ctn_sb_puts(b, "\n");
    if (depth > 200) return;
    kidlist l;
    if (kidlist_get(n, &l) < 0) {
        b->oom = 1;
        return;
    }
    for (size_t i = 0; i < l.n && !b->oom; i++) {
        const int last = i + 1 == l.n;
        const size_t plen = strlen(prefix);
        char *e = ctn__malloc(plen + 64 + (l.labels[i] ? strlen(l.labels[i]) : 0));
        char *p = ctn__malloc(plen + 8);
        if (e == NULL || p == NULL) {
            b->oom = 1;
            free(e), free(p);
            break;
        }
        sprintf(e, "%s%s%s%s", prefix, last ? "`-- " : "|-- ", l.labels[i] ? l.labels[i] : "",
                l.labels[i] ? ": " : "");
        sprintf(p, "%s%s", prefix, last ? "    " : "|   ");
        describe_node(b, l.kids[i], p, e, depth + 1);
        free(e);
        free(p);
    }
    kidlist_free(&l);
}

char *ctn_node_describe(const ctn_node *n) {
    if (n == NULL) return NULL;
    ctn_strbuf b = {0};
    describe_node(&b, n, "", NULL, 0);
    return ctn_sb_take(&b);
}

/* ==== graph =============================================================================== */

typedef struct {
    ctn_val *nodes, *edges;
    int64_t next;
    int oom;
} gbuild;

/* A list of node ids (the exits of a part of the graph). */
typedef struct {
    int64_t *ids;
    size_t n, cap;
} idlist;

static void ids_add(gbuild *g, idlist *l, int64_t id) {
    if (l->n == l->cap) {
        const size_t cap = l->cap ? 2 * l->cap : 4;
        int64_t *p = ctn__realloc(l->ids, cap * sizeof *p);
        if (p == NULL) {
            g->oom = 1;
            return;
        }
        l->ids = p;
        l->cap = cap;
    }
    l->ids[l->n++] = id;
}

static int64_t add_node(gbuild *g, const char *label, const char *kind, const ctn_node *n) {
    const int64_t id = g->next++;
    ctn_val *o = ctn_val_obj();
    if (o == NULL || ctn_val_set(o, "id", ctn_val_int(id)) < 0 ||
        ctn_val_set(o, "label", ctn_val_cstr(label)) < 0 ||
        ctn_val_set(o, "kind", ctn_val_cstr(kind)) < 0) {
        ctn_val_unref(o);
        g->oom = 1;
        return id;
    }
    char *d = n != NULL ? detail(n) : NULL;
    if (d != NULL && ctn_val_set(o, "detail", ctn_val_cstr(d)) < 0) g->oom = 1;
    free(d);
    if (ctn_val_push(g->nodes, o) < 0) g->oom = 1;
    return id;
}

static void add_edge(gbuild *g, int64_t from, int64_t to, const char *label) {
    ctn_val *o = ctn_val_obj();
    if (o == NULL) {
        g->oom = 1;
        return;
    }
    if (ctn_val_set(o, "from", ctn_val_int(from)) < 0 ||
        ctn_val_set(o, "to", ctn_val_int(to)) < 0 ||
        (label != NULL && ctn_val_set(o, "label", ctn_val_cstr(label)) < 0)) {
        ctn_val_unref(o);
        g->oom = 1;
        return;
    }
    if (ctn_val_push(g->edges, o) < 0) g->oom = 1; /* push released o */
}

/* Adds n's part of the graph, entered from the nodes in `from` (edge label elabel); its
 * exits go to *exits. */
static void build(gbuild *g, const ctn_node *n, const idlist *from, const char *elabel,
                  idlist *exits, int depth) {
    if (g->oom || depth > 200) return;
    const ctn__kind *kind = ctn__kind_of(n);
    if ((kind->flags & CTN__KIND_CHAINED) && n->name == NULL) {
        idlist cur = {0};
        for (size_t i = 0; i < from->n; i++)
            ids_add(g, &cur, from->ids[i]);
        for (size_t s = 0; s < n->nkids && !g->oom; s++) {
            idlist nx = {0};
            build(g, n->kids[s], &cur, s == 0 ? elabel : NULL, &nx, depth + 1);
            free(cur.ids);
            cur = nx;
        }
        for (size_t i = 0; i < cur.n; i++)
            ids_add(g, exits, cur.ids[i]);
        free(cur.ids);
        return;
    }
    const int64_t id = add_node(g, ctn_node_label(n), ctn__node_kind_name(n), n);
    for (size_t i = 0; i < from->n; i++)
        add_edge(g, from->ids[i], id, elabel);
    kidlist l = {0};
    const int has_kids = kind->edges != NULL;
    if (has_kids && kidlist_get(n, &l) < 0) {
        g->oom = 1;
        return;
    }
    if (l.n == 0) {
        ids_add(g, exits, id);
    } else {
        idlist self = {0};
        ids_add(g, &self, id);
        for (size_t i = 0; i < l.n; i++)
            build(g, l.kids[i], &self, l.labels[i], exits, depth + 1);
        free(self.ids);
    }
    if (has_kids) kidlist_free(&l);
}

ctn_val *ctn_node_graph(const ctn_node *n) {
    if (n == NULL) return NULL;
    gbuild g = {ctn_val_arr(), ctn_val_arr(), 0, 0};
    if (g.nodes == NULL || g.edges == NULL) g.oom = 1;
    idlist start = {0}, exits = {0};
    if (!g.oom) ids_add(&g, &start, add_node(&g, "input", "input", NULL));
    if (!g.oom) build(&g, n, &start, NULL, &exits, 0);
    if (!g.oom) {
        const int64_t out = add_node(&g, "output", "output", NULL);
        for (size_t i = 0; i < exits.n; i++)
            add_edge(&g, exits.ids[i], out, NULL);
    }
    free(start.ids);
    free(exits.ids);
    ctn_val *o = g.oom ? NULL : ctn_val_obj();
    if (o == NULL || ctn_val_set(o, "nodes", g.nodes) < 0) {
        ctn_val_unref(o);
        if (o == NULL) ctn_val_unref(g.nodes);
        ctn_val_unref(g.edges);
        return NULL;
    }
    if (ctn_val_set(o, "edges", g.edges) < 0) {
        ctn_val_unref(o);
        return NULL;
    }
    return o;
}

/* Mermaid label text: quotes and brackets would end the label, so they become entities. */
static void put_label(ctn_strbuf *b, const char *s) {
    char one[2] = {0, 0};
    for (; *s; s++) {
        switch (*s) {
        case '"': ctn_sb_puts(b, "#quot;"); break;
        case '<': ctn_sb_puts(b, "#lt;"); break;
        case '>': ctn_sb_puts(b, "#gt;"); break;
        case '|': ctn_sb_puts(b, "#124;"); break;
        case '\n': ctn_sb_puts(b, " "); break;
        default: one[0] = *s, ctn_sb_puts(b, one);
        }
    }
}

char *ctn_node_mermaid(const ctn_node *n) {
    ctn_val *gr = ctn_node_graph(n);
    if (gr == NULL) return NULL;
    ctn_strbuf b = {0};
    ctn_sb_puts(&b, "flowchart TD\n");
    const ctn_val *nodes = ctn_val_get(gr, "nodes"), *edges = ctn_val_get(gr, "edges");
    char id[48];
    for (size_t i = 0; i < ctn_val_len(nodes); i++) {
        const ctn_val *nd = ctn_val_at(nodes, i);
        const char *kind = ctn_val_get(nd, "kind")->u.str.p;
        const int io = strcmp(kind, "input") == 0 || strcmp(kind, "output") == 0;
        snprintf(id, sizeof id, "    n%lld", (long long)ctn_val_get(nd, "id")->u.i);
        ctn_sb_puts(&b, id);
        ctn_sb_puts(&b, io ? "([\"" : "[\"");
        put_label(&b, ctn_val_get(nd, "label")->u.str.p);
        if (strcmp(kind, ctn_val_get(nd, "label")->u.str.p) != 0 && !io) {
            ctn_sb_puts(&b, " (");
            put_label(&b, kind);
            ctn_sb_puts(&b, ")");
        }
        ctn_sb_puts(&b, io ? "\"])\n" : "\"]\n");
    }
    for (size_t i = 0; i < ctn_val_len(edges); i++) {
        const ctn_val *e = ctn_val_at(edges, i);
        snprintf(id, sizeof id, "    n%lld -->", (long long)ctn_val_get(e, "from")->u.i);
        ctn_sb_puts(&b, id);
        const ctn_val *l = ctn_val_get(e, "label");
        if (l != NULL) {
            ctn_sb_puts(&b, "|\"");
            put_label(&b, l->u.str.p);
            ctn_sb_puts(&b, "\"|");
        }
        snprintf(id, sizeof id, " n%lld\n", (long long)ctn_val_get(e, "to")->u.i);
        ctn_sb_puts(&b, id);
    }
    ctn_val_unref(gr);
    return ctn_sb_take(&b);
}
