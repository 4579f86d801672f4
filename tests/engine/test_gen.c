/*
 * The shared generation engine (engine/gen.c): a request's tokens are the same alone, in a
 * batch, in chunks, after preemption and recomputation, on the engine thread or stepped by
 * hand; the scheduler admits in arrival order under the token budget, decodes before
 * prefill chunks, preempts the latest admitted; a stress run of 1,000 requests with
 * cancellations through a small pool returns every block; bad requests are refused with a
 * reason.
 */
#include <math.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "gen.h"
#include "model.h"
#include "randmodel.h"
#include "test.h"

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    char path[256];
} loaded;

static int load_random(loaded *L, const randmodel_shape *sh) {
    char err[512];
    const char *tmp = getenv("TMPDIR");
    memset(L, 0, sizeof *L);
    snprintf(L->path, sizeof L->path, "%s/test_gen-%d-%llu.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid(), (unsigned long long)sh->seed);
    if (randmodel_write(sh, false, L->path, err, sizeof err) < 0 ||
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

/* ---- collecting outputs ------------------------------------------------------------------ */

#define MAX_REQ 1100
#define MAX_OUT 64

typedef struct {
    int32_t toks[MAX_OUT];
    int64_t steps[MAX_OUT]; /* the step each token says it belongs to */
    int n;
    int done; /* on_done calls */
    ctn_finish finish;
    int code;        /* of an error */
    char error[160]; /* its message */
    int64_t end_step;
    int64_t preemptions;
    float emb[256]; /* embedding requests */
    int64_t n_emb;
} out_t;

typedef struct {
    out_t out[MAX_REQ];
    int64_t id_of[MAX_REQ]; /* request index -> engine id */
    int n_done;
    pthread_mutex_t mu;
    pthread_cond_t cv;
} collector;

static void collector_init(collector *c) {
    memset(c, 0, sizeof *c);
    pthread_mutex_init(&c->mu, NULL);
    pthread_cond_init(&c->cv, NULL);
}

static void collector_close(collector *c) {
    pthread_mutex_destroy(&c->mu);
    pthread_cond_destroy(&c->cv);
}

typedef struct {
    collector *c;
    int idx;
} slot_ud;

static slot_ud UDS[MAX_REQ];

static void on_token(void *ud, const ctn_gen_token *tk) {
    const int32_t tok = tk->token;
    slot_ud *u = ud;
    out_t *o = &u->c->out[u->idx];
    if (o->n < MAX_OUT) o->toks[o->n] = tok, o->steps[o->n] = tk->step;
    o->n++;
}

static void on_embedding(void *ud, int64_t id, const float *v, int64_t n) {
    (void)id;
    slot_ud *u = ud;
    out_t *o = &u->c->out[u->idx];
    o->n_emb = n;
    memcpy(o->emb, v, (size_t)(n < 256 ? n : 256) * sizeof *v);
}

static void on_done(void *ud, int64_t id, const ctn_gen_result *r) {
    (void)id;
    slot_ud *u = ud;
    pthread_mutex_lock(&u->c->mu);
    out_t *o = &u->c->out[u->idx];
    o->done++;
    o->finish = r->finish;
    o->code = r->code;
    snprintf(o->error, sizeof o->error, "%s", r->error);
    o->end_step = r->step;
    o->preemptions = r->preemptions;
    u->c->n_done++;
    pthread_cond_broadcast(&u->c->cv);
    pthread_mutex_unlock(&u->c->mu);
}

/* A request: prompt ids from the seed, max_tokens, temperature. */
typedef struct {
    int32_t prompt[300];
    int n_prompt;
    int max_tokens;
    float temp;
    uint64_t seed;
} req_t;

static void make_reqs(req_t *r, int n, int n_vocab, int max_prompt, int max_gen, uint64_t seed) {
    uint64_t s = seed;
    for (int i = 0; i < n; i++) {
        r[i].n_prompt = 1 + (int)(rng_next(&s) % (uint64_t)max_prompt);
        for (int j = 0; j < r[i].n_prompt; j++)
            r[i].prompt[j] = (int32_t)(rng_next(&s) % (uint64_t)n_vocab);
        /* Half share a prefix of random length with request 0 (prefix caching). */
        if (i > 0 && rng_next(&s) % 2 == 0) {
            const int k = (int)(rng_next(&s) % (uint64_t)(r[i].n_prompt + 1));
            for (int j = 0; j < k && j < r[0].n_prompt; j++)
                r[i].prompt[j] = r[0].prompt[j];
        }
        r[i].max_tokens = 1 + (int)(rng_next(&s) % (uint64_t)max_gen);
        r[i].temp = (i % 3 == 2) ? 0.8f : 0.0f; /* every third one samples, seeded */
        r[i].seed = rng_next(&s);
    }
}

static bool QUIET; /* submissions expected to fail (allocation-failure loops) say nothing */

static int64_t submit_session(ctn_gen *e, collector *c, const req_t *r, int idx, int64_t session) {
    ctn_gen_request q = ctn_gen_request_default();
    q.prompt_ids = r->n_prompt > 0 ? r->prompt : NULL;
    q.n_prompt_ids = r->n_prompt;
    q.max_tokens = r->max_tokens;
    q.sampling.temp = r->temp;
    q.sampling.seed = r->seed;
    q.session = session;
    q.on_token = on_token;
    q.on_done = on_done;
    UDS[idx] = (slot_ud){c, idx};
    q.ud = &UDS[idx];
    char err[256];
    int64_t id = ctn_gen_submit(e, &q, err, sizeof err);
    if (id < 0 && !QUIET) printf("  submit %d: %s\n", idx, err);
    c->id_of[idx] = id;
    return id;
}

static int64_t submit(ctn_gen *e, collector *c, const req_t *r, int idx) {
    return submit_session(e, c, r, idx, 0);
}

static void run_manual(ctn_gen *e) {
    /* Steps until nothing is left to run. */
    for (int guard = 0; guard < 1000000 && ctn_gen_step(e, NULL) != 0; guard++) {
    }
}

static bool NO_CACHE; /* engines made by engine() run without the prefix cache */

static ctn_gen *engine(const loaded *L, int step_tokens, int max_running, size_t kv_memory,
                       int n_ctx, bool manual, int threads) {
    ctn_gen_params p = {0};
    p.no_prefix_cache = NO_CACHE;
    p.fwd.n_threads = threads;
    p.fwd.n_ctx = n_ctx;
    p.fwd.kv_memory = kv_memory;
    p.step_tokens = step_tokens;
    p.max_running = max_running;
    p.manual = manual;
    ctn_gen *e = NULL;
    char err[512];
    if (ctn_gen_new(&e, L->m, NULL, &p, err, sizeof err) < 0) printf("  engine: %s\n", err);
    return e;
}

static size_t block_bytes(const loaded *L) {
    return ctn_kv_bytes_per_block(L->m->hp.n_layer, L->m->hp.n_head_kv * L->m->hp.head_dim,
                                  CTN_TYPE_F16, 16);
}

static int same_outputs(const collector *a, const collector *b, int n) {
    int bad = 0;
    for (int i = 0; i < n; i++) {
        const out_t *x = &a->out[i], *y = &b->out[i];
        if (x->n != y->n ||
            memcmp(x->toks, y->toks, sizeof(int32_t) * (size_t)(x->n < MAX_OUT ? x->n : MAX_OUT)) !=
                0 ||
            x->done != 1 || y->done != 1) {
            if (bad < 3) printf("  request %d differs: %d vs %d tokens\n", i, x->n, y->n);
            bad++;
        }
    }
    return bad;
}

/* A small Q8_0 model for the prefix-cache test. */
static const randmodel_shape SMALL_Q8 = {
    CTN_TYPE_Q8_0, 64, 4, 2, 128, 2, false, 100, 10000, 1e-5f, 52, RANDMODEL_LLAMA, 0};

/* ---- invariance ---------------------------------------------------------------------------- */

static const randmodel_shape SHAPES[] = {
    {CTN_TYPE_F32, 64, 4, 2, 128, 2, false, 200, 10000, 1e-5f, 41, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_BF16, 64, 2, 1, 96, 1, true, 120, 10000, 1e-5f, 46, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_1, 64, 4, 4, 64, 1, false, 100, 10000, 1e-5f, 47, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q5_0, 64, 4, 2, 96, 1, true, 100, 10000, 1e-5f, 48, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q5_1, 64, 4, 2, 64, 1, false, 100, 10000, 1e-5f, 49, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q5_K, 256, 4, 1, 256, 1, true, 100, 10000, 1e-5f, 50, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q6_K, 256, 2, 1, 256, 1, false, 100, 500000, 1e-6f, 53, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q8_0, 64, 4, 2, 192, 2, true, 150, 10000, 1e-5f, 42, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_0, 128, 4, 1, 256, 1, false, 180, 500000, 1e-5f, 43, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_K, 256, 4, 2, 512, 1, false, 120, 10000, 1e-5f, 44, RANDMODEL_QWEN2, 0},
    {CTN_TYPE_F16, 64, 4, 2, 96, 2, true, 160, 1000000, 1e-6f, 45, RANDMODEL_QWEN3, 32},
};

/*
 * 64 requests (greedy and seeded sampling, prompts of 1 to 70 tokens, half sharing prefixes
 * of random length): each alone without the prefix cache; then all at once with a 512-token
 * budget; with a 24-token budget (chunked prefill); and through a pool so small that
 * sequences are preempted and recomputed; each with the prefix cache on and off. Same
 * tokens every time.
 */
TEST(alone_equals_batch_chunked_preempted) {
    enum { N = 64 };
    static req_t reqs[N];
    static collector alone, batch, chunked, tight;
    for (size_t si = 0; si < sizeof SHAPES / sizeof *SHAPES; si++) {
        loaded L;
        if (load_random(&L, &SHAPES[si]) < 0) {
            CHECK(0);
            continue;
        }
        make_reqs(reqs, N, (int)L.m->hp.n_vocab, 70, 24, 100 + si);
        collector_init(&alone);
        NO_CACHE = true;
        for (int i = 0; i < N; i++) {
            ctn_gen *e = engine(&L, 512, 8, 0, 128, true, 1);
            CHECK(e != NULL);
            if (e == NULL) break;
            submit(e, &alone, &reqs[i], i);
            run_manual(e);
            ctn_gen_free(e);
        }
        for (int cache = 0; cache < 2; cache++) {
            collector_init(&batch);
            collector_init(&chunked);
            collector_init(&tight);
            NO_CACHE = cache == 0;
            ctn_gen *e = engine(&L, 512, 64, 0, 128, true, 2); /* all 64 at once */
            for (int i = 0; i < N; i++)
                submit(e, &batch, &reqs[i], i);
            run_manual(e);
            ctn_gen_free(e);
            CHECK_EQ_INT(same_outputs(&alone, &batch, N), 0);

            e = engine(&L, 24, 64, 0, 128, true, 3);
            for (int i = 0; i < N; i++)
                submit(e, &chunked, &reqs[i], i);
            run_manual(e);
            ctn_gen_free(e);
            CHECK_EQ_INT(same_outputs(&alone, &chunked, N), 0);

            /* 8 blocks of 16: a 70-token prompt and its output fill most of it. */
            e = engine(&L, 64, 64, 8 * block_bytes(&L), 128, true, 2);
            for (int i = 0; i < N; i++)
                submit(e, &tight, &reqs[i], i);
            run_manual(e);
            ctn_gen_stats st;
            ctn_gen_get_stats(e, &st);
            CHECK(st.preemptions > 0);
            CHECK_EQ_INT(st.kv_free, st.kv_blocks);
            ctn_gen_free(e);
            CHECK_EQ_INT(same_outputs(&alone, &tight, N), 0);
            int64_t pre = 0;
            for (int i = 0; i < N; i++)
                pre += tight.out[i].preemptions;
            CHECK(pre == st.preemptions);
            collector_close(&batch);
            collector_close(&chunked);
            collector_close(&tight);
        }
        collector_close(&alone);
        unload(&L);
    }
    NO_CACHE = false;
}

/*
 * 16 requests sharing a 64-token prefix (4 blocks) with their own 5-token tails, submitted
 * at once: the first computes the prefix, the others wait for it and take its blocks; the
 * outputs are those of the requests alone.
 */
TEST(shared_prefix_computed_once) {
    enum { N = 16 };
    static req_t reqs[N];
    loaded L;
    CHECK(load_random(&L, &SMALL_Q8) == 0);
    uint64_t rs = 5;
    for (int i = 0; i < N; i++) {
        reqs[i].n_prompt = 69;
        for (int j = 0; j < 69; j++)
            reqs[i].prompt[j] = (int32_t)(j < 64 ? 3 + j % 50 : rng_next(&rs) % 100);
        reqs[i].max_tokens = 8;
        reqs[i].temp = 0;
    }
    static collector alone, shared;
    collector_init(&alone);
    collector_init(&shared);
    NO_CACHE = true;
    for (int i = 0; i < N; i++) {
        ctn_gen *e = engine(&L, 512, 4, 0, 128, true, 1);
        submit(e, &alone, &reqs[i], i);
        run_manual(e);
        ctn_gen_free(e);
    }
    NO_CACHE = false;
    ctn_gen *e = engine(&L, 512, 32, 0, 128, true, 2);
    for (int i = 0; i < N; i++)
        submit(e, &shared, &reqs[i], i);
    ctn_gen_step_info in;
    CHECK_EQ_INT(ctn_gen_step(e, &in), 69); /* only the first: the others wait for its prefix */
    CHECK_EQ_INT(in.n_admitted, 1);
    CHECK_EQ_INT(ctn_gen_step(e, &in), 1 + 15 * 5); /* its decode, then the 15 tails */
    run_manual(e);
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    CHECK_EQ_INT((int)st.prefix_hits, 15 * 4);
    CHECK_EQ_INT((int)st.prefix_misses, 4);
    CHECK_EQ_INT(same_outputs(&alone, &shared, N), 0);
    ctn_gen_free(e);
    collector_close(&alone);
    collector_close(&shared);
    unload(&L);
}

/* ---- the scheduler --------------------------------------------------------------------------- */

static const randmodel_shape SMALL = {
    CTN_TYPE_F32, 32, 4, 2, 64, 1, false, 100, 10000, 1e-5f, 51, RANDMODEL_LLAMA, 0};

static req_t R(int n_prompt, int max_tokens) {
    req_t r;
    memset(&r, 0, sizeof r);
    r.n_prompt = n_prompt;
    for (int i = 0; i < n_prompt; i++)
        r.prompt[i] = (int32_t)(1 + i % 90);
    r.max_tokens = max_tokens;
    return r;
}

/* Admission in arrival order under the budget; decodes before prefill chunks. */
TEST(scheduler_admission_and_chunks) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    static collector c;
    collector_init(&c);
    ctn_gen *e = engine(&L, 16, 8, 0, 256, true, 1);
    req_t a = R(40, 3), b = R(5, 2), d = R(30, 1);
    const int64_t ia = submit(e, &c, &a, 0), ib = submit(e, &c, &b, 1);
    ctn_gen_step_info in;
    /* A: 16, 16, then 8 + B's 5 (B admitted once the budget allows, after A). */
    CHECK_EQ_INT(ctn_gen_step(e, &in), 16);
    CHECK(in.n_seqs == 1 && in.ids[0] == ia && in.tokens[0] == 16 && in.n_admitted == 1);
    CHECK_EQ_INT(ctn_gen_step(e, &in), 16);
    CHECK(in.n_seqs == 1 && in.ids[0] == ia);
    CHECK_EQ_INT(ctn_gen_step(e, &in), 13);
    CHECK(in.n_seqs == 2 && in.ids[0] == ia && in.tokens[0] == 8 && in.ids[1] == ib &&
          in.tokens[1] == 5 && in.n_admitted == 1);
    CHECK_EQ_INT(c.out[0].n, 1); /* A's first token came from its last chunk */
    /* D arrives: A and B decode first (1 each), D gets the remaining 14. */
    const int64_t id_d = submit(e, &c, &d, 2);
    CHECK_EQ_INT(ctn_gen_step(e, &in), 16);
    CHECK(in.n_seqs == 3 && in.n_decode == 2 && in.ids[0] == ia && in.ids[1] == ib &&
          in.ids[2] == id_d && in.tokens[2] == 14);
    run_manual(e);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(c.out[i].done, 1);
    CHECK_EQ_INT(c.out[0].n, 3);
    CHECK_EQ_INT(c.out[1].n, 2);
    CHECK_EQ_INT(c.out[2].n, 1);
    CHECK(c.out[0].finish == CTN_FINISH_LENGTH);
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    CHECK_EQ_INT(st.running, 0);
    CHECK_EQ_INT(st.kv_free, st.kv_blocks);
    CHECK_EQ_INT(st.finished, 3);
    ctn_gen_free(e);
    collector_close(&c);
    unload(&L);
}

/* With max_running 2, the third request waits for a slot; when blocks run out, the latest
 * admitted sequence is the one preempted, and it comes back before later arrivals. */
TEST(scheduler_preemption_order) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    static collector c;
    collector_init(&c);
    /* 4 blocks of 16 positions: two sequences of 20 + generated tokens cannot both grow
     * past 32 positions. */
    ctn_gen_params p = {0};
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 64;
    p.fwd.kv_memory = 4 * block_bytes(&L);
    p.step_tokens = 64;
    p.max_running = 2;
    p.watermark = -1;
    p.manual = true;
    ctn_gen *e;
    char err[256];
    CHECK(ctn_gen_new(&e, L.m, NULL, &p, err, sizeof err) == 0);
    req_t a = R(20, 30), b = R(20, 30), d = R(3, 2);
    b.prompt[0] = 99; /* not a prefix of A's (that would wait for A's blocks) */
    const int64_t ia = submit(e, &c, &a, 0), ib = submit(e, &c, &b, 1), id_d = submit(e, &c, &d, 2);
    ctn_gen_step_info in;
    CHECK_EQ_INT(ctn_gen_step(e, &in), 40); /* A and B admitted; D waits (max_running 2) */
    CHECK(in.n_seqs == 2 && in.n_admitted == 2);
    bool saw_preempt = false;
    for (int step = 0; step < 200 && !saw_preempt; step++) {
        ctn_gen_step(e, &in);
        if (in.n_preempted > 0) {
            saw_preempt = true;
            /* B (admitted after A) went back; A decodes alone. */
            CHECK(in.n_seqs >= 1 && in.ids[0] == ia);
            for (int i = 0; i < in.n_seqs; i++)
                CHECK(in.ids[i] != ib);
        }
    }
    CHECK(saw_preempt);
    run_manual(e);
    for (int i = 0; i < 3; i++)
        CHECK_EQ_INT(c.out[i].done, 1);
    CHECK(c.out[1].preemptions >= 1);
    CHECK_EQ_INT(c.out[0].n, 30);
    CHECK_EQ_INT(c.out[1].n, 30);
    (void)id_d;
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    CHECK_EQ_INT(st.kv_free, st.kv_blocks);
    ctn_gen_free(e);

    /* B's tokens are what it makes alone. */
    static collector alone;
    collector_init(&alone);
    e = engine(&L, 64, 2, 0, 64, true, 1);
    submit(e, &alone, &b, 1);
    run_manual(e);
    ctn_gen_free(e);
    CHECK(alone.out[1].n == 30 &&
          memcmp(alone.out[1].toks, c.out[1].toks, 30 * sizeof(int32_t)) == 0);
    collector_close(&alone);
    collector_close(&c);
    unload(&L);
}

/*
 * Fairness: a large request behind small ones, with new small requests arriving every step
 * through a pool that cannot hold everything, is admitted before any request that arrived
 * after it, and finishes.
 */
TEST(scheduler_fairness) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    static collector c;
    collector_init(&c);
    ctn_gen_params p = {0};
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 128;
    p.fwd.kv_memory = 10 * block_bytes(&L);
    p.step_tokens = 128; /* the big prompt comes in one chunk of 7 blocks */
    p.max_running = 8;
    p.manual = true;
    ctn_gen *e;
    char err[256];
    CHECK(ctn_gen_new(&e, L.m, NULL, &p, err, sizeof err) == 0);
    req_t small = R(10, 6), big = R(100, 10);
    big.prompt[0] = 77;
    int next = 0;
    for (; next < 6; next++)
        submit(e, &c, &small, next);
    const int big_idx = next++;
    const int64_t big_id = submit(e, &c, &big, big_idx);
    int64_t first_after = 0; /* the first request after big that got into a step */
    bool big_started = false;
    ctn_gen_step_info in;
    for (int step = 0; step < 400 && c.out[big_idx].done == 0; step++) {
        if (next < 200) {
            small.prompt[1] = (int32_t)(next % 90); /* distinct prompts */
            submit(e, &c, &small, next++);
        }
        ctn_gen_step(e, &in);
        for (int i = 0; i < in.n_seqs; i++) {
            if (in.ids[i] == big_id) big_started = true;
            if (in.ids[i] > big_id && first_after == 0) {
                first_after = in.ids[i];
                CHECK(big_started); /* nothing later ran before the big one started */
            }
        }
    }
    CHECK_EQ_INT(c.out[big_idx].done, 1);
    CHECK_EQ_INT(c.out[big_idx].n, 10);
    run_manual(e);
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    CHECK_EQ_INT((int)st.finished, next);
    CHECK_EQ_INT(st.kv_free, st.kv_blocks);
    ctn_gen_free(e);
    collector_close(&c);
    unload(&L);
}

