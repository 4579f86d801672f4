/*
 * Log-probabilities of generated tokens (ctn_gen_request.logprobs, top_logprobs): each
 * token's value and its top alternatives equal a log-softmax computed here from the scalar
 * reference forward pass (tests/ref) over the same tokens; they are the raw distribution's
 * (the same whatever the temperature and penalties, vLLM's default "raw_logprobs"); the
 * alternatives are the most likely tokens, sorted, and the sampled token has its value also
 * when it is not among them; the values are bit for bit the same alone and in a batch with
 * other requests; a request without logprobs gets the same tokens and no values; bad
 * top_logprobs are refused with a reason.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "gen.h"
#include "model.h"
#include "randmodel.h"
#include "ref_forward.h"
#include "test.h"

static const randmodel_shape SHAPE = {
    CTN_TYPE_F32, 64, 4, 2, 128, 2, false, 200, 10000, 1e-5f, 61, RANDMODEL_LLAMA, 0};

enum { V = 200, MAXT = 12 };

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    char path[256];
} loaded;

static int load(loaded *L) {
    char err[512];
    const char *tmp = getenv("TMPDIR");
    memset(L, 0, sizeof *L);
    snprintf(L->path, sizeof L->path, "%s/test_gen_logprobs-%d.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid());
    if (randmodel_write(&SHAPE, false, L->path, err, sizeof err) < 0 ||
        ctn_gguf_open(&L->g, L->path, err, sizeof err) < 0 ||
        ctn_model_load(&L->m, L->g, err, sizeof err) < 0) {
        printf("  %s: %s\n", L->path, err);
        return -1;
    }
    return 0;
}

static void unload(loaded *L) {
    ctn_model_free(L->m);
    ctn_gguf_free(L->g);
    unlink(L->path);
}

/* What a request got: per token its id, value and alternatives. */
typedef struct {
    int done;
    ctn_finish finish;
    int n;
    int32_t tok[MAXT];
    bool has[MAXT];
    double lp[MAXT];
    int n_top[MAXT];
    ctn_gen_logprob top[MAXT][CTN_GEN_MAX_TOP_LOGPROBS];
    bool top_null[MAXT];
} out_t;

static void on_token(void *ud, const ctn_gen_token *t) {
    out_t *o = ud;
    if (o->n >= MAXT) return;
    const int i = o->n++;
    o->tok[i] = t->token;
    o->has[i] = t->has_logprob;
    o->lp[i] = t->logprob;
    o->n_top[i] = t->n_top;
    o->top_null[i] = t->top == NULL;
    for (int k = 0; k < t->n_top && k < CTN_GEN_MAX_TOP_LOGPROBS; k++)
        o->top[i][k] = t->top[k];
}

static void on_done(void *ud, int64_t id, const ctn_gen_result *r) {
    out_t *o = ud;
    o->done++;
    o->finish = r->finish;
    if (r->finish == CTN_FINISH_ERROR) printf("  request %lld: %s\n", (long long)id, r->error);
}

static ctn_gen *engine(const loaded *L) {
    ctn_gen_params p = {0};
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 128;
    p.fwd.kv_f32 = true;  /* the reference keeps F32 keys and values */
    p.fwd.f32_act = true; /* and multiplies F32 activations */
    p.manual = true;
    ctn_gen *e = NULL;
    char err[512];
    if (ctn_gen_new(&e, L->m, NULL, &p, err, sizeof err) < 0) printf("  engine: %s\n", err);
    return e;
}

typedef struct {
    const int32_t *toks;
    int n;
    int max_tokens;
    bool logprobs;
    int top;
    ctn_sampler_params smp;
} req_t;

static req_t greedy(const int32_t *toks, int n, int max_tokens, bool logprobs, int top) {
    req_t q = {toks, n, max_tokens, logprobs, top, ctn_sampler_params_default()};
    q.smp.temp = 0;
    return q;
}

static int64_t submit(ctn_gen *e, const req_t *q, out_t *o) {
    ctn_gen_request r = ctn_gen_request_default();
    r.prompt_ids = q->toks;
    r.n_prompt_ids = q->n;
    r.max_tokens = q->max_tokens;
    r.sampling = q->smp;
    r.logprobs = q->logprobs;
    r.top_logprobs = q->top;
    r.on_token = on_token;
    r.on_done = on_done;
    r.ud = o;
    char err[256];
    const int64_t id = ctn_gen_submit(e, &r, err, sizeof err);
    if (id < 0) printf("  submit: %s\n", err);
    return id;
}

