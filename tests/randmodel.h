/*
 * Random-weight llama models written with the GGUF writer, for tests that compare forward
 * passes (tests/compat/fwddiff.c, tests/engine/test_forward.c). Header-only: every function
 * is static, so each test program gets its own copy.
 *
 *     randmodel_shape sh = {CTN_TYPE_F32, 64, 4, 2, 171, 2, true, 300, 10000, 1e-5f, 3};
 *     if (randmodel_write(&sh, false, "/tmp/m.gguf", err, sizeof err) < 0) ...
 */
#ifndef CTN_TESTS_RANDMODEL_H
#define CTN_TESTS_RANDMODEL_H

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"

typedef struct {
    int type;
    int dim, n_head, n_kv, ff, n_layer;
    bool tied;
    int n_vocab;
    float rope_base, eps;
    uint64_t seed;
    int arch;     /* RANDMODEL_LLAMA (0), RANDMODEL_QWEN2 or RANDMODEL_QWEN3 */
    int head_dim; /* qwen3 only: attention.key_length; 0 = dim / n_head */
} randmodel_shape;

enum { RANDMODEL_LLAMA, RANDMODEL_QWEN2, RANDMODEL_QWEN3 };

static inline uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9E3779B97F4A7C15ull);
    z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
    z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
    return z ^ (z >> 31);
}

