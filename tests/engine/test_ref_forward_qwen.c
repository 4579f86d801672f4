/*
 * The reference forward pass on the qwen2 and qwen3 architectures: tiny one-layer models
 * with random weights load, give the logits of a naive computation written here from the
 * published formulas (Q/K/V biases, per-head Q/K RMSNorm, NeoX RoPE pairing (k, k + n_rot/2),
 * a qwen3 head width set by attention.key_length), and malformed ones are rejected with a
 * message that names the tensor or key at fault.
 */
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "model.h"
#include "ref_forward.h"
#include "test.h"

/*
 * Width 8, 2 query heads sharing 1 KV head, ff 5, vocab 7. qwen2's heads are 8 / 2 = 4
 * wide; qwen3's are 6 wide (attention.key_length), so that Q is 12 wide, not n_embd.
 */
enum { E = 8, H = 2, KV = 1, FF = 5, V = 7, D2 = 4, D3 = 6, DMAX = 6 };
#define EPS  1e-6f
#define BASE 10000.0f

/* The weights, kept here so that the naive computation reads the same numbers. */
typedef struct {
    int64_t d; /* head width */
    float tok[V][E], out_norm[E], out[V][E];
    float attn_norm[E], wq[H * DMAX][E], wk[KV * DMAX][E], wv[KV * DMAX][E];
    float bq[H * DMAX], bk[KV * DMAX], bv[KV * DMAX], q_norm[DMAX], k_norm[DMAX];
    float wo[E][H * DMAX], ffn_norm[E], gate[FF][E], up[FF][E], down[E][FF];
} weights;

static uint32_t rng_state;
static float rnd(float lo, float hi) {
    rng_state = rng_state * 1664525u + 1013904223u;
    return lo + (hi - lo) * (float)(rng_state >> 8) / (float)(1u << 24);
}

static void fill(float *p, size_t n, float lo, float hi) {
    for (size_t i = 0; i < n; i++)
        p[i] = rnd(lo, hi);
}

static void make_weights(weights *w, int64_t d) {
    memset(w, 0, sizeof *w);
    rng_state = 12345u + (uint32_t)d;
    w->d = d;
    fill(&w->tok[0][0], sizeof w->tok / sizeof(float), -1.0f, 1.0f);
    fill(w->out_norm, E, 0.5f, 1.5f);
    fill(&w->out[0][0], sizeof w->out / sizeof(float), -0.5f, 0.5f);
    fill(w->attn_norm, E, 0.5f, 1.5f);
    fill(&w->wq[0][0], sizeof w->wq / sizeof(float), -0.5f, 0.5f);
    fill(&w->wk[0][0], sizeof w->wk / sizeof(float), -0.5f, 0.5f);
    fill(&w->wv[0][0], sizeof w->wv / sizeof(float), -0.5f, 0.5f);
    fill(w->bq, H * DMAX, -0.5f, 0.5f);
    fill(w->bk, KV * DMAX, -0.5f, 0.5f);
    fill(w->bv, KV * DMAX, -0.5f, 0.5f);
    fill(w->q_norm, DMAX, 0.5f, 1.5f);
    fill(w->k_norm, DMAX, 0.5f, 1.5f);
    fill(&w->wo[0][0], sizeof w->wo / sizeof(float), -0.5f, 0.5f);
    fill(w->ffn_norm, E, 0.5f, 1.5f);
    fill(&w->gate[0][0], sizeof w->gate / sizeof(float), -0.5f, 0.5f);
    fill(&w->up[0][0], sizeof w->up / sizeof(float), -0.5f, 0.5f);
    fill(&w->down[0][0], sizeof w->down / sizeof(float), -0.5f, 0.5f);
}

typedef struct {
    const char *arch;  /* "qwen2" or "qwen3" */
    const char *skip;  /* tensor left out */
    const char *extra; /* an extra 1-D tensor of E floats */
    int key_length;    /* written when > 0; qwen3 default D3 */
    int value_length;  /* written when > 0 */
    bool tied;         /* no output.weight */
} spec;

/*
 * Builds the model of sp from w; the matrices are written with n_rows * n_cols taken from
 * the head width w->d (rows of a [r][c] array are contiguous when c is the full width, so
 * the Q/K/V matrices copy their first rows and wo is repacked).
 */
