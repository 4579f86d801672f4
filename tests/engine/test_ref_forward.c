/*
 * The reference forward pass: greedy decoding of stories260K reproduces the continuation
 * llama2.c and llama.cpp produce (from the GGUF file, from our llama2.c conversion, and
 * with the weights in Q8_0), and the model loader rejects malformed models with messages
 * that name the tensor or key at fault.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "gguf.h"
#include "llama2c.h"
#include "model.h"
#include "quant.h"
#include "ref_forward.h"
#include "test.h"
#include "vocab.h"

static const char *shared_dir(void) {
    const char *s = getenv("CTN_SHARED");
    return s != NULL && s[0] != '\0' ? s : "../shared";
}

static const char PROMPT[] = "Once upon a time";
/* ../shared/models/README.md: what llama2.c and llama.cpp produce greedily. */
static const char GOLDEN[] = ", there was a little girl named Lily. She loved to play outside in "
                             "the park. One day, she saw a big, red ball. She wanted to play "
                             "with it, but it was too high.\nLily";

#define N_GEN 60

static int32_t argmax(const float *v, int64_t n) {
    int32_t best = 0;
    for (int64_t i = 1; i < n; i++)
        if (v[i] > v[best]) best = (int32_t)i;
    return best;
}

/*
 * Feeds the prompt (with BOS) then greedily generates n_gen tokens into gen[]. When
 * logits_out is not NULL the logits of every generated step are stored there
 * (n_gen * n_vocab). When force is not NULL, force[i] is fed after step i instead of the
 * argmax (teacher forcing), so two models can be compared on the same context.
 * Returns the number generated, or -1 after a failed CHECK.
 */
static int greedy(const ctn_gguf *g, int n_gen, int32_t *gen, float *logits_out,
                  const int32_t *force) {
    char err[512] = "";
    ctn_model *m = NULL;
    ctn_vocab *v = NULL;
    int rc = ctn_model_load(&m, g, err, sizeof err);
    if (rc < 0) printf("  model: %s\n", err);
    CHECK_EQ_INT(rc, 0);
    rc = ctn_vocab_load(&v, g, err, sizeof err);
    CHECK_EQ_INT(rc, 0);
    if (m == NULL || v == NULL) {
        ctn_model_free(m);
        ctn_vocab_free(v);
        return -1;
    }
    int32_t *ids = NULL;
    size_t n_ids = 0;
    CHECK_EQ_INT(ctn_tokenize(v, PROMPT, strlen(PROMPT), true, false, &ids, &n_ids), 0);
    CHECK(n_ids > 1 && ids[0] == ctn_vocab_bos(v));
    ctn_ref_state s;
    const int64_t n_ctx = (int64_t)n_ids + n_gen;
    CHECK_EQ_INT(ctn_ref_state_init(&s, m, n_ctx), 0);
    float *logits = malloc((size_t)m->hp.n_vocab * sizeof *logits);
    int64_t pos = 0;
    int produced = 0;
    for (size_t i = 0; i < n_ids; i++) {
        rc = ctn_ref_forward(m, &s, ids[i], pos++, logits);
        CHECK_EQ_INT(rc, 0);
    }
    while (rc == 0 && produced < n_gen) {
        if (logits_out != NULL)
            memcpy(logits_out + (size_t)produced * (size_t)m->hp.n_vocab, logits,
                   (size_t)m->hp.n_vocab * sizeof *logits);
        gen[produced] = argmax(logits, m->hp.n_vocab);
        const int32_t next = force != NULL ? force[produced] : gen[produced];
        if (produced + 1 < n_gen) rc = ctn_ref_forward(m, &s, next, pos++, logits);
        produced++;
    }
    CHECK_EQ_INT(rc, 0);
    free(logits);
    free(ids);
    ctn_ref_state_close(&s);
    ctn_vocab_free(v);
    ctn_model_free(m);
    return produced;
}

/* Detokenizes gen[] with the file's vocabulary and checks that it starts with GOLDEN. */
static void check_golden(const ctn_gguf *g, const int32_t *gen, int n) {
    char err[512];
    ctn_vocab *v = NULL;
    CHECK_EQ_INT(ctn_vocab_load(&v, g, err, sizeof err), 0);
    if (v == NULL) return;
    char *text = NULL;
    size_t len = 0;
    CHECK_EQ_INT(ctn_detokenize(v, gen, (size_t)n, false, false, &text, &len), 0);
    bool ok = text != NULL && strncmp(text, GOLDEN, strlen(GOLDEN)) == 0;
    if (!ok) printf("  got:      \"%s\"\n  expected: \"%s...\"\n", text ? text : "", GOLDEN);
    CHECK(ok);
    free(text);
    ctn_vocab_free(v);
}

