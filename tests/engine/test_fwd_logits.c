/*
 * Logits of many tokens from one forward pass (ctn_fwd_seg.n_logits, used by `catena
 * perplexity`): the rows of a segment's last n tokens, in one run or in chunks, with one
 * or more threads and next to another sequence in the batch, are bit for bit the logits
 * got by feeding the same tokens one at a time (the kernels are batch invariant, kern.h),
 * and n_logits outside 0..n_tokens is refused without changing anything.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "forward.h"
#include "model.h"
#include "randmodel.h"
#include "test.h"

typedef struct {
    ctn_gguf *g;
    ctn_model *m;
    char path[256];
} loaded;

static int load_path(loaded *L, const char *path) {
    char err[512];
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
    memset(L, 0, sizeof *L);
    snprintf(L->path, sizeof L->path, "%s/test_fwd_logits-%d-%llu.gguf", tmp && *tmp ? tmp : "/tmp",
             (int)getpid(), (unsigned long long)sh->seed);
    if (randmodel_write(sh, false, L->path, err, sizeof err) < 0) {
        printf("  write: %s\n", err);
        return -1;
    }
    return load_path(L, L->path);
}

static void unload(loaded *L) {
    ctn_model_free(L->m);
    ctn_gguf_free(L->g);
    if (L->path[0]) unlink(L->path);
}

/* The logits of every position of seq (n rows), fed one token per run. */
static int one_by_one(const ctn_model *m, int threads, const int32_t *seq, int n, float *rows) {
    char err[512];
    ctn_fwd *f;
    if (ctn_fwd_new(&f, m, &(ctn_fwd_params){.n_threads = threads, .n_ctx = 128}, err, sizeof err) <
        0) {
        printf("  %s\n", err);
        return -1;
    }
    ctn_kv_seq s;
    int rc = ctn_fwd_seq_init(f, &s);
    for (int i = 0; rc == 0 && i < n; i++) {
        ctn_fwd_seg seg = {.seq = &s, .tokens = seq + i, .n_tokens = 1, .logits = true};
        rc = ctn_fwd_run(f, &seg, 1, rows + (size_t)i * (size_t)m->hp.n_vocab);
        if (rc < 0) printf("  %s\n", ctn_fwd_errmsg(f));
    }
    ctn_fwd_seq_close(f, &s);
    ctn_fwd_free(f);
    return rc;
}

/*
 * Feeds seq in runs of `chunk` tokens, each asking for the logits of all its tokens that
 * are among the last n_last of seq, and gathers those rows in order into out.
 */
static int many_rows(const ctn_model *m, int threads, const int32_t *seq, int n, int chunk,
                     int n_last, float *out) {
    char err[512];
    ctn_fwd *f;
    if (ctn_fwd_new(&f, m, &(ctn_fwd_params){.n_threads = threads, .n_ctx = 128}, err, sizeof err) <
        0) {
        printf("  %s\n", err);
        return -1;
    }
    const size_t nv = (size_t)m->hp.n_vocab;
    ctn_kv_seq s;
    int rc = ctn_fwd_seq_init(f, &s);
    float *dst = out;
    for (int i = 0; rc == 0 && i < n; i += chunk) {
        const int k = n - i < chunk ? n - i : chunk;
        const int first = n - n_last; /* the first position whose row is wanted */
        const int want = i + k <= first ? 0 : i >= first ? k : i + k - first;
        ctn_fwd_seg seg = {.seq = &s, .tokens = seq + i, .n_tokens = k, .n_logits = want};
        rc = ctn_fwd_run(f, &seg, 1, want > 0 ? dst : NULL);
        if (rc < 0) printf("  %s\n", ctn_fwd_errmsg(f));
        dst += (size_t)want * nv;
    }
    ctn_fwd_seq_close(f, &s);
    ctn_fwd_free(f);
    return rc;
}

static void random_tokens(int32_t *seq, int n, int64_t n_vocab, uint64_t seed) {
    uint64_t rng = seed;
    seq[0] = 1;
    for (int j = 1; j < n; j++)
        seq[j] = (int32_t)(rng_next(&rng) % (uint64_t)n_vocab);
}

