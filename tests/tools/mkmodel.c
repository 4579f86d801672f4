/*
 * Writes a random-weight llama-architecture GGUF for speed benchmarks.
 *
 *   mkmodel -o OUT.gguf [--dim 768] [--layers 12] [--heads 12] [--kv-heads 4] [--ff 2048]
 *           [--type f16|f32] [--seed S] [--ctx 2048] [--std 0.02]
 *           [--vocab ../shared/vocab/ggml-vocab-llama-spm.gguf]
 *
 * The defaults make the ~125M-parameter model of ../shared/docs/BENCHMARKS.md (dim 768,
 * 12 layers, 12 heads, 4 KV heads, FFN 2048, vocabulary 32000, untied output: 133 MB in
 * Q8_0). Every key tokenizer.* is copied from the vocabulary file (by default llama.cpp's
 * ggml-vocab-llama-spm.gguf, 32000 tokens), so the model has that tokenizer and n_vocab is
 * its token count. Matrices are N(0, std) with std 0.02 (GPT-2's initialisation), stored
 * as --type; the RMSNorm weights are 1 + N(0, 0.02) in F32, as llama.cpp's converters keep
 * norms. With RMSNorm before every matrix the activations stay of order 1 through any
 * number of layers, so nothing overflows in F16; the weights carry no meaning and greedy
 * decoding of such a model tends to repeat one token, which does not matter for speed.
 * The same --seed gives the same file. Quantize the F16 file with `catena quantize`.
 *
 * Exit status 0, 1 on a failure, 2 on bad usage.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "quant.h"

#define DEFAULT_VOCAB "../shared/vocab/ggml-vocab-llama-spm.gguf"

typedef struct {
    int dim, layers, heads, kv_heads, ff, ctx;
    int type; /* CTN_TYPE_F16 or CTN_TYPE_F32 */
    uint64_t seed;
    float std;
} shape;

/* ---- random numbers ------------------------------------------------------------------ */

