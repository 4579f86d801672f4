/*
 * The engine's forward pass (engine/forward.c) against the scalar reference
 * (engine/ref_forward.c), and its invariances: a token's logits are the same bits whether
 * its sequence was prefilled in one batch or token by token, alone or beside another
 * sequence, on 1 or 3 threads, with KV blocks of 1 or 16 positions.
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "error.h"
#include "forward.h"
#include "kern.h"
#include "model.h"
#include "randmodel.h"
#include "ref_forward.h"
#include "test.h"
#include "vocab.h"

/* ggml's normalised error: max |a - b| / max |b|. */
static double norm_err(const float *a, const float *b, int64_t n) {
    double num = 0, den = 0;
    for (int64_t i = 0; i < n; i++) {
        double d = fabs((double)a[i] - (double)b[i]);
        if (d > num || d != d) num = d;
        if (fabs((double)b[i]) > den) den = fabs((double)b[i]);
    }
    return den > 0 ? num / den : num;
}

static int32_t argmax(const float *v, int64_t n) {
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int32_t)i;
    return best;
}

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    char path[256];
} loaded;

static int load_path(loaded *L, const char *path) {
    char err[512];
    memset(L, 0, sizeof *L);
    if (ctn_gguf_open(&L->g, path, err, sizeof err) < 0 ||
        ctn_model_load(&L->m, L->g, err, sizeof err) < 0) {
        printf("  load %s: %s\n", path, err);
        return -1;
    }
    return 0;
}