static ctn_gguf *open_model(const char *name) {
    char path[1024], err[512];
    snprintf(path, sizeof path, "%s/models/%s", shared_dir(), name);
    ctn_gguf *g = NULL;
    if (ctn_gguf_open(&g, path, err, sizeof err) < 0) printf("  %s\n", err);
    return g;
}

TEST(golden_continuation) {
    ctn_gguf *g = open_model("stories260K.gguf");
    CHECK(g != NULL);
    if (g == NULL) return;
    int32_t gen[N_GEN];
    int n = greedy(g, N_GEN, gen, NULL, NULL);
    CHECK_EQ_INT(n, N_GEN);
    if (n == N_GEN) check_golden(g, gen, n);
    ctn_gguf_free(g);
}

TEST(golden_continuation_llama2c) {
    char mp[1024], tp[1024], out[] = "/tmp/ctn_ref_forward_XXXXXX", err[512];
    snprintf(mp, sizeof mp, "%s/models/stories260K.bin", shared_dir());
    snprintf(tp, sizeof tp, "%s/models/tok512.bin", shared_dir());
    int fd = mkstemp(out);
    CHECK(fd >= 0);
    if (fd < 0) return;
    close(fd);
    int rc = ctn_llama2c_convert(mp, tp, out, err, sizeof err);
    if (rc < 0) printf("  %s\n", err);
    CHECK_EQ_INT(rc, 0);
    ctn_gguf *g = NULL;
    CHECK_EQ_INT(ctn_gguf_open(&g, out, err, sizeof err), 0);
    if (g != NULL) {
        int32_t gen[N_GEN];
        int n = greedy(g, N_GEN, gen, NULL, NULL);
        CHECK_EQ_INT(n, N_GEN);
        if (n == N_GEN) check_golden(g, gen, n);
        ctn_gguf_free(g);
    }
    unlink(out);
}

/*
 * Rewrites a model in memory with every matrix whose rows are a whole number of 32-wide
 * blocks in type `type` (ffn_down, with rows of 172, and the norms stay F32; type < 0
 * keeps every type), plus a 1-D F32 tensor `extra` of n_extra floats when extra is not
 * NULL. *image holds the file (caller frees after closing the ctn_gguf).
 */
static ctn_gguf *requantize(const ctn_gguf *src, int type, const char *extra,
                            const float *extra_data, int64_t n_extra, void **image) {
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    for (int64_t i = 0; i < ctn_gguf_n_kv(src); i++) {
        ctn_gguf_str k = ctn_gguf_key(src, i);
        char key[256];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        ctn_gguf_writer_set_value(w, key, ctn_gguf_value_at(src, i));
    }
    const int64_t nt = ctn_gguf_n_tensors(src);
    void **bufs = calloc((size_t)nt, sizeof *bufs);
    for (int64_t i = 0; i < nt; i++) {
        const ctn_gguf_tensor *t = ctn_gguf_tensor_at(src, i);
        char name[256];
        snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
        const int64_t nrows = ctn_gguf_tensor_nelements(t) / t->ne[0];
        if (type >= 0 && t->n_dims == 2 && t->type == CTN_TYPE_F32 && t->ne[0] % 32 == 0) {
            const size_t rb =
                (size_t)(t->ne[0] / ctn_type_block_size(type) * ctn_type_block_bytes(type));
            uint8_t *q = malloc(rb * (size_t)nrows);
            for (int64_t r = 0; r < nrows; r++)
                ctn_quantize_row(type, (const float *)t->data + r * t->ne[0], q + r * (int64_t)rb,
                                 t->ne[0]);
            bufs[i] = q;
            ctn_gguf_writer_add_tensor(w, name, (ctn_type)type, t->n_dims, t->ne, q);
        } else {
            ctn_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data);
        }
    }
    if (extra != NULL) ctn_gguf_writer_add_tensor(w, extra, CTN_TYPE_F32, 1, &n_extra, extra_data);
    size_t size = 0;
    *image = NULL;
    int rc = ctn_gguf_writer_write_memory(w, image, &size);
    CHECK_EQ_INT(rc, 0);
    ctn_gguf_writer_free(w);
    for (int64_t i = 0; i < nt; i++)
        free(bufs[i]);
    free(bufs);
    ctn_gguf *g = NULL;
    char err[512];
    if (rc == 0) CHECK_EQ_INT(ctn_gguf_open_memory(&g, *image, size, "q8_0", err, sizeof err), 0);
    return g;
}