/* A request that outgrows the whole KV pool ends with "length" at the pool's end, on the
 * engine thread too (it used to wait for blocks forever). */
TEST(request_larger_than_pool) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    for (int threaded = 0; threaded < 2; threaded++) {
        static collector c;
        collector_init(&c);
        ctn_gen *e = engine(&L, 16, 4, 4 * block_bytes(&L), 128, !threaded, 1);
        req_t r = R(10, 100);
        submit(e, &c, &r, 0);
        if (threaded) {
            pthread_mutex_lock(&c.mu);
            while (c.n_done < 1)
                pthread_cond_wait(&c.cv, &c.mu);
            pthread_mutex_unlock(&c.mu);
        } else {
            run_manual(e);
        }
        CHECK_EQ_INT(c.out[0].done, 1);
        CHECK(c.out[0].finish == CTN_FINISH_LENGTH);
        CHECK_EQ_INT(c.out[0].n, 55); /* 64 positions: 10 + 54 computed, the 55th sampled */
        ctn_gen_stats st;
        ctn_gen_get_stats(e, &st);
        CHECK(st.n_ctx == 128 && st.kv_block_size == 16 && st.threads == 1);
        ctn_gen_free(e);
        collector_close(&c);
    }
    unload(&L);
}

/* Bad requests are refused with a reason; unknown ids cannot be cancelled. */
TEST(bad_requests) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    ctn_gen *e = engine(&L, 16, 4, 2 * block_bytes(&L), 64, true, 1);
    char err[256];
    ctn_gen_request q = ctn_gen_request_default();
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL); /* no prompt */
    CHECK(strstr(err, "no prompt") != NULL);
    int32_t ids[80];
    for (int i = 0; i < 80; i++)
        ids[i] = 1;
    q.prompt_ids = ids;
    q.n_prompt_ids = 64; /* fills the context */
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "context") != NULL);
    q.n_prompt_ids = 40; /* 3 blocks: the pool has 2 */
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_ENOMEM);
    CHECK(strstr(err, "KV blocks") != NULL);
    q.n_prompt_ids = 3;
    ids[1] = 100; /* vocabulary of 100 */
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    CHECK(strstr(err, "token 1") != NULL);
    ids[1] = 1;
    const char *stops[] = {"x"};
    q.stop = stops;
    q.n_stop = 1;
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL); /* no vocabulary */
    q.n_stop = 0;
    q.sampling.top_p = -1;
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    CHECK_EQ_INT(ctn_gen_cancel(e, 12345), CTN_ENOENT);
    ctn_gen_free(e);
    unload(&L);
}

