/*
 * Retrieval over a collection (retrieve.h): the keyword lists from FTS5 (kb.c), the vector
 * lists from an exact in-memory index (vsearch.c) kept per collection state, their fusion by
 * reciprocal rank, and MMR.
 */
#include "retrieve.h"

#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "vsearch.h"

enum { MAX_QUERIES = 64 };

ctn_search_opts ctn_search_defaults(void) {
    return (ctn_search_opts){.mode = CTN_RETRIEVE_VECTOR,
                             .k = 4,
                             .fetch_k = 20,
                             .bm25 = ctn_kb_bm25_defaults(),
                             .w_vector = 1,
                             .w_bm25 = 1,
                             .lambda = 0.5};
}

int ctn_search_check(const ctn_search_opts *o, char *err, size_t errcap) {
    if ((unsigned)o->mode > CTN_RETRIEVE_HYBRID) {
        ctn__errf(err, errcap, "retriever: mode %d is not vector, bm25 or hybrid", (int)o->mode);
        return CTN_EINVAL;
    }
    if (o->k < 1 || o->k > 1000 || o->fetch_k < o->k || o->fetch_k > 10000) {
        ctn__errf(err, errcap, "retriever: k must be from 1 to 1000 and fetch_k from k to "
                  "10000 (k %zu, fetch_k %zu)", o->k, o->fetch_k);
        return CTN_EINVAL;
    }
    if (!(o->bm25.k1 >= 0 && o->bm25.k1 <= 100) || !(o->bm25.b >= 0 && o->bm25.b <= 1)) {
        ctn__errf(err, errcap, "retriever: k1 must be from 0 to 100 and b from 0 to 1 (k1 %g, "
                  "b %g)", o->bm25.k1, o->bm25.b);
        return CTN_EINVAL;
    }
    if (!(o->w_vector >= 0 && o->w_vector <= 1e6) || !(o->w_bm25 >= 0 && o->w_bm25 <= 1e6) ||
        o->w_vector + o->w_bm25 <= 0) {
        ctn__errf(err, errcap, "retriever: the hybrid weights must be from 0 to 1e6, not both "
                  "0 (vector %g, bm25 %g)", o->w_vector, o->w_bm25);
        return CTN_EINVAL;
    }
    if (o->mmr && o->mode == CTN_RETRIEVE_BM25) {
        ctn__errf(err, errcap, "retriever: mmr compares the chunks' vectors: it needs the "
                  "vector or hybrid mode");
        return CTN_EINVAL;
    }
    if (!(o->lambda >= 0 && o->lambda <= 1)) {
        ctn__errf(err, errcap, "retriever: lambda must be from 0 to 1 (%g)", o->lambda);
        return CTN_EINVAL;
    }
    return 0;
}

/* ---- the in-memory index of a collection's vectors ------------------------------------------ */

typedef struct {
    int refs; /* atomic */
    int64_t coll, uid, gen;
    char model[256];
    ctn_vs *vs;
    int64_t *ids; /* ids[pos]: the chunk added at pos, ascending */
    size_t n, cap;
    int rc; /* a failure inside the walk */
} vindex;

struct ctn_vcache {
    pthread_mutex_t lock;
    vindex *cur;
};

static void vindex_unref(vindex *x) {
    if (x == NULL || __atomic_sub_fetch(&x->refs, 1, __ATOMIC_ACQ_REL) > 0) return;
    ctn_vs_free(x->vs);
    free(x->ids);
    free(x);
}

ctn_vcache *ctn_vcache_new(void) {
    ctn_vcache *vc = ctn__calloc(1, sizeof *vc);
    if (vc != NULL && pthread_mutex_init(&vc->lock, NULL) != 0) {
        free(vc);
        return NULL;
    }
    return vc;
}

void ctn_vcache_free(ctn_vcache *vc) {
    if (vc == NULL) return;
    vindex_unref(vc->cur);
    pthread_mutex_destroy(&vc->lock);
    free(vc);
}

static int index_add(void *ud, int64_t chunk, const float *vec, int dim) {
    (void)dim;
    vindex *x = ud;
    if (x->n == x->cap) {
        size_t cap = x->cap ? 2 * x->cap : 256;
        int64_t *p = ctn__realloc(x->ids, cap * sizeof *p);
        if (p == NULL) return x->rc = CTN_ENOMEM;
        x->ids = p, x->cap = cap;
    }
    char err[128];
    const int rc = ctn_vs_add(x->vs, chunk, vec, err, sizeof err);
    /* A zero vector has no cosine: such a chunk is left to the keyword search. */
    if (rc == CTN_EINVAL) return 0;
    if (rc < 0) return x->rc = rc;
    x->ids[x->n++] = chunk;
    return 0;
}

/* The index of c as the current transaction sees it: the cache's when it is of this state,
 * else read anew (and kept in the cache). A reference for the caller. */
