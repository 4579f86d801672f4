/*
 * Exact kNN (stdlib/vsearch.h) against a brute-force reference computed in double over the
 * original f32 vectors: recall@10 = 1.0 for f32 on every metric, int8 with rescoring >= 0.99,
 * several queries in one pass equal to one at a time (the same bits), filters applied before
 * scoring, bad input refused, and allocation failures leaving nothing half done. A search
 * split over threads gives the same hits, bits and order as one thread.
 */
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "error.h"
#include "pool.h"
#include "test.h"
#include "vsearch.h"

static uint64_t rng = 88172645463325252ull;
static double uniform(void) {
    rng ^= rng << 13, rng ^= rng >> 7, rng ^= rng << 17;
    return ((rng >> 11) + 0.5) / 9007199254740992.0;
}
static float gauss(void) {
    return (float)(sqrt(-2 * log(uniform())) * cos(6.283185307179586 * uniform()));
}

/* n vectors of dim around 16 cluster centres (real embeddings are not uniform noise). */
static float *dataset(size_t n, int dim) {
    float *c = malloc(16 * (size_t)dim * sizeof *c), *x = malloc(n * (size_t)dim * sizeof *x);
    for (size_t i = 0; i < 16 * (size_t)dim; i++)
        c[i] = gauss();
    for (size_t i = 0; i < n; i++)
        for (int j = 0; j < dim; j++)
            x[i * dim + j] = c[(i % 16) * dim + j] + 0.7f * gauss();
    free(c);
    return x;
}

/* The reference: goodness in double (higher better), as vsearch.c ranks. */
static double good(const float *x, const float *q, int dim, ctn_vs_metric m) {
    double d = 0, nx = 0, nq = 0, l2 = 0;
    for (int j = 0; j < dim; j++) {
        d += (double)x[j] * q[j], nx += (double)x[j] * x[j], nq += (double)q[j] * q[j];
        l2 += ((double)x[j] - q[j]) * ((double)x[j] - q[j]);
    }
    return m == CTN_VS_COSINE ? d / sqrt(nx * nq) : m == CTN_VS_DOT ? d : -l2;
}

typedef struct {
    double g;
    size_t pos;
} ref_hit;

static int cmp_ref(const void *a, const void *b) {
    const ref_hit *x = a, *y = b;
    return x->g > y->g ? -1 : x->g < y->g ? 1 : x->pos < y->pos ? -1 : x->pos > y->pos;
}

/* The reference top k of q among allowed rows into out (returns how many). */
static size_t brute(const float *x, size_t n, int dim, const float *q, ctn_vs_metric m, size_t k,
                    const uint8_t *allow, ref_hit *out) {
    ref_hit *all = malloc(n * sizeof *all);
    size_t na = 0;
    for (size_t i = 0; i < n; i++)
        if (allow == NULL || (allow[i / 8] >> (i % 8) & 1)) all[na++] = (ref_hit){good(x + i * dim, q, dim, m), i};
    qsort(all, na, sizeof *all, cmp_ref);
    size_t nk = na < k ? na : k;
    memcpy(out, all, nk * sizeof *out);
    free(all);
    return nk;
}

static ctn_vs *build(const float *x, size_t n, int dim, ctn_kb_dtype t, ctn_vs_metric m) {
    char err[256] = "";
    ctn_vs *vs = NULL;
    CHECK_EQ_INT(ctn_vs_new(dim, t, m, &vs, err, sizeof err), 0);
    for (size_t i = 0; vs != NULL && i < n; i++)
        CHECK_EQ_INT(ctn_vs_add(vs, (int64_t)(1000 + i), x + i * dim, err, sizeof err), 0);
    return vs;
}

