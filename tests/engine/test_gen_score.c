/*
 * Scoring candidate tokens after a prompt (ctn_gen_request.score_ids, engine/gen.c): the
 * engine's log-probabilities equal a log-softmax computed here from one plain forward pass
 * (forward.h) over the same prompt; the same when many scoring requests run in the steps of
 * generating ones, when the prompt's prefix (or all of it) is in the prefix cache, and when
 * the prompt is a session's history; the best-scored candidate is the greedy token; bad
 * candidate lists are refused with a reason.
 *
 * Log-probabilities of generated tokens (ctn_gen_request.logprobs, top_logprobs), which share
 * the scores' log-softmax: each token's value and its top alternatives equal a log-softmax
 * computed here from the scalar reference forward pass (tests/ref) over the same tokens; they
 * are the raw distribution's (the same whatever the temperature and penalties, vLLM's default
 * "raw_logprobs"); the alternatives are the most likely tokens, sorted, and the sampled token
 * has its value also when it is not among them; the values are bit for bit the same alone and
 * in a batch with other requests; a request without logprobs gets the same tokens and no
 * values; bad top_logprobs are refused with a reason.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h" /* ctn__alloc_fail_after */
#include "error.h"
#include "forward.h"
#include "gen.h"
#include "model.h"
#include "randmodel.h"
#include "ref_forward.h"
#include "test.h"

static const randmodel_shape SHAPE = {
    CTN_TYPE_F32, 64, 4, 2, 128, 2, false, 200, 10000, 1e-5f, 61, RANDMODEL_LLAMA, 0};

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    char path[256];
} loaded;