static ctn_gguf *build(const spec *sp, const weights *w, void **image) {
    const bool q3 = strcmp(sp->arch, "qwen3") == 0;
    const int64_t d = w->d;
    char key[128];
    ctn_gguf_writer *wr = ctn_gguf_writer_new();
    ctn_gguf_writer_set_str(wr, "general.architecture", sp->arch);
#define KEY(k) (snprintf(key, sizeof key, "%s.%s", sp->arch, k), key)
    ctn_gguf_writer_set_u32(wr, KEY("embedding_length"), E);
    ctn_gguf_writer_set_u32(wr, KEY("feed_forward_length"), FF);
    ctn_gguf_writer_set_u32(wr, KEY("block_count"), 1);
    ctn_gguf_writer_set_u32(wr, KEY("context_length"), 32);
    ctn_gguf_writer_set_u32(wr, KEY("attention.head_count"), H);
    ctn_gguf_writer_set_u32(wr, KEY("attention.head_count_kv"), KV);
    ctn_gguf_writer_set_f32(wr, KEY("attention.layer_norm_rms_epsilon"), EPS);
    ctn_gguf_writer_set_f32(wr, KEY("rope.freq_base"), BASE);
    ctn_gguf_writer_set_u32(wr, KEY("vocab_size"), V);
    int kl = sp->key_length > 0 ? sp->key_length : q3 ? D3 : 0;
    if (kl > 0) ctn_gguf_writer_set_u32(wr, KEY("attention.key_length"), (uint32_t)kl);
    if (sp->value_length > 0)
        ctn_gguf_writer_set_u32(wr, KEY("attention.value_length"), (uint32_t)sp->value_length);
#undef KEY
    static float wo[E * H * DMAX];
    for (int r = 0; r < E; r++)
        for (int c = 0; c < H * d; c++)
            wo[r * H * d + c] = w->wo[r][c];
    const struct {
        const char *name;
        int64_t ne0, ne1;
        const float *data;
        bool present;
    } ts[] = {
        {"token_embd.weight", E, V, &w->tok[0][0], true},
        {"output_norm.weight", E, 0, w->out_norm, true},
        {"output.weight", E, V, &w->out[0][0], !sp->tied},
        {"blk.0.attn_norm.weight", E, 0, w->attn_norm, true},
        {"blk.0.attn_q.weight", E, H * d, &w->wq[0][0], true},
        {"blk.0.attn_k.weight", E, KV * d, &w->wk[0][0], true},
        {"blk.0.attn_v.weight", E, KV * d, &w->wv[0][0], true},
        {"blk.0.attn_q.bias", H * d, 0, w->bq, !q3},
        {"blk.0.attn_k.bias", KV * d, 0, w->bk, !q3},
        {"blk.0.attn_v.bias", KV * d, 0, w->bv, !q3},
        {"blk.0.attn_q_norm.weight", d, 0, w->q_norm, q3},
        {"blk.0.attn_k_norm.weight", d, 0, w->k_norm, q3},
        {"blk.0.attn_output.weight", H * d, E, wo, true},
        {"blk.0.ffn_norm.weight", E, 0, w->ffn_norm, true},
        {"blk.0.ffn_gate.weight", E, FF, &w->gate[0][0], true},
        {"blk.0.ffn_up.weight", E, FF, &w->up[0][0], true},
        {"blk.0.ffn_down.weight", FF, E, &w->down[0][0], true},
    };
    for (size_t i = 0; i < sizeof ts / sizeof ts[0]; i++) {
        if (!ts[i].present || (sp->skip != NULL && strcmp(sp->skip, ts[i].name) == 0)) continue;
        const int64_t ne[2] = {ts[i].ne0, ts[i].ne1};
        ctn_gguf_writer_add_tensor(wr, ts[i].name, CTN_TYPE_F32, ts[i].ne1 > 0 ? 2 : 1, ne,
                                   ts[i].data);
    }
    if (sp->extra != NULL) {
        const int64_t ne[1] = {E};
        ctn_gguf_writer_add_tensor(wr, sp->extra, CTN_TYPE_F32, 1, ne, w->attn_norm);
    }
    size_t size = 0;
    *image = NULL;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(wr, image, &size), 0);
    ctn_gguf_writer_free(wr);
    ctn_gguf *g = NULL;
    char err[512] = "";
    if (*image != NULL) {
        int rc = ctn_gguf_open_memory(&g, *image, size, sp->arch, err, sizeof err);
        if (rc < 0) printf("  %s\n", err);
        CHECK_EQ_INT(rc, 0);
    }
    return g;
}

