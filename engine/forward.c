/*
 * The forward pass over the paged KV cache (see forward.h). It records the graph of a batch
 * as a list of backend ops (kernels/backend.h: embedding rows, norms, RoPE, the cache
 * stores, attention over the block tables, matrix products with the adapters' updates and an
 * epilogue, pooling) and hands it to its backend; it calls no kernel itself.
 */
#include "forward.h"

#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "alloc.h"
#include "backend.h"
#include "error.h"
#include "quant.h"

/* The F32 copies of the small per-layer vectors (norm weights, biases). */
typedef struct {
    float *attn_norm, *ffn_norm; /* (n_embd) */
    float *bq, *bk, *bv;         /* (q_dim), (kv_dim), (kv_dim) or NULL */
    float *q_norm, *k_norm;      /* (head_dim) or NULL */
} layer_vecs;

typedef struct {
    ctn_be_weight *w;
    int64_t n_out;
    int lora_slot; /* layer * CTN_LORA_N + target in an adapter's mats, or -1 (the logits) */
} matrix;

typedef struct {
    matrix wq, wk, wv, wo, gate, up, down;
} layer_mats;

/* The buffers ops name (the KV cache is CTN_BE_BUF_KV). */
enum { B_X = CTN_BE_BUF_KV + 1, B_XN, B_Q, B_K, B_V, B_ATT, B_PROJ, B_GATE, B_UP, B_CS, B_OUTROWS,
       B_LOGITS, B_EMBD };

struct ctn_fwd {
    const ctn_model *m;
    ctn_fwd_params p;
    ctn_backend *be;
    ctn_kv_pool *kv;

    layer_vecs *lv;  /* (n_layer) */
    layer_mats *lm;  /* (n_layer) */
    matrix output;   /* the logits matrix */
    ctn_be_weight *embd; /* the token embedding table (rows read by id) */
    float *out_norm; /* (n_embd) */
    float *inv_freq; /* (n_rot / 2) RoPE frequencies, rope_freqs applied */
    float *rope_div; /* (n_rot / 2) rope_freqs divisors, or NULL */
    float *small;    /* the storage of the vectors above */

    /* Activations of up to n_batch tokens (rows of the given widths), the backend's memory. */
    float *x;        /* (n_batch, n_embd) residual stream */
    float *xn;       /* (n_batch, n_embd) normalised */
    float *q;        /* (n_batch, q_dim) */
    float *kx, *vx;  /* (n_batch, kv_dim) this step's keys and values */
    float *att;      /* (n_batch, q_dim) attention output */
    float *proj;     /* (n_batch, n_embd) */
    float *gate;     /* (n_batch, n_ff) */
    float *up;       /* (n_batch, n_ff) */
    float *rope_cs;  /* (n_batch, n_rot / 2, 2) cos and sin per token */
    float *out_rows; /* (n_batch, n_embd) normalised rows that want logits */

    /* The batch of the current run. */
    ctn_be_tok *toks;          /* (n_batch) */
    ctn_be_pool_seg *pool_seg; /* (n_batch) each segment's pooling */
    int32_t lora_rank;         /* the largest adapter rank the backend is sized for */
    float *lora_sc;            /* (n_batch) each token's adapter scale (its segment's) */
    int32_t *lora_tok;         /* (n_batch) the tokens with an adapter, grouped by adapter */
    ctn_be_lora_group *lora_grp; /* (n_batch) the groups of this batch, in order of first token */
    int64_t *out_tok;          /* (n_batch) token index of each logits row */
    ctn_be_op *ops;            /* (max_ops) */
    int max_ops;

    char errmsg[256];
};

/* ---- set-up -------------------------------------------------------------------------- */

static size_t tensor_row_bytes(const ctn_gguf_tensor *t) {
    return (size_t)(t->ne[0] / ctn_type_block_size(t->type) * ctn_type_block_bytes(t->type));
}

/* The backend's handle of a weight; fd >= 0 lets it read rows with pread. */
static int bind_weight(ctn_fwd *f, ctn_be_weight **w, const ctn_gguf_tensor *t, int fd,
                       uint64_t file_off, char *err, size_t errlen) {
    char name[128];
    snprintf(name, sizeof name, "%.*s", (int)t->name.len, t->name.ptr);
    const ctn_be_weight_desc d = {.name = name,
                                  .type = t->type,
                                  .n_in = t->ne[0],
                                  .n_out = t->ne[1],
                                  .data = t->data,
                                  .row_bytes = tensor_row_bytes(t),
                                  .fd = fd,
                                  .file_off = file_off,
                                  .f32_act = f->p.f32_act};
    return f->be->vt->weight_new(f->be, &d, w, err, errlen);
}

