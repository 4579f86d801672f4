/*
 * LoRA in the forward pass (forward.h ctn_fwd_seg.lora): a token run with an adapter gives
 * what the merged model (W + scale B A) gives (greedy ids identical, logits within 1e-4
 * normalised error, F32 base); scale 0 is the base model bit for bit; and a batch mixing 8
 * adapters and the base gives every sequence the same bits as alone. Adapters are made here
 * in memory with seeded random A and B (the loaders have their own tests), held in F32, F16
 * and BF16; every test runs on every ISA the CPU has (scalar, AVX2, AVX-512, AMX).
 */
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "error.h"
#include "forward.h"
#include "gguf.h"
#include "kern.h"
#include "lora.h"
#include "lorarand.h"
#include "model.h"
#include "randmodel.h"
#include "test.h"

typedef struct {
    void *buf;
    size_t size;
    ctn_gguf *g;
    ctn_model *m;
} mem_model;

static int read_file(const char *path, void **buf, size_t *size) {
    FILE *f = fopen(path, "rb");
    if (f == NULL) return -1;
    fseek(f, 0, SEEK_END);
    *size = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    *buf = malloc(*size);
    const size_t got = fread(*buf, 1, *size, f);
    fclose(f);
    return got == *size ? 0 : -1;
}

static int open_mem(mem_model *mm, void *buf, size_t size) {
    char err[512];
    mm->buf = buf;
    mm->size = size;
    if (ctn_gguf_open_memory(&mm->g, buf, size, "mem", err, sizeof err) < 0 ||
        ctn_model_load(&mm->m, mm->g, err, sizeof err) < 0) {
        printf("  load: %s\n", err);
        return -1;
    }
    return 0;
}

static void close_mem(mem_model *mm) {
    ctn_model_free(mm->m);
    ctn_gguf_free(mm->g);
    free(mm->buf);
}

/* A copy of the base model's bytes with W += scale * s_pair * B A on every adapted F32
 * matrix (rows of ne[0] values, one per output). */
static void *merged_copy(const mem_model *base, const ctn_lora *a, float scale) {
    char *buf = malloc(base->size);
    memcpy(buf, base->buf, base->size);
    for (int64_t l = 0; l < a->n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            const ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + t];
            if (mt->rank == 0) continue;
            const ctn_gguf_tensor *w = lorarand_base(base->m, l, t);
            float *wd = (float *)(buf + ((const char *)w->data - (const char *)base->buf));
            for (int64_t o = 0; o < mt->n_out; o++)
                for (int64_t i = 0; i < mt->n_in; i++) {
                    float d = 0;
                    for (int32_t r = 0; r < mt->rank; r++)
                        d += ctn_lora_b_at(mt, o, r) * ctn_lora_a_at(mt, r, i);
                    wd[o * mt->n_in + i] += scale * mt->scale * d;
                }
        }
    return buf;
}

/* Greedy generation of n tokens after prompt; logits of every step into lg (n x vocab). */
static void generate(const ctn_model *m, const ctn_lora *a, float scale, const int32_t *prompt,
                     int n_prompt, int n, int32_t *ids, float *lg) {
    char err[256];
    ctn_fwd *f = NULL;
    ctn_fwd_params fp = {.n_threads = 2, .n_ctx = 64, .kv_f32 = true};
    CHECK(ctn_fwd_new(&f, m, &fp, err, sizeof err) == 0);
    ctn_kv_seq s;
    CHECK(ctn_fwd_seq_init(f, &s) == 0);
    const int64_t nv = m->hp.n_vocab;
    ctn_fwd_seg seg = {.seq = &s,
                       .tokens = prompt,
                       .n_tokens = n_prompt,
                       .logits = true,
                       .lora = a,
                       .lora_scale = scale};
    for (int i = 0; i < n; i++) {
        CHECK(ctn_fwd_run(f, &seg, 1, lg + (size_t)i * (size_t)nv) == 0);
        ids[i] = lorarand_argmax(lg + (size_t)i * (size_t)nv, nv);
        seg.tokens = &ids[i];
        seg.n_tokens = 1;
    }
    ctn_fwd_seq_close(f, &s);
    ctn_fwd_free(f);
}

static int make_base(mem_model *base, uint64_t seed) {
    char path[256], err[256];
    snprintf(path, sizeof path, "/tmp/test_lora_forward-%d.gguf", (int)getpid());
    /* ff 100: the feed-forward matrices have a row tail (100 % 16) and a partial output run */
    randmodel_shape sh = {CTN_TYPE_F32, 64, 4, 2, 100, 2, false, 300, 10000, 1e-5f, seed, 0, 0};
    if (randmodel_write(&sh, false, path, err, sizeof err) < 0) {
        printf("  write: %s\n", err);
        return -1;
    }
    void *buf;
    size_t size;
    const int rc = read_file(path, &buf, &size);
    unlink(path);
    if (rc < 0) return -1;
    return open_mem(base, buf, size);
}