/* ---- the naive computation ---------------------------------------------------------------- */

/* y = x / sqrt(mean(x^2) + eps) * g, in double. */
static void naive_rmsnorm(const double *x, const float *g, int64_t n, double *y) {
    double ss = 0.0;
    for (int64_t i = 0; i < n; i++)
        ss += x[i] * x[i];
    const double scale = 1.0 / sqrt(ss / (double)n + (double)EPS);
    for (int64_t i = 0; i < n; i++)
        y[i] = x[i] * scale * g[i];
}

/*
 * Rotates one head of width d at position pos. NeoX pairs (k, k + d/2); the other
 * (llama's) pairing (2k, 2k + 1) is here only to show that the test tells them apart.
 */
static void naive_rope(double *x, int64_t d, int64_t pos, bool neox) {
    for (int64_t k = 0; k < d / 2; k++) {
        const double theta = (double)pos * pow((double)BASE, -2.0 * (double)k / (double)d);
        const int64_t a = neox ? k : 2 * k, b = neox ? k + d / 2 : 2 * k + 1;
        const double x0 = x[a], x1 = x[b];
        x[a] = x0 * cos(theta) - x1 * sin(theta);
        x[b] = x0 * sin(theta) + x1 * cos(theta);
    }
}

/*
 * The logits of the last of n tokens, by the formulas of llm_build_qwen2 / llm_build_qwen3
 * written out directly: one layer, every position recomputed, in double.
 */
static void naive_logits(const weights *w, bool q3, bool neox, const int32_t *toks, int n,
                         double *logits) {
    const int64_t d = w->d;
    double k[8][KV * DMAX], v[8][KV * DMAX], x[E] = {0}, q[H * DMAX] = {0};
    for (int p = 0; p < n; p++) {
        double xn[E];
        for (int i = 0; i < E; i++)
            x[i] = w->tok[toks[p]][i];
        naive_rmsnorm(x, w->attn_norm, E, xn);
        for (int64_t r = 0; r < H * d; r++) {
            q[r] = q3 ? 0.0 : w->bq[r];
            for (int i = 0; i < E; i++)
                q[r] += (double)w->wq[r][i] * xn[i];
        }
        for (int64_t r = 0; r < KV * d; r++) {
            k[p][r] = q3 ? 0.0 : w->bk[r];
            v[p][r] = q3 ? 0.0 : w->bv[r];
            for (int i = 0; i < E; i++) {
                k[p][r] += (double)w->wk[r][i] * xn[i];
                v[p][r] += (double)w->wv[r][i] * xn[i];
            }
        }
        for (int h = 0; h < H; h++) {
            if (q3) naive_rmsnorm(q + h * d, w->q_norm, d, q + h * d);
            naive_rope(q + h * d, d, p, neox);
        }
        for (int h = 0; h < KV; h++) {
            if (q3) naive_rmsnorm(k[p] + h * d, w->k_norm, d, k[p] + h * d);
            naive_rope(k[p] + h * d, d, p, neox);
        }
    }
    /* Attention of the last position; every query head reads KV head 0 (KV == 1). */
    const int last = n - 1;
    double att[H * DMAX];
    for (int h = 0; h < H; h++) {
        double s[8], mx = -INFINITY, sum = 0.0;
        for (int t = 0; t <= last; t++) {
            s[t] = 0.0;
            for (int64_t i = 0; i < d; i++)
                s[t] += q[h * d + i] * k[t][i];
            s[t] /= sqrt((double)d);
            mx = fmax(mx, s[t]);
        }
        for (int t = 0; t <= last; t++)
            sum += s[t] = exp(s[t] - mx);
        for (int64_t i = 0; i < d; i++) {
            att[h * d + i] = 0.0;
            for (int t = 0; t <= last; t++)
                att[h * d + i] += s[t] / sum * v[t][i];
        }
    }
    for (int r = 0; r < E; r++)
        for (int64_t c = 0; c < H * d; c++)
            x[r] += (double)w->wo[r][c] * att[c];
    double xn[E], hid[FF];
    naive_rmsnorm(x, w->ffn_norm, E, xn);
    for (int f = 0; f < FF; f++) {
        double g = 0.0, u = 0.0;
        for (int i = 0; i < E; i++) {
            g += (double)w->gate[f][i] * xn[i];
            u += (double)w->up[f][i] * xn[i];
        }
        hid[f] = g / (1.0 + exp(-g)) * u;
    }
    for (int r = 0; r < E; r++)
        for (int f = 0; f < FF; f++)
            x[r] += (double)w->down[r][f] * hid[f];
    naive_rmsnorm(x, w->out_norm, E, xn);
    for (int t = 0; t < V; t++) {
        logits[t] = 0.0;
        for (int i = 0; i < E; i++)
            logits[t] += (double)w->out[t][i] * xn[i];
    }
}