static int load_random(loaded *L, const randmodel_shape *sh) {
    char err[512];
    const char *tmp = getenv("TMPDIR");
    char path[256];
    snprintf(path, sizeof path, "%s/test_forward-%d-%llu.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid(), (unsigned long long)sh->seed);
    if (randmodel_write(sh, false, path, err, sizeof err) < 0) {
        printf("  write: %s\n", err);
        return -1;
    }
    int rc = load_path(L, path);
    snprintf(L->path, sizeof L->path, "%s", path);
    return rc;
}

static void unload(loaded *L) {
    ctn_model_free(L->m);
    ctn_gguf_free(L->g);
    if (L->path[0]) unlink(L->path);
}

static const char *shared_dir(void) {
    const char *s = getenv("CTN_SHARED");
    return s && *s ? s : "../shared";
}

/*
 * Feeds seq token by token to the engine and to the reference and returns the worst
 * normalised error of the logits over the positions; the greedy continuation of n_gen
 * tokens is compared too (and must match when need_greedy).
 */
static double vs_reference(const ctn_model *m, const ctn_fwd_params *fp, const int32_t *seq,
                           int n_seq, int n_gen, bool need_greedy) {
    char err[512];
    const int64_t nv = m->hp.n_vocab;
    ctn_fwd *f = NULL;
    ctn_kv_seq kseq;
    ctn_ref_state rs;
    float *le = malloc((size_t)nv * sizeof *le), *lr = malloc((size_t)nv * sizeof *lr);
    double worst = 0;
    CHECK(le != NULL && lr != NULL);
    CHECK(ctn_ref_state_init(&rs, m, n_seq + n_gen + 1) == 0);
    if (ctn_fwd_new(&f, m, fp, err, sizeof err) < 0) {
        printf("  ctn_fwd_new: %s\n", err);
        CHECK(0);
        goto out;
    }
    CHECK(ctn_fwd_seq_init(f, &kseq) == 0);
    int32_t te = 0, tr = 0;
    for (int pos = 0; pos < n_seq + n_gen; pos++) {
        int32_t ie = pos < n_seq ? seq[pos] : te, ir = pos < n_seq ? seq[pos] : tr;
        ctn_fwd_seg seg = {.seq = &kseq, .tokens = &ie, .n_tokens = 1, .logits = true};
        int rc = ctn_fwd_run(f, &seg, 1, le);
        if (rc < 0) printf("  ctn_fwd_run: %s\n", ctn_fwd_errmsg(f));
        CHECK(rc == 0);
        CHECK(ctn_ref_forward(m, &rs, ir, pos, lr) == 0);
        if (ie == ir) {
            double e = norm_err(le, lr, nv);
            if (e > worst || e != e) worst = e;
        }
        te = argmax(le, nv);
        tr = argmax(lr, nv);
        if (need_greedy && pos >= n_seq - 1 && te != tr) {
            printf("  greedy differs at step %d: engine %d, reference %d\n", pos - n_seq + 1, te,
                   tr);
            CHECK(0);
            need_greedy = false;
        }
    }
    ctn_fwd_seq_close(f, &kseq);
out:
    ctn_fwd_free(f);
    ctn_ref_state_close(&rs);
    free(le), free(lr);
    return worst;
}

/* ---- against the reference ----------------------------------------------------------- */

TEST(stories_matches_reference) {
    char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", shared_dir());
    if (access(path, R_OK) != 0) SKIP("%s is missing (set CTN_SHARED to the shared folder)", path);
    loaded L;
    if (load_path(&L, path) < 0) {
        CHECK(0);
        return;
    }
    ctn_vocab *v;
    int32_t *prompt;
    size_t n_prompt;
    char err[512];
    CHECK(ctn_vocab_load(&v, L.g, err, sizeof err) == 0);
    CHECK(ctn_tokenize(v, "Once upon a time", 16, true, false, &prompt, &n_prompt) == 0);
    CHECK(n_prompt == 5 && prompt[0] == 1);
    for (int kv32 = 0; kv32 < 2; kv32++)
        for (int th = 1; th <= 2; th++) {
            ctn_fwd_params fp = {.n_threads = th, .n_ctx = 128, .kv_f32 = kv32};
            double e = vs_reference(L.m, &fp, prompt, (int)n_prompt, 60, true);
            printf("  stories260K kv %s, %d thread(s): max normalised error %.3g\n",
                   kv32 ? "F32" : "F16", th, e);
            CHECK(e < (kv32 ? 1e-5 : 2e-3));
        }
    free(prompt);
    ctn_vocab_free(v);
    unload(&L);
}

static const randmodel_shape SHAPES[] = {
    {CTN_TYPE_F32, 32, 4, 4, 50, 1, true, 64, 10000, 1e-5f, 1, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 48, 3, 1, 97, 2, false, 100, 500000, 1e-6f, 2, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 128, 8, 2, 384, 2, false, 300, 10000, 1e-5f, 7, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F16, 64, 4, 2, 171, 2, true, 300, 10000, 1e-5f, 9, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_BF16, 96, 3, 3, 257, 1, false, 150, 100, 1e-6f, 12, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q8_0, 64, 4, 2, 192, 2, false, 200, 10000, 1e-5f, 13, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_0, 128, 4, 1, 320, 1, true, 300, 500000, 1e-5f, 17, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_1, 64, 4, 2, 128, 1, false, 100, 10000, 1e-5f, 22, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q5_0, 64, 4, 2, 128, 1, true, 100, 10000, 1e-5f, 23, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q5_1, 64, 4, 2, 128, 1, false, 100, 10000, 1e-5f, 24, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q4_K, 256, 4, 2, 512, 2, false, 300, 10000, 1e-5f, 18, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q5_K, 256, 8, 1, 256, 1, true, 128, 1000000, 1e-5f, 25, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_Q6_K, 256, 2, 1, 768, 2, true, 200, 500000, 1e-6f, 21, RANDMODEL_LLAMA, 0},
    {CTN_TYPE_F32, 64, 4, 2, 128, 2, false, 200, 1000000, 1e-6f, 31, RANDMODEL_QWEN2, 0},
    {CTN_TYPE_Q8_0, 128, 4, 2, 256, 2, true, 150, 1000000, 1e-6f, 33, RANDMODEL_QWEN2, 0},
    {CTN_TYPE_F32, 64, 4, 2, 96, 2, false, 200, 1000000, 1e-6f, 34, RANDMODEL_QWEN3, 24},
    {CTN_TYPE_Q4_K, 256, 4, 2, 512, 1, false, 200, 1000000, 1e-6f, 36, RANDMODEL_QWEN3, 128},
};

/* Tolerances against the reference, which keeps activations in F32 (see fwddiff.c). */
static double tolerance(int type) {
    switch (type) {
    case CTN_TYPE_F32: return 1e-5;
    case CTN_TYPE_F16: return 3e-3;
    case CTN_TYPE_BF16: return 1.5e-2;
    default: return 5e-2;
    }
}

TEST(random_models_match_reference) {
    for (size_t i = 0; i < sizeof SHAPES / sizeof *SHAPES; i++) {
        const randmodel_shape *sh = &SHAPES[i];
        loaded L;
        if (load_random(&L, sh) < 0) {
            CHECK(0);
            unload(&L);
            continue;
        }
        int32_t seq[12];
        uint64_t rng = sh->seed * 31 + 7;
        seq[0] = 1;
        for (int j = 1; j < 12; j++)
            seq[j] = 4 + (int32_t)(rng_next(&rng) % (uint64_t)(sh->n_vocab - 4));
        ctn_fwd_params fp = {.n_threads = 2, .n_ctx = 64, .kv_f32 = true};
        double e = vs_reference(L.m, &fp, seq, 12, 6, sh->type == CTN_TYPE_F32);
        printf("  %-5s d%d h%d/%d ff%d: max normalised error %.3g (tolerance %.0e)\n",
               ctn_type_name(sh->type), sh->dim, sh->n_head, sh->n_kv, sh->ff, e,
               tolerance(sh->type));
        CHECK(e <= tolerance(sh->type));
        /* With F32 activations (f32_act) the engine computes what the reference computes,
         * the dequantized weights times unrounded activations: F32's tolerance and the same
         * greedy tokens for every weight type. */
        fp.f32_act = true;
        const double ex = vs_reference(L.m, &fp, seq, 12, 6, true);
        printf("  %-5s with f32_act: max normalised error %.3g (tolerance %.0e)\n",
               ctn_type_name(sh->type), ex, tolerance(CTN_TYPE_F32));
        CHECK(ex <= tolerance(CTN_TYPE_F32));
        unload(&L);
    }
}

/* ---- invariances --------------------------------------------------------------------- */

/* Last-token logits after feeding seq with the given parameters, prefill chunk `chunk`. */
static int run_logits(const ctn_model *m, const ctn_fwd_params *fp, const int32_t *seq, int n,
                      int chunk, float *out) {
    char err[512];
    ctn_fwd *f;
    if (ctn_fwd_new(&f, m, fp, err, sizeof err) < 0) {
        printf("  %s\n", err);
        return -1;
    }
    ctn_kv_seq s;
    int rc = ctn_fwd_seq_init(f, &s);
    for (int i = 0; rc == 0 && i < n; i += chunk) {
        int k = n - i < chunk ? n - i : chunk;
        ctn_fwd_seg seg = {.seq = &s, .tokens = seq + i, .n_tokens = k, .logits = i + k == n};
        rc = ctn_fwd_run(f, &seg, 1, out);
        if (rc < 0) printf("  %s\n", ctn_fwd_errmsg(f));
    }
    ctn_fwd_seq_close(f, &s);
    ctn_fwd_free(f);
    return rc;
}

TEST(batch_invariance) {
    static const randmodel_shape shapes[] = {
        {CTN_TYPE_F32, 64, 8, 2, 128, 2, false, 200, 10000, 1e-5f, 4, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_F16, 48, 3, 1, 97, 2, false, 100, 500000, 1e-6f, 8, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_Q8_0, 96, 3, 1, 160, 1, true, 150, 1000000, 1e-5f, 14, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_Q4_0, 64, 8, 2, 128, 3, false, 200, 10000, 1e-5f, 16, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_Q4_K, 256, 8, 1, 256, 1, true, 128, 1000000, 1e-5f, 19, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_Q6_K, 256, 4, 4, 512, 1, false, 300, 10000, 1e-5f, 20, RANDMODEL_LLAMA, 0},
    };
    for (size_t si = 0; si < sizeof shapes / sizeof *shapes; si++) {
        const randmodel_shape *sh = &shapes[si];
        loaded L;
        if (load_random(&L, sh) < 0) {
            CHECK(0);
            unload(&L);
            continue;
        }
        const int64_t nv = L.m->hp.n_vocab;
        enum { N = 37 };
        int32_t seq[N];
        uint64_t rng = sh->seed;
        for (int j = 0; j < N; j++)
            seq[j] = (int32_t)(rng_next(&rng) % (uint64_t)nv);
        float *base = malloc((size_t)nv * sizeof *base),
              *got = malloc((size_t)nv * 2 * sizeof *got);
        for (int kv32 = 0; kv32 < 2; kv32++) {
            ctn_fwd_params fp = {.n_threads = 1, .n_ctx = 64, .kv_f32 = kv32};
            CHECK(run_logits(L.m, &fp, seq, N, 1, base) == 0);
            /* One batch, chunks of 5, 3 threads, blocks of 1 and 7 positions. */
            CHECK(run_logits(L.m, &fp, seq, N, N, got) == 0);
            CHECK(memcmp(base, got, (size_t)nv * sizeof *got) == 0);
            CHECK(run_logits(L.m, &fp, seq, N, 5, got) == 0);
            CHECK(memcmp(base, got, (size_t)nv * sizeof *got) == 0);
            ctn_fwd_params f3 = fp;
            f3.n_threads = 3;
            CHECK(run_logits(L.m, &f3, seq, N, 4, got) == 0);
            CHECK(memcmp(base, got, (size_t)nv * sizeof *got) == 0);
            ctn_fwd_params fb = fp;
            fb.kv_block = 1;
            CHECK(run_logits(L.m, &fb, seq, N, 9, got) == 0);
            CHECK(memcmp(base, got, (size_t)nv * sizeof *got) == 0);
            fb.kv_block = 7;
            fb.n_threads = 2;
            CHECK(run_logits(L.m, &fb, seq, N, N, got) == 0);
            CHECK(memcmp(base, got, (size_t)nv * sizeof *got) == 0);

            /* Two sequences in one batch, each equal to itself alone. */
            char err[512];
            ctn_fwd *f;
            fp.n_threads = 2;
            fp.kv_memory = 0;
            CHECK(
                ctn_fwd_new(&f, L.m,
                            &(ctn_fwd_params){
                                .n_threads = 2, .n_ctx = 64, .kv_f32 = kv32, .kv_memory = 1 << 22},
                            err, sizeof err) == 0);
            ctn_kv_seq a, b;
            CHECK(ctn_fwd_seq_init(f, &a) == 0);
            CHECK(ctn_fwd_seq_init(f, &b) == 0);
            int32_t other[20];
            for (int j = 0; j < 20; j++)
                other[j] = (int32_t)((j * 7 + 3) % nv);
            ctn_fwd_seg segs[2] = {{.seq = &b, .tokens = other, .n_tokens = 20, .logits = true},
                                   {.seq = &a, .tokens = seq, .n_tokens = 30, .logits = false}};
            CHECK(ctn_fwd_run(f, segs, 2, got) == 0);
            segs[0] =
                (ctn_fwd_seg){.seq = &a, .tokens = seq + 30, .n_tokens = N - 30, .logits = true};
            segs[1] = (ctn_fwd_seg){.seq = &b, .tokens = other, .n_tokens = 3, .logits = true};
            CHECK(ctn_fwd_run(f, segs, 2, got) == 0);
            CHECK(memcmp(base, got, (size_t)nv * sizeof *got) == 0);
            ctn_fwd_seq_close(f, &a);
            ctn_fwd_seq_close(f, &b);
            CHECK(ctn_fwd_kv(f)->n_free == ctn_fwd_kv(f)->n_blocks);
            ctn_fwd_free(f);
        }
        free(base), free(got);
        unload(&L);
    }
}

/* ---- errors -------------------------------------------------------------------------- */

/* Loads a random model of shape *shp into L, or fails the test and returns from it. */
#define LOAD_RANDOM(L, shp)                                                                        \
    do {                                                                                           \
        if (load_random(&(L), (shp)) < 0) {                                                        \
            CHECK(0);                                                                              \
            unload(&(L));                                                                          \
            return;                                                                                \
        }                                                                                          \
    } while (0)

/* One layer, width 32, 4 heads of 8, vocabulary 64, F32. */
static const randmodel_shape TINY = {CTN_TYPE_F32,    32, 4, 4, 50, 1, true, 64, 10000, 1e-5f, 1,
                                     RANDMODEL_LLAMA, 0};

TEST(errors) {
    const randmodel_shape sh = TINY;
    loaded L;
    LOAD_RANDOM(L, &sh);
    char err[512];
    ctn_fwd *f;
    CHECK(ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.n_threads = -1}, err, sizeof err) == CTN_EINVAL);
    CHECK(ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.n_ctx = -5}, err, sizeof err) == CTN_EINVAL);
    CHECK(ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.kv_memory = 10}, err, sizeof err) == CTN_EINVAL);
    CHECK(strstr(err, "holds no block") != NULL);

    /* A pool of 2 blocks of 16 for sequences of up to 40 positions. */
    size_t blk = ctn_kv_bytes_per_block(1, 32, CTN_TYPE_F16, 16);
    CHECK(ctn_fwd_new(
              &f, L.m,
              &(ctn_fwd_params){.n_threads = 2, .n_ctx = 40, .n_batch = 8, .kv_memory = 2 * blk},
              err, sizeof err) == 0);
    float logits[64];
    int32_t toks[40] = {0};
    ctn_kv_seq a, b;
    CHECK(ctn_fwd_seq_init(f, &a) == 0);
    CHECK(ctn_fwd_seq_init(f, &b) == 0);
    ctn_fwd_seg seg = {.seq = &a, .tokens = toks, .n_tokens = 0, .logits = true};
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == CTN_EINVAL); /* empty */
    CHECK(strstr(ctn_fwd_errmsg(f), "no tokens") != NULL);
    seg.n_tokens = 9;
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == CTN_EINVAL); /* beyond the batch */
    CHECK(strstr(ctn_fwd_errmsg(f), "more than its size") != NULL);
    toks[3] = 64;
    seg.n_tokens = 4;
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == CTN_EINVAL); /* outside the vocabulary */
    CHECK(strstr(ctn_fwd_errmsg(f), "token 3: id 64") != NULL);
    toks[3] = -1;
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == CTN_EINVAL);
    toks[3] = 5;
    CHECK(ctn_fwd_run(f, &seg, 1, NULL) == CTN_EINVAL); /* logits asked, no buffer */
    ctn_fwd_seg two[2] = {{.seq = &a, .tokens = toks, .n_tokens = 2, .logits = false},
                          {.seq = &a, .tokens = toks, .n_tokens = 2, .logits = true}};
    CHECK(ctn_fwd_run(f, two, 2, logits) == CTN_EINVAL); /* same sequence twice */
    CHECK(a.n_pos == 0 && ctn_fwd_kv(f)->n_free == 2);

    /* Fill a: 8 + 8 + 8 + 8 = 32 positions = both blocks. */
    for (int i = 0; i < 4; i++) {
        seg = (ctn_fwd_seg){.seq = &a, .tokens = toks, .n_tokens = 8, .logits = true};
        CHECK(ctn_fwd_run(f, &seg, 1, logits) == 0);
    }
    CHECK(a.n_pos == 32 && ctn_fwd_kv(f)->n_free == 0);
    seg = (ctn_fwd_seg){.seq = &b, .tokens = toks, .n_tokens = 1, .logits = true};
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == CTN_ENOMEM); /* the pool is full */
    CHECK(strstr(ctn_fwd_errmsg(f), "KV cache is full") != NULL);
    CHECK(b.n_pos == 0 && b.n_blocks == 0);
    ctn_kv_seq_clear(ctn_fwd_kv(f), &a);
    CHECK(ctn_fwd_kv(f)->n_free == 2);
    for (int i = 0; i < 5; i++) {
        seg = (ctn_fwd_seg){.seq = &b, .tokens = toks, .n_tokens = 8, .logits = false};
        CHECK(ctn_fwd_run(f, &seg, 1, logits) == (i < 4 ? 0 : CTN_ENOMEM));
    }
    ctn_fwd_seq_close(f, &a);
    ctn_fwd_seq_close(f, &b);
    ctn_fwd_free(f);
    unload(&L);
}