static int bind_matrix(ctn_fwd *f, matrix *mx, const ctn_gguf_tensor *t, int lora_slot, char *err,
                       size_t errlen) {
    mx->n_out = t->ne[1];
    mx->lora_slot = lora_slot;
    return bind_weight(f, &mx->w, t, -1, 0, err, errlen);
}

/* Copies a small tensor (a vector) to F32 at *cursor, advancing it. */
static float *take_vec(const ctn_gguf_tensor *t, float **cursor) {
    if (t == NULL) return NULL;
    float *v = *cursor;
    ctn_dequantize_row(t->type, t->data, v, t->ne[0]);
    *cursor += t->ne[0];
    return v;
}

static size_t vec_floats(const ctn_gguf_tensor *t) {
    return t == NULL ? 0 : (size_t)t->ne[0];
}

/* Ops of one batch: the embeddings (3), 14 per layer at most, pooling and the logits (3). */
static int max_ops(const ctn_model *m) {
    return (int)(6 + 14 * m->hp.n_layer);
}

int ctn_fwd_new(ctn_fwd **out, const ctn_model *m, const ctn_fwd_params *pin, char *err,
                size_t errlen) {
    *out = NULL;
    const ctn_model_hparams *hp = &m->hp;
    ctn_fwd_params p = pin != NULL ? *pin : (ctn_fwd_params){0};
    if (p.n_ctx < 0 || p.n_ctx > ((int64_t)1 << 24)) {
        ctn__errf(err, errlen, "context length %" PRId64 " is outside 1..16777216", p.n_ctx);
        return CTN_EINVAL;
    }
    if (p.n_ctx == 0) p.n_ctx = hp->n_ctx_train < 4096 ? hp->n_ctx_train : 4096;
    if (p.n_batch < 0 || p.n_batch > 65536) {
        ctn__errf(err, errlen, "batch size %" PRId64 " is outside 1..65536", p.n_batch);
        return CTN_EINVAL;
    }
    if (p.n_batch == 0) p.n_batch = 512;
    const int kv_type = p.kv_f32 ? CTN_TYPE_F32 : CTN_TYPE_F16;
    if (p.kv_block == 0) p.kv_block = CTN_KV_BLOCK_DEFAULT;
    if (p.kv_block < 1 || p.kv_block > 4096) {
        ctn__errf(err, errlen, "KV block size %" PRId32 " is outside 1..4096", p.kv_block);
        return CTN_EINVAL;
    }
    const int64_t D = hp->head_dim, q_dim = hp->n_head * D, kv_dim = hp->n_head_kv * D;
    if (p.kv_memory == 0) {
        const int64_t blocks = (p.n_ctx + p.kv_block - 1) / p.kv_block;
        p.kv_memory =
            (size_t)blocks * ctn_kv_bytes_per_block(hp->n_layer, kv_dim, kv_type, p.kv_block);
    }

    ctn_fwd *f = ctn__calloc(1, sizeof *f);
    if (f == NULL) goto nomem;
    f->m = m;
    int rc;
    if ((rc = ctn_backend_cpu_new(&f->be, p.n_threads, err, errlen)) < 0) {
        ctn_fwd_free(f);
        return rc;
    }
    p.n_threads = f->be->vt->threads(f->be);
    f->p = p;

    /* Matrices: a kernel for every weight type, or a named error. */
    f->lm = ctn__calloc((size_t)hp->n_layer, sizeof *f->lm);
    f->lv = ctn__calloc((size_t)hp->n_layer, sizeof *f->lv);
    if (f->lm == NULL || f->lv == NULL) goto nomem;
    size_t n_small = (size_t)hp->n_embd + (size_t)hp->n_rot;
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const ctn_model_layer *ly = &m->layers[l];
        layer_mats *lm = &f->lm[l];
        const int base = (int)l * CTN_LORA_N;
        if ((rc = bind_matrix(f, &lm->wq, ly->wq, base + CTN_LORA_Q, err, errlen)) < 0 ||
            (rc = bind_matrix(f, &lm->wk, ly->wk, base + CTN_LORA_K, err, errlen)) < 0 ||
            (rc = bind_matrix(f, &lm->wv, ly->wv, base + CTN_LORA_V, err, errlen)) < 0 ||
            (rc = bind_matrix(f, &lm->wo, ly->wo, base + CTN_LORA_O, err, errlen)) < 0 ||
            (rc = bind_matrix(f, &lm->gate, ly->ffn_gate, base + CTN_LORA_GATE, err, errlen)) < 0 ||
            (rc = bind_matrix(f, &lm->up, ly->ffn_up, base + CTN_LORA_UP, err, errlen)) < 0 ||
            (rc = bind_matrix(f, &lm->down, ly->ffn_down, base + CTN_LORA_DOWN, err, errlen)) < 0) {
            ctn_fwd_free(f);
            return rc;
        }
        n_small += vec_floats(ly->attn_norm) + vec_floats(ly->ffn_norm) + vec_floats(ly->bq) +
                   vec_floats(ly->bk) + vec_floats(ly->bv) + vec_floats(ly->q_norm) +
                   vec_floats(ly->k_norm);
    }
    if ((rc = bind_matrix(f, &f->output, m->output, -1, err, errlen)) < 0) {
        ctn_fwd_free(f);
        return rc;
    }
    /*
     * An untied embedding table is read a few rows at a time, with pread when the model
     * came from a file (the backend's choice how; the mapping otherwise).
     */
    const bool pread_rows = m->output != m->tok_embd && ctn_gguf_fd(m->gguf) >= 0;
    if ((rc = bind_weight(f, &f->embd, m->tok_embd, pread_rows ? ctn_gguf_fd(m->gguf) : -1,
                          pread_rows ? ctn_gguf_data_offset(m->gguf) + m->tok_embd->offset : 0,
                          err, errlen)) < 0) {
        ctn_fwd_free(f);
        return rc;
    }

    /* The small vectors, in F32. */
    f->small = ctn__malloc(n_small * sizeof(float));
    if (f->small == NULL) goto nomem;
    float *cur = f->small;
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const ctn_model_layer *ly = &m->layers[l];
        layer_vecs *lv = &f->lv[l];
        lv->attn_norm = take_vec(ly->attn_norm, &cur);
        lv->ffn_norm = take_vec(ly->ffn_norm, &cur);
        lv->bq = take_vec(ly->bq, &cur);
        lv->bk = take_vec(ly->bk, &cur);
        lv->bv = take_vec(ly->bv, &cur);
        lv->q_norm = take_vec(ly->q_norm, &cur);
        lv->k_norm = take_vec(ly->k_norm, &cur);
    }
    f->out_norm = take_vec(m->output_norm, &cur);
    const int64_t half = hp->n_rot / 2;
    f->inv_freq = cur;
    cur += half;
    if (m->rope_freqs != NULL) {
        f->rope_div = cur;
        ctn_dequantize_row(m->rope_freqs->type, m->rope_freqs->data, f->rope_div, half);
    }
    /* The same float expression as the reference (ref_forward.c) so RoPE agrees bit for bit. */
    for (int64_t k = 0; k < half; k++)
        f->inv_freq[k] = powf(hp->rope_base, -(float)(2 * k) / (float)hp->n_rot);

    /* Activations, in the backend's memory. */
    const size_t B = (size_t)p.n_batch;
    struct {
        float **p;
        size_t floats;
    } acts[] = {{&f->x, (size_t)hp->n_embd},     {&f->xn, (size_t)hp->n_embd},
                {&f->q, (size_t)q_dim},          {&f->kx, (size_t)kv_dim},
                {&f->vx, (size_t)kv_dim},        {&f->att, (size_t)q_dim},
                {&f->proj, (size_t)hp->n_embd},  {&f->gate, (size_t)hp->n_ff},
                {&f->up, (size_t)hp->n_ff},      {&f->rope_cs, (size_t)(half > 0 ? half : 1) * 2},
                {&f->out_rows, (size_t)hp->n_embd}};
    for (size_t i = 0; i < sizeof acts / sizeof *acts; i++)
        if (f->be->vt->buf_new(f->be, B * acts[i].floats * sizeof(float), (void **)acts[i].p) < 0)
            goto nomem;
    f->max_ops = max_ops(m);
    f->toks = ctn__malloc(B * sizeof *f->toks);
    f->pool_seg = ctn__malloc(B * sizeof *f->pool_seg);
    f->out_tok = ctn__malloc(B * sizeof *f->out_tok);
    f->lora_sc = ctn__malloc(B * sizeof *f->lora_sc);
    f->lora_tok = ctn__malloc(B * sizeof *f->lora_tok);
    f->lora_grp = ctn__malloc(B * sizeof *f->lora_grp);
    f->ops = ctn__malloc((size_t)f->max_ops * sizeof *f->ops);
    if (f->toks == NULL || f->pool_seg == NULL || f->out_tok == NULL || f->lora_sc == NULL ||
        f->lora_tok == NULL || f->lora_grp == NULL || f->ops == NULL)
        goto nomem;

    const ctn_be_sizes sz = {.n_batch = p.n_batch,
                             .n_ctx = p.n_ctx,
                             .n_embd = hp->n_embd,
                             .n_head = hp->n_head,
                             .n_head_kv = hp->n_head_kv,
                             .head_dim = D,
                             .max_ops = f->max_ops,
                             .kv_type = kv_type,
                             .f32_act = p.f32_act};
    if ((rc = f->be->vt->reserve(f->be, &sz, err, errlen)) < 0 ||
        (rc = ctn_kv_pool_new(&f->kv, hp->n_layer, kv_dim, kv_type, p.kv_block, p.kv_memory, err,
                              errlen)) < 0) {
        ctn_fwd_free(f);
        return rc;
    }
    *out = f;
    return 0;