/* ---- stress --------------------------------------------------------------------------------- */

/*
 * 1,000 requests of random lengths through a 12-block pool, with random cancellations
 * (before admission, while running, after the end): every request gets exactly one on_done,
 * completed ones have their tokens, and every block is back at the end. Once stepped by
 * hand, once on the engine thread with submissions and cancellations from this thread.
 */
TEST(stress_thousand_requests) {
    enum { N = 1000 };
    static req_t reqs[N];
    static collector c;
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    make_reqs(reqs, N, (int)L.m->hp.n_vocab, 60, 20, 7);
    for (int threaded = 0; threaded < 2; threaded++) {
        collector_init(&c);
        ctn_gen *e = engine(&L, 48, 16, 12 * block_bytes(&L), 96, !threaded, 2);
        CHECK(e != NULL);
        uint64_t rs = 99 + (uint64_t)threaded;
        int next = 0, n_cancel = 0;
        while (next < N || c.n_done < N) {
            /* Submit a few, cancel some at random, step (or let the thread run). */
            for (int k = 0; k < 5 && next < N; k++, next++)
                CHECK(submit(e, &c, &reqs[next], next) > 0);
            if (next > 0 && rng_next(&rs) % 4 == 0) {
                const int victim = (int)(rng_next(&rs) % (uint64_t)next);
                if (ctn_gen_cancel(e, c.id_of[victim]) == 0) n_cancel++;
            }
            if (!threaded) {
                ctn_gen_step(e, NULL);
            } else if (next == N) {
                pthread_mutex_lock(&c.mu);
                while (c.n_done < N)
                    pthread_cond_wait(&c.cv, &c.mu);
                pthread_mutex_unlock(&c.mu);
            }
        }
        ctn_gen_stats st;
        ctn_gen_get_stats(e, &st);
        CHECK_EQ_INT(st.kv_free, st.kv_blocks);
        CHECK_EQ_INT(st.running + st.waiting, 0);
        CHECK_EQ_INT((int)(st.finished + st.cancelled), N);
        CHECK(st.cancelled > 0 && st.cancelled <= n_cancel);
        int bad = 0;
        for (int i = 0; i < N; i++) {
            const out_t *o = &c.out[i];
            bad += o->done != 1;
            if (o->finish == CTN_FINISH_LENGTH)
                bad += o->n != reqs[i].max_tokens;
            else if (o->finish != CTN_FINISH_CANCELLED)
                bad++;
        }
        CHECK_EQ_INT(bad, 0);
        ctn_gen_free(e);
        collector_close(&c);
    }
    unload(&L);
}