static void run(ctn_gen *e) {
    for (int guard = 0; guard < 100000 && ctn_gen_step(e, NULL) != 0; guard++) {
    }
}

/*
 * The reference: the prompt and then the generated tokens through the scalar forward pass,
 * one position at a time; ref[i] is the log-softmax, in long double, of the logits that
 * predicted generated token i.
 */
static int reference(const loaded *L, const int32_t *prompt, int n, const out_t *o,
                     double (*ref)[V]) {
    ctn_ref_state st;
    if (ctn_ref_state_init(&st, L->m, 128) < 0) return -1;
    float row[V];
    int rc = 0;
    int64_t pos = 0;
    for (int i = 0; i < n && rc == 0; i++)
        rc = ctn_ref_forward(L->m, &st, prompt[i], pos++, row);
    for (int t = 0; t < o->n && rc == 0; t++) {
        long double sum = 0;
        for (int v = 0; v < V; v++)
            sum += expl((long double)row[v]);
        for (int v = 0; v < V; v++)
            ref[t][v] = (double)((long double)row[v] - logl(sum));
        if (t + 1 < o->n) rc = ctn_ref_forward(L->m, &st, o->tok[t], pos++, row);
    }
    if (rc < 0) printf("  reference: %s\n", ctn_ref_state_errmsg(&st));
    ctn_ref_state_close(&st);
    return rc;
}

/* The largest difference between what o got and the reference, alternatives included;
 * INFINITY when a token lacks its value or its alternatives are not the reference's k most
 * likely in order. */
static double check_against(const out_t *o, double (*ref)[V], int k) {
    double worst = 0;
    for (int t = 0; t < o->n; t++) {
        if (!o->has[t] || o->n_top[t] != k || (k > 0 && o->top_null[t])) return INFINITY;
        double d = fabs(o->lp[t] - ref[t][o->tok[t]]);
        if (!(d <= worst)) worst = d;
        bool seen[V] = {false};
        for (int i = 0; i < k; i++) {
            const ctn_gen_logprob *a = &o->top[t][i];
            if (a->token < 0 || a->token >= V || seen[a->token]) return INFINITY;
            seen[a->token] = true;
            if (i > 0 && a->logprob > o->top[t][i - 1].logprob) return INFINITY; /* sorted */
            d = fabs(a->logprob - ref[t][a->token]);
            if (!(d <= worst)) worst = d;
            /* ... and no token left out is more likely than the k-th kept (beyond the
             * tolerance, for near ties). */
            if (i == k - 1)
                for (int v = 0; v < V; v++)
                    if (!seen[v] && ref[t][v] > ref[t][a->token] + 1e-5) return INFINITY;
        }
        /* The sampled token is among the alternatives when it is at least as likely. */
        if (k > 0 && o->lp[t] > o->top[t][k - 1].logprob + 1e-9) {
            bool in = false;
            for (int i = 0; i < k; i++)
                in |= o->top[t][i].token == o->tok[t];
            if (!in) return INFINITY;
        }
    }
    return worst;
}

enum { NP = 6, PLEN = 24 };
static int32_t PROMPTS[NP][PLEN];
static int LENS[NP];

static void setup(void) {
    uint64_t s = 11;
    for (int i = 0; i < NP; i++) {
        LENS[i] = 2 + (int)(rng_next(&s) % (PLEN - 2));
        for (int j = 0; j < LENS[i]; j++)
            PROMPTS[i][j] = (int32_t)(rng_next(&s) % V);
    }
}

/* Greedy, alone, 0 / 1 / 5 / 20 alternatives: the reference's values within 1e-5, the
 * greedy token first among the alternatives. */
