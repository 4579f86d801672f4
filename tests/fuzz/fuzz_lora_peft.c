/*
 * libFuzzer target for Hugging Face PEFT adapters (lora.h ctn_lora_load_peft_memory), mainly
 * their adapter_config.json, against a small random llama model made in-process
 * (tests/randmodel.h: dim 32, 2 heads, 1 KV head, feed-forward 32, 2 layers).
 *
 *     build/fuzz_lora_peft -max_total_time=600 build/fuzz-corpus/lora_peft
 *
 * An input is adapter_config.json up to its first NUL byte; what follows the NUL is
 * adapter_model.safetensors. An input with no NUL gets a valid adapter_model.safetensors
 * made here: rank 2 on every target of both layers (F32 for attention, F16 for the MLP),
 * except rank 4 for layer 1's v_proj, so r, rank_pattern, alpha_pattern, use_rslora and the
 * rest of the config decide whether it loads and at what scale. A hostile pair must give an
 * error with a reason and no adapter, or load to matrices that fit the base model; never
 * crash, read out of bounds, leak or hit undefined behaviour.
 *
 * Built with -DCTN_FUZZ_MAKE_CORPUS (and without -fsanitize=fuzzer) it instead writes the
 * seed corpus into DIR (configs PEFT's save_pretrained writes, some that catena refuses, and
 * one config followed by a NUL and the built-in safetensors file):
 *
 *     clang -DCTN_FUZZ_MAKE_CORPUS -Iengine -Itests tests/fuzz/fuzz_lora_peft.c \
 *         build/libcatena_engine.a -lpcre2-8 -lcjson -lm -lpthread -o /tmp/gen
 *     /tmp/gen tests/fuzz/corpus_lora_peft
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
#include "safetensors.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static const randmodel_shape SHAPE = {CTN_TYPE_F32,    32, 2, 1, 32, 2, false, 12, 10000, 1e-5f, 5,
                                      RANDMODEL_LLAMA, 0};

static ctn_gguf *base_g;
static ctn_model *base_m;
static void *base_st; /* the built-in adapter_model.safetensors */
static size_t base_st_len;

static const char *const HFMOD[CTN_LORA_N] = {
    "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
    "mlp.gate_proj",    "mlp.up_proj",      "mlp.down_proj"};

/* The built-in safetensors image for model m (see the top of the file). */
static void make_st(const ctn_model *m) {
    ctn_st_writer *w = ctn_st_writer_new();
    if (w == NULL) abort();
    uint64_t rng = 99;
    for (int64_t l = 0; l < m->hp.n_layer; l++)
        for (int t = 0; t < CTN_LORA_N; t++) {
            const ctn_gguf_tensor *bw = lorarand_base(m, l, t);
            const int64_t r = l == 1 && t == CTN_LORA_V ? 4 : 2;
            const int64_t n_in = bw->ne[0], n_out = bw->ne[1];
            const ctn_st_dtype dt = t <= CTN_LORA_O ? CTN_ST_F32 : CTN_ST_F16;
            for (int b = 0; b < 2; b++) {
                const int64_t shape[2] = {b ? n_out : r, b ? r : n_in}, n = shape[0] * shape[1];
                float *f = malloc((size_t)n * sizeof *f);
                uint16_t *h = malloc((size_t)n * sizeof *h);
                for (int64_t i = 0; i < n; i++) {
                    f[i] = 0.1f * rng_normal(&rng);
                    h[i] = ctn_fp32_to_fp16(f[i]);
                }
                char name[160];
                snprintf(name, sizeof name, "base_model.model.model.layers.%lld.%s.lora_%c.weight",
                         (long long)l, HFMOD[t], b ? 'B' : 'A');
                if (ctn_st_writer_add(w, name, dt, 2, shape,
                                      dt == CTN_ST_F32 ? (const void *)f : (const void *)h) < 0)
                    abort();
                free(f);
                free(h);
            }
        }
    ctn_st_writer_set_metadata(w, "format", "pt");
    if (ctn_st_writer_write_memory(w, &base_st, &base_st_len) < 0) abort();
    ctn_st_writer_free(w);
}