nomem:
    ctn_fwd_free(f);
    ctn__errf(err, errlen, "out of memory for the forward pass (batch of %" PRId64 " tokens)",
              p.n_batch);
    return CTN_ENOMEM;
}

void ctn_fwd_free(ctn_fwd *f) {
    if (f == NULL) return;
    ctn_kv_pool_free(f->kv);
    ctn_backend *be = f->be;
    if (be != NULL) {
        if (f->lm != NULL)
            for (int64_t l = 0; l < f->m->hp.n_layer; l++) {
                layer_mats *lm = &f->lm[l];
                matrix *all[] = {&lm->wq, &lm->wk, &lm->wv, &lm->wo, &lm->gate, &lm->up, &lm->down};
                for (size_t i = 0; i < sizeof all / sizeof *all; i++)
                    be->vt->weight_free(be, all[i]->w);
            }
        be->vt->weight_free(be, f->output.w);
        be->vt->weight_free(be, f->embd);
        float *acts[] = {f->x,    f->xn,   f->q,  f->kx,      f->vx,      f->att,
                         f->proj, f->gate, f->up, f->rope_cs, f->out_rows};
        for (size_t i = 0; i < sizeof acts / sizeof *acts; i++)
            if (acts[i] != NULL) be->vt->buf_free(be, acts[i]);
        ctn_backend_free(be);
    }
    free(f->lv), free(f->lm), free(f->small);
    free(f->toks), free(f->pool_seg), free(f->out_tok);
    free(f->lora_sc), free(f->lora_tok), free(f->lora_grp), free(f->ops);
    free(f);
}

