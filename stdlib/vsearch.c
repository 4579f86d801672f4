/*
 * Exact kNN over vectors in memory (vsearch.h). The rows are kept in the storage type the
 * engine's kernels read as weights (F32, F16, Q8_0), padded with zeros to the kernel's block,
 * and scored a tile of rows at a time against every query with one gemm call per run of
 * allowed rows; each query keeps its best candidates in a min-heap. With threads, each takes
 * tiles in turn into heaps of its own, merged at the end (scan_tiles).
 *
 * The ranking key is "goodness", higher better: the product for COSINE and DOT, and
 * 2 x.q - |x|^2 for L2 (|q|^2 is the same for every row of a query, so the order is the
 * distance's; the distance is |q|^2 - goodness, reported at the end).
 */
#include "vsearch.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "kern.h"
#include "pool.h"
#include "quant.h"
#include "types.h"

enum {
    TILE = 256,     /* rows scored per gemm tile: TILE * nq floats of scores */
    MT_ROWS = 4096, /* collections smaller than this are searched on one thread */
};

struct ctn_vs {
    int dim;
    int64_t npad; /* dim padded to the storage type's block */
    ctn_kb_dtype dtype;
    ctn_vs_metric metric;
    int wtype;
    const ctn_kern *kern;
    size_t row_bytes;
    size_t n, cap;
    unsigned char *rows;
    int64_t *ids;
    float *norm2; /* |x|^2 of each stored row (L2) */
    float *orig;  /* CTN_KB_INT8: the rows as given (prepared, dim floats each), rescoring */
    size_t rescore;
    ctn_pool *pool;        /* ctn_vs_set_threads: NULL, one thread */
    atomic_bool pool_busy; /* a search holds the pool (set by searches, which take vs const) */
};

static int wtype_of(ctn_kb_dtype t) {
    return t == CTN_KB_F16 ? CTN_TYPE_F16 : t == CTN_KB_INT8 ? CTN_TYPE_Q8_0 : CTN_TYPE_F32;
}

int ctn_vs_new(int dim, ctn_kb_dtype dtype, ctn_vs_metric metric, ctn_vs **out, char *err,
               size_t errcap) {
    *out = NULL;
    if (dim < 1 || dim > 65536) {
        ctn__errf(err, errcap, "vector search: dimension %d is not from 1 to 65536", dim);
        return CTN_EINVAL;
    }
    if (dtype != CTN_KB_F32 && dtype != CTN_KB_F16 && dtype != CTN_KB_INT8) {
        ctn__errf(err, errcap, "vector search: unknown storage type %d", (int)dtype);
        return CTN_EINVAL;
    }
    if (metric != CTN_VS_COSINE && metric != CTN_VS_DOT && metric != CTN_VS_L2) {
        ctn__errf(err, errcap, "vector search: unknown metric %d", (int)metric);
        return CTN_EINVAL;
    }
    const int wt = wtype_of(dtype);
    const ctn_kern *k = ctn_kern_get(wt);
    if (k == NULL) {
        ctn__errf(err, errcap, "vector search: no kernel for %s vectors", ctn_type_name(wt));
        return CTN_ENOTSUP;
    }
    ctn_vs *vs = ctn__calloc(1, sizeof *vs);
    if (vs == NULL) {
        ctn__errf(err, errcap, "vector search: out of memory");
        return CTN_ENOMEM;
    }
    vs->dim = dim;
    vs->dtype = dtype;
    vs->metric = metric;
    vs->wtype = wt;
    vs->kern = k;
    atomic_init(&vs->pool_busy, false);
    const int64_t blk = k->block > ctn_type_block_size(wt) ? k->block : ctn_type_block_size(wt);
    vs->npad = (dim + blk - 1) / blk * blk;
    vs->row_bytes = (size_t)(vs->npad / ctn_type_block_size(wt) * ctn_type_block_bytes(wt));
    *out = vs;
    return 0;
}

void ctn_vs_free(ctn_vs *vs) {
    if (vs == NULL) return;
    free(vs->rows);
    free(vs->ids);
    free(vs->norm2);
    free(vs->orig);
    ctn_pool_free(vs->pool);
    free(vs);
}

size_t ctn_vs_count(const ctn_vs *vs) { return vs->n; }
int ctn_vs_dim(const ctn_vs *vs) { return vs->dim; }
void ctn_vs_set_rescore(ctn_vs *vs, size_t rescore) { vs->rescore = rescore; }