/* max |a - b| / max |b|: the normalised error of logits a against the reference b. */
static double norm_err(const float *a, const double *b, int n) {
    double num = 0.0, den = 0.0;
    for (int i = 0; i < n; i++) {
        num = fmax(num, fabs((double)a[i] - b[i]));
        den = fmax(den, fabs(b[i]));
    }
    return num / den;
}

/*
 * Runs tokens 3, 5, 1 through the reference and compares the logits of each position with
 * the naive NeoX computation (within 1e-5), and checks that llama's pairing would have
 * been caught: from position 1 on it gives logits more than 1e-3 away.
 */
static void check_against_naive(const char *arch) {
    const bool q3 = strcmp(arch, "qwen3") == 0;
    static weights w;
    make_weights(&w, q3 ? D3 : D2);
    void *image = NULL;
    ctn_gguf *g = build(&(spec){.arch = arch}, &w, &image);
    char err[512] = "";
    ctn_model *m = NULL;
    if (g != NULL) {
        int rc = ctn_model_load(&m, g, err, sizeof err);
        if (rc < 0) printf("  %s\n", err);
        CHECK_EQ_INT(rc, 0);
    }
    if (m != NULL) {
        CHECK_EQ_INT(m->hp.head_dim, w.d);
        CHECK_EQ_INT(m->hp.n_rot, w.d);
        CHECK(m->arch->rope == CTN_ROPE_NEOX);
        ctn_ref_state s;
        CHECK_EQ_INT(ctn_ref_state_init(&s, m, 4), 0);
        const int32_t toks[3] = {3, 5, 1};
        for (int p = 0; p < 3; p++) {
            float logits[V];
            double want[V], other[V];
            CHECK_EQ_INT(ctn_ref_forward(m, &s, toks[p], p, logits), 0);
            naive_logits(&w, q3, true, toks, p + 1, want);
            naive_logits(&w, q3, false, toks, p + 1, other);
            const double e = norm_err(logits, want, V), e_other = norm_err(logits, other, V);
            if (!(e < 1e-5)) printf("  %s pos %d: error %g\n", arch, p, e);
            CHECK(e < 1e-5);
            if (p == 0) CHECK(e_other < 1e-5); /* no rotation at position 0 */
            if (p > 0 && !(e_other > 1e-3))
                printf("  %s pos %d: llama pairing %g\n", arch, p, e_other);
            if (p > 0) CHECK(e_other > 1e-3);
        }
        ctn_ref_state_close(&s);
        ctn_model_free(m);
    }
    ctn_gguf_free(g);
    free(image);
}

TEST(qwen2_matches_naive) {
    check_against_naive("qwen2");
}

TEST(qwen3_matches_naive) {
    check_against_naive("qwen3");
}

TEST(qwen_tied_output) {
    static weights w;
    make_weights(&w, D2);
    void *image = NULL;
    ctn_gguf *g = build(&(spec){.arch = "qwen2", .tied = true}, &w, &image);
    char err[512] = "";
    ctn_model *m = NULL;
    if (g != NULL) CHECK_EQ_INT(ctn_model_load(&m, g, err, sizeof err), 0);
    if (m != NULL) CHECK(m->output == m->tok_embd);
    ctn_model_free(m);
    ctn_gguf_free(g);
    free(image);
}

/* Loads the model of sp and checks the code and that the message contains `needle`. */
static void expect_error(const spec *sp, int code, const char *needle) {
    static weights w;
    make_weights(&w, strcmp(sp->arch, "qwen3") == 0 ? D3 : D2);
    void *image = NULL;
    ctn_gguf *g = build(sp, &w, &image);
    if (g != NULL) {
        char err[512] = "";
        ctn_model *m = (ctn_model *)1;
        CHECK_EQ_INT(ctn_model_load(&m, g, err, sizeof err), code);
        CHECK(m == NULL);
        CHECK_CONTAINS(err, needle);
    }
    ctn_gguf_free(g);
    free(image);
}