static int load(loaded *L) {
    char err[512];
    const char *tmp = getenv("TMPDIR");
    memset(L, 0, sizeof *L);
    snprintf(L->path, sizeof L->path, "%s/test_gen_score-%d.gguf", tmp && *tmp ? tmp : "/tmp",
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

/* The reference: the prompt in one forward pass of its own, the log-softmax of the last
 * position's logits in long double, without the max subtracted (the logits are small). */
static int reference(const loaded *L, const int32_t *toks, int n, double *logp, int32_t *argmax) {
    char err[512];
    ctn_fwd *f;
    if (ctn_fwd_new(&f, L->m, &(ctn_fwd_params){.n_threads = 1, .n_ctx = 128}, err, sizeof err) <
        0) {
        printf("  %s\n", err);
        return -1;
    }
    const int64_t V = L->m->hp.n_vocab;
    float *row = malloc((size_t)V * sizeof *row);
    ctn_kv_seq s;
    int rc = row != NULL ? ctn_fwd_seq_init(f, &s) : -1;
    if (rc == 0) {
        ctn_fwd_seg seg = {.seq = &s, .tokens = toks, .n_tokens = n, .logits = true};
        rc = ctn_fwd_run(f, &seg, 1, row);
        if (rc < 0) printf("  %s\n", ctn_fwd_errmsg(f));
        ctn_fwd_seq_close(f, &s);
    }
    if (rc == 0) {
        long double sum = 0;
        for (int64_t v = 0; v < V; v++)
            sum += expl((long double)row[v]);
        *argmax = 0;
        for (int64_t v = 0; v < V; v++) {
            logp[v] = (double)((long double)row[v] - logl(sum));
            if (row[v] > row[*argmax]) *argmax = (int32_t)v;
        }
    }
    free(row);
    ctn_fwd_free(f);
    return rc;
}

typedef struct {
    int done;
    ctn_finish finish;
    int n_scores;
    double scores[CTN_GEN_MAX_SCORE_IDS];
    int n_tok;
    int32_t first;
    int64_t cached;
} out_t;

static void on_token(void *ud, const ctn_gen_token *t) {
    out_t *o = ud;
    if (o->n_tok++ == 0) o->first = t->token;
}

static bool QUIET; /* failures expected (the allocation-failure loop) are not printed */

static void on_done(void *ud, int64_t id, const ctn_gen_result *r) {
    out_t *o = ud;
    o->done++;
    o->finish = r->finish;
    o->n_scores = r->n_scores;
    o->cached = r->cached_tokens;
    if (r->finish == CTN_FINISH_ERROR && !QUIET) printf("  request %lld: %s\n", (long long)id, r->error);
    for (int i = 0; i < r->n_scores && i < CTN_GEN_MAX_SCORE_IDS; i++)
        o->scores[i] = r->scores[i];
}

static ctn_gen *engine(const loaded *L, bool cache) {
    ctn_gen_params p = {0};
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 128;
    p.manual = true;
    p.no_prefix_cache = !cache;
    ctn_gen *e = NULL;
    char err[512];
    if (ctn_gen_new(&e, L->m, NULL, &p, err, sizeof err) < 0) printf("  engine: %s\n", err);
    return e;
}

static int64_t submit(ctn_gen *e, const int32_t *toks, int n, const int32_t *ids, int n_ids,
                      int64_t max_tokens, int64_t session, out_t *o) {
    ctn_gen_request q = ctn_gen_request_default();
    q.prompt_ids = n > 0 ? toks : NULL;
    q.n_prompt_ids = n;
    q.max_tokens = max_tokens;
    q.score_ids = ids;
    q.n_score_ids = n_ids;
    q.session = session;
    q.on_token = on_token;
    q.on_done = on_done;
    q.ud = o;
    char err[256];
    const int64_t id = ctn_gen_submit(e, &q, err, sizeof err);
    if (id < 0) printf("  submit: %s\n", err);
    return id;
}

static void run(ctn_gen *e) {
    for (int guard = 0; guard < 100000 && ctn_gen_step(e, NULL) != 0; guard++) {
    }
}

/* The largest difference between the engine's scores and the reference's. */
static double max_err(const out_t *o, const double *ref, const int32_t *ids, int n) {
    double worst = o->n_scores == n ? 0 : INFINITY;
    for (int i = 0; i < n && o->n_scores == n; i++) {
        const double d = fabs(o->scores[i] - ref[ids[i]]);
        if (!(d <= worst)) worst = d; /* NaN too */
    }
    return worst;
}

enum { NP = 12, PLEN = 40, NC = 5 };
static int32_t PROMPTS[NP][PLEN];
static int LENS[NP];
static double REF[NP][200];
static int32_t ARGMAX[NP];
static int32_t CANDS[NP][NC];

static int setup(loaded *L) {
    uint64_t s = 7;
    for (int i = 0; i < NP; i++) {
        LENS[i] = 1 + (int)(rng_next(&s) % PLEN);
        for (int j = 0; j < LENS[i]; j++)
            PROMPTS[i][j] = (int32_t)(rng_next(&s) % 200);
        if (reference(L, PROMPTS[i], LENS[i], REF[i], &ARGMAX[i]) < 0) return -1;
        for (int c = 0; c < NC - 1; c++)
            CANDS[i][c] = (int32_t)(rng_next(&s) % 200);
        CANDS[i][NC - 1] = ARGMAX[i];
    }
    return 0;
}

/* Alone, prompt only (max_tokens 0): the reference's log-probabilities, and no tokens. */
TEST(scores_equal_a_log_softmax) {
    loaded L;
    CHECK(load(&L) == 0);
    CHECK(setup(&L) == 0);
    for (int i = 0; i < NP; i++) {
        ctn_gen *e = engine(&L, false);
        out_t o = {0};
        CHECK(submit(e, PROMPTS[i], LENS[i], CANDS[i], NC, 0, 0, &o) > 0);
        run(e);
        CHECK_EQ_INT(o.done, 1);
        CHECK_EQ_INT(o.finish, CTN_FINISH_LENGTH);
        CHECK_EQ_INT(o.n_tok, 0);
        CHECK_EQ_INT(o.n_scores, NC);
        const double d = max_err(&o, REF[i], CANDS[i], NC);
        if (!(d < 1e-6)) printf("  prompt %d: scores differ by %g\n", i, d);
        CHECK(d < 1e-6);
        /* The argmax candidate has the highest score. */
        for (int c = 0; c < NC - 1; c++)
            CHECK(o.scores[NC - 1] >= o.scores[c]);
        ctn_gen_free(e);
    }
    unload(&L);
}

/* Scores on a generating request (greedy): the first token is the best candidate, and the
 * scores are those of the position before it. */
TEST(scores_before_generating) {
    loaded L;
    CHECK(load(&L) == 0);
    CHECK(setup(&L) == 0);
    ctn_gen *e = engine(&L, false);
    out_t o = {0};
    CHECK(submit(e, PROMPTS[0], LENS[0], CANDS[0], NC, 3, 0, &o) > 0);
    run(e);
    CHECK_EQ_INT(o.done, 1);
    CHECK_EQ_INT(o.n_tok, 3);
    CHECK_EQ_INT(o.first, ARGMAX[0]);
    CHECK(max_err(&o, REF[0], CANDS[0], NC) < 1e-6);
    ctn_gen_free(e);
    unload(&L);
}

/* Every scoring request at once, between generating requests, through the prefix cache:
 * the same scores, in steps shared with the generations. */
TEST(scores_in_a_batch) {
    loaded L;
    CHECK(load(&L) == 0);
    CHECK(setup(&L) == 0);
    for (int cache = 0; cache < 2; cache++) {
        ctn_gen *e = engine(&L, cache);
        static out_t sc[NP], gen[NP];
        memset(sc, 0, sizeof sc);
        memset(gen, 0, sizeof gen);
        bool scoring[2 * NP + 2] = {false}; /* by request id */
        for (int i = 0; i < NP; i++) {
            const int j = (i + 5) % NP;
            CHECK(submit(e, PROMPTS[i], LENS[i], NULL, 0, 6, 0, &gen[i]) > 0);
            const int64_t id = submit(e, PROMPTS[j], LENS[j], CANDS[j], NC, 0, 0, &sc[j]);
            CHECK(id > 0 && id <= 2 * NP);
            if (id > 0 && id <= 2 * NP) scoring[id] = true;
        }
        /* Steps that computed scoring and generating requests together. */
        int mixed = 0;
        ctn_gen_step_info in;
        for (int guard = 0; guard < 1000 && ctn_gen_step(e, &in) > 0; guard++) {
            int n_sc = 0;
            for (int k = 0; k < in.n_seqs; k++)
                n_sc += in.ids[k] > 0 && in.ids[k] <= 2 * NP && scoring[in.ids[k]];
            if (n_sc > 1 && n_sc < in.n_seqs) mixed++;
        }
        CHECK(mixed > 0);
        for (int i = 0; i < NP; i++) {
            CHECK_EQ_INT(sc[i].done, 1);
            CHECK_EQ_INT(gen[i].done, 1);
            CHECK_EQ_INT(gen[i].n_tok, 6);
            CHECK_EQ_INT(gen[i].first, ARGMAX[i]);
            const double d = max_err(&sc[i], REF[i], CANDS[i], NC);
            if (!(d < 1e-6)) printf("  cache %d, prompt %d: scores differ by %g\n", cache, i, d);
            CHECK(d < 1e-6);
        }
        ctn_gen_free(e);
    }
    unload(&L);
}

/* A prompt whose blocks are all cached (33 tokens: two full blocks, and again exactly two
 * blocks' worth, 32 tokens) is scored from its recomputed last position; so is a prompt
 * that is all a session's history. */
TEST(scores_of_a_cached_prompt) {
    loaded L;
    CHECK(load(&L) == 0);
    int32_t toks[40];
    uint64_t s = 99;
    for (int j = 0; j < 40; j++)
        toks[j] = (int32_t)(rng_next(&s) % 200);
    const int32_t ids[3] = {5, 17, 199};
    const int lens[2] = {33, 32};
    for (int k = 0; k < 2; k++) {
        double ref[200];
        int32_t am;
        CHECK(reference(&L, toks, lens[k], ref, &am) == 0);
        ctn_gen *e = engine(&L, true);
        out_t first = {0}, again = {0};
        CHECK(submit(e, toks, lens[k], ids, 3, 0, 0, &first) > 0);
        run(e);
        CHECK(submit(e, toks, lens[k], ids, 3, 0, 0, &again) > 0);
        run(e);
        CHECK_EQ_INT((int)first.cached, 0);
        CHECK_EQ_INT((int)again.cached, k == 0 ? 32 : 16);
        CHECK(max_err(&first, ref, ids, 3) < 1e-6);
        CHECK(max_err(&again, ref, ids, 3) < 1e-6);
        /* A session filled by a prompt-only request, then scored with no prompt of its own. */
        const int64_t sess = ctn_gen_session_new(e);
        out_t fill = {0}, onsess = {0};
        CHECK(submit(e, toks, lens[k], NULL, 0, 0, sess, &fill) > 0);
        run(e);
        CHECK(submit(e, NULL, 0, ids, 3, 0, sess, &onsess) > 0);
        run(e);
        CHECK_EQ_INT(fill.n_scores, 0);
        CHECK_EQ_INT(onsess.done, 1);
        CHECK(max_err(&onsess, ref, ids, 3) < 1e-6);
        /* And again on the same session, whose history is now computed to its end. */
        out_t twice = {0};
        CHECK(submit(e, NULL, 0, ids, 3, 0, sess, &twice) > 0);
        run(e);
        CHECK(max_err(&twice, ref, ids, 3) < 1e-6);
        ctn_gen_free(e);
    }
    unload(&L);
}

TEST(bad_candidates) {
    loaded L;
    CHECK(load(&L) == 0);
    ctn_gen *e = engine(&L, true);
    const int32_t toks[3] = {1, 2, 3};
    int32_t many[CTN_GEN_MAX_SCORE_IDS + 1] = {0};
    char err[256];
    ctn_gen_request q = ctn_gen_request_default();
    q.prompt_ids = toks;
    q.n_prompt_ids = 3;
    q.max_tokens = 0;
    const int32_t outside[2] = {4, 200};
    q.score_ids = outside;
    q.n_score_ids = 2;
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "score id 1 is 200, outside the vocabulary of 200");
    const int32_t negative[1] = {-1};
    q.score_ids = negative;
    q.n_score_ids = 1;
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "score id 0 is -1");
    q.score_ids = many;
    q.n_score_ids = CTN_GEN_MAX_SCORE_IDS + 1;
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "n_score_ids is 65");
    q.score_ids = NULL;
    q.n_score_ids = 2;
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "score_ids is NULL");
    q.score_ids = many;
    q.n_score_ids = 2;
    q.pooling = CTN_POOL_MEAN;
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "embedding");
    /* The limit itself is accepted. */
    q.pooling = CTN_POOL_NONE;
    q.n_score_ids = CTN_GEN_MAX_SCORE_IDS;
    out_t o = {0};
    q.on_done = on_done;
    q.ud = &o;
    CHECK(ctn_gen_submit(e, &q, err, sizeof err) > 0);
    run(e);
    CHECK_EQ_INT(o.n_scores, CTN_GEN_MAX_SCORE_IDS);
    ctn_gen_free(e);
    unload(&L);
}