/* ---- sessions -------------------------------------------------------------------------------- */

/*
 * A session keeps its history: the second request computes only its own prompt (and the
 * last generated token) and generates what a plain request with the whole history as its
 * prompt generates. With the prefix cache on and off.
 */
TEST(session_continues) {
    loaded L;
    CHECK(load_random(&L, &SMALL_Q8) == 0);
    for (int cache = 0; cache < 2; cache++) {
        NO_CACHE = cache == 0;
        static collector c, ref;
        collector_init(&c);
        collector_init(&ref);
        ctn_gen *e = engine(&L, 512, 8, 0, 128, true, 2);
        const int64_t ss = ctn_gen_session_new(e);
        CHECK(ss > 0);
        req_t r1 = R(21, 5), r2 = R(7, 6);
        for (int i = 0; i < 7; i++)
            r2.prompt[i] = (int32_t)(50 + i);
        submit_session(e, &c, &r1, 0, ss);
        run_manual(e);
        CHECK(c.out[0].done == 1 && c.out[0].n == 5);
        ctn_gen_stats st;
        ctn_gen_get_stats(e, &st);
        CHECK(st.sessions == 1 && st.kv_session_blocks == 2); /* 25 positions computed */
        submit_session(e, &c, &r2, 1, ss);
        ctn_gen_step_info in;
        CHECK_EQ_INT(ctn_gen_step(e, &in), 8); /* the last generated token + 7 */
        run_manual(e);
        CHECK(c.out[1].done == 1 && c.out[1].n == 6);
        /* The same as one request with the whole history. */
        req_t whole = R(0, 6);
        memcpy(whole.prompt, r1.prompt, 21 * sizeof(int32_t));
        memcpy(whole.prompt + 21, c.out[0].toks, 5 * sizeof(int32_t));
        memcpy(whole.prompt + 26, r2.prompt, 7 * sizeof(int32_t));
        whole.n_prompt = 33;
        submit(e, &ref, &whole, 0);
        run_manual(e);
        CHECK(ref.out[0].n == 6 &&
              memcmp(ref.out[0].toks, c.out[1].toks, 6 * sizeof(int32_t)) == 0);
        /* A request with an empty prompt goes on from the history. */
        req_t more = R(0, 3);
        submit_session(e, &c, &more, 2, ss);
        run_manual(e);
        CHECK(c.out[2].done == 1 && c.out[2].n == 3);
        CHECK_EQ_INT(ctn_gen_session_close(e, ss), 0);
        CHECK_EQ_INT(ctn_gen_session_close(e, ss), CTN_ENOENT);
        char err[256];
        ctn_gen_request q = ctn_gen_request_default();
        q.prompt_ids = r1.prompt;
        q.n_prompt_ids = 3;
        q.session = ss;
        CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
        CHECK(strstr(err, "closed") != NULL);
        q.session = 424242;
        CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
        CHECK(strstr(err, "unknown") != NULL);
        run_manual(e);
        ctn_gen_get_stats(e, &st);
        CHECK(st.sessions == 0 && st.kv_free == st.kv_blocks);
        ctn_gen_free(e);
        collector_close(&c);
        collector_close(&ref);
    }
    NO_CACHE = false;
    unload(&L);
}