TEST(context_limit) {
    const randmodel_shape sh = TINY;
    loaded L;
    LOAD_RANDOM(L, &sh);
    char err[512];
    ctn_fwd *f;
    CHECK(ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.n_threads = 1, .n_ctx = 20}, err, sizeof err) ==
          0);
    float logits[64];
    int32_t toks[32] = {0};
    ctn_kv_seq a;
    CHECK(ctn_fwd_seq_init(f, &a) == 0);
    ctn_fwd_seg seg = {.seq = &a, .tokens = toks, .n_tokens = 21, .logits = true};
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == CTN_ERANGE);
    CHECK(strstr(ctn_fwd_errmsg(f), "exceed the context length of 20") != NULL);
    seg.n_tokens = 20;
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == 0);
    seg.n_tokens = 1;
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == CTN_ERANGE);
    ctn_fwd_seq_close(f, &a);
    ctn_fwd_free(f);
    unload(&L);
}

TEST(nan_weights_are_an_error) {
    const randmodel_shape sh = TINY;
    loaded L;
    LOAD_RANDOM(L, &sh);
    /* The output norm replaced by one holding a NaN. */
    ctn_gguf_tensor bad = *L.m->output_norm;
    float w[32];
    for (int i = 0; i < 32; i++)
        w[i] = 1.0f;
    w[7] = NAN;
    bad.data = w;
    L.m->output_norm = &bad;
    char err[512];
    ctn_fwd *f;
    CHECK(ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.n_threads = 2, .n_ctx = 8}, err, sizeof err) ==
          0);
    float logits[64];
    int32_t toks[2] = {1, 5};
    ctn_kv_seq a;
    CHECK(ctn_fwd_seq_init(f, &a) == 0);
    ctn_fwd_seg seg = {.seq = &a, .tokens = toks, .n_tokens = 2, .logits = true};
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == CTN_ERANGE);
    CHECK(strstr(ctn_fwd_errmsg(f), "NaN") != NULL);
    ctn_fwd_seq_close(f, &a);
    ctn_fwd_free(f);
    unload(&L);
}