const char *ctn_fwd_errmsg(const ctn_fwd *f) {
    return f->errmsg;
}
const ctn_model *ctn_fwd_model(const ctn_fwd *f) {
    return f->m;
}
ctn_kv_pool *ctn_fwd_kv(ctn_fwd *f) {
    return f->kv;
}
int64_t ctn_fwd_n_ctx(const ctn_fwd *f) {
    return f->p.n_ctx;
}
int64_t ctn_fwd_n_batch(const ctn_fwd *f) {
    return f->p.n_batch;
}
int ctn_fwd_threads(const ctn_fwd *f) {
    return f->p.n_threads;
}

int ctn_fwd_seq_init(ctn_fwd *f, ctn_kv_seq *s) {
    return ctn_kv_seq_init(s, f->kv, f->p.n_ctx);
}
void ctn_fwd_seq_close(ctn_fwd *f, ctn_kv_seq *s) {
    ctn_kv_seq_close(f->kv, s);
}

/* ---- the graph of a batch ------------------------------------------------------------- */

#define ROWS(ptr, width, id) ((ctn_be_rows){.p = (ptr), .ld = (width), .buf = (id)})

static ctn_be_op op_norm(ctn_be_rows src, ctn_be_rows dst, int64_t n_rows, int64_t n_grp,
                         int64_t width, const float *w, float eps) {
    return (ctn_be_op){.kind = CTN_OP_RMS_NORM,
                       .rms = {.src = src, .dst = dst, .n_rows = n_rows, .n_grp = n_grp,
                               .width = width, .w = w, .eps = eps}};
}