/*
 * n > 1 sampling by forking: a prompt-only request fills a session, four forks each sample
 * from it with their own seed; each gives what a plain request with that prompt and seed
 * gives, and the prompt is computed once (the forks share its blocks).
 */
TEST(session_fork) {
    loaded L;
    CHECK(load_random(&L, &SMALL_Q8) == 0);
    static collector c, ref;
    collector_init(&c);
    collector_init(&ref);
    NO_CACHE = true; /* the sharing must come from the fork, not the prefix cache */
    ctn_gen *e = engine(&L, 512, 8, 0, 128, true, 2);
    const int64_t ss = ctn_gen_session_new(e);
    req_t p = R(37, 0);
    submit_session(e, &c, &p, 0, ss);
    int64_t kids[4];
    CHECK_EQ_INT(ctn_gen_session_fork(e, ss, 4, kids), 0);
    CHECK_EQ_INT(ctn_gen_session_fork(e, ss, 0, kids), CTN_EINVAL);
    req_t g[4];
    for (int i = 0; i < 4; i++) {
        g[i] = R(0, 9);
        g[i].temp = 0.9f;
        g[i].seed = 1000 + (uint64_t)i;
        submit_session(e, &c, &g[i], 1 + i, kids[i]);
    }
    ctn_gen_step_info in;
    CHECK_EQ_INT(ctn_gen_step(e, &in), 36); /* the prompt but its last token */
    CHECK_EQ_INT(c.out[0].done, 1);
    CHECK_EQ_INT(c.out[0].n, 0);
    CHECK_EQ_INT(ctn_gen_step(e, &in), 4); /* each fork: the last prompt token */
    CHECK_EQ_INT(in.n_seqs, 4);
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    /* 3 blocks of the prompt shared (the partial third copied on write by each fork). */
    CHECK(st.kv_blocks - st.kv_free <= 3 + 4);
    run_manual(e);
    ctn_gen_free(e);
    e = engine(&L, 512, 8, 0, 128, true, 2);
    for (int i = 0; i < 4; i++) {
        req_t r = g[i];
        memcpy(r.prompt, p.prompt, 37 * sizeof(int32_t));
        r.n_prompt = 37;
        submit(e, &ref, &r, 1 + i);
    }
    run_manual(e);
    ctn_gen_free(e);
    for (int i = 1; i <= 4; i++)
        CHECK(c.out[i].n == 9 && ref.out[i].n == 9 &&
              memcmp(c.out[i].toks, ref.out[i].toks, 9 * sizeof(int32_t)) == 0);
    /* The four samples are not all the same (different seeds). */
    int differ = 0;
    for (int i = 2; i <= 4; i++)
        differ += memcmp(c.out[1].toks, c.out[i].toks, 9 * sizeof(int32_t)) != 0;
    CHECK(differ > 0);
    NO_CACHE = false;
    collector_close(&c);
    collector_close(&ref);
    unload(&L);
}