/* The gap between the largest and the second largest of n logits. */
static float top2_margin(const float *v, int n) {
    float b1 = -INFINITY, b2 = -INFINITY;
    for (int j = 0; j < n; j++) {
        if (v[j] > b1)
            b2 = b1, b1 = v[j];
        else if (v[j] > b2)
            b2 = v[j];
    }
    return b1 - b2;
}

/*
 * Q8_0 weights against F32, on the same context (the Q8_0 run is fed the F32 run's tokens).
 * Each Q8_0 weight moves by at most half a step of its block's scale (0.4% of the block's
 * largest weight); on this model that moves the logits by 0.4-2.2% (normalised RMS error)
 * and no logit by more than 0.27 over the first 20 steps. Bounds, with about 2x margin:
 *   - normalised logit error below 5% at every step (a wrong block layout, scale or row
 *     stride gives errors of order 100%);
 *   - the same greedy choice wherever the F32 top two logits are more than 0.5 apart,
 *     which is more than twice the largest logit shift seen. Closer calls (step 16 of this
 *     continuation is 0.13 apart) may legitimately flip and are not compared; the test
 *     insists that at least 15 of the 20 steps are compared, so it cannot pass vacuously.
 */
TEST(q8_0_keeps_greedy_ids) {
    ctn_gguf *g = open_model("stories260K.gguf");
    CHECK(g != NULL);
    if (g == NULL) return;
    void *image = NULL;
    ctn_gguf *gq = requantize(g, CTN_TYPE_Q8_0, NULL, NULL, 0, &image);
    CHECK(gq != NULL);
    enum { N = 20, V = 512 };
    static float lf[N * V], lq[N * V];
    int32_t gf[N], gqid[N];
    if (gq != NULL) {
        const ctn_gguf_tensor *t = ctn_gguf_find_tensor(gq, "blk.0.attn_q.weight");
        CHECK(t != NULL && t->type == CTN_TYPE_Q8_0);
        CHECK_EQ_INT(greedy(g, N, gf, lf, NULL), N);
        CHECK_EQ_INT(greedy(gq, N, gqid, lq, gf), N);
        int compared = 0;
        double worst = 0.0;
        for (int i = 0; i < N; i++) {
            double num = 0.0, den = 0.0;
            for (int j = 0; j < V; j++) {
                double d = (double)lq[i * V + j] - lf[i * V + j];
                num += d * d;
                den += (double)lf[i * V + j] * lf[i * V + j];
            }
            double e = sqrt(num / den);
            if (e > worst) worst = e;
            if (top2_margin(lf + i * V, V) <= 0.5f) continue;
            compared++;
            if (gf[i] != gqid[i])
                printf("  step %d: F32 chose %d, Q8_0 chose %d\n", i, gf[i], gqid[i]);
            CHECK_EQ_INT(gf[i], gqid[i]);
        }
        printf("  Q8_0 vs F32: worst normalised logit error %.4f, %d of %d steps compared\n", worst,
               compared, N);
        CHECK(worst > 0.0 && worst < 0.05);
        CHECK(compared >= 15);
        ctn_gguf_free(gq);
    }
    free(image);
    ctn_gguf_free(g);
}

/*
 * rope_freqs.weight divides each pair's angle: all ones must change nothing (the golden
 * text again), while huge divisors switch RoPE off and must change the text.
 */
TEST(rope_freqs) {
    ctn_gguf *g = open_model("stories260K.gguf");
    CHECK(g != NULL);
    if (g == NULL) return;
    const float ones[4] = {1, 1, 1, 1}, huge[4] = {1e30f, 1e30f, 1e30f, 1e30f};
    for (int k = 0; k < 2; k++) {
        void *image = NULL;
        ctn_gguf *gr = requantize(g, -1, "rope_freqs.weight", k == 0 ? ones : huge, 4, &image);
        CHECK(gr != NULL);
        int32_t gen[N_GEN];
        if (gr != NULL && greedy(gr, N_GEN, gen, NULL, NULL) == N_GEN) {
            if (k == 0) check_golden(gr, gen, N_GEN);
            int32_t ref[N_GEN];
            CHECK_EQ_INT(greedy(g, N_GEN, ref, NULL, NULL), N_GEN);
            CHECK_EQ_INT(memcmp(gen, ref, sizeof gen) == 0, k == 0);
        }
        ctn_gguf_free(gr);
        free(image);
    }
    ctn_gguf_free(g);
}