/* Every way of asking for the last n_last rows of seq gives the one-by-one rows exactly. */
static void check_model(const ctn_model *m, const int32_t *seq, int n, int n_last) {
    const size_t nv = (size_t)m->hp.n_vocab;
    float *ref = malloc((size_t)n * nv * sizeof *ref);
    float *got = malloc((size_t)n * nv * sizeof *got);
    CHECK(ref != NULL && got != NULL);
    if (ref == NULL || got == NULL) goto out;
    CHECK(one_by_one(m, 1, seq, n, ref) == 0);
    const float *tail = ref + (size_t)(n - n_last) * nv;
    const size_t bytes = (size_t)n_last * nv * sizeof *got;
    static const struct {
        int threads, chunk;
    } ways[] = {{1, 1000}, {2, 1000}, {3, 1000}, {2, 7}, {1, 1}};
    for (size_t w = 0; w < sizeof ways / sizeof *ways; w++) {
        memset(got, 0xff, bytes);
        CHECK(many_rows(m, ways[w].threads, seq, n, ways[w].chunk, n_last, got) == 0);
        if (memcmp(got, tail, bytes) != 0) {
            printf("  %d thread(s), chunks of %d: rows differ from one-by-one\n", ways[w].threads,
                   ways[w].chunk);
            CHECK(0);
        }
    }
    /* All n rows, and the last row alone the old way (logits = true). */
    CHECK(many_rows(m, 2, seq, n, 1000, n, got) == 0);
    CHECK(memcmp(got, ref, (size_t)n * nv * sizeof *got) == 0);
    CHECK(many_rows(m, 2, seq, n, 1000, 1, got) == 0);
    CHECK(memcmp(got, ref + (size_t)(n - 1) * nv, nv * sizeof *got) == 0);
out:
    free(ref), free(got);
}

TEST(random_models_rows_match_one_by_one) {
    static const randmodel_shape shapes[] = {
        {CTN_TYPE_F32, 64, 8, 2, 128, 2, false, 200, 10000, 1e-5f, 4, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_Q8_0, 96, 3, 1, 160, 1, true, 150, 1000000, 1e-5f, 14, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_Q4_K, 256, 8, 1, 256, 1, true, 128, 1000000, 1e-5f, 19, RANDMODEL_LLAMA, 0},
        {CTN_TYPE_Q6_K, 256, 4, 4, 512, 1, false, 300, 10000, 1e-5f, 20, RANDMODEL_LLAMA, 0},
    };
    for (size_t i = 0; i < sizeof shapes / sizeof *shapes; i++) {
        loaded L;
        if (load_random(&L, &shapes[i]) < 0) {
            CHECK(0);
            unload(&L);
            continue;
        }
        enum { N = 41 };
        int32_t seq[N];
        random_tokens(seq, N, L.m->hp.n_vocab, shapes[i].seed);
        check_model(L.m, seq, N, 20);
        unload(&L);
    }
}

TEST(stories_rows_match_one_by_one) {
    const char *sd = getenv("CTN_SHARED");
    char path[4096];
    snprintf(path, sizeof path, "%s/models/stories260K.gguf", sd && *sd ? sd : "../shared");
    if (access(path, R_OK) != 0) SKIP("%s is missing", path);
    loaded L;
    memset(&L, 0, sizeof L);
    if (load_path(&L, path) < 0) {
        CHECK(0);
        unload(&L);
        return;
    }
    enum { N = 64 };
    int32_t seq[N];
    random_tokens(seq, N, L.m->hp.n_vocab, 99);
    check_model(L.m, seq, N, N / 2);
    unload(&L);
}

