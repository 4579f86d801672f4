/*
 * LoRA adapters in the shared engine (gen.h ctn_gen_lora_add, request adapter and scale):
 * 64 requests mixing 8 adapters and the base in one engine give every request what it gets
 * alone; the prefix cache never hands KV of one (adapter, scale) to another; scale 0 is the
 * base model and shares its cache; unknown adapters, shape mismatches and a session
 * continued with another adapter are refused; an adapter removed while in use lives until
 * its last request ends (ASan copy: nothing leaks or is used after free).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "gen.h"
#include "lora.h"
#include "lorarand.h"
#include "model.h"
#include "randmodel.h"
#include "test.h"

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    char path[256];
} loaded;

static int load_random(loaded *L, uint64_t seed) {
    char err[512];
    memset(L, 0, sizeof *L);
    snprintf(L->path, sizeof L->path, "/tmp/test_gen_lora-%d-%llu.gguf", (int)getpid(),
             (unsigned long long)seed);
    randmodel_shape sh = {CTN_TYPE_F32, 64, 4, 2, 96, 2, false, 300, 10000, 1e-5f, seed, 0, 0};
    if (randmodel_write(&sh, false, L->path, err, sizeof err) < 0 ||
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

/* ---- running requests in manual mode ---------------------------------------------------- */

#define NOUT 12
typedef struct {
    int32_t toks[NOUT];
    int n, done;
    ctn_finish finish;
    int code;      /* of an error result */
    char err[256]; /* a refused submission's reason */
} out_t;

static void on_token(void *ud, const ctn_gen_token *tk) {
    const int32_t tok = tk->token;
    out_t *o = ud;
    if (o->n < NOUT) o->toks[o->n] = tok;
    o->n++;
}

static void on_done(void *ud, int64_t id, const ctn_gen_result *r) {
    (void)id;
    out_t *o = ud;
    o->done++;
    o->finish = r->finish;
    o->code = r->code;
}

static ctn_gen *engine(const ctn_model *m, bool no_cache) {
    char err[256];
    ctn_gen_params p = {0};
    p.manual = true;
    p.no_prefix_cache = no_cache;
    p.fwd.n_threads = 2;
    p.fwd.n_ctx = 128;
    p.fwd.kv_memory = 4u << 20;
    ctn_gen *e = NULL;
    if (ctn_gen_new(&e, m, NULL, &p, err, sizeof err) < 0) printf("  ctn_gen_new: %s\n", err);
    return e;
}

static int64_t submit(ctn_gen *e, const int32_t *ids, int n, int32_t adapter, float scale,
                      int64_t session, out_t *o) {
    char err[256];
    ctn_gen_request r = ctn_gen_request_default();
    r.prompt_ids = ids;
    r.n_prompt_ids = n;
    r.max_tokens = NOUT;
    r.ignore_eos = true;
    r.adapter = adapter;
    r.adapter_scale = scale;
    r.session = session;
    r.on_token = on_token;
    r.on_done = on_done;
    r.ud = o;
    const int64_t id = ctn_gen_submit(e, &r, err, sizeof err);
    if (id < 0) snprintf(o->err, sizeof o->err, "%s", err);
    return id;
}

static void drain(ctn_gen *e) {
    while (ctn_gen_step(e, NULL) > 0) {
    }
}

static void prompt_of(int i, int32_t *p) {
    for (int j = 0; j < 20; j++)
        p[j] = 1 + (i % 5 * 37 + j * 11) % 290; /* 5 distinct prompts, 20 tokens */
}