/* Mean recall@k of nq queries against the reference, checking ids and positions agree. */
static double recall(const ctn_vs *vs, const float *x, size_t n, int dim, ctn_vs_metric m,
                     const float *q, size_t nq, size_t k, const uint8_t *allow) {
    ctn_vs_hit *hits = malloc(nq * k * sizeof *hits);
    size_t *found = malloc(nq * sizeof *found);
    ref_hit *ref = malloc(k * sizeof *ref);
    char err[256] = "";
    CHECK_EQ_INT(ctn_vs_search(vs, q, nq, k, allow, hits, found, err, sizeof err), 0);
    double sum = 0;
    for (size_t c = 0; c < nq; c++) {
        const size_t nr = brute(x, n, dim, q + c * dim, m, k, allow, ref);
        CHECK_EQ_INT(found[c], nr);
        size_t same = 0;
        for (size_t i = 0; i < found[c]; i++) {
            const ctn_vs_hit *h = &hits[c * k + i];
            CHECK_EQ_INT(h->id, (int64_t)(1000 + h->pos));
            if (i > 0) { /* best first */
                const float a = hits[c * k + i - 1].score;
                CHECK(m == CTN_VS_L2 ? a <= h->score : a >= h->score);
            }
            for (size_t j = 0; j < nr; j++)
                if (ref[j].pos == h->pos) same++;
        }
        sum += nr ? (double)same / nr : 1.0;
    }
    free(hits);
    free(found);
    free(ref);
    return sum / nq;
}

static const char *mname(ctn_vs_metric m) {
    return m == CTN_VS_COSINE ? "cosine" : m == CTN_VS_DOT ? "dot" : "l2";
}

TEST(f32_is_exact_on_every_metric) {
    static const int dims[] = {67, 384};
    for (int d = 0; d < 2; d++) {
        const int dim = dims[d];
        const size_t n = 3000, nq = 20;
        float *x = dataset(n, dim), *q = dataset(nq, dim);
        for (int m = 0; m < 3; m++) {
            ctn_vs *vs = build(x, n, dim, CTN_KB_F32, (ctn_vs_metric)m);
            const double r = recall(vs, x, n, dim, (ctn_vs_metric)m, q, nq, 10, NULL);
            printf("  f32 dim %d %s: recall@10 %.4f\n", dim, mname((ctn_vs_metric)m), r);
            CHECK(r == 1.0);
            /* The scores are the reference's (to float rounding). */
            ctn_vs_hit h[10];
            size_t f;
            char err[256];
            CHECK_EQ_INT(ctn_vs_search(vs, q, 1, 10, NULL, h, &f, err, sizeof err), 0);
            double want = good(x + h[0].pos * dim, q, dim, (ctn_vs_metric)m);
            if (m == CTN_VS_L2) want = -want;
            CHECK(fabs(h[0].score - want) <= 1e-4 * (1 + fabs(want)));
            ctn_vs_free(vs);
        }
        free(x);
        free(q);
    }
}

TEST(f16_and_int8_recall) {
    const int dim = 384;
    const size_t n = 4000, nq = 50;
    float *x = dataset(n, dim), *q = dataset(nq, dim);
    for (int m = 0; m < 3; m++) {
        ctn_vs *h = build(x, n, dim, CTN_KB_F16, (ctn_vs_metric)m);
        const double rh = recall(h, x, n, dim, (ctn_vs_metric)m, q, nq, 10, NULL);
        ctn_vs *i8 = build(x, n, dim, CTN_KB_INT8, (ctn_vs_metric)m);
        const double ri = recall(i8, x, n, dim, (ctn_vs_metric)m, q, nq, 10, NULL);
        ctn_vs_set_rescore(i8, 10); /* no pool beyond k: the int8 products alone */
        const double raw = recall(i8, x, n, dim, (ctn_vs_metric)m, q, nq, 10, NULL);
        printf("  %s: f16 recall@10 %.4f, int8 %.4f rescored (%.4f without)\n",
               mname((ctn_vs_metric)m), rh, ri, raw);
        CHECK(rh >= 0.99);
        CHECK(ri >= 0.99);
        CHECK(ri >= raw);
        ctn_vs_free(h);
        ctn_vs_free(i8);
    }
    free(x);
    free(q);
}

