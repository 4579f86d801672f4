/*
 * Scoring candidate tokens after a prompt (ctn_gen_request.score_ids, engine/gen.c): the
 * engine's log-probabilities equal a log-softmax computed here from one plain forward pass
 * (forward.h) over the same prompt; the same when many scoring requests run in the steps of
 * generating ones, when the prompt's prefix (or all of it) is in the prefix cache, and when
 * the prompt is a session's history; the best-scored candidate is the greedy token; bad
 * candidate lists are refused with a reason.
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

int main(void) {
    RUN(scores_equal_a_log_softmax);
    RUN(scores_before_generating);
    RUN(scores_in_a_batch);
    RUN(scores_of_a_cached_prompt);
    RUN(bad_candidates);
    RUN(allocation_failures);
    return test_summary();
}