/* ---- embeddings ------------------------------------------------------------------------------ */

static int64_t submit_embd(ctn_gen *e, collector *c, const int32_t *toks, int n, int pooling,
                           bool raw, int idx) {
    ctn_gen_request q = ctn_gen_request_default();
    q.prompt_ids = toks;
    q.n_prompt_ids = n;
    q.pooling = pooling;
    q.embd_raw = raw;
    q.on_embedding = on_embedding;
    q.on_done = on_done;
    UDS[idx] = (slot_ud){c, idx};
    q.ud = &UDS[idx];
    char err[256];
    int64_t id = ctn_gen_submit(e, &q, err, sizeof err);
    if (id < 0 && !QUIET) printf("  submit %d: %s\n", idx, err);
    return id;
}

/*
 * Pooled hidden states: the same bits alone and in a chunked batch beside generating
 * requests; CLS of a prompt is the last-token state of its first token alone; the mean is
 * the mean of the last-token states of every prefix; normalised vectors are the raw ones
 * over their length.
 */
TEST(embeddings) {
    loaded L;
    CHECK(load_random(&L, &SMALL_Q8) == 0);
    const int64_t E = L.m->hp.n_embd;
    enum { NP = 6 };
    static int32_t prompts[NP][40];
    int lens[NP];
    uint64_t rs = 77;
    for (int i = 0; i < NP; i++) {
        lens[i] = 1 + (int)(rng_next(&rs) % 40);
        for (int j = 0; j < lens[i]; j++)
            prompts[i][j] = (int32_t)(rng_next(&rs) % 100);
    }
    static collector alone, batch, pre;
    for (int pool = CTN_POOL_MEAN; pool <= CTN_POOL_CLS; pool++) {
        collector_init(&alone);
        collector_init(&batch);
        collector_init(&pre);
        for (int i = 0; i < NP; i++) {
            ctn_gen *e = engine(&L, 512, 4, 0, 64, true, 1);
            submit_embd(e, &alone, prompts[i], lens[i], pool, true, i);
            run_manual(e);
            ctn_gen_free(e);
        }
        /* Chunks of 16 tokens, generating requests in between, the prefix cache on. */
        ctn_gen *e = engine(&L, 16, 16, 0, 64, true, 2);
        req_t g = R(30, 5);
        for (int i = 0; i < NP; i++) {
            submit(e, &batch, &g, NP + i);
            submit_embd(e, &batch, prompts[i], lens[i], pool, true, i);
        }
        run_manual(e);
        ctn_gen_free(e);
        int bad = 0;
        for (int i = 0; i < NP; i++)
            bad += alone.out[i].n_emb != E || batch.out[i].n_emb != E || batch.out[i].n != 0 ||
                   batch.out[i].finish != CTN_FINISH_STOP ||
                   memcmp(alone.out[i].emb, batch.out[i].emb, (size_t)E * sizeof(float)) != 0;
        CHECK_EQ_INT(bad, 0);
        /* Prefixes, one token at a time, as last-token requests. */
        const int k = NP - 1;
        e = engine(&L, 512, 64, 0, 64, true, 2);
        for (int t = 0; t < lens[k]; t++)
            submit_embd(e, &pre, prompts[k], t + 1, CTN_POOL_LAST, true, t);
        run_manual(e);
        ctn_gen_free(e);
        if (pool == CTN_POOL_CLS) {
            CHECK(memcmp(alone.out[k].emb, pre.out[0].emb, (size_t)E * sizeof(float)) == 0);
        } else if (pool == CTN_POOL_LAST) {
            CHECK(memcmp(alone.out[k].emb, pre.out[lens[k] - 1].emb, (size_t)E * sizeof(float)) ==
                  0);
        } else {
            float mean[256] = {0};
            for (int t = 0; t < lens[k]; t++)
                for (int64_t i = 0; i < E; i++)
                    mean[i] += pre.out[t].emb[i];
            for (int64_t i = 0; i < E; i++)
                mean[i] /= (float)lens[k];
            CHECK(memcmp(alone.out[k].emb, mean, (size_t)E * sizeof(float)) == 0);
        }
        /* Normalised. */
        e = engine(&L, 512, 4, 0, 64, true, 1);
        submit_embd(e, &pre, prompts[k], lens[k], pool, false, 100);
        run_manual(e);
        ctn_gen_free(e);
        double n2 = 0, err = 0;
        for (int64_t i = 0; i < E; i++)
            n2 += (double)alone.out[k].emb[i] * alone.out[k].emb[i];
        for (int64_t i = 0; i < E; i++)
            err = fmax(err, fabs(pre.out[100].emb[i] - alone.out[k].emb[i] / sqrt(n2)));
        CHECK(err < 1e-6);
        collector_close(&alone);
        collector_close(&batch);
        collector_close(&pre);
    }
    ctn_gen *e = engine(&L, 512, 4, 0, 64, true, 1);
    char err[128];
    ctn_gen_request q = ctn_gen_request_default();
    q.prompt_ids = prompts[0];
    q.n_prompt_ids = 3;
    q.pooling = 7;
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    q.pooling = CTN_POOL_MEAN;
    q.session = ctn_gen_session_new(e);
    CHECK_EQ_INT(ctn_gen_submit(e, &q, err, sizeof err), CTN_EINVAL);
    ctn_gen_free(e);
    unload(&L);
}

/*
 * Every token says which step sampled it: the tokens of one step carry one number, which is
 * ctn_gen_stats.steps once that step is done, and a request ends in the step of its last
 * token.
 */
TEST(tokens_carry_their_step) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    static collector c;
    collector_init(&c);
    ctn_gen *e = engine(&L, 64, 8, 0, 128, true, 1);
    req_t a = R(10, 6), b = R(30, 4);
    b.prompt[0] = 77;
    submit(e, &c, &a, 0);
    submit(e, &c, &b, 1);
    int64_t last = 0;
    ctn_gen_step_info in;
    while (ctn_gen_step(e, &in) > 0) {
        ctn_gen_stats st;
        ctn_gen_get_stats(e, &st);
        CHECK(st.steps == last + 1);
        last = st.steps;
        for (int r = 0; r < 2; r++) /* a token made now carries this step's number */
            for (int i = 0; i < c.out[r].n && i < MAX_OUT; i++)
                CHECK(c.out[r].steps[i] <= st.steps);
    }
    for (int r = 0; r < 2; r++) {
        CHECK_EQ_INT(c.out[r].done, 1);
        for (int i = 1; i < c.out[r].n; i++)
            CHECK_EQ_INT(c.out[r].steps[i], c.out[r].steps[i - 1] + 1); /* one per step */
        CHECK_EQ_INT(c.out[r].end_step, c.out[r].steps[c.out[r].n - 1]);
        CHECK_EQ_INT(c.out[r].code, 0);
    }
    /* Both prompts fit the first step: their first tokens come from it. */
    CHECK_EQ_INT(c.out[0].steps[0], 1);
    CHECK_EQ_INT(c.out[1].steps[0], 1);
    ctn_gen_free(e);
    collector_close(&c);
    unload(&L);
}