TEST(logprobs_equal_a_log_softmax) {
    loaded L;
    CHECK(load(&L) == 0);
    setup();
    static double ref[MAXT][V];
    const int ks[] = {0, 1, 5, 20};
    for (int i = 0; i < NP; i++)
        for (int ki = 0; ki < 4; ki++) {
            const int k = ks[ki];
            ctn_gen *e = engine(&L);
            out_t o = {0};
            const req_t q = greedy(PROMPTS[i], LENS[i], 8, true, k);
            CHECK(submit(e, &q, &o) > 0);
            run(e);
            ctn_gen_free(e);
            CHECK_EQ_INT(o.done, 1);
            CHECK_EQ_INT(o.n, 8);
            CHECK(reference(&L, PROMPTS[i], LENS[i], &o, ref) == 0);
            const double d = check_against(&o, ref, k);
            if (!(d < 1e-5)) printf("  prompt %d, top %d: off by %g\n", i, k, d);
            CHECK(d < 1e-5);
            for (int t = 0; t < o.n; t++) {
                CHECK(o.lp[t] <= 0);
                if (k > 0) CHECK_EQ_INT(o.top[t][0].token, o.tok[t]);
            }
        }
    unload(&L);
}

/* Hot sampling with penalties: tokens other than the most likely are drawn, and their values
 * (outside a top list of 1) are still the raw model's, not the tempered or penalised ones. */
TEST(logprobs_are_raw) {
    loaded L;
    CHECK(load(&L) == 0);
    setup();
    static double ref[MAXT][V];
    int outside = 0;
    for (int i = 0; i < NP; i++) {
        ctn_gen *e = engine(&L);
        out_t o = {0};
        req_t q = greedy(PROMPTS[i], LENS[i], MAXT, true, 1);
        q.smp.temp = 4.0f;
        q.smp.top_k = 0;
        q.smp.top_p = 1.0f;
        q.smp.min_p = 0;
        q.smp.repeat_penalty = 1.5f;
        q.smp.frequency_penalty = 0.5f;
        q.smp.presence_penalty = 0.5f;
        q.smp.seed = 100 + (uint64_t)i;
        CHECK(submit(e, &q, &o) > 0);
        run(e);
        ctn_gen_free(e);
        CHECK_EQ_INT(o.n, MAXT);
        CHECK(reference(&L, PROMPTS[i], LENS[i], &o, ref) == 0);
        const double d = check_against(&o, ref, 1);
        if (!(d < 1e-5)) printf("  prompt %d: off by %g\n", i, d);
        CHECK(d < 1e-5);
        for (int t = 0; t < o.n; t++)
            outside += o.top[t][0].token != o.tok[t];
    }
    printf("  %d of %d sampled tokens outside the top 1\n", outside, NP * MAXT);
    CHECK(outside > NP);
    unload(&L);
}

static bool same(const out_t *a, const out_t *b) {
    if (a->n != b->n) return false;
    for (int t = 0; t < a->n; t++) {
        if (a->tok[t] != b->tok[t] || a->has[t] != b->has[t] || a->lp[t] != b->lp[t] ||
            a->n_top[t] != b->n_top[t])
            return false;
        for (int k = 0; k < a->n_top[t]; k++)
            if (a->top[t][k].token != b->top[t][k].token ||
                a->top[t][k].logprob != b->top[t][k].logprob)
                return false;
    }
    return true;
}

/* Each request alone, then all together with neighbours that ask for other things (no
 * logprobs, other alternatives, hot sampling): bit for bit the same values and tokens. */