/* ---- hostile models --------------------------------------------------------------------- */

/*
 * A tiny llama: width 32 (so that a matrix can take a 32-wide block type), 2 heads, 1 KV
 * head, ff 12, 1 layer, vocab 6, all weights zero.
 */
enum { T_E = 32, T_H = 2, T_KV = 1, T_FF = 12, T_V = 6 };

typedef struct {
    const char *arch;
    const char *skip;    /* tensor left out */
    const char *reshape; /* tensor given ne1 + 1 rows */
    const char *retype;  /* tensor given `type` */
    int type;
    const char *extra; /* an extra tensor */
    bool tied;         /* no output.weight */
} tiny_spec;

static ctn_gguf *tiny_model(const tiny_spec *sp, void **image) {
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(w, "general.architecture", sp->arch ? sp->arch : "llama");
    ctn_gguf_writer_set_u32(w, "llama.embedding_length", T_E);
    ctn_gguf_writer_set_u32(w, "llama.feed_forward_length", T_FF);
    ctn_gguf_writer_set_u32(w, "llama.block_count", 1);
    ctn_gguf_writer_set_u32(w, "llama.context_length", 16);
    ctn_gguf_writer_set_u32(w, "llama.attention.head_count", T_H);
    ctn_gguf_writer_set_u32(w, "llama.attention.head_count_kv", T_KV);
    ctn_gguf_writer_set_f32(w, "llama.attention.layer_norm_rms_epsilon", 1e-5f);
    ctn_gguf_writer_set_u32(w, "llama.vocab_size", T_V);
    const int64_t D = T_E / T_H;
    const struct {
        const char *name;
        int64_t ne0, ne1;
    } ts[] = {
        {"token_embd.weight", T_E, T_V},
        {"output_norm.weight", T_E, 0},
        {"output.weight", T_E, T_V},
        {"blk.0.attn_norm.weight", T_E, 0},
        {"blk.0.attn_q.weight", T_E, T_H * D},
        {"blk.0.attn_k.weight", T_E, T_KV * D},
        {"blk.0.attn_v.weight", T_E, T_KV * D},
        {"blk.0.attn_output.weight", T_H * D, T_E},
        {"blk.0.ffn_norm.weight", T_E, 0},
        {"blk.0.ffn_gate.weight", T_E, T_FF},
        {"blk.0.ffn_down.weight", T_FF, T_E},
        {"blk.0.ffn_up.weight", T_E, T_FF},
    };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        if (sp->skip != NULL && strcmp(ts[i].name, sp->skip) == 0) continue;
        if (sp->tied && strcmp(ts[i].name, "output.weight") == 0) continue;
        int64_t ne[2] = {ts[i].ne0, ts[i].ne1};
        if (sp->reshape != NULL && strcmp(ts[i].name, sp->reshape) == 0) ne[1]++;
        ctn_type type = CTN_TYPE_F32;
        if (sp->retype != NULL && strcmp(ts[i].name, sp->retype) == 0) type = (ctn_type)sp->type;
        ctn_gguf_writer_add_tensor(w, ts[i].name, type, ts[i].ne1 > 0 ? 2 : 1, ne, NULL);
    }
    if (sp->extra != NULL) {
        int64_t ne[1] = {T_E};
        ctn_gguf_writer_add_tensor(w, sp->extra, CTN_TYPE_F32, 1, ne, NULL);
    }
    size_t size = 0;
    *image = NULL;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(w, image, &size), 0);
    ctn_gguf_writer_free(w);
    ctn_gguf *g = NULL;
    char err[512];
    int rc = ctn_gguf_open_memory(&g, *image, size, "tiny", err, sizeof err);
    if (rc < 0) printf("  %s\n", err);
    CHECK_EQ_INT(rc, 0);
    return g;
}