/* The base model, written once to a temporary file (mapped, then unlinked). */
static const ctn_model *base_model(void) {
    if (base_m != NULL) return base_m;
    char path[128], err[512];
    snprintf(path, sizeof path, "/tmp/fuzz_lora_peft-%d.gguf", (int)getpid());
    if (randmodel_write(&SHAPE, false, path, err, sizeof err) < 0 ||
        ctn_gguf_open(&base_g, path, err, sizeof err) < 0 ||
        ctn_model_load(&base_m, base_g, err, sizeof err) < 0) {
        fprintf(stderr, "fuzz_lora_peft: the base model: %s\n", err);
        abort();
    }
    unlink(path);
    make_st(base_m);
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
            for (int64_t o = 0; o < mt->n_out; o++)
                for (int64_t r = 0; r < mt->rank; r++)
                    sink += ctn_lora_b_at(mt, o, r);
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
    const uint8_t *nul = memchr(data, 0, size);
    const size_t cl = nul != NULL ? (size_t)(nul - data) : size;
    /* Heap copies of exactly their lengths, so that ASan sees any read past the end. */
    char *config = malloc(cl ? cl : 1);
    const size_t sl = nul != NULL ? size - cl - 1 : base_st_len;
    uint8_t *st = malloc(sl ? sl : 1);
    if (config == NULL || st == NULL) __builtin_trap();
    memcpy(config, data, cl);
    memcpy(st, nul != NULL ? nul + 1 : (const uint8_t *)base_st, sl);
    char err[1024] = "";
    ctn_lora *a = (ctn_lora *)(uintptr_t)1;
    const int rc =
        ctn_lora_load_peft_memory(m, config, cl, st, sl, "fuzz-peft", 0, &a, err, sizeof err);
    if (rc < 0) {
        if (a != NULL || err[0] == '\0') __builtin_trap();
    } else {
        if (a == NULL) __builtin_trap();
        check_adapter(m, a);
        ctn_lora_free(a);
    }
    free(config);
    free(st);
    return 0;
}
#endif

#ifdef CTN_FUZZ_MAKE_CORPUS
static int write_seed(const char *dir, const char *name, const char *config, bool with_st) {
    char path[4096];
    snprintf(path, sizeof path, "%s/%s", dir, name);
    FILE *f = fopen(path, "wb");
    if (f == NULL) {
        perror(path);
        return -1;
    }
    fputs(config, f);
    if (with_st) {
        fputc(0, f);
        fwrite(base_st, 1, base_st_len, f);
    }
    return fclose(f) == 0 ? 0 : -1;
}

int main(int argc, char **argv) {
    if (argc != 2) {
        fprintf(stderr, "usage: gen DIR\n");
        return 2;
    }
    base_model();
    /* What PEFT 0.x's save_pretrained writes, less the keys catena ignores. */
#define COMMON                                                                                     \
    "\"base_model_name_or_path\": \"test\", \"peft_type\": \"LORA\", \"task_type\": "              \
    "\"CAUSAL_LM\", \"lora_dropout\": 0.05, \"fan_in_fan_out\": false, \"bias\": \"none\", "       \
    "\"modules_to_save\": null, "
    static const struct {
        const char *name, *config;
        bool with_st;
    } seeds[] = {
        {"pattern.json",
         "{" COMMON "\"r\": 2, \"lora_alpha\": 4, \"use_rslora\": false, \"target_modules\": "
         "[\"q_proj\", \"k_proj\", \"v_proj\", \"o_proj\", \"gate_proj\", \"up_proj\", "
         "\"down_proj\"], \"rank_pattern\": {\"model.layers.1.self_attn.v_proj\": 4}, "
         "\"alpha_pattern\": {\"mlp.*\": 8}}",
         false},
        {"regex.json",
         "{" COMMON "\"r\": 2, \"lora_alpha\": 16, \"use_rslora\": true, \"target_modules\": "
         "\"(.*\\\\.)?(q|k|v|o|gate|up|down)_proj\", \"rank_pattern\": {\"layers\\\\.1\\\\."
         "self_attn\\\\.v_proj\": 4, \"q_proj|k_proj\": 2}, \"alpha_pattern\": {}}",
         false},
        {"defaults.json", "{\"rank_pattern\": {\"v_proj\": 4}}", false},
        {"wrong_rank.json", "{" COMMON "\"r\": 8, \"lora_alpha\": 16}", false},
        {"refused.json",
         "{" COMMON "\"r\": 2, \"use_dora\": true, \"target_modules\": [\"q_proj\", \"lm_head\"]}",
         false},
        {"with_st.bin",
         "{" COMMON
         "\"r\": 2, \"lora_alpha\": 2, \"rank_pattern\": {\"layers.1.self_attn.v_proj\": "
         "4}}",
         true},
    };
    for (size_t i = 0; i < sizeof seeds / sizeof *seeds; i++) {
        if (write_seed(argv[1], seeds[i].name, seeds[i].config, seeds[i].with_st) < 0) return 1;
        /* What each seed gives, to see that the corpus reaches both outcomes. */
        char err[1024] = "";
        ctn_lora *a = NULL;
        const int rc =
            ctn_lora_load_peft_memory(base_m, seeds[i].config, strlen(seeds[i].config), base_st,
                                      base_st_len, "seed", 0, &a, err, sizeof err);
        printf("%-16s %s\n", seeds[i].name, rc == 0 ? "loads" : err);
        ctn_lora_free(a);
    }
    free(base_st);
    ctn_model_free(base_m);
    ctn_gguf_free(base_g);
    return 0;
}
#endif
