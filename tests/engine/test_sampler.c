/*
 * Sampler tests: each filter on small hand-made logits, the whole chain against a plain
 * reference (full sort, llama.cpp's order, double precision) on random logits up to a
 * 152k vocabulary, the penalties formula by formula, the empirical distribution of draws,
 * reproducibility of seeds, NaN / inf handling, bad parameters and allocation failures.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "sampler.h"
#include "test.h"

/* ---- helpers ------------------------------------------------------------------------- */

static ctn_sampler_params plain(void) {
    ctn_sampler_params p = ctn_sampler_params_default();
    p.top_k = 0;
    p.top_p = 1.0f;
    p.min_p = 0.0f;
    p.temp = 1.0f;
    return p;
}

static ctn_sampler *make(const ctn_sampler_params *p, int32_t n_vocab) {
    ctn_sampler *s = NULL;
    char err[256];
    int rc = ctn_sampler_new(&s, p, n_vocab, err, sizeof err);
    if (rc != 0) printf("  ctn_sampler_new: %s\n", err);
    return s;
}

/* The candidate ids of one call, sorted by id, as a bit set over a small vocabulary. */
static unsigned kept_set(ctn_sampler *s, const float *logits, int n) {
    float l[32];
    memcpy(l, logits, (size_t)n * sizeof *l);
    const ctn_token_prob *c;
    int32_t m;
    if (ctn_sampler_candidates(s, l, &c, &m) != 0) return 0xffffffffu;
    unsigned set = 0;
    for (int32_t i = 0; i < m; i++)
        set |= 1u << c[i].id;
    return set;
}

static uint64_t test_rng = 88172645463325252ull;

static double urand(void) {
    test_rng ^= test_rng << 13;
    test_rng ^= test_rng >> 7;
    test_rng ^= test_rng << 17;
    return (double)(test_rng >> 11) * 0x1.0p-53;
}

static float gauss(void) {
    double u = urand() + 1e-12, v = urand();
    return (float)(sqrt(-2 * log(u)) * cos(6.283185307179586 * v));
}

/* ---- reference chain ----------------------------------------------------------------- */

typedef struct {
    int32_t id;
    float l;
} ent;

static int ent_cmp(const void *a, const void *b) {
    const ent *x = a, *y = b;
    if (x->l != y->l) return x->l > y->l ? -1 : 1;
    return x->id < y->id ? -1 : x->id > y->id;
}

/*
 * llama.cpp's chain written the plain way: sort everything, cut prefixes in the documented
 * order (top_k, top_p over the top_k set, min_p), softmax at temperature. Writes the kept
 * entries best first with their probabilities; returns how many.
 */
static int ref_chain(const float *logits, int n, const ctn_sampler_params *p, ent *e,
                     double *prob) {
    int m = 0;
    for (int i = 0; i < n; i++) {
        if (logits[i] > -INFINITY) e[m++] = (ent){i, logits[i]};
    }
    qsort(e, (size_t)m, sizeof *e, ent_cmp);
    if (p->temp <= 0) m = 1;
    if (p->top_k > 0 && p->top_k < m) m = p->top_k;
    const float max = e[0].l;
    if (p->top_p < 1) {
        double z = 0, cum = 0;
        for (int i = 0; i < m; i++)
            z += expf(e[i].l - max);
        for (int i = 0; i < m; i++) {
            cum += expf(e[i].l - max);
            if (cum >= (double)p->top_p * z) {
                m = i + 1;
                break;
            }
        }
    }
    if (p->min_p > 0) {
        const float thr = max + logf(p->min_p);
        int k = 1;
        while (k < m && e[k].l >= thr)
            k++;
        m = k;
    }
    double z = 0;
    for (int i = 0; i < m; i++)
        z += exp(((double)e[i].l - max) / (p->temp > 0 ? p->temp : 1));
    for (int i = 0; i < m; i++) {
        prob[i] = exp(((double)e[i].l - max) / (p->temp > 0 ? p->temp : 1)) / z;
    }
    return m;
}