TEST(mixed_adapters_equal_alone) {
    loaded L;
    if (load_random(&L, 31) < 0) {
        CHECK(0);
        return;
    }
    char err[256];
    /* Alone: each (prompt, adapter) pair on an engine of its own. */
    enum { NREQ = 64, NAD = 9 };
    static out_t alone[NREQ], mixed[NREQ];
    memset(alone, 0, sizeof alone);
    memset(mixed, 0, sizeof mixed);
    int32_t prompts[NREQ][20];
    for (int i = 0; i < NREQ; i++)
        prompt_of(i, prompts[i]);
    for (int i = 0; i < NREQ; i++) {
        ctn_gen *e = engine(L.m, true);
        const int k = i % NAD; /* 0: the base, 1..8: adapters */
        int32_t id = 0;
        if (k > 0) {
            id = ctn_gen_lora_add(
                e, lorarand_make(L.m, 1 + k % 4, k % 2 ? 0x7Fu : 0x05u, 500 + k, 0.08f), err,
                sizeof err);
            CHECK(id > 0);
        }
        CHECK(submit(e, prompts[i], 20, id, 1.0f, 0, &alone[i]) > 0);
        drain(e);
        ctn_gen_free(e);
    }
    /* Mixed: one engine with all eight adapters, every request submitted at once. */
    ctn_gen *e = engine(L.m, false);
    int32_t ids[NAD] = {0};
    for (int k = 1; k < NAD; k++) {
        ids[k] = ctn_gen_lora_add(
            e, lorarand_make(L.m, 1 + k % 4, k % 2 ? 0x7Fu : 0x05u, 500 + k, 0.08f), err,
            sizeof err);
        CHECK(ids[k] > 0);
    }
    for (int i = 0; i < NREQ; i++)
        CHECK(submit(e, prompts[i], 20, ids[i % NAD], 1.0f, 0, &mixed[i]) > 0);
    drain(e);
    int bad = 0, differs_from_base = 0;
    for (int i = 0; i < NREQ; i++) {
        CHECK_EQ_INT(mixed[i].done, 1);
        if (mixed[i].n != alone[i].n || memcmp(mixed[i].toks, alone[i].toks, sizeof mixed[i].toks))
            bad++;
        /* the adapters change outputs (else the test proves nothing) */
        if (i % NAD != 0 && memcmp(alone[i].toks, alone[i - i % NAD].toks, sizeof alone[i].toks))
            differs_from_base++;
    }
    CHECK_EQ_INT(bad, 0);
    CHECK(differs_from_base > NREQ / 2);
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    CHECK_EQ_INT(st.loras, NAD - 1);
    CHECK(st.lora_bytes > 0);
    ctn_gen_free(e);
    unload(&L);
}

TEST(prefix_cache_keeps_adapters_apart) {
    loaded L;
    if (load_random(&L, 41) < 0) {
        CHECK(0);
        return;
    }
    char err[256];
    ctn_gen *e = engine(L.m, false);
    const int32_t a = ctn_gen_lora_add(e, lorarand_make(L.m, 4, 0x7Fu, 9, 0.08f), err, sizeof err);
    int32_t p[20];
    prompt_of(0, p);
    /* Reference outputs without any cache. */
    out_t ref_base = {0}, ref_a = {0}, ref_half = {0};
    ctn_gen *nc = engine(L.m, true);
    const int32_t a2 =
        ctn_gen_lora_add(nc, lorarand_make(L.m, 4, 0x7Fu, 9, 0.08f), err, sizeof err);
    submit(nc, p, 20, 0, 1, 0, &ref_base);
    submit(nc, p, 20, a2, 1, 0, &ref_a);
    submit(nc, p, 20, a2, 0.5f, 0, &ref_half);
    drain(nc);
    ctn_gen_free(nc);
    /* With the cache: base first (its blocks cached), then the adapter at two scales, then
     * the base again and scale 0 (which is the base). */
    out_t o[5];
    memset(o, 0, sizeof o);
    const float scales[5] = {1, 1, 0.5f, 1, 0};
    const int32_t ad[5] = {0, a, a, 0, a};
    ctn_gen_stats before, after;
    for (int i = 0; i < 5; i++) {
        ctn_gen_get_stats(e, &before);
        submit(e, p, 20, ad[i], scales[i], 0, &o[i]);
        drain(e);
        ctn_gen_get_stats(e, &after);
        const int64_t hits = after.prefix_hits - before.prefix_hits;
        if (i == 1 || i == 2) CHECK_EQ_INT(hits, 0); /* a new (adapter, scale): nothing reused */
        if (i == 3 || i == 4) CHECK(hits > 0);       /* the base's blocks, for scale 0 too */
    }
    CHECK(memcmp(o[0].toks, ref_base.toks, sizeof o[0].toks) == 0);
    CHECK(memcmp(o[1].toks, ref_a.toks, sizeof o[1].toks) == 0);
    CHECK(memcmp(o[2].toks, ref_half.toks, sizeof o[2].toks) == 0);
    CHECK(memcmp(o[3].toks, ref_base.toks, sizeof o[3].toks) == 0);
    CHECK(memcmp(o[4].toks, ref_base.toks, sizeof o[4].toks) == 0);
    CHECK(memcmp(ref_a.toks, ref_base.toks, sizeof ref_a.toks) != 0);
    ctn_gen_free(e);
    unload(&L);
}