static int index_get(ctn_kb *kb, const ctn_kb_coll *c, ctn_vcache *vc, vindex **out, char *err,
                     size_t errcap) {
    *out = NULL;
    int64_t uid = 0, gen = 0;
    int rc = ctn_kb_generation(kb, c, &uid, &gen, err, errcap);
    if (rc < 0) return rc;
    if (vc != NULL) {
        pthread_mutex_lock(&vc->lock);
        vindex *x = vc->cur;
        if (x != NULL && x->coll == c->id && x->uid == uid && x->gen == gen &&
            strcmp(x->model, c->embed_model) == 0) {
            __atomic_add_fetch(&x->refs, 1, __ATOMIC_ACQ_REL);
            *out = x;
        }
        pthread_mutex_unlock(&vc->lock);
        if (*out != NULL) return 0;
    }
    vindex *x = ctn__calloc(1, sizeof *x);
    if (x == NULL) {
        ctn__errf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    x->refs = 1, x->coll = c->id, x->uid = uid, x->gen = gen;
    snprintf(x->model, sizeof x->model, "%s", c->embed_model);
    rc = ctn_vs_new(c->embed_dim > 0 ? c->embed_dim : 1, CTN_KB_F32, CTN_VS_COSINE, &x->vs, err,
                    errcap);
    if (rc == 0) rc = ctn_kb_each_vector(kb, c, index_add, x, err, errcap);
    if (rc == x->rc && rc < 0) ctn__errf(err, errcap, "out of memory"); /* the walk's own */
    if (rc < 0) {
        vindex_unref(x);
        return rc;
    }
    if (vc != NULL) {
        pthread_mutex_lock(&vc->lock);
        vindex *old = vc->cur;
        __atomic_add_fetch(&x->refs, 1, __ATOMIC_ACQ_REL); /* the cache's */
        vc->cur = x;
        pthread_mutex_unlock(&vc->lock);
        vindex_unref(old);
    }
    *out = x;
    return 0;
}

/* The allow bitmap of the index's positions for the filter's chunks (both lists ascending). */
static int filter_bitmap(ctn_kb *kb, const ctn_kb_coll *c, const ctn_kb_filter *f,
                         const vindex *x, uint8_t **out, char *err, size_t errcap) {
    int64_t *ids = NULL;
    size_t n = 0;
    int rc = ctn_kb_filter_chunks(kb, c, f, &ids, &n, err, errcap);
    if (rc < 0) return rc;
    uint8_t *bm = ctn__calloc(x->n / 8 + 1, 1);
    if (bm == NULL) {
        free(ids);
        ctn__errf(err, errcap, "out of memory");
        return CTN_ENOMEM;
    }
    for (size_t i = 0, j = 0; i < x->n && j < n;) {
        if (x->ids[i] < ids[j]) i++;
        else if (x->ids[i] > ids[j]) j++;
        else bm[i / 8] |= (uint8_t)(1u << (i % 8)), i++, j++;
    }
    free(ids);
    *out = bm;
    return 0;
}

/* ---- MMR --------------------------------------------------------------------------------------- */

static double dotf(const float *a, const float *b, int d) {
    double s = 0;
    for (int i = 0; i < d; i++)
        s += (double)a[i] * b[i];
    return s;
}

static void unit(float *v, int d) {
    const double n = sqrt(dotf(v, v, d));
    if (n > 0)
        for (int i = 0; i < d; i++)
            v[i] = (float)(v[i] / n);
}

/* Picks k of the n candidates (LangChain's maximal_marginal_relevance, greedy): into out. */
static int mmr(ctn_kb *kb, const ctn_kb_coll *c, const float *query, const ctn_kb_hit *cand,
               size_t n, size_t k, double lambda, ctn_kb_hit *out, size_t *found, char *err,
               size_t errcap) {
    const int d = c->embed_dim;
    float *vecs = ctn__malloc((n * (size_t)d + (size_t)d) * sizeof *vecs);
    double *rel = ctn__malloc((n + 1) * sizeof *rel), *red = ctn__malloc((n + 1) * sizeof *red);
    bool *taken = ctn__calloc(n + 1, sizeof *taken);
    int rc = 0;
    if (vecs == NULL || rel == NULL || red == NULL || taken == NULL) {
        ctn__errf(err, errcap, "out of memory");
        rc = CTN_ENOMEM;
    }
    float *q = vecs != NULL ? vecs + n * (size_t)d : NULL;
    if (rc == 0) {
        memcpy(q, query, (size_t)d * sizeof *q);
        unit(q, d);
    }
    for (size_t i = 0; rc == 0 && i < n; i++) {
        rc = ctn_kb_vector(kb, c, cand[i].chunk, vecs + i * (size_t)d, err, errcap);
        if (rc == 0) {
            unit(vecs + i * (size_t)d, d);
            rel[i] = dotf(q, vecs + i * (size_t)d, d);
            red[i] = -INFINITY; /* the most similar picked one: none yet */
        }
    }
    size_t m = 0;
    while (rc == 0 && m < k && m < n) {
        size_t best = n;
        double bs = -INFINITY;
        for (size_t i = 0; i < n; i++) {
            if (taken[i]) continue;
            const double s = m == 0 ? rel[i] : lambda * rel[i] - (1 - lambda) * red[i];
            if (best == n || s > bs) best = i, bs = s;
        }
        taken[best] = true;
        out[m++] = (ctn_kb_hit){cand[best].chunk, rel[best]};
        for (size_t i = 0; i < n; i++) {
            if (taken[i]) continue;
            const double s = dotf(vecs + i * (size_t)d, vecs + best * (size_t)d, d);
            if (s > red[i]) red[i] = s;
        }
    }
    free(vecs);
    free(rel);
    free(red);
    free(taken);
    if (rc == 0) *found = m;
    return rc;
}

/* ---- the search ---------------------------------------------------------------------------- */

int ctn_kb_search(ctn_kb *kb, const ctn_kb_coll *c, ctn_vcache *cache, const ctn_search_opts *o,
                  size_t nq, const char *const *texts, const size_t *lens, const float *qvecs,
                  ctn_kb_hit *hits, size_t *found, char *err, size_t errcap) {
    *found = 0;
    int rc = ctn_search_check(o, err, errcap);
    if (rc < 0) return rc;
    const bool kw = o->mode != CTN_RETRIEVE_VECTOR, vec = o->mode != CTN_RETRIEVE_BM25;
    if (nq < 1 || nq > MAX_QUERIES || (vec && qvecs == NULL) || (kw && texts == NULL)) {
        ctn__errf(err, errcap, "retriever: from 1 to %d queries, with their %s", MAX_QUERIES,
                  vec ? "vectors" : "texts");
        return CTN_EINVAL;
    }
    /* Each list: k when it is the answer, fetch_k when something chooses from it. */
    const size_t len = o->mode == CTN_RETRIEVE_HYBRID || o->mmr || nq > 1 ? o->fetch_k : o->k;
    const size_t nl = nq * (kw + vec);
    ctn_kb_hit *buf = ctn__malloc((nl * len + len + 1) * sizeof *buf);
    const ctn_kb_hit **lists = ctn__calloc(nl + 1, sizeof *lists);
    size_t *ns = ctn__calloc(nl + 1, sizeof *ns);
    double *w = ctn__malloc((nl + 1) * sizeof *w);
    ctn_vs_hit *vh = vec ? ctn__malloc(nq * len * sizeof *vh) : NULL;
    size_t *vfound = vec ? ctn__calloc(nq, sizeof *vfound) : NULL;
    vindex *x = NULL;
    uint8_t *allow = NULL;
    if (buf == NULL || lists == NULL || ns == NULL || w == NULL || (vec && (vh == NULL ||
                                                                            vfound == NULL))) {
        ctn__errf(err, errcap, "out of memory");
        rc = CTN_ENOMEM;
        goto out;
    }
    ctn_kb_hit *fused = buf + nl * len;
    if (vec) {
        if ((rc = index_get(kb, c, cache, &x, err, errcap)) < 0) goto out;
        if (o->bm25.filter != NULL &&
            (rc = filter_bitmap(kb, c, o->bm25.filter, x, &allow, err, errcap)) < 0)
            goto out;
        if (ctn_vs_count(x->vs) > 0 &&
            (rc = ctn_vs_search(x->vs, qvecs, nq, len, allow, vh, vfound, err, errcap)) < 0)
            goto out;
    }
    size_t l = 0;
    for (size_t q = 0; q < nq; q++) {
        if (vec) {
            ctn_kb_hit *h = buf + l * len;
            for (size_t i = 0; i < vfound[q]; i++)
                h[i] = (ctn_kb_hit){vh[q * len + i].id, vh[q * len + i].score};
            lists[l] = h, ns[l] = vfound[q], w[l] = o->w_vector, l++;
        }
        if (kw) {
            ctn_kb_hit *h = buf + l * len;
            if ((rc = ctn_kb_bm25(kb, c, texts[q], lens[q], &o->bm25, len, h, &ns[l], err,
                                  errcap)) < 0)
                goto out;
            lists[l] = h, w[l] = o->w_bm25, l++;
        }
    }
    size_t n = 0;
    const size_t want = o->mmr ? o->fetch_k : o->k;
    if (nl == 1) {
        n = ns[0] < want ? ns[0] : want;
        memcpy(fused, lists[0], n * sizeof *fused);
    } else {
        /* One query's hybrid lists, or several queries' lists: one fusion of them all (a
         * query's own vector and keyword lists weigh as the weights say, every query alike). */
        const long m = ctn_kb_rrf(lists, ns, w, nl, fused, want);
        if (m < 0) {
            ctn__errf(err, errcap, "out of memory");
            rc = CTN_ENOMEM;
            goto out;
        }
        n = (size_t)m;
    }
    if (o->mmr) {
        rc = mmr(kb, c, qvecs, fused, n, o->k, o->lambda, hits, found, err, errcap);
    } else {
        memcpy(hits, fused, n * sizeof *hits);
        *found = n;
    }
out:
    vindex_unref(x);
    free(allow);
    free(buf);
    free(lists);
    free(ns);
    free(w);
    free(vh);
    free(vfound);
    return rc;
}