/* Loads a tiny model built from sp and checks the code and that the message has `needle`. */
static void expect_load_error(const tiny_spec *sp, int code, const char *needle,
                              const char *needle2) {
    void *image;
    ctn_gguf *g = tiny_model(sp, &image);
    if (g != NULL) {
        char err[512] = "";
        ctn_model *m = (ctn_model *)1;
        CHECK_EQ_INT(ctn_model_load(&m, g, err, sizeof err), code);
        CHECK(m == NULL);
        CHECK_CONTAINS(err, needle);
        if (needle2 != NULL) CHECK_CONTAINS(err, needle2);
        ctn_gguf_free(g);
    }
    free(image);
}

TEST(tiny_model_loads_and_runs) {
    tiny_spec sp = {0};
    void *image;
    ctn_gguf *g = tiny_model(&sp, &image);
    CHECK(g != NULL);
    char err[512] = "";
    ctn_model *m = NULL;
    if (g != NULL) CHECK_EQ_INT(ctn_model_load(&m, g, err, sizeof err), 0);
    if (m != NULL) {
        CHECK_EQ_INT(m->hp.head_dim, T_E / T_H);
        CHECK_EQ_INT(m->hp.n_rot, T_E / T_H); /* defaults to the head dimension */
        CHECK(m->hp.rope_base == 10000.0f);   /* default */
        CHECK(m->output != m->tok_embd);
        ctn_ref_state s;
        float logits[T_V];
        CHECK_EQ_INT(ctn_ref_state_init(&s, m, 4), 0);
        CHECK_EQ_INT(ctn_ref_forward(m, &s, 3, 0, logits), 0);
        CHECK(logits[0] == 0.0f); /* zero weights give zero logits */
        CHECK_EQ_INT(ctn_ref_forward(m, &s, 3, 4, logits), CTN_ERANGE);
        CHECK_CONTAINS(ctn_ref_state_errmsg(&s), "position 4");
        CHECK_EQ_INT(ctn_ref_forward(m, &s, 3, -1, logits), CTN_ERANGE);
        CHECK_EQ_INT(ctn_ref_forward(m, &s, T_V, 1, logits), CTN_EINVAL);
        CHECK_CONTAINS(ctn_ref_state_errmsg(&s), "token 6");
        CHECK_EQ_INT(ctn_ref_forward(m, &s, -1, 1, logits), CTN_EINVAL);
        ctn_ref_state_close(&s);
        CHECK_EQ_INT(ctn_ref_state_init(&s, m, 0), CTN_EINVAL);
        ctn_ref_state_close(&s);
        ctn_model_free(m);
    }
    ctn_gguf_free(g);
    free(image);
}

TEST(tied_output_uses_the_embedding) {
    tiny_spec sp = {.tied = true};
    void *image;
    ctn_gguf *g = tiny_model(&sp, &image);
    char err[512] = "";
    ctn_model *m = NULL;
    if (g != NULL) CHECK_EQ_INT(ctn_model_load(&m, g, err, sizeof err), 0);
    CHECK(m != NULL && m->output == m->tok_embd);
    ctn_model_free(m);
    ctn_gguf_free(g);
    free(image);
}

TEST(hostile_models) {
    expect_load_error(&(tiny_spec){.reshape = "blk.0.attn_k.weight"}, CTN_EFORMAT,
                      "tensor blk.0.attn_k.weight has shape [32, 17], expected [32, 16]", NULL);
    expect_load_error(&(tiny_spec){.skip = "blk.0.ffn_up.weight"}, CTN_EFORMAT,
                      "tensor blk.0.ffn_up.weight is missing", NULL);
    expect_load_error(&(tiny_spec){.arch = "gpt2"}, CTN_ENOTSUP, "architecture \"gpt2\"", NULL);
    expect_load_error(&(tiny_spec){.retype = "blk.0.attn_q.weight", .type = CTN_TYPE_Q8_1},
                      CTN_ENOTSUP, "tensor blk.0.attn_q.weight has type Q8_1", NULL);
    expect_load_error(&(tiny_spec){.retype = "output_norm.weight", .type = CTN_TYPE_I32},
                      CTN_ENOTSUP, "tensor output_norm.weight has type I32", "expected F32");
    expect_load_error(&(tiny_spec){.extra = "blk.0.attn_q.bias"}, CTN_ENOTSUP,
                      "tensor blk.0.attn_q.bias", NULL);
    expect_load_error(&(tiny_spec){.reshape = "token_embd.weight"}, CTN_EFORMAT,
                      "tensor token_embd.weight has shape [32, 7], expected [32, 6]", NULL);
}