TEST(bad_requests_and_removal) {
    loaded L;
    if (load_random(&L, 43) < 0) {
        CHECK(0);
        return;
    }
    char err[256];
    ctn_gen *e = engine(L.m, false);
    int32_t p[20];
    prompt_of(1, p);
    out_t o = {0};
    CHECK_EQ_INT(submit(e, p, 20, 7, 1, 0, &o), CTN_EINVAL);
    CHECK_CONTAINS(o.err, "adapter 7 is not loaded");
    /* A shape that does not fit the model. */
    ctn_lora *bad = lorarand_make(L.m, 2, 0x01u, 1, 0.08f);
    bad->mats[0].n_in = 63;
    CHECK_EQ_INT(ctn_gen_lora_add(e, bad, err, sizeof err), CTN_EINVAL);
    CHECK_CONTAINS(err, "layer 0 attn_q: rank 2");
    /* A session keeps its first adapter. */
    const int32_t a = ctn_gen_lora_add(e, lorarand_make(L.m, 2, 0x7Fu, 2, 0.08f), err, sizeof err);
    const int64_t sess = ctn_gen_session_new(e);
    out_t s1 = {0}, s2 = {0};
    CHECK(submit(e, p, 20, a, 1, sess, &s1) > 0);
    CHECK_EQ_INT(submit(e, p, 5, 0, 1, sess, &s2), CTN_EINVAL);
    CHECK_CONTAINS(s2.err, "another adapter or scale");
    drain(e);
    /* Removed while a request uses it: the request finishes with it; then it is gone. */
    out_t r1 = {0}, r2 = {0};
    CHECK(submit(e, p, 20, a, 1, 0, &r1) > 0);
    CHECK_EQ_INT(ctn_gen_lora_remove(e, a), 0);
    CHECK_EQ_INT(ctn_gen_lora_remove(e, a), CTN_ENOENT);
    CHECK_EQ_INT(submit(e, p, 20, a, 1, 0, &r2), CTN_EINVAL);
    drain(e);
    CHECK_EQ_INT(r1.done, 1);
    CHECK_EQ_INT(r1.n, NOUT);
    ctn_gen_stats st;
    ctn_gen_get_stats(e, &st);
    CHECK_EQ_INT(st.loras, 0); /* freed with its last request: the session holds no request */
    CHECK_EQ_INT(submit(e, p, 20, 0, NAN, 0, &o), CTN_EINVAL);
    ctn_gen_session_close(e, sess);
    drain(e);
    ctn_gen_free(e);
    unload(&L);
}

TEST(budget_unloads_idle_adapters_lru) {
    loaded L;
    if (load_random(&L, 47) < 0) {
        CHECK(0);
        return;
    }
    char err[256];
    ctn_gen_params p = {0};
    p.manual = true;
    p.fwd.n_threads = 1;
    p.fwd.n_ctx = 128;
    p.fwd.kv_memory = 4u << 20;
    ctn_lora *probe = lorarand_make(L.m, 4, 0x7Fu, 1, 0.08f);
    p.lora_budget = 2 * probe->bytes + probe->bytes / 2; /* room for two */
    ctn_gen *e = NULL;
    CHECK(ctn_gen_new(&e, L.m, NULL, &p, err, sizeof err) == 0);
    const int32_t a = ctn_gen_lora_add(e, probe, err, sizeof err);
    const int32_t b = ctn_gen_lora_add(e, lorarand_make(L.m, 4, 0x7Fu, 2, 0.08f), err, sizeof err);
    int32_t pr[20];
    prompt_of(2, pr);
    out_t o = {0};
    submit(e, pr, 20, a, 1, 0, &o); /* a was used last: b is the least recently used */
    drain(e);
    const int32_t c = ctn_gen_lora_add(e, lorarand_make(L.m, 4, 0x7Fu, 3, 0.08f), err, sizeof err);
    CHECK(c > 0);
    CHECK(ctn_gen_lora_loaded(e, a));
    CHECK(!ctn_gen_lora_loaded(e, b));
    CHECK(ctn_gen_lora_loaded(e, c));
    /* In use adapters are never unloaded: with a and c both busy, a third does not fit. */
    out_t u1 = {0}, u2 = {0};
    CHECK(submit(e, pr, 20, a, 1, 0, &u1) > 0);
    CHECK(submit(e, pr, 20, c, 1, 0, &u2) > 0);
    CHECK_EQ_INT(ctn_gen_lora_add(e, lorarand_make(L.m, 4, 0x7Fu, 4, 0.08f), err, sizeof err),
                 CTN_ENOMEM);
    CHECK_CONTAINS(err, "do not fit the adapter budget");
    drain(e);
    ctn_gen_free(e);
    unload(&L);
}

/*
 * Allocation failures over the adapter registry (SQLite's discipline): for every N, the N-th
 * allocation after the engine's start fails, once and then persistently, while three
 * adapters are registered under a budget of two (the third unloads the idle least recently
 * used one), requests run with each adapter and with the base, and one adapter is removed
 * while its request runs. Each case ends cleanly: a registration fails with CTN_ENOMEM (and
 * frees its adapter), a submission is refused, or a request ends exactly once, normally or
 * with CTN_ENOMEM; the ASan copy checks that nothing leaks.
 */