/* The N-th allocation fails (from the engine's start on): each case ends cleanly, with a
 * refused submission, or one on_done that has the right scores or CTN_ENOMEM's error; the
 * ASan copy checks that nothing leaks. */
TEST(allocation_failures) {
    loaded L;
    CHECK(load(&L) == 0);
    int32_t toks[20];
    for (int j = 0; j < 20; j++)
        toks[j] = (int32_t)(3 + j * 7 % 190);
    const int32_t ids[2] = {9, 77};
    double ref[200];
    int32_t am;
    CHECK(reference(&L, toks, 20, ref, &am) == 0);
    long n = 0;
    int refused = 0, failed = 0, scored = 0;
    QUIET = true;
    for (; n < 5000; n++) {
        ctn__alloc_fail_after = n;
        ctn_gen_params p = {0};
        p.fwd.n_threads = 1;
        p.fwd.n_ctx = 64;
        p.manual = true;
        p.admit_timeout_s = 0.001;
        ctn_gen *e = NULL;
        char err[256];
        if (ctn_gen_new(&e, L.m, NULL, &p, err, sizeof err) < 0) {
            ctn__alloc_fail_after = -1;
            continue;
        }
        out_t o = {0};
        ctn_gen_request q = ctn_gen_request_default();
        q.prompt_ids = toks;
        q.n_prompt_ids = 20;
        q.max_tokens = 0;
        q.score_ids = ids;
        q.n_score_ids = 2;
        q.on_done = on_done;
        q.ud = &o;
        const int64_t id = ctn_gen_submit(e, &q, err, sizeof err);
        if (id < 0) {
            CHECK_EQ_INT((int)id, CTN_ENOMEM);
            refused++;
        }
        for (int guard = 0; guard < 20000 && id > 0 && o.done == 0; guard++)
            if (ctn_gen_step(e, NULL) == 0) {
                const struct timespec us = {0, 200000};
                nanosleep(&us, NULL);
            }
        const bool untouched = ctn__alloc_fail_after > 0;
        ctn__alloc_fail_after = -1;
        ctn_gen_free(e);
        if (id > 0) {
            CHECK_EQ_INT(o.done, 1);
            if (o.finish == CTN_FINISH_ERROR) {
                failed++;
            } else {
                CHECK(max_err(&o, ref, ids, 2) < 1e-6);
                scored++;
            }
        }
        if (untouched) break;
    }
    QUIET = false;
    printf("  %ld allocations: %d submissions refused, %d requests failed, %d scored\n", n,
           refused, failed, scored);
    CHECK(n > 5 && n < 5000 && refused > 0 && scored > 0);
    unload(&L);
}