int ctn_vs_set_threads(ctn_vs *vs, int n, char *err, size_t errcap) {
    if (n < 0 || n > 512) {
        ctn__errf(err, errcap, "vector search: %d threads: give 0 (the default) to 512", n);
        return CTN_EINVAL;
    }
    if (n == 0) n = ctn_pool_default_threads();
    if (vs->pool != NULL && ctn_pool_threads(vs->pool) == n) return 0;
    ctn_pool *p = NULL;
    if (n > 1 && ctn_pool_new(&p, n) < 0) {
        ctn__errf(err, errcap, "vector search: cannot start %d threads (out of memory)", n);
        return CTN_ENOMEM;
    }
    ctn_pool_free(vs->pool);
    vs->pool = p;
    return 0;
}

int ctn_vs_threads(const ctn_vs *vs) { return vs->pool ? ctn_pool_threads(vs->pool) : 1; }

/* x (dim floats) checked, normalised for COSINE and padded into y (npad floats). */
static int prepare(const ctn_vs *vs, const float *x, float *y, const char *what, size_t i,
                   char *err, size_t errcap) {
    double s = 0;
    for (int j = 0; j < vs->dim; j++) {
        if (!isfinite(x[j])) {
            ctn__errf(err, errcap, "vector search: %s %zu: element %d is not a finite number",
                      what, i, j);
            return CTN_EINVAL;
        }
        s += (double)x[j] * x[j];
    }
    if (vs->metric == CTN_VS_COSINE && s == 0) {
        ctn__errf(err, errcap, "vector search: %s %zu is zero: it has no direction for the "
                  "cosine", what, i);
        return CTN_EINVAL;
    }
    const float inv = vs->metric == CTN_VS_COSINE ? (float)(1.0 / sqrt(s)) : 1.0f;
    for (int j = 0; j < vs->dim; j++)
        y[j] = x[j] * inv;
    for (int64_t j = vs->dim; j < vs->npad; j++)
        y[j] = 0;
    return 0;
}

int ctn_vs_add(ctn_vs *vs, int64_t id, const float *vec, char *err, size_t errcap) {
    float *tmp = ctn__malloc((size_t)vs->npad * sizeof *tmp);
    if (tmp == NULL) goto nomem;
    int rc = prepare(vs, vec, tmp, "vector", vs->n, err, errcap);
    if (rc < 0) {
        free(tmp);
        return rc;
    }
    if (vs->n == vs->cap) {
        const size_t cap = vs->cap ? 2 * vs->cap : 64;
        unsigned char *r = ctn__realloc(vs->rows, cap * vs->row_bytes);
        if (r == NULL) goto nomem;
        vs->rows = r;
        int64_t *ids = ctn__realloc(vs->ids, cap * sizeof *ids);
        if (ids == NULL) goto nomem;
        vs->ids = ids;
        float *n2 = ctn__realloc(vs->norm2, cap * sizeof *n2);
        if (n2 == NULL) goto nomem;
        vs->norm2 = n2;
        if (vs->dtype == CTN_KB_INT8) {
            float *o = ctn__realloc(vs->orig, cap * (size_t)vs->dim * sizeof *o);
            if (o == NULL) goto nomem;
            vs->orig = o;
        }
        vs->cap = cap;
    }
    unsigned char *row = vs->rows + vs->n * vs->row_bytes;
    if (vs->orig != NULL) memcpy(vs->orig + vs->n * (size_t)vs->dim, tmp, (size_t)vs->dim * 4);
    if (ctn_quantize_row(vs->wtype, tmp, row, vs->npad) < 0) {
        free(tmp);
        ctn__errf(err, errcap, "vector search: cannot store a %s row", ctn_type_name(vs->wtype));
        return CTN_EINVAL;
    }
    /* |x|^2 of the row as stored, so L2 ranks by what is scored. */
    ctn_dequantize_row(vs->wtype, row, tmp, vs->npad);
    double s = 0;
    for (int64_t j = 0; j < vs->npad; j++)
        s += (double)tmp[j] * tmp[j];
    vs->norm2[vs->n] = (float)s;
    vs->ids[vs->n] = id;
    vs->n++;
    free(tmp);
    return 0;
nomem:
    free(tmp);
    ctn__errf(err, errcap, "vector search: out of memory");
    return CTN_ENOMEM;
}

/* ---- per-query heaps ------------------------------------------------------------------ */

typedef struct {
    float g;    /* goodness: higher is better */
    size_t pos;
} cand;

static bool better(cand a, cand b) { return a.g > b.g || (a.g == b.g && a.pos < b.pos); }