TEST(allocation_failures_in_the_registry) {
    loaded L;
    if (load_random(&L, 48) < 0) {
        CHECK(0);
        return;
    }
    ctn_lora *probe = lorarand_make(L.m, 4, 0x7Fu, 9, 0.08f);
    const size_t bytes = probe->bytes;
    ctn_lora_free(probe);
    int cases = 0, adds_failed = 0, requests_failed = 0;
    for (int once = 0; once < 2; once++) {
        long n = 0;
        for (; n < 5000; n++) {
            char err[256];
            ctn_gen_params p = {0};
            p.manual = true;
            p.fwd.n_threads = 1;
            p.fwd.n_ctx = 128;
            p.fwd.kv_memory = 4u << 20;
            p.lora_budget = 2 * bytes + bytes / 2; /* room for two */
            p.admit_timeout_s = 0.001;
            ctn_gen *e = NULL;
            CHECK(ctn_gen_new(&e, L.m, NULL, &p, err, sizeof err) == 0);
            ctn_lora *ad[3];
            for (int i = 0; i < 3; i++)
                ad[i] = lorarand_make(L.m, 4, 0x7Fu, 10 + (uint64_t)i, 0.08f); /* not hooked */
            int32_t pr[20];
            prompt_of(3, pr);
            out_t o[4];
            memset(o, 0, sizeof o);
            bool accepted[4] = {false};
            const long failed_before = ctn__alloc_n_failed;
            ctn__alloc_fail_once = once;
            ctn__alloc_fail_after = n;
            int32_t id[3];
            for (int i = 0; i < 2; i++) {
                id[i] = ctn_gen_lora_add(e, ad[i], err, sizeof err);
                if (id[i] < 0) {
                    CHECK_EQ_INT(id[i], CTN_ENOMEM);
                    adds_failed++;
                }
            }
            if (id[0] > 0) accepted[0] = submit(e, pr, 20, id[0], 1, 0, &o[0]) > 0;
            ctn_gen_step(e, NULL); /* the first adapter is now the most recently used */
            id[2] = ctn_gen_lora_add(e, ad[2], err, sizeof err); /* unloads the second */
            if (id[2] < 0) {
                CHECK_EQ_INT(id[2], CTN_ENOMEM);
                adds_failed++;
            }
            if (id[1] > 0) accepted[1] = submit(e, pr, 20, id[1], 0.5f, 0, &o[1]) > 0;
            if (id[2] > 0) accepted[2] = submit(e, pr, 20, id[2], 1, 0, &o[2]) > 0;
            accepted[3] = submit(e, pr, 20, 0, 0, 0, &o[3]) > 0;
            if (id[0] > 0) ctn_gen_lora_remove(e, id[0]); /* in use: lives to its request's end */
            /* A request waiting for memory is retried for admit_timeout_s: steps that run
             * nothing then return 0, so wait on the results, not on the step. */
            for (int guard = 0; guard < 20000; guard++) {
                int left = 0;
                for (int i = 0; i < 4; i++)
                    left += accepted[i] && o[i].done == 0;
                if (left == 0) break;
                if (ctn_gen_step(e, NULL) == 0) {
                    const struct timespec us = {0, 200000};
                    nanosleep(&us, NULL);
                }
            }
            const bool untouched = ctn__alloc_n_failed == failed_before;
            ctn__alloc_fail_after = -1;
            ctn__alloc_fail_once = false;
            for (int i = 0; i < 4; i++) {
                if (!accepted[i]) continue;
                if (o[i].done != 1)
                    printf("  N=%ld (once %d) request %d: done %d\n", n, once, i, o[i].done);
                CHECK_EQ_INT(o[i].done, 1);
                if (o[i].finish == CTN_FINISH_ERROR) {
                    requests_failed++;
                    CHECK_EQ_INT(o[i].code, CTN_ENOMEM);
                }
            }
            ctn_gen_free(e);
            cases++;
            if (untouched) break;
        }
        CHECK(n > 5 && n < 5000);
    }
    printf("  %d cases: %d registrations and %d requests failed cleanly\n", cases, adds_failed,
           requests_failed);
    CHECK(adds_failed > 0 && requests_failed > 0);
    unload(&L);
}

int main(void) {
    RUN(mixed_adapters_equal_alone);
    RUN(prefix_cache_keeps_adapters_apart);
    RUN(bad_requests_and_removal);
    RUN(budget_unloads_idle_adapters_lru);
    RUN(allocation_failures_in_the_registry);
    return test_summary();
}