TEST(many_queries_in_one_pass_equal_one_at_a_time) {
    const int dim = 100;
    const size_t n = 1500, nq = 7, k = 12;
    float *x = dataset(n, dim), *q = dataset(nq, dim);
    for (int t = 0; t < 3; t++) {
        ctn_vs *vs = build(x, n, dim, (ctn_kb_dtype)t, CTN_VS_DOT);
        ctn_vs_hit all[7 * 12], one[12];
        size_t fa[7], f1;
        char err[256];
        CHECK_EQ_INT(ctn_vs_search(vs, q, nq, k, NULL, all, fa, err, sizeof err), 0);
        for (size_t c = 0; c < nq; c++) {
            CHECK_EQ_INT(ctn_vs_search(vs, q + c * dim, 1, k, NULL, one, &f1, err, sizeof err), 0);
            CHECK_EQ_INT(f1, fa[c]);
            for (size_t i = 0; i < f1; i++) { /* the same hits, the same bits */
                const ctn_vs_hit *a = &one[i], *b = &all[c * k + i];
                CHECK(a->id == b->id && a->pos == b->pos &&
                      memcmp(&a->score, &b->score, sizeof a->score) == 0);
            }
        }
        ctn_vs_free(vs);
    }
    free(x);
    free(q);
}

TEST(filters_apply_before_scoring) {
    const int dim = 48;
    const size_t n = 1000, nq = 5;
    float *x = dataset(n, dim), *q = dataset(nq, dim);
    uint8_t allow[(1000 + 7) / 8] = {0};
    for (size_t i = 0; i < n; i++)
        if (i % 3 == 0 || (i > 500 && i < 530)) allow[i / 8] |= (uint8_t)(1u << (i % 8));
    ctn_vs *vs = build(x, n, dim, CTN_KB_F32, CTN_VS_L2);
    CHECK(recall(vs, x, n, dim, CTN_VS_L2, q, nq, 10, allow) == 1.0);
    /* Two allowed rows: k = 10 finds two. */
    uint8_t two[(1000 + 7) / 8] = {0};
    two[0] = 1, two[124] = 0x80; /* rows 0 and 999 */
    ctn_vs_hit h[10];
    size_t f;
    char err[256];
    CHECK_EQ_INT(ctn_vs_search(vs, q, 1, 10, two, h, &f, err, sizeof err), 0);
    CHECK_EQ_INT(f, 2);
    CHECK((h[0].pos == 0 && h[1].pos == 999) || (h[0].pos == 999 && h[1].pos == 0));
    /* Nothing allowed, and an empty index: nothing found. */
    uint8_t none[(1000 + 7) / 8] = {0};
    CHECK_EQ_INT(ctn_vs_search(vs, q, 1, 10, none, h, &f, err, sizeof err), 0);
    CHECK_EQ_INT(f, 0);
    ctn_vs_free(vs);
    vs = build(x, 0, dim, CTN_KB_INT8, CTN_VS_COSINE);
    CHECK_EQ_INT(ctn_vs_search(vs, q, 1, 10, NULL, h, &f, err, sizeof err), 0);
    CHECK_EQ_INT(f, 0);
    ctn_vs_free(vs);
    free(x);
    free(q);
}

/* The hits of two searches are the same: ids, positions, score bits, order. */
static void check_same(const ctn_vs_hit *a, const size_t *fa, const ctn_vs_hit *b,
                       const size_t *fb, size_t nq, size_t k) {
    for (size_t c = 0; c < nq; c++) {
        CHECK_EQ_INT(fa[c], fb[c]);
        for (size_t i = 0; i < fa[c] && i < fb[c]; i++) {
            const ctn_vs_hit *x = &a[c * k + i], *y = &b[c * k + i];
            CHECK(x->id == y->id && x->pos == y->pos &&
                  memcmp(&x->score, &y->score, sizeof x->score) == 0);
        }
    }
}