/* A min-heap of the cap best seen: h[0] is the worst of them. */
typedef struct {
    cand *h;
    size_t n, cap;
} heap;

static void heap_push(heap *hp, cand c) {
    cand *h = hp->h;
    if (hp->n < hp->cap) {
        size_t i = hp->n++;
        while (i > 0 && better(h[(i - 1) / 2], c)) {
            h[i] = h[(i - 1) / 2];
            i = (i - 1) / 2;
        }
        h[i] = c;
        return;
    }
    if (!better(c, h[0])) return;
    size_t i = 0;
    for (;;) {
        size_t l = 2 * i + 1, r = l + 1, m = i;
        cand worst = c;
        if (l < hp->n && better(worst, h[l])) m = l, worst = h[l];
        if (r < hp->n && better(worst, h[r])) m = r;
        if (m == i) break;
        h[i] = h[m];
        i = m;
    }
    h[i] = c;
}

static int cmp_best_first(const void *a, const void *b) {
    const cand x = *(const cand *)a, y = *(const cand *)b;
    return better(x, y) ? -1 : better(y, x) ? 1 : 0;
}

/* ---- search ---------------------------------------------------------------------------- */

static bool allowed(const uint8_t *allow, size_t i) {
    return allow == NULL || (allow[i / 8] >> (i % 8) & 1) != 0;
}

/* The rows [r0, r1) scored against the nq queries (qa, abytes apart) into the heaps hs, a
 * tile of rows at a time through y (nq * TILE floats). The rows are visited in order, so a
 * row that only ties the worst kept one loses to it, as the order of addition says. */
static void scan(const ctn_vs *vs, const unsigned char *qa, size_t abytes, size_t nq,
                 const uint8_t *allow, size_t r0, size_t r1, float *y, heap *hs) {
    const bool l2 = vs->metric == CTN_VS_L2;
    for (size_t t0 = r0; t0 < r1; t0 += TILE) {
        const size_t t1 = t0 + TILE < r1 ? t0 + TILE : r1;
        size_t a = t0;
        while (a < t1) {
            while (a < t1 && !allowed(allow, a))
                a++;
            size_t b = a;
            while (b < t1 && allowed(allow, b))
                b++;
            if (b > a) {
                vs->kern->gemm(vs->npad, vs->rows + a * vs->row_bytes, vs->row_bytes,
                               (int64_t)(b - a), qa, abytes, (int64_t)nq, y + (a - t0), TILE);
                for (size_t c = 0; c < nq; c++) {
                    const float *yc = y + c * TILE;
                    heap *h = &hs[c];
                    for (size_t r = a; r < b; r++) {
                        const float g = l2 ? 2 * yc[r - t0] - vs->norm2[r] : yc[r - t0];
                        /* Most rows lose to the worst kept one (later rows lose ties). */
                        if (h->n == h->cap && !(g > h->h[0].g)) continue;
                        heap_push(h, (cand){g, r});
                    }
                }
            }
            a = b;
        }
    }
}

/* One multi-threaded search: the threads take tiles of rows in turn from next, so that one
 * slowed by another process on its core does less of the work, each into its own heaps,
 * hs + ith * nq, through its own score tile, y + ith * nq * TILE. A thread's tiles come in
 * increasing order, so its rows are still visited in order (scan's tie rule holds). */
typedef struct {
    const ctn_vs *vs;
    const unsigned char *qa;
    size_t abytes, nq;
    const uint8_t *allow;
    float *y; /* (threads, nq, TILE) */
    heap *hs; /* (threads, nq) */
    atomic_size_t next; /* the next tile to take */
} scan_job;

static void scan_tiles(void *ctx, int ith, int nth) {
    scan_job *j = ctx;
    (void)nth;
    for (;;) {
        const size_t r0 = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed) * TILE;
        if (r0 >= j->vs->n) break;
        const size_t r1 = r0 + TILE < j->vs->n ? r0 + TILE : j->vs->n;
        scan(j->vs, j->qa, j->abytes, j->nq, j->allow, r0, r1,
             j->y + (size_t)ith * j->nq * TILE, j->hs + (size_t)ith * j->nq);
    }
}