static ctn_be_op op_matmul(const matrix *mx, ctn_be_rows src, ctn_be_rows dst, int64_t n_rows,
                           ctn_be_epilogue epi, const float *bias, ctn_be_rows aux) {
    return (ctn_be_op){.kind = CTN_OP_MATMUL,
                       .mm = {.w = mx->w, .src = src, .dst = dst, .n_rows = n_rows,
                              .lora_slot = mx->lora_slot, .lora_rows = mx->lora_slot >= 0,
                              .epi = epi, .bias = bias, .aux = aux}};
}

static ctn_be_op op_rope(ctn_be_rows x, ctn_be_rows cs, int64_t n_heads, const ctn_model *m) {
    return (ctn_be_op){.kind = CTN_OP_ROPE,
                       .rope = {.x = x, .cs = cs, .n_heads = n_heads, .head_dim = m->hp.head_dim,
                                .half = m->hp.n_rot / 2, .neox = m->arch->rope == CTN_ROPE_NEOX}};
}

/*
 * The ops of a batch of T tokens: embeddings, then per layer Q/K/V (biases as epilogues),
 * Q/K norms, RoPE, the cache stores, attention, the output projection added into the
 * residual, the feed-forward (SiLU(gate) * up as up's epilogue, down added into the
 * residual) and the next layer's norm; then pooled embeddings and the logits rows.
 */
static int record(ctn_fwd *f, int64_t T, int64_t n_out, bool any_embd, int n_segs, float *logits) {
    const ctn_model *m = f->m;
    const ctn_model_hparams *hp = &m->hp;
    const int64_t E = hp->n_embd, D = hp->head_dim, F = hp->n_ff;
    const int64_t q_dim = hp->n_head * D, kv_dim = hp->n_head_kv * D, half = hp->n_rot / 2;
    const float eps = hp->norm_eps;
    const ctn_be_rows x = ROWS(f->x, E, B_X), xn = ROWS(f->xn, E, B_XN);
    const ctn_be_rows q = ROWS(f->q, q_dim, B_Q), k = ROWS(f->kx, kv_dim, B_K);
    const ctn_be_rows v = ROWS(f->vx, kv_dim, B_V), att = ROWS(f->att, q_dim, B_ATT);
    const ctn_be_rows proj = ROWS(f->proj, E, B_PROJ), gate = ROWS(f->gate, F, B_GATE);
    const ctn_be_rows up = ROWS(f->up, F, B_UP), cs = ROWS(f->rope_cs, 2 * half, B_CS);
    const ctn_be_rows none = {0};
    ctn_be_op *ops = f->ops;
    int n = 0;

    ops[n++] = (ctn_be_op){.kind = CTN_OP_GET_ROWS, .get_rows = {.w = f->embd, .dst = x}};
    ops[n++] = (ctn_be_op){
        .kind = CTN_OP_ROPE_CACHE,
        .rope_cache = {.inv_freq = f->inv_freq, .div = f->rope_div, .half = half, .dst = cs}};
    ops[n++] = op_norm(x, xn, T, 1, E, f->lv[0].attn_norm, eps);
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const layer_mats *lm = &f->lm[l];
        const layer_vecs *lv = &f->lv[l];
        ops[n++] = op_matmul(&lm->wq, xn, q, T, lv->bq ? CTN_EPI_BIAS : CTN_EPI_NONE, lv->bq, none);
        ops[n++] = op_matmul(&lm->wk, xn, k, T, lv->bk ? CTN_EPI_BIAS : CTN_EPI_NONE, lv->bk, none);
        ops[n++] = op_matmul(&lm->wv, xn, v, T, lv->bv ? CTN_EPI_BIAS : CTN_EPI_NONE, lv->bv, none);
        if (lv->q_norm != NULL) {
            ops[n++] = op_norm(q, q, T, hp->n_head, D, lv->q_norm, eps);
            ops[n++] = op_norm(k, k, T, hp->n_head_kv, D, lv->k_norm, eps);
        }
        ops[n++] = op_rope(q, cs, hp->n_head, m);
        ops[n++] = op_rope(k, cs, hp->n_head_kv, m);
        ops[n++] = (ctn_be_op){.kind = CTN_OP_KV_STORE, .kv_store = {.layer = l, .k = k, .v = v}};
        ops[n++] = (ctn_be_op){.kind = CTN_OP_ATTENTION,
                               .attn = {.layer = l, .q = q, .out = att, .n_head = hp->n_head,
                                        .n_head_kv = hp->n_head_kv, .head_dim = D}};
        ops[n++] = op_matmul(&lm->wo, att, proj, T, CTN_EPI_ADD, NULL, x);
        ops[n++] = op_norm(x, xn, T, 1, E, lv->ffn_norm, eps);
        ops[n++] = op_matmul(&lm->gate, xn, gate, T, CTN_EPI_NONE, NULL, none);
        ops[n++] = op_matmul(&lm->up, xn, up, T, CTN_EPI_SILU_MUL, NULL, gate);
        ops[n++] = op_matmul(&lm->down, gate, proj, T, CTN_EPI_ADD, NULL, x);
        if (l + 1 < hp->n_layer) ops[n++] = op_norm(x, xn, T, 1, E, f->lv[l + 1].attn_norm, eps);
    }
    if (any_embd)
        ops[n++] = (ctn_be_op){.kind = CTN_OP_POOL_ROWS,
                               .pool = {.src = x, .w = f->out_norm, .width = E, .eps = eps,
                                        .segs = f->pool_seg, .n_segs = n_segs, .out_buf = B_EMBD}};
    if (n_out > 0) {
        const ctn_be_rows rows = ROWS(f->out_rows, E, B_OUTROWS);
        ops[n] = op_norm(x, rows, n_out, 1, E, f->out_norm, eps);
        ops[n++].rms.rows = f->out_tok;
        ops[n++] = op_matmul(&f->output, rows, ROWS(logits, hp->n_vocab, B_LOGITS), n_out,
                             CTN_EPI_NONE, NULL, none);
    }
    CTN_ASSERT(n <= f->max_ops);
    return n;
}