/* splitmix64: small, fast and good enough for weights nobody reads. */
static uint64_t rng_next(uint64_t *s) {
    uint64_t z = (*s += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

static double rng_unit(uint64_t *s) {
    return ((double)(rng_next(s) >> 11) + 0.5) / 9007199254740992.0;
}

/* Two standard normal values by Box-Muller. */
static void rng_normal2(uint64_t *s, float *a, float *b) {
    double r = sqrt(-2.0 * log(rng_unit(s))), t = 6.283185307179586 * rng_unit(s);
    *a = (float)(r * cos(t));
    *b = (float)(r * sin(t));
}

/* ---- buffers the writer borrows until it writes ----------------------------------------- */

typedef struct {
    void **p;
    size_t n, cap;
} keep_list;

static void *keep(keep_list *k, size_t bytes) {
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

static void keep_free(keep_list *k) {
    for (size_t i = 0; i < k->n; i++)
        free(k->p[i]);
    free(k->p);
}

/*
 * Adds a tensor of n_out rows of n_in values from N(mean, sd) (a vector of n_in when n_out
 * is 0, always F32), stored as type (F16 or F32).
 */
static int add_random(ctn_gguf_writer *w, keep_list *k, uint64_t *rng, const char *name, int type,
                      int64_t n_in, int64_t n_out, float mean, float sd) {
    int64_t n = n_in * (n_out ? n_out : 1);
    bool f32 = type == CTN_TYPE_F32 || n_out == 0;
    float *x = f32 ? keep(k, (size_t)n * sizeof *x) : malloc((size_t)n * sizeof *x);
    if (!x) return -1;
    for (int64_t i = 0; i < n; i += 2) {
        float a, b;
        rng_normal2(rng, &a, &b);
        x[i] = mean + sd * a;
        if (i + 1 < n) x[i + 1] = mean + sd * b;
    }
    int64_t ne[2] = {n_in, n_out};
    if (f32) return ctn_gguf_writer_add_tensor(w, name, CTN_TYPE_F32, n_out ? 2 : 1, ne, x);
    uint16_t *h = keep(k, (size_t)n * sizeof *h);
    if (!h) {
        free(x);
        return -1;
    }
    for (int64_t i = 0; i < n; i++)
        h[i] = ctn_fp32_to_fp16(x[i]);
    free(x);
    return ctn_gguf_writer_add_tensor(w, name, CTN_TYPE_F16, 2, ne, h);
}

/* Copies every tokenizer.* key of vocab into w; *n_vocab gets the token count. */
static int copy_tokenizer(ctn_gguf_writer *w, const ctn_gguf *vocab, int64_t *n_vocab, char *err,
                          size_t errlen) {
    const ctn_gguf_value *toks;
    if (ctn_gguf_get_arr(vocab, "tokenizer.ggml.tokens", &toks) < 0 || toks->v.arr.n < 2) {
        snprintf(err, errlen, "%s has no tokenizer.ggml.tokens", ctn_gguf_path(vocab));
        return -1;
    }
    *n_vocab = (int64_t)toks->v.arr.n;
    for (int64_t i = 0; i < ctn_gguf_n_kv(vocab); i++) {
        ctn_gguf_str key = ctn_gguf_key(vocab, i);
        if (key.len < 10 || memcmp(key.ptr, "tokenizer.", 10) != 0) continue;
        char name[256];
        if (key.len >= sizeof name) continue;
        memcpy(name, key.ptr, key.len);
        name[key.len] = '\0';
        if (ctn_gguf_writer_set_value(w, name, ctn_gguf_value_at(vocab, i)) < 0) {
            snprintf(err, errlen, "copying %s: %s", name, ctn_gguf_writer_errmsg(w));
            return -1;
        }
    }
    return 0;
}

static int write_model(const shape *sh, const char *vocab_path, const char *path, char *err,
                       size_t errlen) {
    ctn_gguf *vocab = NULL;
    if (ctn_gguf_open(&vocab, vocab_path, err, errlen) < 0) return -1;
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    if (!w) {
        ctn_gguf_free(vocab);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    keep_list k = {0};
    uint64_t rng = sh->seed * 0x2545f4914f6cdd1dull + 1;
    int64_t V = 0;
    int rc = copy_tokenizer(w, vocab, &V, err, errlen);
    int hd = sh->dim / sh->heads;
    if (rc == 0) {
        ctn_gguf_writer_set_str(w, "general.architecture", "llama");
        ctn_gguf_writer_set_str(w, "general.name", "catena-bench-random");
        /* llama_ftype: ALL_F32 0, MOSTLY_F16 1. */
        ctn_gguf_writer_set_u32(w, "general.file_type", sh->type == CTN_TYPE_F16 ? 1 : 0);
        ctn_gguf_writer_set_u32(w, "llama.context_length", (uint32_t)sh->ctx);
        ctn_gguf_writer_set_u32(w, "llama.embedding_length", (uint32_t)sh->dim);
        ctn_gguf_writer_set_u32(w, "llama.block_count", (uint32_t)sh->layers);
        ctn_gguf_writer_set_u32(w, "llama.feed_forward_length", (uint32_t)sh->ff);
        ctn_gguf_writer_set_u32(w, "llama.attention.head_count", (uint32_t)sh->heads);
        ctn_gguf_writer_set_u32(w, "llama.attention.head_count_kv", (uint32_t)sh->kv_heads);
        ctn_gguf_writer_set_u32(w, "llama.rope.dimension_count", (uint32_t)hd);
        ctn_gguf_writer_set_u32(w, "llama.vocab_size", (uint32_t)V);
        ctn_gguf_writer_set_f32(w, "llama.rope.freq_base", 10000.0f);
        ctn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    }
    int64_t E = sh->dim, F = sh->ff, KV = (int64_t)sh->kv_heads * hd;
    float sd = sh->std, nsd = 0.02f;
    int t = sh->type;
    if (rc == 0) rc = add_random(w, &k, &rng, "token_embd.weight", t, E, V, 0, sd);
    if (rc == 0) rc = add_random(w, &k, &rng, "output_norm.weight", t, E, 0, 1, nsd);
    if (rc == 0) rc = add_random(w, &k, &rng, "output.weight", t, E, V, 0, sd);
    for (int l = 0; rc == 0 && l < sh->layers; l++) {
        struct {
            const char *name;
            int64_t n_in, n_out;
            float mean, sd;
        } ts[] = {
            {"attn_norm", E, 0, 1, nsd}, {"attn_q", E, E, 0, sd},      {"attn_k", E, KV, 0, sd},
            {"attn_v", E, KV, 0, sd},    {"attn_output", E, E, 0, sd}, {"ffn_norm", E, 0, 1, nsd},
            {"ffn_gate", E, F, 0, sd},   {"ffn_up", E, F, 0, sd},      {"ffn_down", F, E, 0, sd},
        };
        for (size_t i = 0; rc == 0 && i < sizeof ts / sizeof ts[0]; i++) {
            char name[64];
            snprintf(name, sizeof name, "blk.%d.%s.weight", l, ts[i].name);
            rc = add_random(w, &k, &rng, name, t, ts[i].n_in, ts[i].n_out, ts[i].mean, ts[i].sd);
        }
    }
    if (rc == 0)
        rc = ctn_gguf_writer_write(w, path, err, errlen);
    else if (!*err)
        snprintf(err, errlen, "building the model: %s", ctn_gguf_writer_errmsg(w));
    ctn_gguf_writer_free(w);
    ctn_gguf_free(vocab);
    keep_free(&k);
    return rc < 0 ? -1 : 0;
}

static int usage(void) {
    fprintf(stderr,
            "usage: mkmodel -o OUT.gguf [--dim 768] [--layers 12] [--heads 12] [--kv-heads 4]\n"
            "               [--ff 2048] [--type f16|f32] [--seed S] [--ctx 2048] [--std 0.02]\n"
            "               [--vocab " DEFAULT_VOCAB "]\n");
    return 2;
}

static bool parse_int(const char *s, long lo, long hi, int *out) {
    char *end;
    long v = s ? strtol(s, &end, 10) : 0;
    if (!s || !*s || *end || v < lo || v > hi) return false;
    *out = (int)v;
    return true;
}

int main(int argc, char **argv) {
    shape sh = {768, 12, 12, 4, 2048, 2048, CTN_TYPE_F16, 1, 0.02f};
    const char *out = NULL, *vocab = DEFAULT_VOCAB;
    for (int i = 1; i < argc; i += 2) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (!strcmp(a, "-o"))
            out = v;
        else if (!strcmp(a, "--vocab"))
            vocab = v;
        else if (!strcmp(a, "--dim"))
            ok = parse_int(v, 1, 1 << 16, &sh.dim);
        else if (!strcmp(a, "--layers"))
            ok = parse_int(v, 1, 1024, &sh.layers);
        else if (!strcmp(a, "--heads"))
            ok = parse_int(v, 1, 1024, &sh.heads);
        else if (!strcmp(a, "--kv-heads"))
            ok = parse_int(v, 1, 1024, &sh.kv_heads);
        else if (!strcmp(a, "--ff"))
            ok = parse_int(v, 1, 1 << 20, &sh.ff);
        else if (!strcmp(a, "--ctx"))
            ok = parse_int(v, 1, 1 << 24, &sh.ctx);
        else if (!strcmp(a, "--seed")) {
            char *end;
            sh.seed = v ? strtoull(v, &end, 10) : 0;
            ok = v && *v && !*end;
        } else if (!strcmp(a, "--std")) {
            char *end;
            sh.std = v ? strtof(v, &end) : 0;
            ok = v && *v && !*end && sh.std > 0;
        } else if (!strcmp(a, "--type")) {
            ok = v && (!strcmp(v, "f16") || !strcmp(v, "f32"));
            if (ok) sh.type = !strcmp(v, "f16") ? CTN_TYPE_F16 : CTN_TYPE_F32;
        } else
            ok = false;
        if (!ok) return usage();
    }
    if (!out) return usage();
    if (sh.dim % sh.heads || sh.heads % sh.kv_heads || (sh.dim / sh.heads) % 2) {
        fprintf(stderr, "mkmodel: dim must split into heads of even width, heads into kv-heads\n");
        return 2;
    }
    char err[512] = "";
    if (write_model(&sh, vocab, out, err, sizeof err) < 0) {
        fprintf(stderr, "mkmodel: %s\n", err);
        return 1;
    }
    return 0;
}