static int g_type = CTN_TYPE_F32; /* of the adapters of adapter_equals_merged_model */

TEST(adapter_equals_merged_model) {
    mem_model base;
    if (make_base(&base, 11) < 0) {
        CHECK(0);
        return;
    }
    const int32_t prompt[6] = {1, 17, 42, 99, 7, 250};
    const int n = 12;
    const int64_t nv = base.m->hp.n_vocab;
    ctn_lora *a = lorarand_make_typed(base.m, 4, (1u << CTN_LORA_N) - 1, 7, 0.05f, g_type);
    const float scales[2] = {1.0f, 0.5f};
    for (int si = 0; si < 2; si++) {
        mem_model merged;
        CHECK(open_mem(&merged, merged_copy(&base, a, scales[si]), base.size) == 0);
        int32_t ia[12], im[12];
        float *la = malloc((size_t)n * (size_t)nv * sizeof(float));
        float *lm = malloc((size_t)n * (size_t)nv * sizeof(float));
        generate(base.m, a, scales[si], prompt, 6, n, ia, la);
        generate(merged.m, NULL, 0, prompt, 6, n, im, lm);
        CHECK(memcmp(ia, im, sizeof ia) == 0);
        const double e = lorarand_norm_err(la, lm, (int64_t)n * nv);
        printf("  scale %.1f: greedy ids %s, max normalised logit error %.2g\n", scales[si],
               memcmp(ia, im, sizeof ia) == 0 ? "identical" : "DIFFER", e);
        CHECK(e < 1e-4);
        free(la);
        free(lm);
        close_mem(&merged);
    }
    /* The adapter changes the output at all (the test would pass vacuously otherwise). */
    int32_t ib[12], ia[12];
    float *lb = malloc((size_t)n * (size_t)nv * sizeof(float));
    float *la = malloc((size_t)n * (size_t)nv * sizeof(float));
    generate(base.m, NULL, 0, prompt, 6, n, ib, lb);
    generate(base.m, a, 1.0f, prompt, 6, n, ia, la);
    CHECK(lorarand_norm_err(la, lb, (int64_t)n * nv) > 1e-3);
    /* Scale 0 is the base model, bit for bit. */
    generate(base.m, a, 0.0f, prompt, 6, n, ia, la);
    CHECK(memcmp(la, lb, (size_t)n * (size_t)nv * sizeof(float)) == 0);
    free(la);
    free(lb);
    ctn_lora_free(a);
    close_mem(&base);
}