/*
 * A pool held by an idle session does not starve a new request (nor cut it short): the
 * session's blocks are given up, the request runs as it would alone, and the session's next
 * request still continues its history exactly (recomputed, or found in the prefix cache).
 */
TEST(idle_sessions_give_blocks_back) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    for (int cache = 0; cache < 2; cache++) {
        NO_CACHE = cache == 0;
        static collector c, ref;
        collector_init(&c);
        collector_init(&ref);
        ctn_gen *e = engine(&L, 64, 4, 4 * block_bytes(&L), 64, true, 1);
        const int64_t ss = ctn_gen_session_new(e);
        req_t a = R(40, 5), b = R(40, 5), a2 = R(3, 4);
        b.prompt[0] = 99;
        for (int i = 0; i < 3; i++)
            a2.prompt[i] = 60 + i;
        submit_session(e, &c, &a, 0, ss);
        run_manual(e);
        ctn_gen_stats st;
        ctn_gen_get_stats(e, &st);
        CHECK_EQ_INT(st.kv_session_blocks, 3); /* 44 positions */
        submit(e, &c, &b, 1);                  /* needs 3 of the 4 blocks */
        run_manual(e);
        CHECK(c.out[1].done == 1 && c.out[1].finish == CTN_FINISH_LENGTH && c.out[1].n == 5);
        ctn_gen_get_stats(e, &st);
        CHECK_EQ_INT(st.kv_session_blocks, 0);
        submit_session(e, &c, &a2, 2, ss);
        run_manual(e);
        CHECK(c.out[2].done == 1 && c.out[2].n == 4);
        ctn_gen_free(e);

        ctn_gen *r = engine(&L, 64, 4, 0, 64, true, 1); /* room for everything */
        const int64_t rs = ctn_gen_session_new(r);
        submit_session(r, &ref, &a, 0, rs);
        run_manual(r);
        submit(r, &ref, &b, 1);
        run_manual(r);
        submit_session(r, &ref, &a2, 2, rs);
        run_manual(r);
        ctn_gen_free(r);
        CHECK_EQ_INT(same_outputs(&c, &ref, 3), 0);
        collector_close(&c);
        collector_close(&ref);
    }
    NO_CACHE = false;
    unload(&L);
}

/*
 * A request that cannot be admitted into an idle engine (here: its KV block table cannot be
 * allocated) waits at most admit_timeout_s and then fails with CTN_ENOMEM and a message,
 * instead of being retried for ever; the engine goes on serving afterwards.
 */
TEST(admission_gives_up_with_enomem) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    static collector c;
    collector_init(&c);
    ctn_gen_params p = {0};
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 64;
    p.manual = true;
    p.admit_timeout_s = 0.05;
    ctn_gen *e = NULL;
    char err[256];
    CHECK(ctn_gen_new(&e, L.m, NULL, &p, err, sizeof err) == 0);
    req_t a = R(10, 3);
    submit(e, &c, &a, 0);
    ctn__alloc_fail_after = 0; /* every hooked allocation fails: the block table's */
    int steps = 0;
    for (; steps < 100000 && c.out[0].done == 0; steps++) {
        CHECK_EQ_INT(ctn_gen_step(e, NULL), 0);
        const struct timespec ms = {0, 1000000};
        nanosleep(&ms, NULL);
    }
    ctn__alloc_fail_after = -1;
    CHECK_EQ_INT(c.out[0].done, 1);
    CHECK(c.out[0].finish == CTN_FINISH_ERROR);
    CHECK_EQ_INT(c.out[0].code, CTN_ENOMEM);
    CHECK_CONTAINS(c.out[0].error, "KV block table");
    CHECK(steps >= 10); /* it waited (50 ms of 1 ms steps) before giving up */
    submit(e, &c, &a, 1);
    run_manual(e);
    CHECK(c.out[1].done == 1 && c.out[1].n == 3 && c.out[1].code == 0);
    ctn_gen_free(e);
    collector_close(&c);
    unload(&L);
}

/*
 * Allocation failures (SQLite's discipline): for every N, the N-th allocation of an engine's
 * life fails, and every one after it; over engine start, submission and admission, a
 * session filled and forked, requests on the forks, and steps. Each case ends cleanly: the
 * start fails with CTN_ENOMEM, or every accepted request gets exactly one on_done, by the
 * engine (no hang: nothing is left for ctn_gen_free to cancel), finishing normally or with
 * CTN_ENOMEM; the ASan copy checks that nothing leaks.
 */