/* Two sequences in one batch: rows in segment order, each as if alone. */
TEST(rows_of_two_segments) {
    const randmodel_shape sh = {CTN_TYPE_F32,    48, 3, 1, 97, 2, false, 100, 500000, 1e-6f, 8,
                                RANDMODEL_LLAMA, 0};
    loaded L;
    if (load_random(&L, &sh) < 0) {
        CHECK(0);
        unload(&L);
        return;
    }
    const size_t nv = (size_t)L.m->hp.n_vocab;
    enum { NA = 17, NB = 9 };
    int32_t a[NA], b[NB];
    random_tokens(a, NA, (int64_t)nv, 5);
    random_tokens(b, NB, (int64_t)nv, 6);
    float *ra = malloc(NA * nv * sizeof *ra), *rb = malloc(NB * nv * sizeof *rb);
    float *got = malloc((5 + 1) * nv * sizeof *got);
    CHECK(one_by_one(L.m, 2, a, NA, ra) == 0);
    CHECK(one_by_one(L.m, 2, b, NB, rb) == 0);
    char err[512];
    ctn_fwd *f;
    CHECK(ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.n_threads = 2, .n_ctx = 32, .kv_memory = 1 << 20},
                      err, sizeof err) == 0);
    ctn_kv_seq sa, sb;
    CHECK(ctn_fwd_seq_init(f, &sa) == 0);
    CHECK(ctn_fwd_seq_init(f, &sb) == 0);
    ctn_fwd_seg segs[2] = {{.seq = &sb, .tokens = b, .n_tokens = NB, .logits = true},
                           {.seq = &sa, .tokens = a, .n_tokens = NA, .n_logits = 5}};
    CHECK(ctn_fwd_run(f, segs, 2, got) == 0);
    CHECK(memcmp(got, rb + (NB - 1) * nv, nv * sizeof *got) == 0);
    CHECK(memcmp(got + nv, ra + (NA - 5) * nv, 5 * nv * sizeof *got) == 0);
    ctn_fwd_seq_close(f, &sa);
    ctn_fwd_seq_close(f, &sb);
    ctn_fwd_free(f);
    free(ra), free(rb), free(got);
    unload(&L);
}

TEST(bad_n_logits_is_refused) {
    const randmodel_shape sh = {CTN_TYPE_F32,    32, 4, 4, 50, 1, true, 64, 10000, 1e-5f, 1,
                                RANDMODEL_LLAMA, 0};
    loaded L;
    if (load_random(&L, &sh) < 0) {
        CHECK(0);
        unload(&L);
        return;
    }
    char err[512];
    ctn_fwd *f;
    CHECK(ctn_fwd_new(&f, L.m, &(ctn_fwd_params){.n_threads = 1, .n_ctx = 16}, err, sizeof err) ==
          0);
    ctn_kv_seq s;
    CHECK(ctn_fwd_seq_init(f, &s) == 0);
    int32_t toks[4] = {1, 2, 3, 4};
    float *lg = malloc(5 * 64 * sizeof *lg);
    const int64_t bad[] = {-1, 5};
    for (size_t i = 0; i < sizeof bad / sizeof *bad; i++) {
        ctn_fwd_seg seg = {.seq = &s, .tokens = toks, .n_tokens = 4, .n_logits = bad[i]};
        CHECK(ctn_fwd_run(f, &seg, 1, lg) == CTN_EINVAL);
        CHECK_CONTAINS(ctn_fwd_errmsg(f), "n_logits");
        CHECK_EQ_INT(s.n_pos, 0);
    }
    /* Rows asked for with no buffer. */
    ctn_fwd_seg seg = {.seq = &s, .tokens = toks, .n_tokens = 4, .n_logits = 4};
    CHECK(ctn_fwd_run(f, &seg, 1, NULL) == CTN_EINVAL);
    CHECK(ctn_fwd_run(f, &seg, 1, lg) == 0);
    CHECK_EQ_INT(s.n_pos, 4);
    ctn_fwd_seq_close(f, &s);
    CHECK(ctn_fwd_kv(f)->n_free == ctn_fwd_kv(f)->n_blocks);
    ctn_fwd_free(f);
    free(lg);
    unload(&L);
}

int main(void) {
    RUN(random_models_rows_match_one_by_one);
    RUN(rows_of_two_segments);
    RUN(bad_n_logits_is_refused);
    RUN(stories_rows_match_one_by_one);
    return test_summary();
}