TEST(alloc_failures) {
    const randmodel_shape sh = {CTN_TYPE_Q8_0,   64, 4, 2, 192, 2, false, 200, 10000, 1e-5f, 13,
                                RANDMODEL_LLAMA, 0};
    loaded L;
    LOAD_RANDOM(L, &sh);
    char err[512];
    int n_ok = 0;
    for (int n = 0; n < 200 && n_ok == 0; n++) {
        ctn__alloc_fail_after = n;
        ctn_fwd *f = NULL;
        int rc =
            ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.n_threads = 2, .n_ctx = 32}, err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc == 0) {
            n_ok++;
            ctn_fwd_free(f);
        } else {
            CHECK(rc == CTN_ENOMEM && f == NULL);
        }
    }
    CHECK(n_ok == 1);
    unload(&L);
}

/* A run allocates nothing: with every allocation failing, prefill and decode still work. */
TEST(no_allocation_per_token) {
    const randmodel_shape sh = {CTN_TYPE_Q4_K,   256, 8, 1, 256, 1, true, 128, 1000000, 1e-5f, 19,
                                RANDMODEL_LLAMA, 0};
    loaded L;
    LOAD_RANDOM(L, &sh);
    char err[512];
    ctn_fwd *f;
    CHECK(ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.n_threads = 2, .n_ctx = 64}, err, sizeof err) ==
          0);
    ctn_kv_seq a;
    CHECK(ctn_fwd_seq_init(f, &a) == 0);
    float logits[128];
    int32_t toks[20];
    for (int i = 0; i < 20; i++)
        toks[i] = i * 5 % 128;
    ctn__alloc_fail_after = 0;
    ctn_fwd_seg seg = {.seq = &a, .tokens = toks, .n_tokens = 20, .logits = true};
    CHECK(ctn_fwd_run(f, &seg, 1, logits) == 0);
    for (int i = 0; i < 10; i++) {
        int32_t t = argmax(logits, 128);
        seg = (ctn_fwd_seg){.seq = &a, .tokens = &t, .n_tokens = 1, .logits = true};
        CHECK(ctn_fwd_run(f, &seg, 1, logits) == 0);
    }
    ctn__alloc_fail_after = -1;
    ctn_fwd_seq_close(f, &a);
    ctn_fwd_free(f);
    unload(&L);
}

int main(void) {
    RUN(stories_matches_reference);
    RUN(random_models_match_reference);
    RUN(batch_invariance);
    RUN(errors);
    RUN(context_limit);
    RUN(nan_weights_are_an_error);
    RUN(alloc_failures);
    RUN(no_allocation_per_token);
    return test_summary();
}