static int prob_cmp_id(const void *a, const void *b) {
    const ctn_token_prob *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

static int ent_cmp_id(const void *a, const void *b) {
    const ent *x = a, *y = b;
    return x->id < y->id ? -1 : x->id > y->id;
}

/* Runs the sampler's chain and the reference on the same logits; 1 when they agree. */
static int agrees_with_ref(const ctn_sampler_params *p, const float *logits, int n) {
    ctn_sampler *s = make(p, n);
    if (s == NULL) return 0;
    float *l = malloc((size_t)n * sizeof *l);
    ent *e = malloc((size_t)n * sizeof *e);
    double *prob = malloc((size_t)n * sizeof *prob);
    ctn_token_prob *mine = malloc((size_t)n * sizeof *mine);
    memcpy(l, logits, (size_t)n * sizeof *l);
    const ctn_token_prob *c;
    int32_t m;
    int ok = ctn_sampler_candidates(s, l, &c, &m) == 0;
    int r = ref_chain(logits, n, p, e, prob);
    if (ok && m != r) {
        printf("  n=%d top_k=%d top_p=%g min_p=%g temp=%g: %d candidates, reference %d\n", n,
               (int)p->top_k, (double)p->top_p, (double)p->min_p, (double)p->temp, (int)m, r);
        ok = 0;
    }
    if (ok) {
        /* Pair the probabilities by id (the reference's order is best first). */
        for (int i = 0; i < r; i++)
            e[i].l = (float)prob[i];
        qsort(e, (size_t)r, sizeof *e, ent_cmp_id);
        memcpy(mine, c, (size_t)m * sizeof *mine);
        qsort(mine, (size_t)m, sizeof *mine, prob_cmp_id);
        double sum = 0;
        for (int i = 0; i < m && ok; i++) {
            sum += mine[i].p;
            if (mine[i].id != e[i].id || fabs((double)mine[i].p - (double)e[i].l) > 1e-5) {
                printf("  candidate %d: id %d p %g, reference id %d p %g\n", i, (int)mine[i].id,
                       (double)mine[i].p, (int)e[i].id, (double)e[i].l);
                ok = 0;
            }
        }
        if (ok && fabs(sum - 1) > 1e-4) ok = 0;
    }
    free(l);
    free(e);
    free(prob);
    free(mine);
    ctn_sampler_free(s);
    return ok;
}

/* ---- parameters ---------------------------------------------------------------------- */

TEST(defaults_are_llama_cpp_cli) {
    ctn_sampler_params p = ctn_sampler_params_default();
    CHECK(p.temp == 0.8f && p.top_k == 40 && p.top_p == 0.95f && p.min_p == 0.05f);
    CHECK(p.repeat_penalty == 1.0f && p.penalty_last_n == 64);
    CHECK(p.frequency_penalty == 0.0f && p.presence_penalty == 0.0f && p.seed == 0);
}

TEST(bad_params_are_named) {
    char err[256];
    ctn_sampler *s = (ctn_sampler *)&err; /* must be set to NULL on failure */
    ctn_sampler_params p;

#define BAD(field, value, name)                                                                    \
    do {                                                                                           \
        p = ctn_sampler_params_default();                                                          \
        p.field = value;                                                                           \
        err[0] = 0;                                                                                \
        s = (ctn_sampler *)&err;                                                                   \
        CHECK_EQ_INT(ctn_sampler_new(&s, &p, 100, err, sizeof err), CTN_EINVAL);                   \
        CHECK(s == NULL);                                                                          \
        CHECK_CONTAINS(err, name);                                                                 \
    } while (0)

    BAD(temp, NAN, "temp");
    BAD(temp, INFINITY, "temp");
    BAD(top_p, NAN, "top_p");
    BAD(top_p, -0.1f, "top_p");
    BAD(min_p, NAN, "min_p");
    BAD(min_p, 1.5f, "min_p");
    BAD(repeat_penalty, 0.0f, "repeat_penalty");
    BAD(repeat_penalty, -1.0f, "repeat_penalty");
    BAD(repeat_penalty, NAN, "repeat_penalty");
    BAD(frequency_penalty, INFINITY, "frequency_penalty");
    BAD(presence_penalty, NAN, "presence_penalty");
    BAD(penalty_last_n, -2, "penalty_last_n");
#undef BAD

    p = ctn_sampler_params_default();
    CHECK_EQ_INT(ctn_sampler_new(&s, &p, 0, err, sizeof err), CTN_EINVAL);
    CHECK(s == NULL);
    CHECK_CONTAINS(err, "n_vocab");

    /* The values that mean "off" or "greedy" are accepted. */
    p.temp = -1;
    p.top_k = -5;
    p.top_p = 7;
    p.min_p = -1;
    p.penalty_last_n = -1;
    p.frequency_penalty = -0.5f;
    CHECK_EQ_INT(ctn_sampler_new(&s, &p, 10, err, sizeof err), 0);
    ctn_sampler_free(s);
}

/* ---- greedy -------------------------------------------------------------------------- */

TEST(greedy_picks_argmax_lowest_id_on_ties) {
    ctn_sampler_params p = ctn_sampler_params_default();
    p.temp = 0;
    ctn_sampler *s = make(&p, 6);
    CHECK(s != NULL);
    if (!s) return;
    float a[6] = {1, 3, -2, 3, 2.9f, -INFINITY};
    int32_t t = -1;
    CHECK_EQ_INT(ctn_sampler_sample(s, a, &t), 0);
    CHECK_EQ_INT(t, 1);
    float b[6] = {-INFINITY, -INFINITY, -5, -INFINITY, -7, -5};
    CHECK_EQ_INT(ctn_sampler_sample(s, b, &t), 0);
    CHECK_EQ_INT(t, 2);
    float c[6] = {0, 0, 0, 0, 0, 0.5f};
    CHECK_EQ_INT(ctn_sampler_sample(s, c, &t), 0);
    CHECK_EQ_INT(t, 5);
    /* candidates: the argmax alone, with p = 1 */
    const ctn_token_prob *cand;
    int32_t n;
    float d[6] = {1, 3, -2, 3, 2.9f, -INFINITY};
    CHECK_EQ_INT(ctn_sampler_candidates(s, d, &cand, &n), 0);
    CHECK(n == 1 && cand[0].id == 1 && cand[0].p == 1.0f);
    ctn_sampler_free(s);

    /* A negative temperature is greedy too, and a one-token vocabulary always gives 0. */
    p.temp = -0.5f;
    s = make(&p, 1);
    float e[1] = {-100};
    CHECK(s != NULL && ctn_sampler_sample(s, e, &t) == 0 && t == 0);
    ctn_sampler_free(s);
}

/* ---- each filter on hand-made logits ------------------------------------------------- */

TEST(top_k_keeps_exactly_k) {
    ctn_sampler_params p = plain();
    p.top_k = 3;
    ctn_sampler *s = make(&p, 7);
    float a[7] = {1, 5, 3, 5, 2, -INFINITY, 4};
    CHECK_EQ_INT(kept_set(s, a, 7), (1u << 1) | (1u << 3) | (1u << 6));
    ctn_sampler_free(s);
    p.top_k = 2;
    s = make(&p, 7);
    CHECK_EQ_INT(kept_set(s, a, 7), (1u << 1) | (1u << 3));
    float ties[7] = {2, 2, 2, 1, 2, 0, 0};
    CHECK_EQ_INT(kept_set(s, ties, 7), (1u << 0) | (1u << 1));
    ctn_sampler_free(s);
    /* k at or above the number of drawable tokens keeps them all */
    p.top_k = 6;
    s = make(&p, 7);
    CHECK_EQ_INT(kept_set(s, a, 7), 0x7fu & ~(1u << 5));
    ctn_sampler_free(s);
}

/* Probabilities 0.15, 0.5, 0.05, 0.3 for ids 0..3 (in no order, so the sort matters). */
static const float P4[4] = {-1.8971199849f, -0.6931471806f, -2.9957322736f, -1.2039728043f};

TEST(top_p_keeps_smallest_prefix_reaching_p) {
    ctn_sampler_params p = plain();
    struct {
        float top_p;
        unsigned kept;
    } cases[] = {
        {0.0f, 0x2}, {0.4f, 0x2}, {0.7f, 0xa}, {0.79f, 0xa}, {0.85f, 0xb}, {0.97f, 0xf},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p.top_p = cases[i].top_p;
        ctn_sampler *s = make(&p, 4);
        unsigned got = kept_set(s, P4, 4);
        if (got != cases[i].kept) printf("  top_p %g: kept 0x%x\n", (double)p.top_p, got);
        CHECK_EQ_INT(got, cases[i].kept);
        ctn_sampler_free(s);
    }
    /* top_p is normalised over what top_k left: within {1, 3} id 1 has 0.625 >= 0.6. */
    p.top_p = 0.6f;
    p.top_k = 2;
    ctn_sampler *s = make(&p, 4);
    CHECK_EQ_INT(kept_set(s, P4, 4), 0x2);
    ctn_sampler_free(s);
    p.top_k = 0;
    s = make(&p, 4);
    CHECK_EQ_INT(kept_set(s, P4, 4), 0xa);
    ctn_sampler_free(s);
}

TEST(min_p_keeps_p_at_least_min_p_times_max) {
    ctn_sampler_params p = plain();
    struct {
        float min_p;
        unsigned kept;
    } cases[] = {
        {0.09f, 0xf}, {0.2f, 0xb}, {0.35f, 0xa}, {0.5f, 0xa}, {0.7f, 0x2}, {1.0f, 0x2},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        p.min_p = cases[i].min_p;
        ctn_sampler *s = make(&p, 4);
        unsigned got = kept_set(s, P4, 4);
        if (got != cases[i].kept) printf("  min_p %g: kept 0x%x\n", (double)p.min_p, got);
        CHECK_EQ_INT(got, cases[i].kept);
        ctn_sampler_free(s);
    }
    /* with top_p: the shorter prefix of the two */
    p.min_p = 0.5f;
    p.top_p = 0.85f;
    ctn_sampler *s = make(&p, 4);
    CHECK_EQ_INT(kept_set(s, P4, 4), 0xa);
    ctn_sampler_free(s);
    p.min_p = 0.09f;
    s = make(&p, 4);
    CHECK_EQ_INT(kept_set(s, P4, 4), 0xb);
    ctn_sampler_free(s);
}

TEST(temperature_scales_after_the_filters) {
    ctn_sampler_params p = plain();
    p.min_p = 0.2f; /* keeps {0, 1, 3} on the untempered probabilities */
    p.temp = 2.0f;  /* would let id 2 pass min_p if it came first */
    ctn_sampler *s = make(&p, 4);
    float l[4];
    memcpy(l, P4, sizeof l);
    const ctn_token_prob *c;
    int32_t n;
    CHECK_EQ_INT(ctn_sampler_candidates(s, l, &c, &n), 0);
    CHECK_EQ_INT(n, 3);
    double z = 0;
    for (int i = 0; i < 4; i++) {
        if (i != 2) z += exp(P4[i] / 2.0);
    }
    for (int32_t i = 0; i < n; i++) {
        CHECK(c[i].id != 2);
        CHECK(fabs(c[i].p - exp(P4[c[i].id] / 2.0) / z) < 1e-6);
    }
    ctn_sampler_free(s);

    /* A denormal temperature is greedy in effect, without NaN. */
    p.temp = 1e-40f;
    s = make(&p, 4);
    memcpy(l, P4, sizeof l);
    CHECK_EQ_INT(ctn_sampler_candidates(s, l, &c, &n), 0);
    for (int32_t i = 0; i < n; i++)
        CHECK(c[i].p == (c[i].id == 1 ? 1.0f : 0.0f));
    int32_t t = -1;
    for (int d = 0; d < 100; d++) {
        memcpy(l, P4, sizeof l);
        CHECK(ctn_sampler_sample(s, l, &t) == 0 && t == 1);
    }
    ctn_sampler_free(s);
}

/* ---- the whole chain against the reference ------------------------------------------- */

TEST(chain_matches_reference_on_random_logits) {
    const int sizes[] = {2, 7, 100, 1500, 5000};
    const int32_t ks[] = {0, 1, 3, 40, 1000000};
    const float tps[] = {1.0f, 0.0f, 0.5f, 0.9f, 0.99f};
    const float mps[] = {0.0f, 0.05f, 0.3f};
    const float temps[] = {0.0f, 0.5f, 1.0f, 1.7f};
    int bad = 0, runs = 0;
    float *l = malloc(5000 * sizeof *l);
    for (int round = 0; round < 400; round++) {
        int n = sizes[round % 5];
        float scale = (float)(0.3 + 4 * urand());
        int tied = urand() < 0.3, masked = urand() < 0.3;
        for (int i = 0; i < n; i++) {
            l[i] = gauss() * scale;
            if (tied) l[i] = roundf(l[i]);
            if (masked && urand() < 0.3) l[i] = -INFINITY;
        }
        l[(int)(urand() * n)] = 1.0f; /* at least one drawable token */
        ctn_sampler_params p = ctn_sampler_params_default();
        p.top_k = ks[(int)(urand() * 5)];
        p.top_p = tps[(int)(urand() * 5)];
        p.min_p = mps[(int)(urand() * 3)];
        p.temp = temps[(int)(urand() * 4)];
        runs++;
        if (!agrees_with_ref(&p, l, n)) bad++;
    }
    free(l);
    if (bad) printf("  %d of %d disagree\n", bad, runs);
    CHECK_EQ_INT(bad, 0);
}

/*
 * A 152k vocabulary with top_k and min_p off, so top_p alone decides: with peaked logits
 * the top 256 hold the mass (partial selection), with flat ones they do not (full sort).
 */
TEST(top_p_alone_on_a_large_vocabulary) {
    const int n = 152064;
    float *l = malloc((size_t)n * sizeof *l);
    ctn_sampler_params p = plain();
    p.top_p = 0.95f;
    p.temp = 0.8f;
    for (int shape = 0; shape < 3; shape++) {
        for (int i = 0; i < n; i++)
            l[i] = gauss() * (shape == 0 ? 1.0f : 2.0f);
        if (shape == 1) {
            for (int i = 0; i < 50; i++)
                l[(int)(urand() * n)] = 25.0f + gauss();
        }
        if (shape == 2) p.top_p = 0.5f;
        CHECK(agrees_with_ref(&p, l, n));
    }
    /* all equal: one bucket holds everything, the cut goes by id */
    for (int i = 0; i < n; i++)
        l[i] = 0.25f;
    p.top_p = 0.3f;
    CHECK(agrees_with_ref(&p, l, n));
    /* llama.cpp's defaults on the same vocabulary */
    p = ctn_sampler_params_default();
    CHECK(agrees_with_ref(&p, l, n));
    free(l);
}

/* ---- draws --------------------------------------------------------------------------- */

TEST(empirical_distribution_matches) {
    const float l[6] = {1.0f, 2.0f, 0.2f, 1.5f, -0.5f, 1.8f};
    ctn_sampler_params p = ctn_sampler_params_default();
    p.top_k = 5;     /* drops id 4 */
    p.top_p = 0.93f; /* then drops id 2 (the last 0.08 or so of the mass) */
    p.min_p = 0.05f;
    p.temp = 0.7f;
    p.seed = 1234;
    ent e[6];
    double prob[6];
    int m = ref_chain(l, 6, &p, e, prob);
    CHECK_EQ_INT(m, 4);
    double expect[6] = {0};
    for (int i = 0; i < m; i++)
        expect[e[i].id] = prob[i];
    CHECK(expect[2] == 0 && expect[4] == 0);

    ctn_sampler *s = make(&p, 6);
    const int draws = 200000;
    long count[6] = {0};
    for (int d = 0; d < draws; d++) {
        float x[6];
        memcpy(x, l, sizeof x);
        int32_t t = -1;
        if (ctn_sampler_sample(s, x, &t) != 0 || t < 0 || t >= 6) {
            CHECK(0);
            break;
        }
        count[t]++;
    }
    double chi2 = 0;
    for (int i = 0; i < 6; i++) {
        if (expect[i] == 0) {
            CHECK_EQ_INT(count[i], 0);
            continue;
        }
        double ex = expect[i] * draws;
        chi2 += (count[i] - ex) * (count[i] - ex) / ex;
    }
    /* 3 degrees of freedom: P(chi2 > 30) is about 1e-6 */
    if (chi2 >= 30) printf("  chi2 = %g\n", chi2);
    CHECK(chi2 < 30);
    ctn_sampler_free(s);
}

TEST(masked_tokens_are_never_drawn) {
    ctn_sampler_params p = plain();
    p.temp = 3.0f;
    ctn_sampler *s = make(&p, 64);
    float l[64];
    for (int d = 0; d < 5000; d++) {
        for (int i = 0; i < 64; i++)
            l[i] = (i % 3 == 0) ? -INFINITY : (float)(i % 5);
        int32_t t = -1;
        CHECK_EQ_INT(ctn_sampler_sample(s, l, &t), 0);
        if (t % 3 == 0) {
            CHECK(0);
            break;
        }
    }
    ctn_sampler_free(s);
}

static void draw_seq(ctn_sampler *s, int32_t *out, int n) {
    float l[50];
    for (int d = 0; d < n; d++) {
        for (int i = 0; i < 50; i++)
            l[i] = (float)((i * 7919) % 13) * 0.3f;
        out[d] = -1;
        ctn_sampler_sample(s, l, &out[d]);
        ctn_sampler_accept(s, out[d]);
    }
}

TEST(seeds_are_reproducible) {
    ctn_sampler_params p = plain();
    p.repeat_penalty = 1.3f; /* the history takes part too */
    int32_t a[200], b[200], c[200], d[200];
    p.seed = 7;
    ctn_sampler *s1 = make(&p, 50), *s2 = make(&p, 50);
    p.seed = 8;
    ctn_sampler *s3 = make(&p, 50);
    draw_seq(s1, a, 200);
    draw_seq(s2, b, 200);
    draw_seq(s3, c, 200);
    CHECK(memcmp(a, b, sizeof a) == 0);
    CHECK(memcmp(a, c, sizeof a) != 0);
    /* a reset sampler repeats a new one */
    ctn_sampler_reset(s1);
    draw_seq(s1, d, 200);
    CHECK(memcmp(a, d, sizeof a) == 0);
    /* the first draws of seed 7, pinned: the same on every platform, and a change of
     * generator or chain shows up here */
    const int32_t pinned[12] = {34, 15, 43, 48, 49, 44, 5, 6, 19, 11, 30, 37};
    CHECK(memcmp(a, pinned, sizeof pinned) == 0);
    ctn_sampler_free(s1);
    ctn_sampler_free(s2);
    ctn_sampler_free(s3);
}

/* ---- penalties ----------------------------------------------------------------------- */

TEST(penalties_follow_the_formulas) {
    ctn_sampler_params p = ctn_sampler_params_default();
    p.temp = 0;
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 0.5f;
    p.presence_penalty = 0.25f;
    p.penalty_last_n = -1;
    ctn_sampler *s = make(&p, 6);
    const int32_t hist[] = {0, 1, 1, 2, 5, 5, 5};
    for (size_t i = 0; i < sizeof hist / sizeof hist[0]; i++) {
        CHECK_EQ_INT(ctn_sampler_accept(s, hist[i]), 0);
    }
    float l[6] = {2, -2, 0, 1, 3, -INFINITY};
    int32_t t;
    CHECK_EQ_INT(ctn_sampler_sample(s, l, &t), 0);
    CHECK_EQ_INT(t, 4);
    CHECK(l[0] == 2.0f / 2 - (1 * 0.5f + 0.25f));  /* positive: divided */
    CHECK(l[1] == -2.0f * 2 - (2 * 0.5f + 0.25f)); /* negative: multiplied */
    CHECK(l[2] == 0.0f * 2 - (1 * 0.5f + 0.25f));  /* zero: multiplied (stays 0) */
    CHECK(l[3] == 1.0f && l[4] == 3.0f);           /* not in the history */
    CHECK(l[5] == -INFINITY);                      /* masked stays masked */

    /* The penalties decide: repeated token 4 loses to token 3. */
    for (int i = 0; i < 3; i++)
        ctn_sampler_accept(s, 4);
    float m[6] = {2, -2, 0, 1, 3, -INFINITY};
    CHECK_EQ_INT(ctn_sampler_sample(s, m, &t), 0);
    CHECK(m[4] == 3.0f / 2 - (3 * 0.5f + 0.25f));
    CHECK_EQ_INT(t, 3);

    /* reset forgets the history */
    ctn_sampler_reset(s);
    float r[6] = {2, -2, 0, 1, 3, -INFINITY};
    CHECK_EQ_INT(ctn_sampler_sample(s, r, &t), 0);
    CHECK(r[0] == 2 && r[1] == -2 && r[4] == 3);
    CHECK_EQ_INT(ctn_sampler_accept(s, 6), CTN_EINVAL);
    CHECK_EQ_INT(ctn_sampler_accept(s, -1), CTN_EINVAL);
    ctn_sampler_free(s);
}

TEST(penalty_window_slides) {
    ctn_sampler_params p = ctn_sampler_params_default();
    p.temp = 0;
    p.repeat_penalty = 2.0f;
    p.frequency_penalty = 1.0f;
    p.penalty_last_n = 3;
    ctn_sampler *s = make(&p, 5);
    int32_t t;
    for (int32_t i = 0; i < 4; i++)
        ctn_sampler_accept(s, i); /* window {1, 2, 3} */
    float l[5] = {4, 4, 4, 4, 4};
    CHECK_EQ_INT(ctn_sampler_sample(s, l, &t), 0);
    CHECK(l[0] == 4 && l[1] == 1 && l[2] == 1 && l[3] == 1 && l[4] == 4);
    CHECK_EQ_INT(t, 0);
    ctn_sampler_accept(s, 1);
    ctn_sampler_accept(s, 1); /* window {3, 1, 1} */
    float m[5] = {4, 4, 4, 4, 4};
    CHECK_EQ_INT(ctn_sampler_sample(s, m, &t), 0);
    CHECK(m[0] == 4 && m[1] == 0 && m[2] == 4 && m[3] == 1 && m[4] == 4);
    ctn_sampler_free(s);

    /* last_n 0 turns the penalties off whatever their values */
    p.penalty_last_n = 0;
    s = make(&p, 5);
    ctn_sampler_accept(s, 2);
    float o[5] = {4, 4, 4, 4, 4};
    CHECK_EQ_INT(ctn_sampler_sample(s, o, &t), 0);
    CHECK(o[2] == 4);
    ctn_sampler_free(s);
}

/* ---- bad logits ---------------------------------------------------------------------- */

TEST(nan_and_inf_logits_are_errors) {
    for (int greedy = 0; greedy < 2; greedy++) {
        ctn_sampler_params p = ctn_sampler_params_default();
        p.temp = greedy ? 0.0f : 0.8f;
        ctn_sampler *s = make(&p, 10);
        float l[10] = {0};
        int32_t t = 77;
        l[7] = NAN;
        CHECK_EQ_INT(ctn_sampler_sample(s, l, &t), CTN_ERANGE);
        CHECK_CONTAINS(ctn_sampler_errmsg(s), "token 7");
        CHECK_CONTAINS(ctn_sampler_errmsg(s), "NaN");
        memset(l, 0, sizeof l);
        l[3] = INFINITY;
        CHECK_EQ_INT(ctn_sampler_sample(s, l, &t), CTN_ERANGE);
        CHECK_CONTAINS(ctn_sampler_errmsg(s), "token 3");
        for (int i = 0; i < 10; i++)
            l[i] = -INFINITY;
        CHECK_EQ_INT(ctn_sampler_sample(s, l, &t), CTN_ERANGE);
        CHECK_CONTAINS(ctn_sampler_errmsg(s), "-inf");
        const ctn_token_prob *c = (const ctn_token_prob *)l;
        int32_t n = 5;
        CHECK_EQ_INT(ctn_sampler_candidates(s, l, &c, &n), CTN_ERANGE);
        CHECK(c == NULL && n == 0);
        CHECK_EQ_INT(ctn_sampler_sample(s, NULL, &t), CTN_EINVAL);
        CHECK_EQ_INT(t, 77);
        /* still usable */
        for (int i = 0; i < 10; i++)
            l[i] = (float)i;
        CHECK_EQ_INT(ctn_sampler_sample(s, l, &t), 0);
        CHECK(t >= 0 && t < 10);
        ctn_sampler_free(s);
    }
}

/* ---- memory -------------------------------------------------------------------------- */

/* Fail the N-th allocation for every N: ENOMEM, *out NULL, nothing leaked (ASan build). */
TEST(allocation_failures) {
    for (int pen = 0; pen < 2; pen++) {
        ctn_sampler_params p = ctn_sampler_params_default();
        if (pen) p.repeat_penalty = 1.1f;
        int done = 0, n_fail = 0;
        for (long n = 0; n < 100 && !done; n++) {
            ctn_sampler *s = (ctn_sampler *)&n;
            char err[256];
            ctn__alloc_fail_after = n;
            int rc = ctn_sampler_new(&s, &p, 1000, err, sizeof err);
            long left = ctn__alloc_fail_after;
            if (rc == 0) {
                /* and no allocation at all while sampling */
                float l[1000];
                for (int i = 0; i < 1000; i++)
                    l[i] = (float)(i % 17);
                int32_t t;
                ctn__alloc_fail_after = 0;
                CHECK_EQ_INT(ctn_sampler_accept(s, 3), 0);
                CHECK_EQ_INT(ctn_sampler_sample(s, l, &t), 0);
                ctn__alloc_fail_after = -1;
                done = 1;
                CHECK(left >= 0);
                ctn_sampler_free(s);
            } else {
                ctn__alloc_fail_after = -1;
                n_fail++;
                CHECK_EQ_INT(rc, CTN_ENOMEM);
                CHECK(s == NULL);
                CHECK_CONTAINS(err, "out of memory");
            }
        }
        CHECK(done);
        CHECK_EQ_INT(n_fail, pen ? 6 : 2); /* every allocation of ctn_sampler_new failed once */
    }
}

int main(void) {
    RUN(defaults_are_llama_cpp_cli);
    RUN(bad_params_are_named);
    RUN(greedy_picks_argmax_lowest_id_on_ties);
    RUN(top_k_keeps_exactly_k);
    RUN(top_p_keeps_smallest_prefix_reaching_p);
    RUN(min_p_keeps_p_at_least_min_p_times_max);
    RUN(temperature_scales_after_the_filters);
    RUN(chain_matches_reference_on_random_logits);
    RUN(top_p_alone_on_a_large_vocabulary);
    RUN(empirical_distribution_matches);
    RUN(masked_tokens_are_never_drawn);
    RUN(seeds_are_reproducible);
    RUN(penalties_follow_the_formulas);
    RUN(penalty_window_slides);
    RUN(nan_and_inf_logits_are_errors);
    RUN(allocation_failures);
    return test_summary();
}