TEST(mixed_batch_equals_alone) {
    mem_model base;
    if (make_base(&base, 23) < 0) {
        CHECK(0);
        return;
    }
    const int64_t nv = base.m->hp.n_vocab;
    enum { NSEQ = 9 };
    ctn_lora *ad[NSEQ] = {NULL};
    static const int types[3] = {CTN_TYPE_F32, CTN_TYPE_F16, CTN_TYPE_BF16};
    for (int i = 1; i < NSEQ; i++) /* 8 adapters of different ranks, targets and types */
        ad[i] = lorarand_make_typed(base.m, 1 + i % 5 + (i == 3 ? 20 : 0), i % 2 ? 0x7Fu : 0x0Fu,
                                    100 + (uint64_t)i, 0.05f, types[i % 3]);
    /* Sequences 1 and 4 share one adapter; sequence 2's prompt spans two units of phase-1
     * work; adapter 3 has rank 24. */
    ctn_lora_free(ad[4]);
    ad[4] = ad[1];
    int32_t prompts[NSEQ][40];
    int plen[NSEQ];
    for (int i = 0; i < NSEQ; i++) {
        plen[i] = i == 2 ? 40 : 5;
        for (int j = 0; j < plen[i]; j++)
            prompts[i][j] = 1 + (i * 31 + j * 7) % 290;
    }
    /* Alone: each sequence's prompt, then 3 greedy steps. */
    float *alone = malloc((size_t)NSEQ * 4 * (size_t)nv * sizeof(float));
    for (int i = 0; i < NSEQ; i++) {
        int32_t ids[4];
        generate(base.m, ad[i], 1.0f, prompts[i], plen[i], 4, ids,
                 alone + (size_t)i * 4 * (size_t)nv);
    }
    /* Together: one forward pass per step over all nine. */
    char err[256];
    ctn_fwd *f = NULL;
    ctn_fwd_params fp = {.n_threads = 2, .n_ctx = 64, .kv_f32 = true, .kv_memory = 1 << 22};
    CHECK(ctn_fwd_new(&f, base.m, &fp, err, sizeof err) == 0);
    ctn_kv_seq s[NSEQ];
    ctn_fwd_seg seg[NSEQ];
    int32_t next[NSEQ];
    float *lg = malloc((size_t)NSEQ * (size_t)nv * sizeof(float));
    int bad = 0;
    for (int i = 0; i < NSEQ; i++) {
        CHECK(ctn_fwd_seq_init(f, &s[i]) == 0);
        seg[i] = (ctn_fwd_seg){.seq = &s[i],
                               .tokens = prompts[i],
                               .n_tokens = plen[i],
                               .logits = true,
                               .lora = ad[i],
                               .lora_scale = 1.0f};
    }
    for (int step = 0; step < 4; step++) {
        CHECK(ctn_fwd_run(f, seg, NSEQ, lg) == 0);
        for (int i = 0; i < NSEQ; i++) {
            const float *mine = lg + (size_t)i * (size_t)nv;
            if (memcmp(mine, alone + ((size_t)i * 4 + (size_t)step) * (size_t)nv,
                       (size_t)nv * sizeof(float)) != 0)
                bad++;
            next[i] = lorarand_argmax(mine, nv);
            seg[i].tokens = &next[i];
            seg[i].n_tokens = 1;
        }
    }
    CHECK_EQ_INT(bad, 0);
    for (int i = 0; i < NSEQ; i++)
        ctn_fwd_seq_close(f, &s[i]);
    ctn_fwd_free(f);
    free(lg);
    free(alone);
    for (int i = 1; i < NSEQ; i++)
        if (i != 4) ctn_lora_free(ad[i]);
    close_mem(&base);
}

TEST(bad_adapters_are_refused) {
    mem_model base;
    if (make_base(&base, 5) < 0) {
        CHECK(0);
        return;
    }
    ctn_lora *a = lorarand_make(base.m, 2, 1u, 3, 0.05f);
    a->n_layer = 1; /* the model has 2 */
    char err[256];
    ctn_fwd *f = NULL;
    ctn_fwd_params fp = {.n_threads = 1, .n_ctx = 16};
    CHECK(ctn_fwd_new(&f, base.m, &fp, err, sizeof err) == 0);
    ctn_kv_seq s;
    CHECK(ctn_fwd_seq_init(f, &s) == 0);
    const int32_t tok = 5;
    float *lg = malloc((size_t)base.m->hp.n_vocab * sizeof(float));
    ctn_fwd_seg seg = {
        .seq = &s, .tokens = &tok, .n_tokens = 1, .logits = true, .lora = a, .lora_scale = 1};
    CHECK_EQ_INT(ctn_fwd_run(f, &seg, 1, lg), CTN_EINVAL);
    CHECK_CONTAINS(ctn_fwd_errmsg(f), "is for 1 layers, the model has 2");
    a->n_layer = 2;
    seg.lora_scale = NAN;
    CHECK_EQ_INT(ctn_fwd_run(f, &seg, 1, lg), CTN_EINVAL);
    CHECK_EQ_INT(s.n_pos, 0); /* nothing was appended */
    free(lg);
    ctn_fwd_seq_close(f, &s);
    ctn_fwd_free(f);
    ctn_lora_free(a);
    close_mem(&base);
}

int main(void) {
    const ctn_isa best = ctn_kern_isa();
    const ctn_isa isas[4] = {CTN_ISA_SCALAR, CTN_ISA_AVX2, CTN_ISA_AVX512, CTN_ISA_AMX};
    for (int k = 0; k < 4; k++) {
        /* AMX runs the AVX-512 LoRA products; it is here for its base products. */
        if (!ctn_isa_supported(isas[k]) || ctn_kern_set_isa(isas[k]) < 0) continue;
        printf("ISA %s\n", ctn_isa_name(isas[k]));
        const int types[3] = {CTN_TYPE_F32, CTN_TYPE_F16, CTN_TYPE_BF16};
        for (int t = 0; t < 3; t++) {
            g_type = types[t];
            printf(" adapters in %s\n", ctn_type_name(g_type));
            RUN(adapter_equals_merged_model);
        }
        RUN(mixed_batch_equals_alone);
    }
    ctn_kern_set_isa(best);
    RUN(bad_adapters_are_refused);
    return test_summary();
}