int ctn_vs_search(const ctn_vs *vs, const float *queries, size_t nq, size_t k,
                  const uint8_t *allow, ctn_vs_hit *hits, size_t *found, char *err,
                  size_t errcap) {
    if (nq < 1 || nq > 1024 || k < 1 || k > 10000) {
        ctn__errf(err, errcap, "vector search: %zu queries for %zu hits each: queries must be "
                  "from 1 to 1024 and hits from 1 to 10000", nq, k);
        return CTN_EINVAL;
    }
    const bool int8 = vs->dtype == CTN_KB_INT8;
    size_t pool = k;
    if (int8) {
        pool = vs->rescore ? vs->rescore : (8 * k > 64 ? 8 * k : 64);
        if (pool < k) pool = k;
    }
    /* The threads, unless the collection is small or another search holds them (then this
     * one runs on the calling thread alone: the same results, later). */
    ctn_pool *tp = NULL;
    if (vs->pool != NULL && vs->n >= MT_ROWS &&
        !atomic_exchange_explicit((atomic_bool *)&vs->pool_busy, true, memory_order_acquire))
        tp = vs->pool;
    const size_t nth = tp ? (size_t)ctn_pool_threads(tp) : 1;
    const size_t np = (size_t)vs->npad, abytes = ctn_kern_act_bytes(vs->kern->atype, vs->npad);
    float *q = ctn__malloc(nq * np * sizeof *q);
    float *qn2 = ctn__malloc(nq * sizeof *qn2);
    unsigned char *qa = ctn__malloc(nq * abytes);
    float *y = ctn__malloc(nth * nq * TILE * sizeof *y);
    cand *store = ctn__malloc(nth * nq * pool * sizeof *store);
    heap *hs = ctn__calloc(nth * nq, sizeof *hs);
    int rc = 0;
    if (q == NULL || qn2 == NULL || qa == NULL || y == NULL || store == NULL || hs == NULL) {
        ctn__errf(err, errcap, "vector search: out of memory");
        rc = CTN_ENOMEM;
        goto done;
    }
    for (size_t i = 0; i < nq && rc == 0; i++) {
        rc = prepare(vs, queries + i * (size_t)vs->dim, q + i * np, "query", i, err, errcap);
        double s = 0;
        for (size_t j = 0; rc == 0 && j < np; j++)
            s += (double)q[i * np + j] * q[i * np + j];
        qn2[i] = (float)s;
        if (rc == 0) vs->kern->from_float(q + i * np, qa + i * abytes, vs->npad);
    }
    for (size_t i = 0; i < nth * nq; i++)
        hs[i] = (heap){store + i * pool, 0, pool};
    if (rc < 0) goto done;

    if (tp == NULL) {
        scan(vs, qa, abytes, nq, allow, 0, vs->n, y, hs);
    } else {
        scan_job job = {vs, qa, abytes, nq, allow, y, hs, 0};
        atomic_init(&job.next, 0);
        ctn_pool_run(tp, scan_tiles, &job);
        /* Each thread kept the best of its rows, so the best of all are among them: pushed
         * into thread 0's heaps, they leave the same set a single scan keeps (the order of
         * candidates is total: goodness, then position). */
        for (size_t t = 1; t < nth; t++)
            for (size_t c = 0; c < nq; c++) {
                const heap *o = &hs[t * nq + c];
                for (size_t i = 0; i < o->n; i++)
                    heap_push(&hs[c], o->h[i]);
            }
    }

    const bool l2 = vs->metric == CTN_VS_L2;
    for (size_t c = 0; c < nq; c++) {
        heap *h = &hs[c];
        if (int8) { /* the pool again, in f32: the query against the rows as they were given */
            const float *qc = q + c * np;
            for (size_t i = 0; i < h->n; i++) {
                const size_t r = h->h[i].pos;
                const float *o = vs->orig + r * (size_t)vs->dim;
                double d = 0, n2 = 0;
                for (int j = 0; j < vs->dim; j++)
                    d += (double)o[j] * qc[j], n2 += (double)o[j] * o[j];
                h->h[i].g = l2 ? (float)(2 * d - n2) : (float)d;
            }
        }
        qsort(h->h, h->n, sizeof *h->h, cmp_best_first);
        found[c] = h->n < k ? h->n : k;
        for (size_t i = 0; i < found[c]; i++) {
            const cand x = h->h[i];
            float score = x.g;
            if (l2) score = qn2[c] - x.g > 0 ? qn2[c] - x.g : 0; /* rounding can go below 0 */
            hits[c * k + i] = (ctn_vs_hit){vs->ids[x.pos], x.pos, score};
        }
    }
done:
    free(q);
    free(qn2);
    free(qa);
    free(y);
    free(store);
    free(hs);
    if (tp != NULL)
        atomic_store_explicit((atomic_bool *)&vs->pool_busy, false, memory_order_release);
    return rc;
}
