/*
 * The token sampler (see sampler.h). The semantics are llama.cpp's (src/llama-sampler.cpp:
 * penalties, top_k, top_p, min_p, temp, dist); the code is organised for one fused pass
 * per step instead of a chain of samplers each walking the whole vocabulary:
 *
 *   1. penalties touch only the tokens in the window (a dense set of distinct tokens);
 *   2. one scan checks for NaN / +inf and finds the maximum and the argmax;
 *   3. top_k keeps the k best in a bounded heap, straight from the logits;
 *   4. min_p is a threshold on the logit (max + log min_p), one linear pass;
 *   5. top_p needs the candidates in order, but only as far as the mass reaches top_p.
 *
 * top_p and min_p both keep a most-likely prefix of the candidates and min_p's threshold
 * depends only on the maximum, which top_p always keeps, so applying min_p first and then
 * top_p with the probabilities normalised over the set before min_p gives llama.cpp's
 * result (the shorter of the two prefixes) while sorting far fewer entries.
 */
#include "sampler.h"

#include <math.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"

#define MAX_VOCAB    (1 << 26) /* bounds the allocations; far above real vocabularies */
#define MAX_WINDOW   (1 << 24) /* penalty_last_n above this is refused */
#define TOP_P_SORT   1024      /* top_p sorts up to this many unsorted candidates outright */
#define N_BUCKETS    1024      /* logit buckets for top_p over more candidates */
#define BUCKET_RANGE 32.0f     /* logits further than this below the maximum share a bucket */

struct ctn_sampler {
    ctn_sampler_params p;
    int32_t n_vocab;
    uint64_t rng[4]; /* xoshiro256** state */

    /* Penalty history; all NULL when the penalties are off. */
    bool penalties;
    int32_t *count;   /* (n_vocab) occurrences of each token in the window */
    int32_t *seen_at; /* (n_vocab) index of a token in seen[], -1 when its count is 0 */
    int32_t *seen;    /* (n_seen_cap) the distinct tokens with count > 0, in no order */
    int32_t n_seen;
    int32_t *ring;     /* (window) the last accepted tokens; NULL for the whole history */
    int32_t window;    /* ring capacity; 0 for the whole history */
    int32_t ring_len;  /* tokens in the ring */
    int32_t ring_next; /* slot written next; the oldest token when the ring is full */

    /* Candidates of one step. While filtering, .p holds the logit; the last step turns it
     * into the probability after temperature. */
    ctn_token_prob *cand;          /* (n_vocab) */
    double bucket_mass[N_BUCKETS]; /* top_p: sum of exp(l - max) per logit bucket */

    char errmsg[160];
};

/* ---- random numbers ------------------------------------------------------------------ */

