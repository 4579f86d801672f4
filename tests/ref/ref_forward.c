/*
 * The scalar reference forward pass (see ref_forward.h). Written for clarity: one loop per
 * step of llm_build_llama (and the qwen2/qwen3 variants), no fusion, no SIMD, no threads.
 */
#include "ref_forward.h"

#include <inttypes.h>
#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "quant.h"

/* ---- state ------------------------------------------------------------------------------ */

static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

int ctn_ref_state_init(ctn_ref_state *s, const ctn_model *m, int64_t n_ctx) {
    memset(s, 0, sizeof *s);
    s->model = m;
    s->n_ctx = n_ctx;
    if (m == NULL || n_ctx <= 0 || n_ctx > ((int64_t)1 << 24)) {
        ctn__errf(s->errmsg, sizeof s->errmsg, "n_ctx %" PRId64 " is outside 1..2^24", n_ctx);
        return CTN_EINVAL;
    }
    const ctn_model_hparams *hp = &m->hp;
    /* n_layer * kv_dim < 2^48 (model.c's bounds); times n_ctx it may not fit a size_t. */
    const int64_t per_pos = hp->n_layer * hp->n_head_kv * hp->head_dim;
    if (n_ctx > (int64_t)(SIZE_MAX / sizeof(float)) / per_pos) {
        ctn__errf(s->errmsg, sizeof s->errmsg,
                  "a KV cache of %" PRId64 " positions does not fit in memory", n_ctx);
        return CTN_ENOMEM;
    }
    const size_t kv = (size_t)(per_pos * n_ctx);
    const size_t qd = (size_t)(hp->n_head * hp->head_dim);
    const int64_t widest = max64(max64(hp->n_embd, hp->n_ff), hp->n_head * hp->head_dim);
    s->k_cache = ctn__calloc(kv, sizeof(float));
    s->v_cache = ctn__calloc(kv, sizeof(float));
    s->x = ctn__malloc((size_t)hp->n_embd * sizeof(float));
    s->xn = ctn__malloc((size_t)hp->n_embd * sizeof(float));
    s->q = ctn__malloc(qd * sizeof(float));
    s->att_out = ctn__malloc(qd * sizeof(float));
    s->proj = ctn__malloc((size_t)hp->n_embd * sizeof(float));
    s->gate = ctn__malloc((size_t)hp->n_ff * sizeof(float));
    s->up = ctn__malloc((size_t)hp->n_ff * sizeof(float));
    s->scores = ctn__malloc((size_t)n_ctx * sizeof(float));
    s->row = ctn__malloc((size_t)widest * sizeof(float));
    if (s->k_cache == NULL || s->v_cache == NULL || s->x == NULL || s->xn == NULL || s->q == NULL ||
        s->att_out == NULL || s->proj == NULL || s->gate == NULL || s->up == NULL ||
        s->scores == NULL || s->row == NULL) {
        ctn_ref_state_close(s);
        ctn__errf(s->errmsg, sizeof s->errmsg,
                  "out of memory for a KV cache of %" PRId64 " positions", n_ctx);
        return CTN_ENOMEM;
    }
    return 0;
}

void ctn_ref_state_close(ctn_ref_state *s) {
    free(s->k_cache), free(s->v_cache), free(s->x), free(s->xn), free(s->q);
    free(s->att_out), free(s->proj), free(s->gate), free(s->up), free(s->scores);
    free(s->row);
    s->k_cache = s->v_cache = s->x = s->xn = s->q = NULL;
    s->att_out = s->proj = s->gate = s->up = s->scores = s->row = NULL;
}

const char *ctn_ref_state_errmsg(const ctn_ref_state *s) {
    return s->errmsg;
}

/* ---- building blocks -------------------------------------------------------------------- */

/* Bytes of one row of tensor t (a whole number of blocks: the GGUF reader checks). */
static size_t row_bytes(const ctn_gguf_tensor *t) {
    return (size_t)(t->ne[0] / ctn_type_block_size(t->type) * ctn_type_block_bytes(t->type));
}

/* Dequantizes row r of t into y (t->ne[0] floats). Type and shape were checked at load. */
static void get_row(const ctn_gguf_tensor *t, int64_t r, float *y) {
    const uint8_t *src = (const uint8_t *)t->data + (size_t)r * row_bytes(t);
    ctn_dequantize_row(t->type, src, y, t->ne[0]);
}