TEST(threads_give_the_same_hits_as_one_thread) {
    const int dim = 40;
    const size_t n = 5000, nq = 4;
    float *x = dataset(n, dim), *q = dataset(nq, dim);
    /* Copies of row 100 in tiles far apart, which different threads take when both run:
     * ties that only the position breaks. */
    memcpy(x + 2600 * dim, x + 100 * dim, dim * sizeof *x);
    memcpy(x + 4900 * dim, x + 100 * dim, dim * sizeof *x);
    memcpy(q + 3 * dim, x + 100 * dim, dim * sizeof *x);
    uint8_t *allow = calloc((n + 7) / 8, 1);
    for (size_t i = 0; i < n; i++)
        if (i % 3 != 1 || (i > 2000 && i < 2300)) allow[i / 8] |= (uint8_t)(1u << (i % 8));
    /* k = 3000 is more than the rows of a thread's heaps when the threads share the 5000. */
    static const size_t ks[] = {10, 3000};
    const size_t kmax = 3000;
    ctn_vs_hit *h1 = malloc(nq * kmax * sizeof *h1), *hn = malloc(nq * kmax * sizeof *hn);
    ref_hit *ref = malloc(10 * sizeof *ref);
    size_t f1[4], fn[4];
    char err[256] = "";
    for (int t = 0; t < 3; t++)
        for (int m = 0; m < 3; m++) {
            ctn_vs *vs = build(x, n, dim, (ctn_kb_dtype)t, (ctn_vs_metric)m);
            CHECK_EQ_INT(ctn_vs_threads(vs), 1);
            for (int ki = 0; ki < 2; ki++)
                for (int f = 0; f < 2; f++) {
                    const size_t k = ks[ki];
                    const uint8_t *al = f ? allow : NULL;
                    CHECK_EQ_INT(ctn_vs_set_threads(vs, 1, err, sizeof err), 0);
                    CHECK_EQ_INT(ctn_vs_search(vs, q, nq, k, al, h1, f1, err, sizeof err), 0);
                    CHECK_EQ_INT(ctn_vs_set_threads(vs, 3, err, sizeof err), 0);
                    CHECK_EQ_INT(ctn_vs_threads(vs), 3);
                    CHECK_EQ_INT(ctn_vs_search(vs, q, nq, k, al, hn, fn, err, sizeof err), 0);
                    check_same(h1, f1, hn, fn, nq, k);
                    CHECK_EQ_INT(ctn_vs_set_threads(vs, 2, err, sizeof err), 0);
                    CHECK_EQ_INT(ctn_vs_search(vs, q, nq, k, al, hn, fn, err, sizeof err), 0);
                    check_same(h1, f1, hn, fn, nq, k);
                    /* The copies of row 100 come in the order they were added. */
                    if (!f && m != CTN_VS_DOT) {
                        CHECK(hn[3 * k].pos == 100 && hn[3 * k + 1].pos == 2600 &&
                              hn[3 * k + 2].pos == 4900);
                    }
                    /* f32: the top 10 of the brute-force reference, on every metric. */
                    for (size_t c = 0; t == CTN_KB_F32 && k == 10 && c < nq; c++) {
                        const size_t nr = brute(x, n, dim, q + c * dim, (ctn_vs_metric)m, k, al,
                                                ref);
                        size_t same = 0;
                        for (size_t i = 0; i < fn[c]; i++)
                            for (size_t j = 0; j < nr; j++)
                                same += ref[j].pos == hn[c * k + i].pos;
                        CHECK_EQ_INT(same, nr);
                    }
                    if (f) /* only allowed rows */
                        for (size_t i = 0; i < fn[0]; i++)
                            CHECK(allow[hn[i].pos / 8] >> (hn[i].pos % 8) & 1);
                    else
                        CHECK_EQ_INT(fn[0], k);
                }
            ctn_vs_free(vs);
        }
    free(h1);
    free(hn);
    free(ref);
    free(allow);
    free(x);
    free(q);
}

