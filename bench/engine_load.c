/*
 * Workloads for the shared generation engine (engine/gen.h), printed as one JSON line:
 *
 *   engine_load -m MODEL.gguf --workload mixed [--requests 256] [--min 16] [--max 1024]
 *               [--threads N] [--kv-memory MIB] [--seed S] [--no-prefix-cache]
 *       Requests with prompt and output lengths drawn uniformly from [min, max] (random
 *       token ids, greedy, EOS ignored), all submitted at once: KV memory waste (positions
 *       held by allocated blocks but not filled, over positions held, summed over the steps),
 *       throughput, preemptions.
 *
 *   engine_load -m MODEL.gguf --workload shared [--requests 64] [--prefix 512] [--suffix 16]
 *               [--gen 16] [--threads N] [--no-prefix-cache]
 *       Requests sharing a prefix of --prefix tokens (a system prompt) with their own
 *       --suffix tokens, all submitted at once: the time until the last request has its
 *       first token, the prefix-cache hits and misses, and the hit rate on the shared
 *       prefix's blocks.
 *
 * Not a test: it measures. bench/run_parallel.sh runs it.
 */
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "gen.h"
#include "gguf.h"
#include "model.h"

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static uint64_t rng(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done, n;
    double t0, last_first; /* submission, the latest first token */
    int64_t gen;
    int errors;
    bool *got_first;
} state;

typedef struct {
    state *st;
    int idx;
} ud_t;

static void on_token(void *ud, const ctn_gen_token *tk) {
    (void)tk;
    ud_t *u = ud;
    state *st = u->st;
    pthread_mutex_lock(&st->mu);
    st->gen++;
    if (!st->got_first[u->idx]) {
        st->got_first[u->idx] = true;
        const double t1 = now_s() - st->t0;
        if (t1 > st->last_first) st->last_first = t1;
    }
    pthread_mutex_unlock(&st->mu);
}

static void on_done(void *ud, int64_t id, const ctn_gen_result *r) {
    (void)id;
    ud_t *u = ud;
    state *st = u->st;
    pthread_mutex_lock(&st->mu);
    if (r->finish == CTN_FINISH_ERROR) {
        fprintf(stderr, "engine_load: request %d: %s\n", u->idx, r->error);
        st->errors++;
    }
    st->done++;
    pthread_cond_broadcast(&st->cv);
    pthread_mutex_unlock(&st->mu);
}

static long arg_long(const char *v, const char *name) {
    char *end;
    long x = v ? strtol(v, &end, 10) : -1;
    if (v == NULL || *end != '\0' || x < 0) {
        fprintf(stderr, "engine_load: %s needs a number >= 0\n", name);
        exit(2);
    }
    return x;
}