/* y = W x for W {n_in, n_out}: one dequantized row of W at a time, in `row` (n_in floats). */
static void matvec(const ctn_gguf_tensor *w, const float *x, float *y, float *row) {
    const int64_t n_in = w->ne[0], n_out = w->ne[1];
    for (int64_t r = 0; r < n_out; r++) {
        get_row(w, r, row);
        float sum = 0.0f;
        for (int64_t i = 0; i < n_in; i++)
            sum += row[i] * x[i];
        y[r] = sum;
    }
}

/*
 * y = x / sqrt(mean(x^2) + eps) * weight, as ggml_rms_norm followed by ggml_mul: the sum of
 * squares in double, the scale in float.
 */
static void rmsnorm(const float *x, const ctn_gguf_tensor *weight, float eps, float *y,
                    float *row) {
    const int64_t n = weight->ne[0];
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    get_row(weight, 0, row);
    for (int64_t i = 0; i < n; i++)
        y[i] = (x[i] * scale) * row[i];
}

/*
 * RoPE: within each head, pair k of the first n_rot dimensions rotates by
 * theta_k = pos * base^(-2k / n_rot) (divided by rope_freqs[k] when the model has that
 * tensor); dimensions from n_rot on are left alone. Which dimensions form pair k is the
 * architecture's: llama's "normal" mode (ggml mode 0, as in GPT-J) takes the adjacent
 * (2k, 2k + 1); NeoX mode (ggml mode 2: qwen2, qwen3) takes (k, k + n_rot / 2).
 */
static void rope(float *v, int64_t n_heads, const ctn_model *m, int64_t pos, float *freqs) {
    const ctn_model_hparams *hp = &m->hp;
    const bool neox = m->arch->rope == CTN_ROPE_NEOX;
    const int64_t half = hp->n_rot / 2;
    if (m->rope_freqs != NULL) get_row(m->rope_freqs, 0, freqs);
    for (int64_t k = 0; k < half; k++) {
        float theta = (float)pos * powf(hp->rope_base, -(float)(2 * k) / (float)hp->n_rot);
        if (m->rope_freqs != NULL) theta /= freqs[k];
        const float c = cosf(theta), sn = sinf(theta);
        const int64_t i0 = neox ? k : 2 * k, i1 = neox ? k + half : 2 * k + 1;
        for (int64_t h = 0; h < n_heads; h++) {
            float *p = v + h * hp->head_dim;
            const float x0 = p[i0], x1 = p[i1];
            p[i0] = x0 * c - x1 * sn;
            p[i1] = x0 * sn + x1 * c;
        }
    }
}

/* v += b, for the optional Q/K/V biases (n floats). */
static void add_bias(float *v, const ctn_gguf_tensor *b, float *row) {
    get_row(b, 0, row);
    for (int64_t i = 0; i < b->ne[0]; i++)
        v[i] += row[i];
}

/* RMSNorm of each of n_heads head vectors of v in place (qwen3's Q and K norms). */
static void head_norm(float *v, int64_t n_heads, const ctn_gguf_tensor *weight, float eps,
                      float *row) {
    const int64_t D = weight->ne[0];
    for (int64_t h = 0; h < n_heads; h++)
        rmsnorm(v + h * D, weight, eps, v + h * D, row);
}

static float silu(float x) {
    return x / (1.0f + expf(-x));
}

/*
 * Causal grouped-query attention for one token: query head h reads KV head
 * h / (n_head / n_head_kv) (ggml's broadcast), scores are q.k / sqrt(head_dim) over
 * positions 0..pos, softmax with the maximum subtracted and the denominator in double.
 */