static inline double rng_unit(uint64_t *s) {
    return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

static inline float rng_normal(uint64_t *s) {
    double u = rng_unit(s), v = rng_unit(s);
    return (float)(sqrt(-2.0 * log(u)) * cos(6.283185307179586 * v));
}

/* The buffers a writer borrows until it has written the file. */
typedef struct {
    void **p;
    size_t n, cap;
} keep_list;

static inline void *keep(keep_list *k, size_t bytes) {
    if (k->n == k->cap) {
        size_t c = k->cap ? k->cap * 2 : 64;
        void **p = realloc(k->p, c * sizeof *p);
        if (!p) return NULL;
        k->p = p;
        k->cap = c;
    }
    void *b = malloc(bytes ? bytes : 1);
    if (b) k->p[k->n++] = b;
    return b;
}

static inline void keep_free(keep_list *k) {
    for (size_t i = 0; i < k->n; i++)
        free(k->p[i]);
    free(k->p);
}

/*
 * Adds a tensor of ne[1] rows of ne[0] values drawn from N(mean, sd) (1-D when ne[1] is 0),
 * stored as `type` (norms are always F32). With twin, the rows are quantized to `type` and
 * dequantized back, and stored as F32: the same weight values in a type that llama.cpp
 * multiplies without rounding the activations.
 */
static inline int add_random(ctn_gguf_writer *w, keep_list *k, uint64_t *rng, const char *name,
                             int type, bool twin, int64_t n_in, int64_t n_out, float mean,
                             float sd) {
    int64_t rows = n_out ? n_out : 1;
    float *x = keep(k, (size_t)(n_in * rows) * sizeof *x);
    if (!x) return -1;
    for (int64_t i = 0; i < n_in * rows; i++)
        x[i] = mean + sd * rng_normal(rng);
    int64_t ne[2] = {n_in, n_out};
    if (type == CTN_TYPE_F32 || n_out == 0)
        return ctn_gguf_writer_add_tensor(w, name, CTN_TYPE_F32, n_out ? 2 : 1, ne, x);
    size_t row_bytes = (size_t)(n_in / ctn_type_block_size(type) * ctn_type_block_bytes(type));
    uint8_t *q = keep(k, row_bytes * (size_t)rows);
    if (!q) return -1;
    for (int64_t r = 0; r < rows; r++) {
        uint8_t *qr = q + (size_t)r * row_bytes;
        if (ctn_quantize_row(type, x + r * n_in, qr, n_in) < 0) return -1;
        if (twin && ctn_dequantize_row(type, qr, x + r * n_in, n_in) < 0) return -1;
    }
    if (twin) return ctn_gguf_writer_add_tensor(w, name, CTN_TYPE_F32, 2, ne, x);
    return ctn_gguf_writer_add_tensor(w, name, type, 2, ne, q);
}

/*
 * Writes the model of shape sh to path. Weights are N(0, 1/sqrt(n_in)) so that every
 * activation, attention score and logit is of order 1 (attention is far from uniform, so
 * RoPE and the causal mask matter); norm weights are 1 + N(0, 0.1); embeddings N(0, 1).
 * The vocabulary is a minimal SPM one: <unk>, <s>, </s>, the byte token <0x0A> (llama.cpp
 * looks for the newline), then arbitrary pieces with descending scores; with
 * randmodel_write_tokens, tokens[0 .. n_vocab-4) are the texts of tokens 4.. instead (SPM
 * form: U+2581 for a space; "<0xNN>" makes a byte token), borrowed until written.
 */
static inline int randmodel_write_tokens(const randmodel_shape *sh, const char *const *tokens,
                                         bool twin, const char *path, char *err, size_t errlen) {
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    if (!w) return -1;
    keep_list k = {0};
    uint64_t rng = sh->seed * 7919;
    int hd = sh->head_dim > 0 ? sh->head_dim : sh->dim / sh->n_head, rc = 0;
    const char **toks = keep(&k, (size_t)sh->n_vocab * sizeof *toks);
    float *scores = keep(&k, (size_t)sh->n_vocab * sizeof *scores);
    int32_t *ttype = keep(&k, (size_t)sh->n_vocab * sizeof *ttype);
    if (!toks || !scores || !ttype) rc = -1;
    for (int i = 0; rc == 0 && i < sh->n_vocab; i++) {
        char *t = keep(&k, 16);
        if (!t) {
            rc = -1;
            break;
        }
        static const char *const fixed[] = {"<unk>", "<s>", "</s>", "<0x0A>"};
        static const int fixed_type[] = {2, 3, 3, 6};
        if (i < 4) {
            snprintf(t, 16, "%s", fixed[i]);
            ttype[i] = fixed_type[i];
        } else if (tokens != NULL) {
            const char *x = tokens[i - 4];
            unsigned b;
            ttype[i] = strlen(x) == 6 && sscanf(x, "<0x%2X>", &b) == 1 ? 6 : 1;
            t = (char *)x;
        } else {
            snprintf(t, 16, "\xe2\x96\x81w%d", i);
            ttype[i] = 1;
        }
        toks[i] = t;
        scores[i] = i < 4 ? 0.0f : -(float)i;
    }
    if (rc == 0) {
        static const char *const archs[] = {"llama", "qwen2", "qwen3"};
        const char *a = archs[sh->arch];
        char key[96];
#define RM_KEY(suffix) (snprintf(key, sizeof key, "%s.%s", a, suffix), key)
        ctn_gguf_writer_set_str(w, "general.architecture", a);
        ctn_gguf_writer_set_str(w, "general.name", "randmodel");
        ctn_gguf_writer_set_u32(w, RM_KEY("context_length"), 256);
        ctn_gguf_writer_set_u32(w, RM_KEY("embedding_length"), (uint32_t)sh->dim);
        ctn_gguf_writer_set_u32(w, RM_KEY("block_count"), (uint32_t)sh->n_layer);
        ctn_gguf_writer_set_u32(w, RM_KEY("feed_forward_length"), (uint32_t)sh->ff);
        ctn_gguf_writer_set_u32(w, RM_KEY("attention.head_count"), (uint32_t)sh->n_head);
        ctn_gguf_writer_set_u32(w, RM_KEY("attention.head_count_kv"), (uint32_t)sh->n_kv);
        ctn_gguf_writer_set_u32(w, RM_KEY("rope.dimension_count"), (uint32_t)hd);
        ctn_gguf_writer_set_f32(w, RM_KEY("rope.freq_base"), sh->rope_base);
        ctn_gguf_writer_set_f32(w, RM_KEY("attention.layer_norm_rms_epsilon"), sh->eps);
        if (sh->arch == RANDMODEL_QWEN3) {
            ctn_gguf_writer_set_u32(w, RM_KEY("attention.key_length"), (uint32_t)hd);
            ctn_gguf_writer_set_u32(w, RM_KEY("attention.value_length"), (uint32_t)hd);
        }
#undef RM_KEY
        ctn_gguf_writer_set_str(w, "tokenizer.ggml.model", "llama");
        ctn_gguf_writer_set_arr_str(w, "tokenizer.ggml.tokens", toks, (uint64_t)sh->n_vocab);
        ctn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CTN_GGUF_FLOAT32, scores,
                                (uint64_t)sh->n_vocab);
        ctn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CTN_GGUF_INT32, ttype,
                                (uint64_t)sh->n_vocab);
        ctn_gguf_writer_set_u32(w, "tokenizer.ggml.unknown_token_id", 0);
        ctn_gguf_writer_set_u32(w, "tokenizer.ggml.bos_token_id", 1);
        ctn_gguf_writer_set_u32(w, "tokenizer.ggml.eos_token_id", 2);
    }
    int64_t E = sh->dim, F = sh->ff, V = sh->n_vocab, KV = (int64_t)sh->n_kv * hd;
    int64_t Q = (int64_t)sh->n_head * hd;
    float sE = 1.0f / sqrtf((float)E), sF = 1.0f / sqrtf((float)F);
    int t = sh->type;
    if (rc == 0) rc = add_random(w, &k, &rng, "token_embd.weight", t, twin, E, V, 0, 1);
    if (rc == 0) rc = add_random(w, &k, &rng, "output_norm.weight", t, twin, E, 0, 1, 0.1f);
    if (rc == 0 && !sh->tied) rc = add_random(w, &k, &rng, "output.weight", t, twin, E, V, 0, sE);
    const bool q2 = sh->arch == RANDMODEL_QWEN2, q3 = sh->arch == RANDMODEL_QWEN3;
    const float sQ = 1.0f / sqrtf((float)Q);
    for (int l = 0; rc == 0 && l < sh->n_layer; l++) {
        struct {
            bool present;
            const char *name;
            int64_t n_in, n_out;
            float mean, sd;
        } ts[] = {
            {true, "attn_norm.weight", E, 0, 1, 0.1f},  {true, "attn_q.weight", E, Q, 0, sE},
            {true, "attn_k.weight", E, KV, 0, sE},      {true, "attn_v.weight", E, KV, 0, sE},
            {q2, "attn_q.bias", Q, 0, 0, 0.5f},         {q2, "attn_k.bias", KV, 0, 0, 0.5f},
            {q2, "attn_v.bias", KV, 0, 0, 0.5f},        {q3, "attn_q_norm.weight", hd, 0, 1, 0.1f},
            {q3, "attn_k_norm.weight", hd, 0, 1, 0.1f}, {true, "attn_output.weight", Q, E, 0, sQ},
            {true, "ffn_norm.weight", E, 0, 1, 0.1f},   {true, "ffn_gate.weight", E, F, 0, sE},
            {true, "ffn_up.weight", E, F, 0, sE},       {true, "ffn_down.weight", F, E, 0, sF},
        };
        for (size_t i = 0; rc == 0 && i < sizeof ts / sizeof ts[0]; i++) {
            if (!ts[i].present) continue;
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s", l, ts[i].name);
            rc = add_random(w, &k, &rng, name, t, twin, ts[i].n_in, ts[i].n_out, ts[i].mean,
                            ts[i].sd);
        }
    }
    if (rc == 0)
        rc = ctn_gguf_writer_write(w, path, err, errlen);
    else
        snprintf(err, errlen, "building the model: %s", ctn_gguf_writer_errmsg(w));
    ctn_gguf_writer_free(w);
    keep_free(&k);
    return rc < 0 ? -1 : 0;
}

static inline int randmodel_write(const randmodel_shape *sh, bool twin, const char *path, char *err,
                                  size_t errlen) {
    return randmodel_write_tokens(sh, NULL, twin, path, err, errlen);
}

#endif