TEST(hostile_qwen_models) {
    expect_error(&(spec){.arch = "qwen2", .skip = "blk.0.attn_k.bias"}, CTN_EFORMAT,
                 "tensor blk.0.attn_k.bias is missing");
    expect_error(&(spec){.arch = "qwen3", .skip = "blk.0.attn_q_norm.weight"}, CTN_EFORMAT,
                 "tensor blk.0.attn_q_norm.weight is missing");
    /* A key_length that the tensors do not have: the first tensor it shapes says so. */
    expect_error(&(spec){.arch = "qwen3", .key_length = 4}, CTN_EFORMAT,
                 "tensor blk.0.attn_q.weight has shape [8, 12], expected [8, 8]");
    expect_error(&(spec){.arch = "qwen3", .value_length = 4}, CTN_ENOTSUP,
                 "qwen3.attention.value_length 4 differs from qwen3.attention.key_length 6");
    /* qwen2's heads are n_embd / n_head wide, whatever key_length says. */
    expect_error(&(spec){.arch = "qwen2", .key_length = 6}, CTN_ENOTSUP,
                 "qwen2.attention.key_length/value_length 6/6 differ");
    /* Tensors of the other architecture are leftovers. */
    expect_error(&(spec){.arch = "qwen3", .extra = "blk.0.attn_q.bias"}, CTN_ENOTSUP,
                 "tensor blk.0.attn_q.bias is not part of the qwen3 architecture");
    expect_error(&(spec){.arch = "qwen2", .extra = "rope_freqs.weight"}, CTN_ENOTSUP,
                 "tensor rope_freqs.weight is not part of the qwen2 architecture");
    expect_error(&(spec){.arch = "qwen2", .extra = "blk.0.attn_k_norm.weight"}, CTN_ENOTSUP,
                 "tensor blk.0.attn_k_norm.weight is not part of the qwen2");
}

/* The keys are read under the architecture's own prefix, and errors name them so. */
TEST(qwen_keys_use_the_arch_prefix) {
    static weights w;
    make_weights(&w, D2);
    void *image = NULL;
    ctn_gguf *g = build(&(spec){.arch = "qwen2"}, &w, &image);
    if (g == NULL) {
        free(image);
        return;
    }
    /* Copy every key but qwen2.block_count, add llama.block_count: still missing. */
    ctn_gguf_writer *wr = ctn_gguf_writer_new();
    for (int64_t i = 0; i < ctn_gguf_n_kv(g); i++) {
        const ctn_gguf_str k = ctn_gguf_key(g, i);
        char key[128];
        snprintf(key, sizeof key, "%.*s", (int)k.len, k.ptr);
        if (strcmp(key, "qwen2.block_count") != 0)
            ctn_gguf_writer_set_value(wr, key, ctn_gguf_value_at(g, i));
    }
    ctn_gguf_writer_set_u32(wr, "llama.block_count", 1);
    void *img2 = NULL;
    size_t size = 0;
    CHECK_EQ_INT(ctn_gguf_writer_write_memory(wr, &img2, &size), 0);
    ctn_gguf_writer_free(wr);
    ctn_gguf *g2 = NULL;
    char err[512] = "";
    if (img2 != NULL) CHECK_EQ_INT(ctn_gguf_open_memory(&g2, img2, size, "k", err, sizeof err), 0);
    ctn_model *m = NULL;
    if (g2 != NULL) {
        CHECK_EQ_INT(ctn_model_load(&m, g2, err, sizeof err), CTN_EFORMAT);
        CHECK_CONTAINS(err, "required key qwen2.block_count is missing");
    }
    ctn_model_free(m);
    ctn_gguf_free(g2);
    free(img2);
    ctn_gguf_free(g);
    free(image);
}

int main(void) {
    RUN(qwen2_matches_naive);
    RUN(qwen3_matches_naive);
    RUN(qwen_tied_output);
    RUN(hostile_qwen_models);
    RUN(qwen_keys_use_the_arch_prefix);
    return test_summary();
}