int main(int argc, char **argv) {
    const char *model = NULL, *workload = "mixed";
    long n_req = -1, lo = 16, hi = 1024, threads = 0, kv_mib = 0, prefix = 512, suffix = 16,
         gen = 16;
    uint64_t seed = 1;
    bool no_cache = false;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "-m")) model = v, i++;
        else if (!strcmp(a, "--workload")) workload = v, i++;
        else if (!strcmp(a, "--requests")) n_req = arg_long(v, a), i++;
        else if (!strcmp(a, "--min")) lo = arg_long(v, a), i++;
        else if (!strcmp(a, "--max")) hi = arg_long(v, a), i++;
        else if (!strcmp(a, "--threads")) threads = arg_long(v, a), i++;
        else if (!strcmp(a, "--kv-memory")) kv_mib = arg_long(v, a), i++;
        else if (!strcmp(a, "--prefix")) prefix = arg_long(v, a), i++;
        else if (!strcmp(a, "--suffix")) suffix = arg_long(v, a), i++;
        else if (!strcmp(a, "--gen")) gen = arg_long(v, a), i++;
        else if (!strcmp(a, "--seed")) seed = (uint64_t)arg_long(v, a), i++;
        else if (!strcmp(a, "--no-prefix-cache")) no_cache = true;
        else {
            fprintf(stderr, "engine_load: unknown argument %s\n", a);
            return 2;
        }
    }
    const bool mixed = workload != NULL && !strcmp(workload, "mixed");
    if (model == NULL || workload == NULL || (!mixed && strcmp(workload, "shared")) || lo < 1 ||
        hi < lo) {
        fprintf(stderr, "usage: engine_load -m MODEL.gguf --workload mixed|shared [options]\n");
        return 2;
    }
    if (n_req < 0) n_req = mixed ? 256 : 64;
    if (n_req < 1 || n_req > 100000) {
        fprintf(stderr, "engine_load: --requests must be 1..100000\n");
        return 2;
    }
    char err[512];
    ctn_gguf *g = NULL;
    ctn_model *m = NULL;
    if (ctn_gguf_open(&g, model, err, sizeof err) < 0 || ctn_model_load(&m, g, err, sizeof err) < 0) {
        fprintf(stderr, "engine_load: %s\n", err);
        return 1;
    }
    const int32_t n_vocab = (int32_t)m->hp.n_vocab;
    ctn_gen_params p = {0};
    p.fwd.n_threads = (int)threads;
    p.fwd.n_ctx = mixed ? 2 * hi + 16 : prefix + suffix + gen + 16;
    p.fwd.kv_memory = (size_t)kv_mib << 20;
    p.no_prefix_cache = no_cache;
    p.max_running = mixed ? 64 : (int)n_req;
    ctn_gen *e;
    if (ctn_gen_new(&e, m, NULL, &p, err, sizeof err) < 0) {
        fprintf(stderr, "engine_load: %s\n", err);
        return 1;
    }
    state st;
    memset(&st, 0, sizeof st);
    pthread_mutex_init(&st.mu, NULL);
    pthread_cond_init(&st.cv, NULL);
    st.n = (int)n_req;
    st.got_first = calloc((size_t)n_req, sizeof *st.got_first);
    ud_t *uds = calloc((size_t)n_req, sizeof *uds);
    const long max_prompt = mixed ? hi : prefix + suffix;
    int32_t *toks = malloc((size_t)max_prompt * sizeof *toks);
    int32_t *shared = malloc((size_t)(prefix > 0 ? prefix : 1) * sizeof *shared);
    if (st.got_first == NULL || uds == NULL || toks == NULL || shared == NULL) {
        fprintf(stderr, "engine_load: out of memory\n");
        return 1;
    }
    uint64_t rs = seed;
    for (long i = 0; i < prefix; i++)
        shared[i] = 1 + (int32_t)(rng(&rs) % (uint64_t)(n_vocab - 1));
    int64_t prompt_total = 0, gen_total = 0;
    st.t0 = now_s();
    for (long r = 0; r < n_req; r++) {
        long np, ng;
        if (mixed) {
            np = lo + (long)(rng(&rs) % (uint64_t)(hi - lo + 1));
            ng = lo + (long)(rng(&rs) % (uint64_t)(hi - lo + 1));
            for (long i = 0; i < np; i++)
                toks[i] = 1 + (int32_t)(rng(&rs) % (uint64_t)(n_vocab - 1));
        } else {
            np = prefix + suffix;
            ng = gen;
            memcpy(toks, shared, (size_t)prefix * sizeof *toks);
            for (long i = prefix; i < np; i++)
                toks[i] = 1 + (int32_t)(rng(&rs) % (uint64_t)(n_vocab - 1));
        }
        prompt_total += np;
        gen_total += ng;
        ctn_gen_request q = ctn_gen_request_default();
        q.prompt_ids = toks;
        q.n_prompt_ids = np;
        q.max_tokens = ng;
        q.ignore_eos = true;
        q.on_token = on_token;
        q.on_done = on_done;
        uds[r] = (ud_t){&st, (int)r};
        q.ud = &uds[r];
        if (ctn_gen_submit(e, &q, err, sizeof err) < 0) {
            fprintf(stderr, "engine_load: request %ld: %s\n", r, err);
            return 1;
        }
    }
    pthread_mutex_lock(&st.mu);
    while (st.done < st.n)
        pthread_cond_wait(&st.cv, &st.mu);
    pthread_mutex_unlock(&st.mu);
    const double wall = now_s() - st.t0;
    ctn_gen_stats s;
    ctn_gen_get_stats(e, &s);
    const double waste =
        s.kv_slots_alloc > 0 ? 1.0 - (double)s.kv_slots_used / (double)s.kv_slots_alloc : 0;
    const int64_t bs = 16; /* the default block size the engine uses here */
    const double prefix_blocks = (double)(prefix / bs) * (double)n_req;
    printf("{\"workload\": \"%s\", \"requests\": %ld, \"threads\": %d, \"prefix_cache\": %s, "
           "\"prompt_tokens\": %" PRId64 ", \"gen_tokens\": %" PRId64 ", \"wall_s\": %.3f, "
           "\"tok_s\": %.1f, \"gen_tok_s\": %.1f, \"last_first_token_s\": %.3f, "
           "\"ttft_mean_s\": %.3f, \"steps\": %" PRId64 ", \"preemptions\": %" PRId64
           ", \"kv_blocks\": %d, \"kv_waste\": %.4f, \"prefix_hits\": %" PRId64
           ", \"prefix_misses\": %" PRId64 ", \"prefix_evictions\": %" PRId64,
           workload, n_req, threads > 0 ? (int)threads : -1, no_cache ? "false" : "true",
           prompt_total, gen_total, wall, (double)(prompt_total + gen_total) / wall,
           (double)st.gen / wall, st.last_first, s.ttft_mean_s, s.steps, s.preemptions,
           s.kv_blocks, waste, s.prefix_hits, s.prefix_misses, s.prefix_evictions);
    if (!mixed)
        printf(", \"shared_prefix_hit_rate\": %.4f",
               prefix_blocks > 0 ? (double)s.prefix_hits / prefix_blocks : 0);
    printf(", \"errors\": %d}\n", st.errors);
    ctn_gen_free(e);
    ctn_model_free(m);
    ctn_gguf_free(g);
    free(toks);
    free(shared);
    free(uds);
    free(st.got_first);
    return st.errors ? 1 : 0;
}