TEST(logprobs_batch_invariant) {
    loaded L;
    CHECK(load(&L) == 0);
    setup();
    static out_t alone[NP], together[NP], other[NP];
    for (int i = 0; i < NP; i++) {
        ctn_gen *e = engine(&L);
        const req_t q = greedy(PROMPTS[i], LENS[i], 10, true, 3 + i);
        memset(&alone[i], 0, sizeof alone[i]);
        CHECK(submit(e, &q, &alone[i]) > 0);
        run(e);
        ctn_gen_free(e);
    }
    ctn_gen *e = engine(&L);
    memset(together, 0, sizeof together);
    memset(other, 0, sizeof other);
    for (int i = 0; i < NP; i++) {
        const int j = (i + 1) % NP;
        req_t n = greedy(PROMPTS[j], LENS[j], 10, i % 2 == 0, i % 2 == 0 ? 20 : 0);
        n.smp.temp = 1.5f;
        n.smp.seed = (uint64_t)i;
        CHECK(submit(e, &n, &other[i]) > 0);
        const req_t q = greedy(PROMPTS[i], LENS[i], 10, true, 3 + i);
        CHECK(submit(e, &q, &together[i]) > 0);
    }
    int max_seqs = 0;
    ctn_gen_step_info in;
    for (int guard = 0; guard < 1000 && ctn_gen_step(e, &in) > 0; guard++)
        if (in.n_seqs > max_seqs) max_seqs = in.n_seqs;
    ctn_gen_free(e);
    CHECK(max_seqs >= NP);
    for (int i = 0; i < NP; i++) {
        CHECK_EQ_INT(together[i].done, 1);
        CHECK_EQ_INT(together[i].n, 10);
        if (!same(&alone[i], &together[i])) printf("  request %d differs in a batch\n", i);
        CHECK(same(&alone[i], &together[i]));
    }
    unload(&L);
}

/* Without logprobs: the same tokens, greedy and sampled, and no values. */
TEST(no_logprobs_same_tokens) {
    loaded L;
    CHECK(load(&L) == 0);
    setup();
    for (int i = 0; i < NP; i++)
        for (int hot = 0; hot < 2; hot++) {
            out_t with = {0}, without = {0};
            for (int w = 0; w < 2; w++) {
                ctn_gen *e = engine(&L);
                req_t q = greedy(PROMPTS[i], LENS[i], 10, w == 0, w == 0 ? 4 : 0);
                if (hot) {
                    q.smp.temp = 2.0f;
                    q.smp.seed = 5 + (uint64_t)i;
                    q.smp.repeat_penalty = 1.3f;
                }
                CHECK(submit(e, &q, w == 0 ? &with : &without) > 0);
                run(e);
                ctn_gen_free(e);
            }
            CHECK_EQ_INT(with.n, 10);
            CHECK_EQ_INT(without.n, 10);
            for (int t = 0; t < 10; t++) {
                CHECK_EQ_INT(with.tok[t], without.tok[t]);
                CHECK(with.has[t] && !without.has[t]);
                CHECK(without.n_top[t] == 0 && without.top_null[t] && without.lp[t] == 0);
            }
        }
    unload(&L);
}

/* top_logprobs outside 0..20, without logprobs, or logprobs on an embedding: refused. */
TEST(bad_requests) {
    loaded L;
    CHECK(load(&L) == 0);
    ctn_gen *e = engine(&L);
    const int32_t toks[] = {1, 2, 3};
    char err[256];
    struct {
        bool logprobs;
        int top, pooling;
        const char *why;
    } bad[] = {{true, 21, CTN_POOL_NONE, "top_logprobs is 21 (0 to 20"},
               {true, -1, CTN_POOL_NONE, "top_logprobs is -1"},
               {false, 2, CTN_POOL_NONE, "logprobs is off"},
               {true, 0, CTN_POOL_MEAN, "embedding"}};
    for (size_t i = 0; i < sizeof bad / sizeof bad[0]; i++) {
        ctn_gen_request r = ctn_gen_request_default();
        r.prompt_ids = toks;
        r.n_prompt_ids = 3;
        r.logprobs = bad[i].logprobs;
        r.top_logprobs = bad[i].top;
        r.pooling = bad[i].pooling;
        err[0] = '\0';
        CHECK_EQ_INT((int)ctn_gen_submit(e, &r, err, sizeof err), CTN_EINVAL);
        CHECK_CONTAINS(err, bad[i].why);
    }
    /* The edges are accepted. */
    for (int top = 0; top <= 20; top += 20) {
        out_t o = {0};
        const req_t q = greedy(toks, 3, 2, true, top);
        CHECK(submit(e, &q, &o) > 0);
        run(e);
        CHECK_EQ_INT(o.n, 2);
        CHECK_EQ_INT(o.n_top[0], top);
    }
    ctn_gen_free(e);
    unload(&L);
}

int main(void) {
    RUN(logprobs_equal_a_log_softmax);
    RUN(logprobs_are_raw);
    RUN(logprobs_batch_invariant);
    RUN(no_logprobs_same_tokens);
    RUN(bad_requests);
    return test_summary();
}