static void attention(ctn_ref_state *s, const float *kc, const float *vc, int64_t pos) {
    const ctn_model_hparams *hp = &s->model->hp;
    const int64_t D = hp->head_dim, kv_dim = hp->n_head_kv * D;
    const int64_t group = hp->n_head / hp->n_head_kv;
    const float kq_scale = 1.0f / sqrtf((float)D);
    for (int64_t h = 0; h < hp->n_head; h++) {
        const float *q = s->q + h * D;
        const int64_t kvh = h / group;
        float mx = -INFINITY;
        for (int64_t t = 0; t <= pos; t++) {
            const float *k = kc + t * kv_dim + kvh * D;
            float dot = 0.0f;
            for (int64_t i = 0; i < D; i++)
                dot += q[i] * k[i];
            s->scores[t] = dot * kq_scale;
            if (s->scores[t] > mx) mx = s->scores[t];
        }
        double sum = 0.0;
        for (int64_t t = 0; t <= pos; t++) {
            s->scores[t] = expf(s->scores[t] - mx);
            sum += (double)s->scores[t];
        }
        const float inv = (float)(1.0 / sum);
        float *out = s->att_out + h * D;
        for (int64_t i = 0; i < D; i++)
            out[i] = 0.0f;
        for (int64_t t = 0; t <= pos; t++) {
            const float *v = vc + t * kv_dim + kvh * D;
            const float a = s->scores[t] * inv;
            for (int64_t i = 0; i < D; i++)
                out[i] += a * v[i];
        }
    }
}

/* ---- the forward pass ------------------------------------------------------------------- */

int ctn_ref_forward(const ctn_model *m, ctn_ref_state *s, int32_t token, int64_t pos,
                    float *logits) {
    if (m == NULL || m != s->model || s->x == NULL) {
        ctn__errf(s->errmsg, sizeof s->errmsg, "the state was not initialised for this model");
        return CTN_EINVAL;
    }
    const ctn_model_hparams *hp = &m->hp;
    if (pos < 0 || pos >= s->n_ctx) {
        ctn__errf(s->errmsg, sizeof s->errmsg,
                  "position %" PRId64 " is outside the KV cache (n_ctx %" PRId64 ")", pos,
                  s->n_ctx);
        return CTN_ERANGE;
    }
    if (token < 0 || token >= hp->n_vocab) {
        ctn__errf(s->errmsg, sizeof s->errmsg,
                  "token %" PRId32 " is outside the vocabulary (n_vocab %" PRId64 ")", token,
                  hp->n_vocab);
        return CTN_EINVAL;
    }
    const int64_t kv_dim = hp->n_head_kv * hp->head_dim;

    get_row(m->tok_embd, token, s->x);
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const ctn_model_layer *ly = &m->layers[l];
        float *kc = s->k_cache + l * s->n_ctx * kv_dim;
        float *vc = s->v_cache + l * s->n_ctx * kv_dim;

        /* Attention block: K and V of this position go straight into the cache. */
        rmsnorm(s->x, ly->attn_norm, hp->norm_eps, s->xn, s->row);
        matvec(ly->wq, s->xn, s->q, s->row);
        matvec(ly->wk, s->xn, kc + pos * kv_dim, s->row);
        matvec(ly->wv, s->xn, vc + pos * kv_dim, s->row);
        if (ly->bq != NULL) {
            add_bias(s->q, ly->bq, s->row);
            add_bias(kc + pos * kv_dim, ly->bk, s->row);
            add_bias(vc + pos * kv_dim, ly->bv, s->row);
        }
        if (ly->q_norm != NULL) {
            head_norm(s->q, hp->n_head, ly->q_norm, hp->norm_eps, s->row);
            head_norm(kc + pos * kv_dim, hp->n_head_kv, ly->k_norm, hp->norm_eps, s->row);
        }
        rope(s->q, hp->n_head, m, pos, s->row);
        rope(kc + pos * kv_dim, hp->n_head_kv, m, pos, s->row);
        attention(s, kc, vc, pos);
        matvec(ly->wo, s->att_out, s->proj, s->row);
        for (int64_t i = 0; i < hp->n_embd; i++)
            s->x[i] += s->proj[i];

        /* Feed-forward block: down(silu(gate(x)) * up(x)). */
        rmsnorm(s->x, ly->ffn_norm, hp->norm_eps, s->xn, s->row);
        matvec(ly->ffn_gate, s->xn, s->gate, s->row);
        matvec(ly->ffn_up, s->xn, s->up, s->row);
        for (int64_t i = 0; i < hp->n_ff; i++)
            s->gate[i] = silu(s->gate[i]) * s->up[i];
        matvec(ly->ffn_down, s->gate, s->proj, s->row);
        for (int64_t i = 0; i < hp->n_embd; i++)
            s->x[i] += s->proj[i];
    }
    rmsnorm(s->x, m->output_norm, hp->norm_eps, s->xn, s->row);
    matvec(m->output, s->xn, logits, s->row);
    return 0;
}