TEST(thread_counts_are_checked) {
    char err[256] = "";
    ctn_vs *vs = NULL;
    CHECK_EQ_INT(ctn_vs_new(8, CTN_KB_F32, CTN_VS_DOT, &vs, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_vs_set_threads(vs, -1, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "-1 threads") != NULL);
    CHECK_EQ_INT(ctn_vs_set_threads(vs, 513, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_vs_threads(vs), 1);
    CHECK_EQ_INT(ctn_vs_set_threads(vs, 0, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_vs_threads(vs), ctn_pool_default_threads());
    /* A small collection is searched on the caller's thread, with the same answer. */
    const float v[8] = {1, 2, 3, 4, 5, 6, 7, 8};
    CHECK_EQ_INT(ctn_vs_add(vs, 9, v, err, sizeof err), 0);
    ctn_vs_hit h;
    size_t f;
    CHECK_EQ_INT(ctn_vs_search(vs, v, 1, 1, NULL, &h, &f, err, sizeof err), 0);
    CHECK(f == 1 && h.id == 9 && h.score == 204);
    ctn_vs_free(vs);
}

TEST(bad_input_is_refused_by_name) {
    char err[256] = "";
    ctn_vs *vs = NULL;
    CHECK_EQ_INT(ctn_vs_new(0, CTN_KB_F32, CTN_VS_DOT, &vs, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "dimension 0") != NULL);
    CHECK_EQ_INT(ctn_vs_new(8, (ctn_kb_dtype)9, CTN_VS_DOT, &vs, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_vs_new(8, CTN_KB_F32, (ctn_vs_metric)7, &vs, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_vs_new(4, CTN_KB_F32, CTN_VS_COSINE, &vs, err, sizeof err), 0);
    const float ok[4] = {1, 2, 3, 4}, zero[4] = {0}, nan[4] = {1, NAN, 0, 0};
    const float inf[4] = {INFINITY, 0, 0, 0};
    CHECK_EQ_INT(ctn_vs_add(vs, 1, ok, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_vs_add(vs, 2, zero, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "vector 1 is zero") != NULL);
    CHECK_EQ_INT(ctn_vs_add(vs, 3, nan, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "element 1 is not a finite number") != NULL);
    CHECK_EQ_INT(ctn_vs_add(vs, 3, inf, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_vs_count(vs), 1);
    ctn_vs_hit h[2] = {{7, 7, 7}, {7, 7, 7}};
    size_t f[2] = {5, 5};
    const float qs[8] = {1, 0, 0, 0, 0, NAN, 0, 0};
    CHECK_EQ_INT(ctn_vs_search(vs, qs, 2, 1, NULL, h, f, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "query 1: element 1") != NULL);
    CHECK(f[0] == 5 && h[0].id == 7); /* nothing written */
    CHECK_EQ_INT(ctn_vs_search(vs, zero, 1, 1, NULL, h, f, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_vs_search(vs, ok, 1, 0, NULL, h, f, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_vs_search(vs, ok, 0, 1, NULL, h, f, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_vs_search(vs, ok, 1, 1, NULL, h, f, err, sizeof err), 0);
    CHECK(f[0] == 1 && h[0].id == 1 && fabsf(h[0].score - 1) < 1e-6f);
    ctn_vs_free(vs);
}

TEST(allocation_failures_leave_nothing_half_done) {
    const int dim = 40;
    float *x = dataset(300, dim);
    for (int once = 0; once < 2; once++) {
        for (long n = 0;; n++) {
            char err[256] = "";
            ctn_vs *vs = NULL;
            const long before = ctn__alloc_n_failed;
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            int rc = ctn_vs_new(dim, CTN_KB_INT8, CTN_VS_L2, &vs, err, sizeof err);
            size_t added = 0;
            for (size_t i = 0; rc == 0 && i < 300; i++) {
                rc = ctn_vs_add(vs, (int64_t)i, x + i * dim, err, sizeof err);
                if (rc == 0) added++;
            }
            ctn_vs_hit h[3 * 5];
            size_t f[3] = {9, 9, 9};
            int src = rc == 0 ? ctn_vs_search(vs, x, 3, 5, NULL, h, f, err, sizeof err) : 0;
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            const bool touched = ctn__alloc_n_failed > before;
            if (rc < 0) {
                CHECK_EQ_INT(rc, CTN_ENOMEM);
                CHECK(strstr(err, "out of memory") != NULL);
                if (vs != NULL) CHECK_EQ_INT(ctn_vs_count(vs), added);
            } else if (src < 0) {
                CHECK_EQ_INT(src, CTN_ENOMEM);
                CHECK(f[0] == 9);
            } else {
                CHECK_EQ_INT(ctn_vs_count(vs), 300);
                for (int c = 0; c < 3; c++)
                    CHECK(f[c] == 5 && h[c * 5].pos == (size_t)c); /* each finds itself */
            }
            /* What was added can still be searched. */
            if (vs != NULL && ctn_vs_count(vs) > 0)
                CHECK_EQ_INT(ctn_vs_search(vs, x, 1, 1, NULL, h, f, err, sizeof err), 0);
            ctn_vs_free(vs);
            if (!touched) break;
            CHECK(n < 1000);
        }
    }
    free(x);
}

TEST(allocation_failures_with_threads) {
    /* Starting the threads: all of them or none, the old ones kept. */
    for (long n = 0;; n++) {
        char err[256] = "";
        ctn_vs *vs = NULL;
        CHECK_EQ_INT(ctn_vs_new(8, CTN_KB_F32, CTN_VS_DOT, &vs, err, sizeof err), 0);
        const long before = ctn__alloc_n_failed;
        ctn__alloc_fail_after = n;
        const int rc = ctn_vs_set_threads(vs, 3, err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc < 0) {
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK(strstr(err, "cannot start 3 threads") != NULL);
            CHECK_EQ_INT(ctn_vs_threads(vs), 1);
        } else {
            CHECK_EQ_INT(ctn_vs_threads(vs), 3);
        }
        ctn_vs_free(vs);
        if (ctn__alloc_n_failed == before) break;
        CHECK(n < 100);
    }
    /* A threaded search: an error and nothing written, or the one-thread answer. */
    const int dim = 8;
    const size_t n = 4500;
    float *x = dataset(n, dim);
    ctn_vs *vs = build(x, n, dim, CTN_KB_INT8, CTN_VS_COSINE);
    ctn_vs_hit want[2 * 5], got[2 * 5];
    size_t fw[2], fg[2];
    char err[256] = "";
    CHECK_EQ_INT(ctn_vs_search(vs, x, 2, 5, NULL, want, fw, err, sizeof err), 0);
    CHECK_EQ_INT(ctn_vs_set_threads(vs, 2, err, sizeof err), 0);
    for (long f = 0;; f++) {
        const long before = ctn__alloc_n_failed;
        fg[0] = fg[1] = 9;
        ctn__alloc_fail_after = f;
        const int rc = ctn_vs_search(vs, x, 2, 5, NULL, got, fg, err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc < 0) {
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            CHECK(fg[0] == 9 && fg[1] == 9);
        } else {
            check_same(want, fw, got, fg, 2, 5);
        }
        if (ctn__alloc_n_failed == before) break;
        CHECK(f < 100);
    }
    ctn_vs_free(vs);
    free(x);
}

int main(void) {
    RUN(f32_is_exact_on_every_metric);
    RUN(f16_and_int8_recall);
    RUN(many_queries_in_one_pass_equal_one_at_a_time);
    RUN(filters_apply_before_scoring);
    RUN(threads_give_the_same_hits_as_one_thread);
    RUN(thread_counts_are_checked);
    RUN(bad_input_is_refused_by_name);
    RUN(allocation_failures_leave_nothing_half_done);
    RUN(allocation_failures_with_threads);
    return test_summary();
}