/* ---- logprobs of generated tokens ---------------------------------------------------------- */

enum { LP_V = 200, LP_T = 12 };

/* What a request got: per token its id, value and alternatives. */
typedef struct {
    int done;
    ctn_finish finish;
    int n;
    int32_t tok[LP_T];
    bool has[LP_T];
    double lp[LP_T];
    int n_top[LP_T];
    ctn_gen_logprob top[LP_T][CTN_GEN_MAX_TOP_LOGPROBS];
    bool top_null[LP_T];
} lp_out;

static void lp_on_token(void *ud, const ctn_gen_token *t) {
    lp_out *o = ud;
    if (o->n >= LP_T) return;
    const int i = o->n++;
    o->tok[i] = t->token;
    o->has[i] = t->has_logprob;
    o->lp[i] = t->logprob;
    o->n_top[i] = t->n_top;
    o->top_null[i] = t->top == NULL;
    for (int k = 0; k < t->n_top && k < CTN_GEN_MAX_TOP_LOGPROBS; k++)
        o->top[i][k] = t->top[k];
}

static void lp_on_done(void *ud, int64_t id, const ctn_gen_result *r) {
    lp_out *o = ud;
    o->done++;
    o->finish = r->finish;
    if (r->finish == CTN_FINISH_ERROR) printf("  request %lld: %s\n", (long long)id, r->error);
}