static uint64_t splitmix64(uint64_t *x) {
    uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static inline uint64_t rotl(uint64_t x, int k) {
    return (x << k) | (x >> (64 - k));
}

/* xoshiro256** (Blackman and Vigna): fast, and the same sequence on every platform. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t r = rotl(s[1] * 5, 7) * 9;
    uint64_t t = s[1] << 17;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 45);
    return r;
}

/* Uniform in [0, 1) with 53 random bits. */
static double rng_uniform(uint64_t *s) {
    return (double)(rng_next(s) >> 11) * 0x1.0p-53;
}

static void rng_seed(uint64_t *s, uint64_t seed) {
    for (int i = 0; i < 4; i++)
        s[i] = splitmix64(&seed);
}

/* ---- parameters ---------------------------------------------------------------------- */

ctn_sampler_params ctn_sampler_params_default(void) {
    ctn_sampler_params p = {
        .temp = 0.8f,
        .top_k = 40,
        .top_p = 0.95f,
        .min_p = 0.05f,
        .repeat_penalty = 1.0f,
        .penalty_last_n = 64,
        .frequency_penalty = 0.0f,
        .presence_penalty = 0.0f,
        .seed = 0,
    };
    return p;
}

/* Names the first bad parameter in err; the ranges are those documented in sampler.h. */
static int check_params(const ctn_sampler_params *p, int32_t n_vocab, char *err, size_t errlen) {
    if (n_vocab < 1 || n_vocab > MAX_VOCAB) {
        ctn__errf(err, errlen, "sampler: n_vocab %d is outside [1, %d]", (int)n_vocab, MAX_VOCAB);
        return CTN_EINVAL;
    }
    struct {
        const char *name;
        float v;
    } finite[] = {{"temp", p->temp},
                  {"top_p", p->top_p},
                  {"min_p", p->min_p},
                  {"repeat_penalty", p->repeat_penalty},
                  {"frequency_penalty", p->frequency_penalty},
                  {"presence_penalty", p->presence_penalty}};
    for (size_t i = 0; i < sizeof finite / sizeof finite[0]; i++) {
        if (!isfinite(finite[i].v)) {
            ctn__errf(err, errlen, "sampler: %s is %g, not a finite number", finite[i].name,
                      (double)finite[i].v);
            return CTN_EINVAL;
        }
    }
    if (p->top_p < 0) {
        ctn__errf(err, errlen, "sampler: top_p is %g; it must be >= 0 (>= 1: off)",
                  (double)p->top_p);
        return CTN_EINVAL;
    }
    if (p->min_p > 1) {
        ctn__errf(err, errlen, "sampler: min_p is %g; it must be <= 1 (<= 0: off)",
                  (double)p->min_p);
        return CTN_EINVAL;
    }
    if (p->repeat_penalty <= 0) {
        ctn__errf(err, errlen, "sampler: repeat_penalty is %g; it must be > 0 (1: off)",
                  (double)p->repeat_penalty);
        return CTN_EINVAL;
    }
    if (p->penalty_last_n < -1 || p->penalty_last_n > MAX_WINDOW) {
        ctn__errf(err, errlen,
                  "sampler: penalty_last_n is %d; it must be -1 (whole history), 0 (off) "
                  "or a window of at most %d tokens",
                  (int)p->penalty_last_n, MAX_WINDOW);
        return CTN_EINVAL;
    }
    return 0;
}

/* ---- creation ------------------------------------------------------------------------ */

void ctn_sampler_free(ctn_sampler *s) {
    if (s == NULL) return;
    free(s->count);
    free(s->seen_at);
    free(s->seen);
    free(s->ring);
    free(s->cand);
    free(s);
}

int ctn_sampler_new(ctn_sampler **out, const ctn_sampler_params *p, int32_t n_vocab, char *err,
                    size_t errlen) {
    if (out == NULL || p == NULL) {
        ctn__errf(err, errlen, "sampler: NULL argument");
        return CTN_EINVAL;
    }
    *out = NULL;
    int rc = check_params(p, n_vocab, err, errlen);
    if (rc < 0) return rc;

    ctn_sampler *s = ctn__calloc(1, sizeof *s);
    if (s == NULL) goto nomem;
    s->p = *p;
    s->n_vocab = n_vocab;
    s->penalties = p->penalty_last_n != 0 && (p->repeat_penalty != 1 || p->frequency_penalty != 0 ||
                                              p->presence_penalty != 0);
    if (s->penalties) {
        int32_t cap = n_vocab;
        if (p->penalty_last_n > 0) {
            s->window = p->penalty_last_n;
            if (s->window < cap) cap = s->window;
            s->ring = ctn__malloc((size_t)s->window * sizeof *s->ring);
            if (s->ring == NULL) goto nomem;
        }
        s->count = ctn__calloc((size_t)n_vocab, sizeof *s->count);
        s->seen_at = ctn__malloc((size_t)n_vocab * sizeof *s->seen_at);
        s->seen = ctn__malloc((size_t)cap * sizeof *s->seen);
        if (s->count == NULL || s->seen_at == NULL || s->seen == NULL) goto nomem;
    }
    s->cand = ctn__malloc((size_t)n_vocab * sizeof *s->cand);
    if (s->cand == NULL) goto nomem;
    ctn_sampler_reset(s);
    *out = s;
    return 0;

nomem:
    ctn_sampler_free(s);
    ctn__errf(err, errlen, "sampler: out of memory for a vocabulary of %d tokens", (int)n_vocab);
    return CTN_ENOMEM;
}

void ctn_sampler_reset(ctn_sampler *s) {
    rng_seed(s->rng, s->p.seed);
    s->errmsg[0] = '\0';
    if (!s->penalties) return;
    memset(s->count, 0, (size_t)s->n_vocab * sizeof *s->count);
    memset(s->seen_at, 0xff, (size_t)s->n_vocab * sizeof *s->seen_at); /* all -1 */
    s->n_seen = 0;
    s->ring_len = 0;
    s->ring_next = 0;
}

const char *ctn_sampler_errmsg(const ctn_sampler *s) {
    return s->errmsg;
}

/* ---- penalty history ----------------------------------------------------------------- */

static void count_up(ctn_sampler *s, int32_t t) {
    if (s->count[t] == INT32_MAX) return; /* the whole history of a very long run */
    if (s->count[t]++ == 0) {
        s->seen_at[t] = s->n_seen;
        s->seen[s->n_seen++] = t;
    }
}

static void count_down(ctn_sampler *s, int32_t t) {
    if (--s->count[t] > 0) return;
    int32_t i = s->seen_at[t], last = s->seen[--s->n_seen];
    s->seen[i] = last;
    s->seen_at[last] = i;
    s->seen_at[t] = -1;
}

int ctn_sampler_accept(ctn_sampler *s, int32_t token) {
    if (token < 0 || token >= s->n_vocab) {
        ctn__errf(s->errmsg, sizeof s->errmsg, "sampler: accepted token %d is outside [0, %d)",
                  (int)token, (int)s->n_vocab);
        return CTN_EINVAL;
    }
    if (!s->penalties) return 0;
    if (s->window > 0) {
        if (s->ring_len == s->window) {
            count_down(s, s->ring[s->ring_next]);
        } else {
            s->ring_len++;
        }
        s->ring[s->ring_next] = token;
        s->ring_next = s->ring_next + 1 == s->window ? 0 : s->ring_next + 1;
    }
    count_up(s, token);
    return 0;
}

/* llama.cpp's penalties sampler, on the tokens of the window only. A -inf logit (a token
 * masked out) stays -inf, as it does there. */
static void apply_penalties(ctn_sampler *s, float *logits) {
    const float rep = s->p.repeat_penalty, freq = s->p.frequency_penalty;
    const float pres = s->p.presence_penalty;
    for (int32_t i = 0; i < s->n_seen; i++) {
        int32_t t = s->seen[i];
        float l = logits[t];
        if (l == -INFINITY) continue;
        l = l <= 0 ? l * rep : l / rep;
        logits[t] = l - ((float)s->count[t] * freq + pres);
    }
}

/* ---- selection ----------------------------------------------------------------------- */

/* True when a ranks below b: a lower logit (held in .p), or the same and a higher id. */
static inline bool below(const ctn_token_prob *a, const ctn_token_prob *b) {
    return a->p < b->p || (a->p == b->p && a->id > b->id);
}

/* The heaps below keep the lowest-ranked entry at the root, so that a new entry has to
 * beat only the root to get in. */
static void sift_down(ctn_token_prob *h, int32_t n, int32_t i) {
    ctn_token_prob x = h[i];
    for (;;) {
        int32_t c = 2 * i + 1;
        if (c >= n) break;
        if (c + 1 < n && below(&h[c + 1], &h[c])) c++;
        if (!below(&h[c], &x)) break;
        h[i] = h[c];
        i = c;
    }
    h[i] = x;
}

static void sift_up(ctn_token_prob *h, int32_t i) {
    ctn_token_prob x = h[i];
    while (i > 0) {
        int32_t parent = (i - 1) / 2;
        if (!below(&x, &h[parent])) break;
        h[i] = h[parent];
        i = parent;
    }
    h[i] = x;
}

/* Offers x to a heap h holding *n of at most k entries. */
static inline void offer(ctn_token_prob *h, int32_t *n, int32_t k, ctn_token_prob x) {
    if (*n < k) {
        h[*n] = x;
        sift_up(h, (*n)++);
    } else if (below(&h[0], &x)) {
        h[0] = x;
        sift_down(h, k, 0);
    }
}

/* Turns a heap into a list sorted best first: the lowest-ranked root goes to the end. */
static void heap_sort(ctn_token_prob *h, int32_t n) {
    for (int32_t e = n - 1; e > 0; e--) {
        ctn_token_prob t = h[0];
        h[0] = h[e];
        h[e] = t;
        sift_down(h, e, 0);
    }
}

static int cmp_best_first(const void *a, const void *b) {
    const ctn_token_prob *x = a, *y = b;
    return below(y, x) ? -1 : below(x, y) ? 1 : 0;
}

/* Length of the shortest prefix of c (sorted best first) whose mass, exp(l - max) / z,
 * reaches top_p; n when the whole list falls short (rounding, or min_p cut it first). */
static int32_t top_p_cut(const ctn_token_prob *c, int32_t n, float max, double z, float top_p) {
    double cum = 0, target = (double)top_p * z;
    for (int32_t i = 0; i < n; i++) {
        cum += expf(c[i].p - max);
        if (cum >= target) return i + 1;
    }
    return n;
}

/* Bucket of a logit l <= max: equal widths in max - l, the last bucket open-ended. */
static inline int32_t bucket_of(float l, float max) {
    float d = (max - l) * ((float)N_BUCKETS / BUCKET_RANGE);
    return d < (float)(N_BUCKETS - 1) ? (int32_t)d : N_BUCKETS - 1;
}

/* Moves the candidates of c[from, m) in buckets before b (below_b) or in bucket b to the
 * front of that range; returns the end of the moved ones. */
static int32_t partition(ctn_token_prob *c, int32_t from, int32_t m, float max, int32_t b,
                         bool below_b) {
    int32_t j = from;
    for (int32_t i = from; i < m; i++) {
        int32_t bi = bucket_of(c[i].p, max);
        if (below_b ? bi < b : bi == b) {
            ctn_token_prob t = c[j];
            c[j++] = c[i];
            c[i] = t;
        }
    }
    return j;
}

/*
 * top_p over m unsorted candidates without sorting them all (llama.cpp sorts them all when
 * its first 256 fall short, which on a flat distribution of 150k tokens costs more than the
 * rest of the step). The mass per logit bucket says in which bucket the running mass, taken
 * best first, reaches top_p; the buckets before it are kept whole and only the crossing
 * bucket is sorted to find the exact cut. The kept set is the one a full sort gives (up to
 * the rounding of the sums), grouped by bucket rather than sorted. O(m) plus the sort of
 * one bucket.
 */
static int32_t top_p_buckets(ctn_sampler *s, int32_t m, float max, double z, float top_p) {
    ctn_token_prob *c = s->cand;
    double *mass = s->bucket_mass;
    memset(mass, 0, sizeof s->bucket_mass);
    for (int32_t i = 0; i < m; i++)
        mass[bucket_of(c[i].p, max)] += expf(c[i].p - max);
    const double target = (double)top_p * z;
    double cum = 0;
    int32_t b = 0;
    while (b < N_BUCKETS - 1 && cum + mass[b] < target)
        cum += mass[b++];

    int32_t lo = partition(c, 0, m, max, b, true);
    int32_t hi = partition(c, lo, m, max, b, false);
    qsort(c + lo, (size_t)(hi - lo), sizeof *c, cmp_best_first);
    for (int32_t i = lo; i < hi; i++) {
        cum += expf(c[i].p - max);
        if (cum >= target) return i + 1;
    }
    /* Short only by rounding: go on into the later buckets. */
    qsort(c + hi, (size_t)(m - hi), sizeof *c, cmp_best_first);
    for (int32_t i = hi; i < m; i++) {
        cum += expf(c[i].p - max);
        if (cum >= target) return i + 1;
    }
    return m;
}

static int fail(ctn_sampler *s, int rc, const char *msg, int32_t id) {
    ctn__errf(s->errmsg, sizeof s->errmsg, msg, (int)id);
    return rc;
}

/*
 * Runs the chain up to the draw: leaves the candidates in s->cand[0, *n) with their
 * probabilities after temperature in .p. The argmax alone when temp <= 0.
 */
static int run_chain(ctn_sampler *s, float *logits, int32_t *n) {
    const ctn_sampler_params *p = &s->p;
    const int32_t nv = s->n_vocab;
    if (s->penalties) apply_penalties(s, logits);

    /* One scan: reject NaN and +inf, find the maximum (first index wins ties), count the
     * tokens that can be drawn at all, and gather the candidates: the top_k best in a
     * bounded heap, or every drawable token in id order. */
    ctn_token_prob *c = s->cand;
    const bool greedy = p->temp <= 0;
    const bool use_heap = !greedy && p->top_k > 0 && p->top_k < nv;
    const int32_t k = p->top_k;
    float max = -INFINITY;
    int32_t arg = -1, n_finite = 0, m = 0;
    for (int32_t i = 0; i < nv; i++) {
        float l = logits[i];
        if (l > -INFINITY) {
            if (l == INFINITY) return fail(s, CTN_ERANGE, "sampler: logit of token %d is +inf", i);
            n_finite++;
            if (l > max) max = l, arg = i;
            if (use_heap) {
                offer(c, &m, k, (ctn_token_prob){i, l});
            } else if (!greedy) {
                c[m++] = (ctn_token_prob){i, l};
            }
        } else if (isnan(l)) {
            return fail(s, CTN_ERANGE, "sampler: logit of token %d is NaN", i);
        }
    }
    if (arg < 0) return fail(s, CTN_ERANGE, "sampler: all %d logits are -inf", nv);
    if (greedy || n_finite == 1) {
        c[0] = (ctn_token_prob){arg, 1.0f};
        *n = 1;
        return 0;
    }
    /* With fewer drawable tokens than top_k the heap holds them all, which is top_k off. */
    bool sorted = use_heap;
    if (use_heap) heap_sort(c, m);

    /* top_p's normaliser is over the set that top_k left, as in llama.cpp. */
    double z = 0;
    bool use_top_p = p->top_p < 1;
    if (use_top_p) {
        for (int32_t i = 0; i < m; i++)
            z += expf(c[i].p - max);
    }

    if (p->min_p > 0) {
        const float thr = max + logf(p->min_p);
        int32_t kept = 0;
        for (int32_t i = 0; i < m; i++) {
            if (c[i].p >= thr) c[kept++] = c[i];
        }
        m = kept; /* the maximum always passes */
    }

    if (use_top_p && m > 1) {
        if (sorted) {
            m = top_p_cut(c, m, max, z, p->top_p);
        } else if (m <= TOP_P_SORT) {
            qsort(c, (size_t)m, sizeof *c, cmp_best_first);
            m = top_p_cut(c, m, max, z, p->top_p);
        } else {
            m = top_p_buckets(s, m, max, z, p->top_p);
        }
    }

    /* Temperature, then the softmax. Dividing (rather than multiplying by 1 / temp) keeps
     * a denormal temperature from turning the maximum's 0 into NaN. */
    double sum = 0;
    for (int32_t i = 0; i < m; i++) {
        c[i].p = expf((c[i].p - max) / p->temp);
        sum += c[i].p;
    }
    const float inv_sum = (float)(1.0 / sum);
    for (int32_t i = 0; i < m; i++)
        c[i].p *= inv_sum;
    *n = m;
    return 0;
}

/* ---- sampling ------------------------------------------------------------------------ */

int ctn_sampler_candidates(ctn_sampler *s, float *logits, const ctn_token_prob **cand, int32_t *n) {
    if (logits == NULL || cand == NULL || n == NULL) {
        ctn__errf(s->errmsg, sizeof s->errmsg, "sampler: NULL argument");
        return CTN_EINVAL;
    }
    int rc = run_chain(s, logits, n);
    *cand = rc < 0 ? NULL : s->cand;
    if (rc < 0) *n = 0;
    return rc;
}

int ctn_sampler_sample(ctn_sampler *s, float *logits, int32_t *token) {
    if (logits == NULL || token == NULL) {
        ctn__errf(s->errmsg, sizeof s->errmsg, "sampler: NULL argument");
        return CTN_EINVAL;
    }
    int32_t m;
    int rc = run_chain(s, logits, &m);
    if (rc < 0) return rc;
    const ctn_token_prob *c = s->cand;
    if (s->p.temp <= 0) {
        *token = c[0].id;
        return 0;
    }
    /* The probabilities as stored sum to 1 only up to rounding: draw against their sum. */
    double total = 0;
    for (int32_t i = 0; i < m; i++)
        total += c[i].p;
    double target = rng_uniform(s->rng) * total, acc = 0;
    int32_t pick = 0;
    for (int32_t i = 0; i < m; i++) {
        if (c[i].p > 0) pick = i;
        acc += c[i].p;
        if (acc > target) break;
    }
    *token = c[pick].id;
    return 0;
}