/* ---- running a batch ----------------------------------------------------------------- */

/* Logits rows a segment asks for: its last n_logits tokens', else its last token's. At most
 * n_tokens each, so a batch's rows fit out_tok and out_rows (n_batch). */
static int64_t seg_rows(const ctn_fwd_seg *s) {
    return s->n_logits > 0 ? s->n_logits : s->logits ? 1 : 0;
}

int ctn_fwd_run(ctn_fwd *f, const ctn_fwd_seg *segs, int n_segs, float *logits) {
    const ctn_model_hparams *hp = &f->m->hp;
    f->errmsg[0] = '\0';
    if (n_segs < 1 || segs == NULL) {
        ctn__errf(f->errmsg, sizeof f->errmsg, "the batch has no segments");
        return CTN_EINVAL;
    }
    int64_t n_tok = 0, n_out = 0;
    for (int i = 0; i < n_segs; i++) {
        const ctn_fwd_seg *s = &segs[i];
        if (s->seq == NULL || s->seq->table == NULL || s->n_tokens < 1 || s->tokens == NULL) {
            ctn__errf(f->errmsg, sizeof f->errmsg,
                      "segment %d has no tokens or no sequence (an empty prompt?)", i);
            return CTN_EINVAL;
        }
        for (int j = 0; j < i; j++)
            if (segs[j].seq == s->seq) {
                ctn__errf(f->errmsg, sizeof f->errmsg,
                          "segments %d and %d append to the same sequence", j, i);
                return CTN_EINVAL;
            }
        for (int64_t j = 0; j < s->n_tokens; j++)
            if (s->tokens[j] < 0 || s->tokens[j] >= hp->n_vocab) {
                ctn__errf(f->errmsg, sizeof f->errmsg,
                          "segment %d, token %" PRId64 ": id %" PRId32
                          " is outside the vocabulary (0..%" PRId64 ")",
                          i, j, s->tokens[j], hp->n_vocab - 1);
                return CTN_EINVAL;
            }
        if (s->seq->n_pos + s->n_tokens > s->seq->max_pos) {
            ctn__errf(f->errmsg, sizeof f->errmsg,
                      "segment %d: %" PRId64 " + %" PRId64
                      " tokens exceed the context length of %" PRId64,
                      i, s->seq->n_pos, s->n_tokens, s->seq->max_pos);
            return CTN_ERANGE;
        }
        if (s->embd_mode < CTN_EMBD_NONE || s->embd_mode > CTN_EMBD_LAST ||
            (s->embd_mode != CTN_EMBD_NONE && s->embd == NULL)) {
            ctn__errf(f->errmsg, sizeof f->errmsg,
                      "segment %d: embedding mode %d without a buffer or unknown", i, s->embd_mode);
            return CTN_EINVAL;
        }
        if (s->lora != NULL && (s->lora->n_layer != hp->n_layer || !isfinite(s->lora_scale))) {
            ctn__errf(f->errmsg, sizeof f->errmsg,
                      "segment %d: adapter %s is for %" PRId32 " layers, the model has %" PRId64
                      " (or its scale is not finite)",
                      i, s->lora->path ? s->lora->path : "(unnamed)", s->lora->n_layer,
                      hp->n_layer);
            return CTN_EINVAL;
        }
        if (s->n_logits < 0 || s->n_logits > s->n_tokens) {
            ctn__errf(f->errmsg, sizeof f->errmsg,
                      "segment %d: n_logits %" PRId64 " is outside 0..%" PRId64
                      " (its token count)",
                      i, s->n_logits, s->n_tokens);
            return CTN_EINVAL;
        }
        n_tok += s->n_tokens;
        n_out += seg_rows(s);
    }
    if (n_tok > f->p.n_batch) {
        ctn__errf(f->errmsg, sizeof f->errmsg,
                  "the batch has %" PRId64 " tokens, more than its size of %" PRId64, n_tok,
                  f->p.n_batch);
        return CTN_EINVAL;
    }
    if (n_out > 0 && logits == NULL) {
        ctn__errf(f->errmsg, sizeof f->errmsg, "logits are asked for but the buffer is NULL");
        return CTN_EINVAL;
    }

    /* The adapters' scratch, before any block is reserved (a failure changes nothing). */
    bool any_lora = false;
    int32_t rank = 0;
    for (int i = 0; i < n_segs; i++) {
        if (segs[i].lora != NULL && segs[i].lora_scale != 0) {
            any_lora = true;
            if (segs[i].lora->max_rank > rank) rank = segs[i].lora->max_rank;
        }
    }
    if (any_lora && rank > f->lora_rank) {
        /* Once per larger rank, not per step. */
        const ctn_model_hparams *h = &f->m->hp;
        const ctn_be_sizes sz = {.n_batch = f->p.n_batch,
                                 .n_ctx = f->p.n_ctx,
                                 .n_embd = h->n_embd,
                                 .n_head = h->n_head,
                                 .n_head_kv = h->n_head_kv,
                                 .head_dim = h->head_dim,
                                 .max_ops = f->max_ops,
                                 .kv_type = f->kv->type,
                                 .lora_rank = rank,
                                 .f32_act = f->p.f32_act};
        char err[160];
        if (f->be->vt->reserve(f->be, &sz, err, sizeof err) < 0) {
            ctn__errf(f->errmsg, sizeof f->errmsg, "out of memory for the adapters' scratch (%s)",
                      err);
            return CTN_ENOMEM;
        }
        f->lora_rank = rank;
    }
    /* Blocks for every segment, or none at all. */
    int32_t need = 0;
    for (int i = 0; i < n_segs; i++)
        need += ctn_kv_seq_blocks_needed(f->kv, segs[i].seq, segs[i].seq->n_pos + segs[i].n_tokens);
    if (need > f->kv->n_free) {
        ctn__errf(f->errmsg, sizeof f->errmsg,
                  "the KV cache is full: the batch needs %" PRId32 " more blocks, %" PRId32
                  " of %" PRId32 " are free",
                  need, f->kv->n_free, f->kv->n_blocks);
        return CTN_ENOMEM;
    }
    for (int i = 0; i < n_segs; i++) {
        char err[160];
        int rc = ctn_kv_seq_reserve(f->kv, segs[i].seq, segs[i].seq->n_pos + segs[i].n_tokens, err,
                                    sizeof err);
        CTN_ASSERT(rc == 0); /* the count above left room for every segment */
        if (rc < 0) { /* a release build still fails cleanly */
            ctn__errf(f->errmsg, sizeof f->errmsg, "segment %d: %s", i, err);
            return rc;
        }
    }

    int64_t t = 0;
    n_out = 0;
    bool any_embd = false;
    for (int i = 0; i < n_segs; i++) {
        const ctn_fwd_seg *s = &segs[i];
        f->pool_seg[i] = (ctn_be_pool_seg){.out = s->embd, .mode = (int)s->embd_mode, .t0 = t,
                                            .n = s->n_tokens};
        any_embd |= s->embd_mode != CTN_EMBD_NONE;
        for (int64_t j = 0; j < s->n_tokens; j++, t++)
            f->toks[t] = (ctn_be_tok){.id = s->tokens[j], .seg = i, .pos = s->seq->n_pos + j,
                                      .table = s->seq->table};
        for (int64_t j = seg_rows(s); j > 0; j--)
            f->out_tok[n_out++] = t - j;
    }
    /* The adapter groups: each segment's tokens join the group of its adapter. */
    int32_t n_grp = 0;
    if (any_lora) {
        int32_t n_in = 0;
        for (int i = 0; i < n_segs; i++) {
            const ctn_fwd_seg *s = &segs[i];
            if (s->lora == NULL || s->lora_scale == 0 || s->n_tokens == 0) continue;
            int32_t g = 0;
            while (g < n_grp && f->lora_grp[g].mats != s->lora->mats)
                g++;
            if (g == n_grp) f->lora_grp[n_grp++] = (ctn_be_lora_group){s->lora->mats, 0, 0};
            f->lora_grp[g].n += (int32_t)s->n_tokens;
        }
        for (int32_t g = 0; g < n_grp; g++) {
            f->lora_grp[g].start = n_in;
            n_in += f->lora_grp[g].n;
            f->lora_grp[g].n = 0;
        }
        for (int64_t tk = 0; tk < n_tok; tk++) {
            const ctn_fwd_seg *s = &segs[f->toks[tk].seg];
            if (s->lora == NULL || s->lora_scale == 0) continue;
            int32_t g = 0;
            while (f->lora_grp[g].mats != s->lora->mats)
                g++;
            f->lora_tok[f->lora_grp[g].start + f->lora_grp[g].n++] = (int32_t)tk;
            f->lora_sc[tk] = s->lora_scale;
        }
    }
    const ctn_kv_pool *kvp = f->kv;
    const ctn_be_kv kv = {.data = kvp->data,
                          .type = kvp->type,
                          .elem = kvp->elem,
                          .block_size = kvp->block_size,
                          .n_blocks = kvp->n_blocks,
                          .block_bytes = kvp->block_bytes,
                          .kv_dim = kvp->kv_dim};
    const ctn_be_graph g = {.ops = f->ops,
                            .n_ops = record(f, n_tok, n_out, any_embd, n_segs, logits),
                            .toks = f->toks,
                            .n_tok = n_tok,
                            .kv = &kv,
                            .lora = f->lora_grp,
                            .n_lora = n_grp,
                            .lora_tok = f->lora_tok,
                            .lora_sc = f->lora_sc};
    int rc = f->be->vt->compute(f->be, &g);
    if (rc == 0) f->be->vt->sync(f->be);
    CTN_ASSERT(rc == 0); /* the batch was checked against the reserved sizes above */
    if (rc < 0) {
        ctn__errf(f->errmsg, sizeof f->errmsg, "the %s backend refused the batch: %s",
                  f->be->vt->name, ctn_strerror(rc));
        return rc;
    }
    for (int i = 0; i < n_segs; i++)
        segs[i].seq->n_pos += segs[i].n_tokens;

    for (int64_t o = 0; o < n_out; o++) {
        const float *lg = logits + o * hp->n_vocab;
        for (int64_t v = 0; v < hp->n_vocab; v++)
            if (!isfinite(lg[v])) {
                ctn__errf(f->errmsg, sizeof f->errmsg,
                          "the forward pass produced %s in logit %" PRId64 " of output row %" PRId64
                          " (the weights or activations overflowed or hold NaN)",
                          isnan(lg[v]) ? "NaN" : "infinity", v, o);
                return CTN_ERANGE;
            }
    }
    return 0;
}