static ctn_gen *lp_engine(const loaded *L) {
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

static int64_t lp_submit(ctn_gen *e, const req_t *q, lp_out *o) {
    ctn_gen_request r = ctn_gen_request_default();
    r.prompt_ids = q->toks;
    r.n_prompt_ids = q->n;
    r.max_tokens = q->max_tokens;
    r.sampling = q->smp;
    r.logprobs = q->logprobs;
    r.top_logprobs = q->top;
    r.on_token = lp_on_token;
    r.on_done = lp_on_done;
    r.ud = o;
    char err[256];
    const int64_t id = ctn_gen_submit(e, &r, err, sizeof err);
    if (id < 0) printf("  submit: %s\n", err);
    return id;
}

/*
 * The reference for logprobs: the prompt and then the generated tokens through the scalar
 * forward pass, one position at a time; ref[i] is the log-softmax, in long double, of the
 * logits that predicted generated token i.
 */
static int lp_reference(const loaded *L, const int32_t *prompt, int n, const lp_out *o,
                        double (*ref)[LP_V]) {
    ctn_ref_state st;
    if (ctn_ref_state_init(&st, L->m, 128) < 0) return -1;
    float row[LP_V];
    int rc = 0;
    int64_t pos = 0;
    for (int i = 0; i < n && rc == 0; i++)
        rc = ctn_ref_forward(L->m, &st, prompt[i], pos++, row);
    for (int t = 0; t < o->n && rc == 0; t++) {
        long double sum = 0;
        for (int v = 0; v < LP_V; v++)
            sum += expl((long double)row[v]);
        for (int v = 0; v < LP_V; v++)
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
static double check_against(const lp_out *o, double (*ref)[LP_V], int k) {
    double worst = 0;
    for (int t = 0; t < o->n; t++) {
        if (!o->has[t] || o->n_top[t] != k || (k > 0 && o->top_null[t])) return INFINITY;
        double d = fabs(o->lp[t] - ref[t][o->tok[t]]);
        if (!(d <= worst)) worst = d;
        bool seen[LP_V] = {false};
        for (int i = 0; i < k; i++) {
            const ctn_gen_logprob *a = &o->top[t][i];
            if (a->token < 0 || a->token >= LP_V || seen[a->token]) return INFINITY;
            seen[a->token] = true;
            if (i > 0 && a->logprob > o->top[t][i - 1].logprob) return INFINITY; /* sorted */
            d = fabs(a->logprob - ref[t][a->token]);
            if (!(d <= worst)) worst = d;
            /* ... and no token left out is more likely than the k-th kept (beyond the
             * tolerance, for near ties). */
            if (i == k - 1)
                for (int v = 0; v < LP_V; v++)
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

enum { LP_NP = 6, LP_PLEN = 24 };
static int32_t LP_PROMPTS[LP_NP][LP_PLEN];
static int LP_LENS[LP_NP];

static void lp_setup(void) {
    uint64_t s = 11;
    for (int i = 0; i < LP_NP; i++) {
        LP_LENS[i] = 2 + (int)(rng_next(&s) % (LP_PLEN - 2));
        for (int j = 0; j < LP_LENS[i]; j++)
            LP_PROMPTS[i][j] = (int32_t)(rng_next(&s) % LP_V);
    }
}

/* Greedy, alone, 0 / 1 / 5 / 20 alternatives: the reference's values within 1e-5, the
 * greedy token first among the alternatives. */
TEST(logprobs_equal_a_log_softmax) {
    loaded L;
    CHECK(load(&L) == 0);
    lp_setup();
    static double ref[LP_T][LP_V];
    const int ks[] = {0, 1, 5, 20};
    for (int i = 0; i < LP_NP; i++)
        for (int ki = 0; ki < 4; ki++) {
            const int k = ks[ki];
            ctn_gen *e = lp_engine(&L);
            lp_out o = {0};
            const req_t q = greedy(LP_PROMPTS[i], LP_LENS[i], 8, true, k);
            CHECK(lp_submit(e, &q, &o) > 0);
            run(e);
            ctn_gen_free(e);
            CHECK_EQ_INT(o.done, 1);
            CHECK_EQ_INT(o.n, 8);
            CHECK(lp_reference(&L, LP_PROMPTS[i], LP_LENS[i], &o, ref) == 0);
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
    lp_setup();
    static double ref[LP_T][LP_V];
    int outside = 0;
    for (int i = 0; i < LP_NP; i++) {
        ctn_gen *e = lp_engine(&L);
        lp_out o = {0};
        req_t q = greedy(LP_PROMPTS[i], LP_LENS[i], LP_T, true, 1);
        q.smp.temp = 4.0f;
        q.smp.top_k = 0;
        q.smp.top_p = 1.0f;
        q.smp.min_p = 0;
        q.smp.repeat_penalty = 1.5f;
        q.smp.frequency_penalty = 0.5f;
        q.smp.presence_penalty = 0.5f;
        q.smp.seed = 100 + (uint64_t)i;
        CHECK(lp_submit(e, &q, &o) > 0);
        run(e);
        ctn_gen_free(e);
        CHECK_EQ_INT(o.n, LP_T);
        CHECK(lp_reference(&L, LP_PROMPTS[i], LP_LENS[i], &o, ref) == 0);
        const double d = check_against(&o, ref, 1);
        if (!(d < 1e-5)) printf("  prompt %d: off by %g\n", i, d);
        CHECK(d < 1e-5);
        for (int t = 0; t < o.n; t++)
            outside += o.top[t][0].token != o.tok[t];
    }
    printf("  %d of %d sampled tokens outside the top 1\n", outside, LP_NP * LP_T);
    CHECK(outside > LP_NP);
    unload(&L);
}

static bool lp_same(const lp_out *a, const lp_out *b) {
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
    lp_setup();
    static lp_out alone[LP_NP], together[LP_NP], other[LP_NP];
    for (int i = 0; i < LP_NP; i++) {
        ctn_gen *e = lp_engine(&L);
        const req_t q = greedy(LP_PROMPTS[i], LP_LENS[i], 10, true, 3 + i);
        memset(&alone[i], 0, sizeof alone[i]);
        CHECK(lp_submit(e, &q, &alone[i]) > 0);
        run(e);
        ctn_gen_free(e);
    }
    ctn_gen *e = lp_engine(&L);
    memset(together, 0, sizeof together);
    memset(other, 0, sizeof other);
    for (int i = 0; i < LP_NP; i++) {
        const int j = (i + 1) % LP_NP;
        req_t n = greedy(LP_PROMPTS[j], LP_LENS[j], 10, i % 2 == 0, i % 2 == 0 ? 20 : 0);
        n.smp.temp = 1.5f;
        n.smp.seed = (uint64_t)i;
        CHECK(lp_submit(e, &n, &other[i]) > 0);
        const req_t q = greedy(LP_PROMPTS[i], LP_LENS[i], 10, true, 3 + i);
        CHECK(lp_submit(e, &q, &together[i]) > 0);
    }
    int max_seqs = 0;
    ctn_gen_step_info in;
    for (int guard = 0; guard < 1000 && ctn_gen_step(e, &in) > 0; guard++)
        if (in.n_seqs > max_seqs) max_seqs = in.n_seqs;
    ctn_gen_free(e);
    CHECK(max_seqs >= LP_NP);
    for (int i = 0; i < LP_NP; i++) {
        CHECK_EQ_INT(together[i].done, 1);
        CHECK_EQ_INT(together[i].n, 10);
        if (!lp_same(&alone[i], &together[i])) printf("  request %d differs in a batch\n", i);
        CHECK(lp_same(&alone[i], &together[i]));
    }
    unload(&L);
}

/* Without logprobs: the same tokens, greedy and sampled, and no values. */
TEST(no_logprobs_same_tokens) {
    loaded L;
    CHECK(load(&L) == 0);
    lp_setup();
    for (int i = 0; i < LP_NP; i++)
        for (int hot = 0; hot < 2; hot++) {
            lp_out with = {0}, without = {0};
            for (int w = 0; w < 2; w++) {
                ctn_gen *e = lp_engine(&L);
                req_t q = greedy(LP_PROMPTS[i], LP_LENS[i], 10, w == 0, w == 0 ? 4 : 0);
                if (hot) {
                    q.smp.temp = 2.0f;
                    q.smp.seed = 5 + (uint64_t)i;
                    q.smp.repeat_penalty = 1.3f;
                }
                CHECK(lp_submit(e, &q, w == 0 ? &with : &without) > 0);
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
TEST(logprobs_bad_requests) {
    loaded L;
    CHECK(load(&L) == 0);
    ctn_gen *e = lp_engine(&L);
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
        lp_out o = {0};
        const req_t q = greedy(toks, 3, 2, true, top);
        CHECK(lp_submit(e, &q, &o) > 0);
        run(e);
        CHECK_EQ_INT(o.n, 2);
        CHECK_EQ_INT(o.n_top[0], top);
    }
    ctn_gen_free(e);
    unload(&L);
}

int main(void) {
    RUN(scores_equal_a_log_softmax);
    RUN(scores_before_generating);
    RUN(scores_in_a_batch);
    RUN(scores_of_a_cached_prompt);
    RUN(bad_candidates);
    RUN(allocation_failures);
    RUN(logprobs_equal_a_log_softmax);
    RUN(logprobs_are_raw);
    RUN(logprobs_batch_invariant);
    RUN(no_logprobs_same_tokens);
    RUN(logprobs_bad_requests);
    return test_summary();
}