TEST(hostile_hparams) {
    /* A head count that does not divide the width, a missing key, a key of the wrong type,
     * a zero. */
    const char *cases[][3] = {
        {"llama.attention.head_count", "5", "is not a multiple of llama.attention.head_count"},
        {"llama.block_count", "-", "required key llama.block_count is missing"},
        {"llama.context_length", "s", "key llama.context_length is a string"},
        {"llama.attention.head_count_kv", "0", "key llama.attention.head_count_kv is 0"},
    };
    for (size_t c = 0; c < sizeof cases / sizeof cases[0]; c++) {
        void *image;
        tiny_spec sp = {0};
        ctn_gguf *g = tiny_model(&sp, &image);
        if (g == NULL) continue;
        /* Rebuild with the one key changed. */
        ctn_gguf_writer *w = ctn_gguf_writer_new();
        for (int64_t i = 0; i < ctn_gguf_n_kv(g); i++) {
            ctn_gguf_str k = ctn_gguf_key(g, i);
            char key[256];
            snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
            if (strcmp(key, cases[c][0]) == 0) {
                if (cases[c][1][0] == 's')
                    ctn_gguf_writer_set_str(w, key, "12");
                else if (cases[c][1][0] != '-')
                    ctn_gguf_writer_set_u32(w, key, (uint32_t)atoi(cases[c][1]));
                continue;
            }
            ctn_gguf_writer_set_value(w, key, ctn_gguf_value_at(g, i));
        }
        for (int64_t i = 0; i < ctn_gguf_n_tensors(g); i++) {
            const ctn_gguf_tensor *t = ctn_gguf_tensor_at(g, i);
            char name[256];
            snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
            ctn_gguf_writer_add_tensor(w, name, t->type, t->n_dims, t->ne, t->data);
        }
        void *img2 = NULL;
        size_t size = 0;
        CHECK_EQ_INT(ctn_gguf_writer_write_memory(w, &img2, &size), 0);
        ctn_gguf_writer_free(w);
        ctn_gguf *g2 = NULL;
        char err[512] = "";
        CHECK_EQ_INT(ctn_gguf_open_memory(&g2, img2, size, "tiny2", err, sizeof err), 0);
        ctn_model *m = NULL;
        if (g2 != NULL) CHECK_EQ_INT(ctn_model_load(&m, g2, err, sizeof err), CTN_EFORMAT);
        CHECK(m == NULL);
        CHECK_CONTAINS(err, cases[c][2]);
        ctn_gguf_free(g2);
        free(img2);
        ctn_gguf_free(g);
        free(image);
    }
}

/* Failing the N-th allocation, for every N, gives CTN_ENOMEM and leaks nothing (ASan). */
TEST(allocation_failures) {
    tiny_spec sp = {0};
    void *image;
    ctn_gguf *g = tiny_model(&sp, &image);
    if (g == NULL) return;
    char err[512];
    bool loaded = false;
    for (long n = 0; n < 100 && !loaded; n++) {
        ctn_model *m = NULL;
        ctn__alloc_fail_after = n;
        int rc = ctn_model_load(&m, g, err, sizeof err);
        ctn__alloc_fail_after = -1;
        if (rc == 0)
            loaded = true;
        else
            CHECK_EQ_INT(rc, CTN_ENOMEM);
        ctn_model_free(m);
    }
    CHECK(loaded);
    ctn_model *m = NULL;
    CHECK_EQ_INT(ctn_model_load(&m, g, err, sizeof err), 0);
    bool inited = false;
    for (long n = 0; n < 100 && m != NULL && !inited; n++) {
        ctn_ref_state s;
        ctn__alloc_fail_after = n;
        int rc = ctn_ref_state_init(&s, m, 8);
        ctn__alloc_fail_after = -1;
        if (rc == 0)
            inited = true;
        else
            CHECK_EQ_INT(rc, CTN_ENOMEM);
        ctn_ref_state_close(&s);
    }
    CHECK(inited);
    ctn_model_free(m);
    ctn_gguf_free(g);
    free(image);
}

int main(void) {
    RUN(golden_continuation);
    RUN(golden_continuation_llama2c);
    RUN(q8_0_keeps_greedy_ids);
    RUN(rope_freqs);
    RUN(tiny_model_loads_and_runs);
    RUN(tied_output_uses_the_embedding);
    RUN(hostile_models);
    RUN(hostile_hparams);
    RUN(allocation_failures);
    return test_summary();
}