TEST(allocation_failures) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    long n = 0;
    int starts_failed = 0, requests_failed = 0;
    QUIET = true;
    for (; n < 20000; n++) {
        static collector c;
        collector_init(&c);
        ctn_gen_params p = {0};
        p.fwd.n_threads = 1;
        p.fwd.n_ctx = 64;
        p.manual = true;
        p.admit_timeout_s = 0.001;
        p.max_running = 4;
        p.step_tokens = 32;
        ctn_gen *e = NULL;
        char err[256];
        ctn__alloc_fail_after = n;
        const int rc = ctn_gen_new(&e, L.m, NULL, &p, err, sizeof err);
        if (rc < 0) {
            ctn__alloc_fail_after = -1;
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            starts_failed++;
            collector_close(&c);
            continue;
        }
        bool accepted[5] = {false};
        req_t a = R(20, 0), b = R(2, 3), d = R(2, 3), f = R(30, 5), g = R(5, 2);
        f.prompt[0] = 88;
        const int64_t ss = ctn_gen_session_new(e);
        int64_t kids[2] = {0, 0};
        if (ss > 0) {
            accepted[0] = submit_session(e, &c, &a, 0, ss) > 0; /* prompt only: fills it */
            if (ctn_gen_session_fork(e, ss, 2, kids) == 0) {
                accepted[1] = submit_session(e, &c, &b, 1, kids[0]) > 0;
                accepted[2] = submit_session(e, &c, &d, 2, kids[1]) > 0;
            }
        }
        accepted[3] = submit(e, &c, &f, 3) > 0;
        accepted[4] = submit(e, &c, &g, 4) > 0;
        int expect = 0;
        for (int i = 0; i < 5; i++)
            expect += accepted[i];
        for (int guard = 0; guard < 20000 && c.n_done < expect; guard++)
            if (ctn_gen_step(e, NULL) == 0) {
                const struct timespec us = {0, 200000};
                nanosleep(&us, NULL);
            }
        const bool untouched = ctn__alloc_fail_after > 0; /* the failure was never reached */
        ctn__alloc_fail_after = -1;
        CHECK_EQ_INT(c.n_done, expect); /* all by the engine: none hung */
        if (ss > 0) ctn_gen_session_close(e, ss);
        for (int i = 0; i < 2; i++)
            if (kids[i] > 0) ctn_gen_session_close(e, kids[i]);
        run_manual(e);
        ctn_gen_free(e);
        for (int i = 0; i < 5; i++) {
            if (!accepted[i]) continue;
            CHECK_EQ_INT(c.out[i].done, 1);
            if (c.out[i].finish == CTN_FINISH_ERROR) {
                requests_failed++;
                if (c.out[i].code != CTN_ENOMEM)
                    printf("  N=%ld request %d: %d %s\n", n, i, c.out[i].code, c.out[i].error);
                CHECK_EQ_INT(c.out[i].code, CTN_ENOMEM);
            }
        }
        collector_close(&c);
        if (untouched) break;
    }
    QUIET = false;
    printf("  %ld allocations: %d engine starts and %d requests failed cleanly\n", n, starts_failed,
           requests_failed);
    CHECK(n > 20 && n < 20000 && starts_failed > 0 && requests_failed > 0);
    unload(&L);
}

/*
 * The same discipline with the engine's own thread live (not manual stepping): the N-th
 * allocation of an engine's life fails, and every one after it, over ctn_gen_new (its
 * state, its thread's start), submission, admission by the thread, a session and its
 * forks, and steps, whichever thread makes that allocation. Each case ends cleanly: the
 * start fails with CTN_ENOMEM, or every accepted request gets exactly one on_done within
 * a bounded wait (no hang), normally or with CTN_ENOMEM, and ctn_gen_free joins the thread;
 * the ASan copy checks that nothing leaks.
 */
TEST(allocation_failures_with_the_engine_thread) {
    loaded L;
    CHECK(load_random(&L, &SMALL) == 0);
    long n = 0;
    int starts_failed = 0, requests_failed = 0, hung = 0;
    QUIET = true;
    for (; n < 20000; n++) {
        static collector c;
        collector_init(&c);
        ctn_gen_params p = {0};
        p.fwd.n_threads = 1;
        p.fwd.n_ctx = 64;
        p.admit_timeout_s = 0.002;
        p.max_running = 4;
        p.step_tokens = 32;
        ctn_gen *e = NULL;
        char err[256];
        ctn__alloc_fail_after = n;
        const int rc = ctn_gen_new(&e, L.m, NULL, &p, err, sizeof err);
        if (rc < 0) {
            ctn__alloc_fail_after = -1;
            CHECK_EQ_INT(rc, CTN_ENOMEM);
            starts_failed++;
            collector_close(&c);
            continue;
        }
        bool accepted[4] = {false};
        req_t a = R(12, 0), b = R(2, 3), f = R(20, 4), g = R(5, 2);
        f.prompt[0] = 88;
        const int64_t ss = ctn_gen_session_new(e);
        int64_t kid = 0;
        if (ss > 0) {
            accepted[0] = submit_session(e, &c, &a, 0, ss) > 0; /* prompt only: fills it */
            if (ctn_gen_session_fork(e, ss, 1, &kid) == 0)
                accepted[1] = submit_session(e, &c, &b, 1, kid) > 0;
        }
        accepted[2] = submit(e, &c, &f, 2) > 0;
        accepted[3] = submit(e, &c, &g, 3) > 0;
        int expect = 0;
        for (int i = 0; i < 4; i++)
            expect += accepted[i];
        struct timespec until;
        clock_gettime(CLOCK_REALTIME, &until);
        until.tv_sec += 20; /* a bound far above the few ms a case takes: reaching it is a hang */
        pthread_mutex_lock(&c.mu);
        while (c.n_done < expect)
            if (pthread_cond_timedwait(&c.cv, &c.mu, &until) != 0) break;
        const int done = c.n_done;
        pthread_mutex_unlock(&c.mu);
        const bool untouched = ctn__alloc_fail_after > 0; /* the failure was never reached */
        ctn__alloc_fail_after = -1;
        if (done != expect) hung++;
        CHECK_EQ_INT(done, expect); /* all by the engine's thread: none hung */
        if (ss > 0) ctn_gen_session_close(e, ss);
        if (kid > 0) ctn_gen_session_close(e, kid);
        ctn_gen_free(e);
        for (int i = 0; i < 4; i++) {
            if (!accepted[i]) continue;
            CHECK_EQ_INT(c.out[i].done, 1);
            if (c.out[i].finish == CTN_FINISH_ERROR) {
                requests_failed++;
                if (c.out[i].code != CTN_ENOMEM)
                    printf("  N=%ld request %d: %d %s\n", n, i, c.out[i].code, c.out[i].error);
                CHECK_EQ_INT(c.out[i].code, CTN_ENOMEM);
            }
        }
        collector_close(&c);
        if (untouched || hung) break;
    }
    QUIET = false;
    printf("  %ld allocations: %d engine starts and %d requests failed cleanly\n", n, starts_failed,
           requests_failed);
    CHECK(hung == 0 && n > 20 && n < 20000 && starts_failed > 0 && requests_failed > 0);
    unload(&L);
}

int main(void) {
    RUN(tokens_carry_their_step);
    RUN(allocation_failures);
    RUN(allocation_failures_with_the_engine_thread);
    RUN(idle_sessions_give_blocks_back);
    RUN(admission_gives_up_with_enomem);
    RUN(alone_equals_batch_chunked_preempted);
    RUN(shared_prefix_computed_once);
    RUN(scheduler_admission_and_chunks);
    RUN(scheduler_preemption_order);
    RUN(scheduler_fairness);
    RUN(request_larger_than_pool);
    RUN(session_continues);
    RUN(session_fork);
    RUN(embeddings);
    RUN(bad_requests);
    RUN(stress_thousand_requests);
    return test_summary();
}
