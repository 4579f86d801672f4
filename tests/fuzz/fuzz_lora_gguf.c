/*
 * libFuzzer target for llama.cpp GGUF LoRA files (lora.h ctn_lora_load_gguf_memory) against
 * a small random llama model made in-process (tests/randmodel.h: dim 32, 2 heads, 1 KV head,
 * feed-forward 32, 2 layers). A hostile adapter must give an error with a reason and no
 * adapter, or load to matrices that fit the base model; never crash, read out of bounds,
 * leak or hit undefined behaviour.
 *
 *     build/fuzz_lora_gguf -max_total_time=600 build/fuzz-corpus/lora_gguf
 *
 * Built with -DCTN_FUZZ_MAKE_CORPUS (and without -fsanitize=fuzzer) it instead writes the
 * seed corpus, adapters for that same model, into DIR:
 *
 *     clang -DCTN_FUZZ_MAKE_CORPUS -Iengine -Itests tests/fuzz/fuzz_lora_gguf.c \
 *         build/libcatena_engine.a -lpcre2-8 -lcjson -lm -lpthread -o /tmp/gen
 *     /tmp/gen tests/fuzz/corpus_lora_gguf
 *
 * (F32 rank 2 on every target with an alpha; F16 on q and v; lora_a F32 with lora_b F16,
 * which is widened; Q8_0 of rank 32, which is dequantized; one lora_b left out.)
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "gguf.h"
#include "lora.h"
#include "lorarand.h"
#include "model.h"
#include "quant.h"
#include "randmodel.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const randmodel_shape SHAPE = {CTN_TYPE_F32,    32, 2, 1, 32, 2, false, 12, 10000, 1e-5f, 5,
                                      RANDMODEL_LLAMA, 0};

static ctn_gguf *base_g;
static ctn_model *base_m;

/* The base model, written once to a temporary file (mapped, then unlinked). */
static const ctn_model *base_model(void) {
    if (base_m != NULL) return base_m;
    char path[128], err[512];
    snprintf(path, sizeof path, "/tmp/fuzz_lora_gguf-%d.gguf", (int)getpid());
    if (randmodel_write(&SHAPE, false, path, err, sizeof err) < 0 ||
        ctn_gguf_open(&base_g, path, err, sizeof err) < 0 ||
        ctn_model_load(&base_m, base_g, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_lora_gguf: the base model: %s\n", err);
        abort();
    }
    unlink(path);
    return base_m;
}

#ifndef CTN_FUZZ_MAKE_CORPUS
/* Every value of every matrix is read (ASan sees a buffer shorter than its shape says), and
 * the shapes are the base model's. */
static void check_adapter(const ctn_model *m, const ctn_lora *a) {
    if (a->n_layer != m->hp.n_layer || a->max_rank < 1 || a->path == NULL) __builtin_trap();
    volatile float sink = 0;
    int32_t max_rank = 0;
    for (int64_t l = 0; l < a->n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            const ctn_lora_mat *mt = &a->mats[l * CTN_LORA_N + t];
            if (mt->rank == 0) continue;
            const ctn_gguf_tensor *w = lorarand_base(m, l, t);
            if (mt->rank < 0 || mt->n_in != w->ne[0] || mt->n_out != w->ne[1]) __builtin_trap();
            if (!isfinite(mt->scale)) __builtin_trap(); /* the forward pass would make NaN */
            if (mt->type != CTN_TYPE_F32 && mt->type != CTN_TYPE_F16 && mt->type != CTN_TYPE_BF16)
                __builtin_trap();
            for (int64_t r = 0; r < mt->rank; r++)
                for (int64_t i = 0; i < mt->n_in; i++)
                    sink += ctn_lora_a_at(mt, r, i);
            const size_t es = ctn_lora_type_size(mt->type);
            const volatile char *bt = mt->bt;
            for (int64_t i = 0; i < ctn_lora_bt_len(mt->rank, mt->n_out) * (int64_t)es; i++)
                sink += (float)bt[i];
            if (mt->rank > max_rank) max_rank = mt->rank;
        }
    if (max_rank != a->max_rank) __builtin_trap();
    (void)sink;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0; /* keep runs short */
    const ctn_model *m = base_model();
    /* A heap copy of exactly `size` bytes, so that ASan sees any read past the end. */
    uint8_t *copy = malloc(size ? size : 1);
    if (copy == NULL) __builtin_trap();
    memcpy(copy, data, size);
    char err[1024] = "";
    ctn_lora *a = (ctn_lora *)(uintptr_t)1;
    const int rc = ctn_lora_load_gguf_memory(m, copy, size, "fuzz.gguf", 0, &a, err, sizeof err);
    if (rc < 0) {
        if (a != NULL || err[0] == '\0') __builtin_trap();
    } else {
        if (a == NULL) __builtin_trap();
        check_adapter(m, a);
        ctn_lora_free(a);
    }
    free(copy);
    return 0;
}
#endif

#ifdef CTN_FUZZ_MAKE_CORPUS
/* One seed: A and B of `rank` on the targets in mask, of types ta / tb. */
typedef struct {
    const char *name;
    unsigned mask;
    int rank, ta, tb;
    float alpha; /* 0: no adapter.lora.alpha */
    int drop_b;  /* leave out layer 1's lora_b of the first target */
} seed;

/* Rows x cols values of N(0, 0.1) as type t (F32, F16 or a quantized type), malloc'd. */
static void *values(uint64_t *rng, int t, int64_t rows, int64_t cols) {
    const int64_t n = rows * cols;
    float *f = malloc((size_t)n * sizeof *f);
    for (int64_t i = 0; i < n; i++)
        f[i] = 0.1f * rng_normal(rng);
    if (t == CTN_TYPE_F32) return f;
    void *q = malloc((size_t)(n / ctn_type_block_size(t)) * ctn_type_block_bytes(t));
    for (int64_t r = 0; r < rows; r++)
        ctn_quantize_row(t, f + r * cols,
                         (char *)q +
                             (size_t)(r * cols / ctn_type_block_size(t)) * ctn_type_block_bytes(t),
                         cols);
    free(f);
    return q;
}

static int write_seed(const ctn_model *m, const seed *sd, const char *dir) {
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "general.type", "adapter");
    ctn_gguf_writer_set_str(w, "general.architecture", m->arch->name);
    ctn_gguf_writer_set_str(w, "adapter.type", "lora");
    if (sd->alpha != 0) ctn_gguf_writer_set_f32(w, "adapter.lora.alpha", sd->alpha);
    uint64_t rng = 77;
    void *keep[2 * 2 * CTN_LORA_N];
    int nk = 0, first = -1;
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            if (!(sd->mask & (1u << t))) continue;
            if (first < 0) first = t;
            const ctn_gguf_tensor *bw = lorarand_base(m, l, t);
            const int64_t n_in = bw->ne[0], n_out = bw->ne[1];
            const int64_t nea[2] = {n_in, sd->rank}, neb[2] = {sd->rank, n_out};
            void *va = values(&rng, sd->ta, sd->rank, n_in),
                 *vb = values(&rng, sd->tb, n_out, sd->rank);
            keep[nk++] = va, keep[nk++] = vb;
            char name[128];
            snprintf(name, sizeof name, "blk.%lld.%s.weight.lora_a", (long long)l,
                     ctn_lora_target_gguf(t));
            ctn_gguf_writer_add_tensor(w, name, (ctn_type)sd->ta, 2, nea, va);
            if (sd->drop_b && l == 1 && t == first) continue;
            snprintf(name, sizeof name, "blk.%lld.%s.weight.lora_b", (long long)l,
                     ctn_lora_target_gguf(t));
            ctn_gguf_writer_add_tensor(w, name, (ctn_type)sd->tb, 2, neb, vb);
        }
    char path[4096], err[512];
    snprintf(path, sizeof path, "%s/%s", dir, sd->name);
    const int rc = ctn_gguf_writer_write(w, path, err, sizeof err);
    if (rc < 0) fprintf(stderr, "%s: %s\n", path, err);
    ctn_gguf_writer_free(w);
    for (int i = 0; i < nk; i++)
        free(keep[i]);
    return rc;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen DIR\n");
        return 2;
    }
    const ctn_model *m = base_model();
    static const seed seeds[] = {
        {"f32_all.gguf", 0x7Fu, 2, CTN_TYPE_F32, CTN_TYPE_F32, 4, 0},
        {"f16_qv.gguf", (1u << CTN_LORA_Q) | (1u << CTN_LORA_V), 1, CTN_TYPE_F16, CTN_TYPE_F16, 0,
         0},
        {"mixed_down.gguf", 1u << CTN_LORA_DOWN, 2, CTN_TYPE_F32, CTN_TYPE_F16, 2, 0},
        {"q8_0_q.gguf", 1u << CTN_LORA_Q, 32, CTN_TYPE_Q8_0, CTN_TYPE_Q8_0, 16, 0},
        {"no_b.gguf", (1u << CTN_LORA_K) | (1u << CTN_LORA_UP), 1, CTN_TYPE_F32, CTN_TYPE_F32, 1,
         1},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++)
        if (write_seed(m, &seeds[i], argv[1]) < 0) return 1;
    ctn_model_free(base_m);
    ctn_gguf_free(base_g);
    return 0;
}
#endif
