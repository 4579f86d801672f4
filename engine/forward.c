/*
 * The forward pass over the paged KV cache (see forward.h). Every thread of the pool runs
 * fwd_work over the whole graph; each step splits its work by thread (matrix rows, tokens,
 * or attention heads) and a barrier separates steps whose inputs another thread wrote.
 */
#include "forward.h"

#include <inttypes.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "attn.h"
#include "error.h"
#include "kern.h"
#include "lora_kern.h"
#include "pool.h"
#include "quant.h"

/* Tokens per gemm call in a prefill: the activation rows stay in L2 while the weights pass. */
#define COL_BLOCK 64

/* The F32 copies of the small per-layer vectors (norm weights, biases). */
typedef struct {
    float *attn_norm, *ffn_norm; /* (n_embd) */
    float *bq, *bk, *bv;         /* (q_dim), (kv_dim), (kv_dim) or NULL */
    float *q_norm, *k_norm;      /* (head_dim) or NULL */
} layer_vecs;

typedef struct {
    const ctn_kern *k;
    const ctn_gguf_tensor *t;
    size_t row_bytes;
    int lora_slot; /* layer * CTN_LORA_N + target in an adapter's mats, or -1 (the logits) */
} matrix;

typedef struct {
    matrix wq, wk, wv, wo, gate, up, down;
} layer_mats;

/* One token of the current batch. */
typedef struct {
    int32_t id;
    int32_t seg;
    int64_t pos;
} tok_info;

/* The tokens of a batch that run with one adapter: lora_tok[start .. start + n). */
typedef struct {
    const ctn_lora *lora;
    int32_t start, n;
} lora_group;

struct ctn_fwd {
    const ctn_model *m;
    ctn_fwd_params p;
    ctn_pool *pool;
    ctn_kv_pool *kv;
    const ctn_kern *kv_kern; /* dot products of queries with keys (F16 or F32 rows) */
    const ctn_vec *vec;
    const ctn_attn *attn;

    layer_vecs *lv;  /* (n_layer) */
    layer_mats *lm;  /* (n_layer) */
    matrix output;   /* the logits matrix */
    float *out_norm; /* (n_embd) */
    float *inv_freq; /* (n_rot / 2) RoPE frequencies, rope_freqs applied */
    float *rope_div; /* (n_rot / 2) rope_freqs divisors, or NULL */
    float *small;    /* the storage of the vectors above */

    /* Activations of up to n_batch tokens (rows of the given widths). */
    float *x;          /* (n_batch, n_embd) residual stream */
    float *xn;         /* (n_batch, n_embd) normalised */
    float *q;          /* (n_batch, q_dim) */
    float *kx, *vx;    /* (n_batch, kv_dim) this step's keys and values */
    float *att;        /* (n_batch, q_dim) attention output */
    float *proj;       /* (n_batch, n_embd) */
    float *gate;       /* (n_batch, n_ff) */
    float *up;         /* (n_batch, n_ff) */
    void *act;         /* (n_batch, widest activation row) converted activations */
    size_t act_cap;    /* bytes of one activation row slot */
    float *rope_cs;    /* (n_batch, n_rot / 2, 2) cos and sin per token */
    float *scores;     /* (n_threads, group, n_ctx) attention scores */
    void *qconv;       /* (n_threads, group, head_dim) queries in the KV kernel's format */
    float *out_rows;   /* (n_batch, n_embd) normalised rows that want logits */
    int embd_fd;       /* the model file, for pread of embedding rows, or -1 */
    uint64_t embd_off; /* file offset of tok_embd's data */
    uint8_t *embd_row; /* (n_threads, row bytes of tok_embd) */

    /* The batch of the current run. */
    tok_info *toks;          /* (n_batch) */
    const ctn_fwd_seg *segs; /* borrowed for the run */
    int n_segs;
    bool any_embd;                  /* some segment wants hidden states */
    const ctn_lora_kern *lora_kern; /* the adapters' products */
    float *lora_u;        /* (CTN_LORA_N, n_batch, lora_cap): A x of each token, per target */
    int32_t lora_cap;     /* the largest rank lora_u is made for */
    float *lora_sc;       /* (n_batch) each token's adapter scale (its segment's lora_scale) */
    int32_t *lora_tok;    /* (n_batch) the tokens with an adapter, grouped by adapter */
    lora_group *lora_grp; /* (n_batch) the groups of this batch, in order of first token */
    int32_t n_lora_grp;
    float *embd_tmp; /* (n_threads, n_embd) a normalised row per thread */
    int64_t n_tok;
    int64_t *out_tok; /* (n_batch) token index of each logits row */
    int64_t n_out;
    float *logits;

    char errmsg[256];
};

/* ---- set-up -------------------------------------------------------------------------- */

static size_t tensor_row_bytes(const ctn_gguf_tensor *t) {
    return (size_t)(t->ne[0] / ctn_type_block_size(t->type) * ctn_type_block_bytes(t->type));
}

static int64_t max64(int64_t a, int64_t b) {
    return a > b ? a : b;
}

static int bind_matrix(matrix *mx, const ctn_gguf_tensor *t, char *err, size_t errlen) {
    mx->t = t;
    mx->lora_slot = -1;
    mx->k = ctn_kern_get(t->type);
    mx->row_bytes = tensor_row_bytes(t);
    if (mx->k == NULL) {
        ctn__errf(err, errlen, "tensor '%.*s' has type %s, which the engine has no kernel for",
                  (int)t->name.len, t->name.ptr, ctn_type_name(t->type));
        return CTN_ENOTSUP;
    }
    if (t->ne[0] % mx->k->block != 0) {
        ctn__errf(err, errlen,
                  "tensor '%.*s' (%s) has rows of %" PRId64 " values, not a multiple of %" PRId64,
                  (int)t->name.len, t->name.ptr, ctn_type_name(t->type), t->ne[0], mx->k->block);
        return CTN_ENOTSUP;
    }
    return 0;
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

/* Bytes of one activation row for input width n of matrix mx. */
static size_t act_bytes(const matrix *mx) {
    return ctn_kern_act_bytes(mx->k->atype, mx->t->ne[0]);
}

int ctn_fwd_new(ctn_fwd **out, const ctn_model *m, const ctn_fwd_params *pin, char *err,
                size_t errlen) {
    *out = NULL;
    const ctn_model_hparams *hp = &m->hp;
    ctn_fwd_params p = pin != NULL ? *pin : (ctn_fwd_params){0};
    if (p.n_threads < 0 || p.n_threads > 512) {
        ctn__errf(err, errlen, "threads %d is outside 1..512", p.n_threads);
        return CTN_EINVAL;
    }
    if (p.n_threads == 0) p.n_threads = ctn_pool_default_threads();
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
    const int64_t group = hp->n_head / hp->n_head_kv;
    if (p.kv_memory == 0) {
        const int64_t blocks = (p.n_ctx + p.kv_block - 1) / p.kv_block;
        p.kv_memory =
            (size_t)blocks * ctn_kv_bytes_per_block(hp->n_layer, kv_dim, kv_type, p.kv_block);
    }

    ctn_fwd *f = ctn__calloc(1, sizeof *f);
    if (f == NULL) goto nomem;
    f->m = m;
    f->p = p;
    f->embd_fd = -1;
    f->vec = ctn_vec_get();
    f->attn = ctn_attn_get();
    f->kv_kern = ctn_kern_get(kv_type);
    if (f->kv_kern == NULL || f->vec == NULL) {
        ctn__errf(err, errlen, "no attention kernel for a %s KV cache", ctn_type_name(kv_type));
        ctn_fwd_free(f);
        return CTN_ENOTSUP;
    }
    if (D % f->kv_kern->block != 0) {
        ctn__errf(err, errlen, "head width %" PRId64 " is not a multiple of %" PRId64, D,
                  f->kv_kern->block);
        ctn_fwd_free(f);
        return CTN_ENOTSUP;
    }

    /* Matrices: a kernel for every weight type, or a named error. */
    f->lm = ctn__calloc((size_t)hp->n_layer, sizeof *f->lm);
    f->lv = ctn__calloc((size_t)hp->n_layer, sizeof *f->lv);
    if (f->lm == NULL || f->lv == NULL) goto nomem;
    size_t act_cap = 0, n_small = (size_t)hp->n_embd + (size_t)hp->n_rot;
    int rc;
    for (int64_t l = 0; l < hp->n_layer; l++) {
        const ctn_model_layer *ly = &m->layers[l];
        layer_mats *lm = &f->lm[l];
        if ((rc = bind_matrix(&lm->wq, ly->wq, err, errlen)) < 0 ||
            (rc = bind_matrix(&lm->wk, ly->wk, err, errlen)) < 0 ||
            (rc = bind_matrix(&lm->wv, ly->wv, err, errlen)) < 0 ||
            (rc = bind_matrix(&lm->wo, ly->wo, err, errlen)) < 0 ||
            (rc = bind_matrix(&lm->gate, ly->ffn_gate, err, errlen)) < 0 ||
            (rc = bind_matrix(&lm->up, ly->ffn_up, err, errlen)) < 0 ||
            (rc = bind_matrix(&lm->down, ly->ffn_down, err, errlen)) < 0) {
            ctn_fwd_free(f);
            return rc;
        }
        const matrix *all[] = {&lm->wq, &lm->wk, &lm->wv, &lm->wo, &lm->gate, &lm->up, &lm->down};
        for (size_t i = 0; i < sizeof all / sizeof *all; i++)
            if (act_bytes(all[i]) > act_cap) act_cap = act_bytes(all[i]);
        const int base = (int)l * CTN_LORA_N;
        lm->wq.lora_slot = base + CTN_LORA_Q, lm->wk.lora_slot = base + CTN_LORA_K;
        lm->wv.lora_slot = base + CTN_LORA_V, lm->wo.lora_slot = base + CTN_LORA_O;
        lm->gate.lora_slot = base + CTN_LORA_GATE, lm->up.lora_slot = base + CTN_LORA_UP;
        lm->down.lora_slot = base + CTN_LORA_DOWN;
        n_small += vec_floats(ly->attn_norm) + vec_floats(ly->ffn_norm) + vec_floats(ly->bq) +
                   vec_floats(ly->bk) + vec_floats(ly->bv) + vec_floats(ly->q_norm) +
                   vec_floats(ly->k_norm);
    }
    if ((rc = bind_matrix(&f->output, m->output, err, errlen)) < 0) {
        ctn_fwd_free(f);
        return rc;
    }
    if (act_bytes(&f->output) > act_cap) act_cap = act_bytes(&f->output);
    act_cap = (act_cap + 63) & ~(size_t)63;
    f->act_cap = act_cap;

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

    /* Activations. */
    const size_t B = (size_t)p.n_batch;
    f->x = ctn__malloc(B * (size_t)hp->n_embd * sizeof(float));
    f->xn = ctn__malloc(B * (size_t)hp->n_embd * sizeof(float));
    f->q = ctn__malloc(B * (size_t)q_dim * sizeof(float));
    f->kx = ctn__malloc(B * (size_t)kv_dim * sizeof(float));
    f->vx = ctn__malloc(B * (size_t)kv_dim * sizeof(float));
    f->att = ctn__malloc(B * (size_t)q_dim * sizeof(float));
    f->proj = ctn__malloc(B * (size_t)hp->n_embd * sizeof(float));
    f->gate = ctn__malloc(B * (size_t)hp->n_ff * sizeof(float));
    f->up = ctn__malloc(B * (size_t)hp->n_ff * sizeof(float));
    f->act = ctn__malloc(B * act_cap);
    f->rope_cs = ctn__malloc(B * (size_t)max64(half, 1) * 2 * sizeof(float));
    f->scores = ctn__malloc((size_t)p.n_threads * (size_t)group * (size_t)p.n_ctx * sizeof(float));
    f->qconv =
        ctn__malloc((size_t)p.n_threads * (size_t)group * ctn_kern_act_bytes(f->kv_kern->atype, D));
    f->out_rows = ctn__malloc(B * (size_t)hp->n_embd * sizeof(float));
    f->toks = ctn__malloc(B * sizeof *f->toks);
    f->out_tok = ctn__malloc(B * sizeof *f->out_tok);
    f->embd_tmp = ctn__malloc((size_t)p.n_threads * (size_t)hp->n_embd * sizeof(float));
    if (f->x == NULL || f->xn == NULL || f->q == NULL || f->kx == NULL || f->vx == NULL ||
        f->att == NULL || f->proj == NULL || f->gate == NULL || f->up == NULL || f->act == NULL ||
        f->rope_cs == NULL || f->scores == NULL || f->qconv == NULL || f->out_rows == NULL ||
        f->toks == NULL || f->out_tok == NULL || f->embd_tmp == NULL)
        goto nomem;

    if ((rc = ctn_kv_pool_new(&f->kv, hp->n_layer, kv_dim, kv_type, p.kv_block, p.kv_memory, err,
                              errlen)) < 0) {
        ctn_fwd_free(f);
        return rc;
    }
    if (ctn_pool_new(&f->pool, p.n_threads) < 0) goto nomem;
    /*
     * An untied embedding table is read a few rows at a time: with pread, not through the
     * mapping, whose page faults map whole page-cache folios (tens of KiB) per row and
     * would grow the resident set by megabytes per prompt for no gain.
     */
    if (m->output != m->tok_embd && ctn_gguf_fd(m->gguf) >= 0) {
        f->embd_fd = ctn_gguf_fd(m->gguf);
        f->embd_off = ctn_gguf_data_offset(m->gguf) + m->tok_embd->offset;
        f->embd_row = ctn__malloc((size_t)p.n_threads * tensor_row_bytes(m->tok_embd));
        if (f->embd_row == NULL) goto nomem;
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
    ctn_pool_free(f->pool);
    ctn_kv_pool_free(f->kv);
    free(f->lv), free(f->lm), free(f->small);
    free(f->x), free(f->xn), free(f->q), free(f->kx), free(f->vx), free(f->att);
    free(f->proj), free(f->gate), free(f->up), free(f->act), free(f->rope_cs);
    free(f->scores), free(f->qconv), free(f->out_rows), free(f->toks), free(f->out_tok);
    free(f->embd_tmp);
    free(f->embd_row);
    free(f->lora_u), free(f->lora_sc), free(f->lora_tok), free(f->lora_grp);
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

/* ---- the steps ----------------------------------------------------------------------- */

/* Per-thread view of which rows the activation buffer holds (each thread tracks its own
 * copy; all threads make the same decisions, so they agree). */
typedef struct {
    const float *src;
    int atype;
    int64_t width;
    int64_t rows;
} act_state;

static void span(int64_t n, int ith, int nth, int64_t align, int64_t *lo, int64_t *hi) {
    int64_t chunk = (n + nth - 1) / nth;
    chunk = (chunk + align - 1) / align * align;
    *lo = chunk * ith < n ? chunk * ith : n;
    *hi = *lo + chunk < n ? *lo + chunk : n;
}

/* Tokens and ranks per unit of phase-1 work (lora_down_all). */
#define LORA_UNIT_TOKENS 32
#define LORA_UNIT_RANKS  8

/*
 * LoRA updates, SGMV-style, in two phases with no barrier of their own:
 *   1. lora_down_all, inside the convert of the first matrix of a set that shares an input
 *      (q, k, v; o; gate, up; down), before its closing barrier: u_t = A x_t for every
 *      group's tokens and every matrix of the set, dealt to the threads in units of (matrix,
 *      group, 32 tokens, 8 ranks), into the target's own u buffer;
 *   2. lora_up_rows, after each matrix's base product: y[t][o] += scale * (B u_t)[o] for
 *      this thread's output rows, every group.
 * Each group's A and B are read once per step (per unit of tokens), and a token's update
 * does not depend on the batch or the split (lora_kern.h).
 */
static void lora_down_all(ctn_fwd *f, const matrix *const *set, int n_set, const float *src,
                          int ith, int nth) {
    const size_t plane = (size_t)f->p.n_batch * (size_t)f->lora_cap;
    int unit = 0;
    for (int k = 0; k < n_set; k++) {
        const matrix *mx = set[k];
        float *u = f->lora_u + (size_t)(mx->lora_slot % CTN_LORA_N) * plane;
        for (int32_t gi = 0; gi < f->n_lora_grp; gi++) {
            const lora_group *g = &f->lora_grp[gi];
            const ctn_lora_mat *m = &g->lora->mats[mx->lora_slot];
            for (int32_t t0 = 0; m->rank > 0 && t0 < g->n; t0 += LORA_UNIT_TOKENS) {
                const int nt = g->n - t0 < LORA_UNIT_TOKENS ? g->n - t0 : LORA_UNIT_TOKENS;
                for (int32_t r0 = 0; r0 < m->rank; r0 += LORA_UNIT_RANKS, unit++) {
                    if (unit % nth != ith) continue;
                    const int32_t r1 =
                        m->rank - r0 < LORA_UNIT_RANKS ? m->rank : r0 + LORA_UNIT_RANKS;
                    f->lora_kern->down(m->type, m->a, m->n_in, r0, r1, src, m->n_in,
                                       f->lora_tok + g->start + t0, nt, u, f->lora_cap);
                }
            }
        }
    }
}

static void lora_up_rows(ctn_fwd *f, const matrix *mx, float *y, int64_t ldy, int64_t r0,
                         int64_t r1) {
    const float *u = f->lora_u + (size_t)(mx->lora_slot % CTN_LORA_N) * (size_t)f->p.n_batch *
                                     (size_t)f->lora_cap;
    for (int32_t gi = 0; gi < f->n_lora_grp; gi++) {
        const lora_group *g = &f->lora_grp[gi];
        const ctn_lora_mat *m = &g->lora->mats[mx->lora_slot];
        if (m->rank == 0) continue;
        f->lora_kern->up(m->type, m->bt, m->n_out, m->rank, r0, r1, u, f->lora_cap, m->scale,
                         f->lora_sc, f->lora_tok + g->start, g->n, y, ldy);
    }
}

/*
 * Makes the activation buffer hold rows src[0..rows) (width floats each, row stride width)
 * in mx's activation format. Threads split the rows; barriers on both sides keep readers
 * of the old contents and of the new apart. Before the closing barrier, phase 1 of the
 * adapters of the matrices in set (those that read src; lora_down_all) runs, with a pair of
 * barriers of its own when the buffer already held src.
 */
static void convert(ctn_fwd *f, act_state *as, const matrix *mx, const float *src, int64_t rows,
                    int ith, int nth, const matrix *const *set, int n_set) {
    const int64_t width = mx->t->ne[0];
    const bool lora = n_set > 0 && f->n_lora_grp > 0;
    if (as->src == src && as->atype == mx->k->atype && as->width == width && as->rows == rows) {
        if (lora) {
            ctn_pool_barrier(f->pool);
            lora_down_all(f, set, n_set, src, ith, nth);
            ctn_pool_barrier(f->pool);
        }
        return;
    }
    ctn_pool_barrier(f->pool);
    int64_t lo, hi;
    span(rows, ith, nth, 1, &lo, &hi);
    for (int64_t r = lo; r < hi; r++)
        mx->k->from_float(src + r * width, (uint8_t *)f->act + (size_t)r * f->act_cap, width);
    if (lora) lora_down_all(f, set, n_set, src, ith, nth);
    ctn_pool_barrier(f->pool);
    as->src = src, as->atype = mx->k->atype, as->width = width, as->rows = rows;
}

/* This thread's share of y = W x for `rows` activation rows (y rows of ldy floats), with
 * the adapters' updates when the rows are tokens (src: their F32 inputs). */
static void gemm_rows(ctn_fwd *f, const matrix *mx, int64_t rows, float *y, int64_t ldy, int ith,
                      int nth, int64_t *r0, int64_t *r1) {
    const int64_t nr = mx->t->ne[1], n = mx->t->ne[0];
    span(nr, ith, nth, 16, r0, r1);
    const uint8_t *w = (const uint8_t *)mx->t->data + (size_t)*r0 * mx->row_bytes;
    for (int64_t c0 = 0; c0 < rows && *r0 < *r1; c0 += COL_BLOCK) {
        const int64_t nc = rows - c0 < COL_BLOCK ? rows - c0 : COL_BLOCK;
        mx->k->gemm(n, w, mx->row_bytes, *r1 - *r0,
                    (const uint8_t *)f->act + (size_t)c0 * f->act_cap, f->act_cap, nc,
                    y + c0 * ldy + *r0, (size_t)ldy);
    }
    if (f->n_lora_grp > 0 && mx->lora_slot >= 0 && *r0 < *r1) lora_up_rows(f, mx, y, ldy, *r0, *r1);
}

/* y = W x for mx, its adapters' updates added; set: the matrices whose phase 1 runs here
 * (mx first among those that share src; NULL when another matmul did it). */
static void matmul(ctn_fwd *f, act_state *as, const matrix *mx, const float *src, int64_t rows,
                   float *y, int ith, int nth, const matrix *const *set, int n_set) {
    int64_t r0, r1;
    convert(f, as, mx, src, rows, ith, nth, set, n_set);
    gemm_rows(f, mx, rows, y, mx->t->ne[1], ith, nth, &r0, &r1);
}

/* y = x / sqrt(mean(x^2) + eps) * w, as the reference (sum of squares in double). */
static void rmsnorm(const float *x, const float *w, int64_t n, float eps, float *y) {
    double sum = 0.0;
    for (int64_t i = 0; i < n; i++)
        sum += (double)(x[i] * x[i]);
    const float mean = (float)(sum / (double)n);
    const float scale = 1.0f / sqrtf(mean + eps);
    for (int64_t i = 0; i < n; i++)
        y[i] = (x[i] * scale) * w[i];
}

static void rope_apply(const ctn_fwd *f, float *v, int64_t n_heads, const float *cs) {
    const ctn_model_hparams *hp = &f->m->hp;
    const bool neox = f->m->arch->rope == CTN_ROPE_NEOX;
    const int64_t half = hp->n_rot / 2;
    for (int64_t h = 0; h < n_heads; h++) {
        float *p = v + h * hp->head_dim;
        for (int64_t k = 0; k < half; k++) {
            const float c = cs[2 * k], sn = cs[2 * k + 1];
            const int64_t i0 = neox ? k : 2 * k, i1 = neox ? k + half : 2 * k + 1;
            const float x0 = p[i0], x1 = p[i1];
            p[i0] = x0 * c - x1 * sn;
            p[i1] = x0 * sn + x1 * c;
        }
    }
}

/*
 * Attention of token t for the query heads of KV head kvh: scores over positions 0..pos
 * through the block table, a softmax with the maximum subtracted and the sum in double,
 * then the weighted sum of values.
 */
static void attend(ctn_fwd *f, int64_t l, int64_t t, int64_t kvh, int ith) {
    const ctn_model_hparams *hp = &f->m->hp;
    const int64_t D = hp->head_dim, q_dim = hp->n_head * D;
    const int64_t group = hp->n_head / hp->n_head_kv;
    const tok_info *ti = &f->toks[t];
    const ctn_kv_seq *seq = f->segs[ti->seg].seq;
    const ctn_kv_pool *kv = f->kv;
    const int64_t n_pos = ti->pos + 1, bs = kv->block_size;
    const float kq_scale = 1.0f / sqrtf((float)D);
    float *sc = f->scores + (size_t)ith * (size_t)group * (size_t)f->p.n_ctx;
    const size_t qrow = ctn_kern_act_bytes(f->kv_kern->atype, D);
    uint8_t *qc = (uint8_t *)f->qconv + (size_t)ith * (size_t)group * qrow;
    const float *qh = f->q + t * q_dim + kvh * group * D;
    for (int64_t g = 0; g < group; g++)
        f->kv_kern->from_float(qh + g * D, qc + (size_t)g * qrow, D);

    /* Scores, one block of positions at a time: its keys are rows kv_dim apart. */
    const size_t krow = (size_t)kv->kv_dim * kv->elem, koff = (size_t)(kvh * D) * kv->elem;
    for (int64_t p0 = 0; p0 < n_pos; p0 += bs) {
        const int64_t np = n_pos - p0 < bs ? n_pos - p0 : bs;
        const uint8_t *kb = (const uint8_t *)ctn_kv_k(kv, l, seq, p0) + koff;
        f->kv_kern->gemm(D, kb, krow, np, qc, qrow, group, sc + p0, (size_t)f->p.n_ctx);
    }
    for (int64_t g = 0; g < group; g++)
        f->vec->softmax(n_pos, sc + g * f->p.n_ctx, kq_scale);

    /* Values: each block's rows for this KV head, weighted for every head of the group. */
    float *out = f->att + t * q_dim + kvh * group * D;
    memset(out, 0, (size_t)(group * D) * sizeof *out);
    const ctn_attn_acc_fn acc = kv->type == CTN_TYPE_F16 ? f->attn->acc_f16 : f->attn->acc_f32;
    for (int64_t p0 = 0; p0 < n_pos; p0 += bs) {
        const int64_t np = n_pos - p0 < bs ? n_pos - p0 : bs;
        const uint8_t *vb = (const uint8_t *)ctn_kv_v(kv, l, seq, p0) + koff;
        acc(D, np, group, vb, (size_t)kv->kv_dim, sc + p0, (size_t)f->p.n_ctx, out, (size_t)D);
    }
}

static void fwd_work(void *ctx, int ith, int nth) {
    ctn_fwd *f = ctx;
    const ctn_model *m = f->m;
    const ctn_model_hparams *hp = &m->hp;
    const int64_t T = f->n_tok, E = hp->n_embd, D = hp->head_dim;
    const int64_t q_dim = hp->n_head * D, kv_dim = hp->n_head_kv * D, F = hp->n_ff;
    const int64_t half = hp->n_rot / 2;
    act_state as = {0};
    int64_t t0, t1, r0, r1;
    span(T, ith, nth, 1, &t0, &t1);

    /* Embeddings and this batch's RoPE angles (theta as the reference computes it). */
    for (int64_t t = t0; t < t1; t++) {
        const ctn_gguf_tensor *te = m->tok_embd;
        const size_t rb = tensor_row_bytes(te);
        const uint8_t *row = (const uint8_t *)te->data + (size_t)f->toks[t].id * rb;
        if (f->embd_fd >= 0) {
            uint8_t *buf = f->embd_row + (size_t)ith * rb;
            const off_t at = (off_t)(f->embd_off + (uint64_t)f->toks[t].id * rb);
            if (pread(f->embd_fd, buf, rb, at) == (ssize_t)rb) row = buf;
        }
        ctn_dequantize_row(te->type, row, f->x + t * E, E);
        float *cs = f->rope_cs + t * half * 2;
        for (int64_t k = 0; k < half; k++) {
            float theta = (float)f->toks[t].pos * f->inv_freq[k];
            if (f->rope_div != NULL) theta /= f->rope_div[k];
            cs[2 * k] = cosf(theta);
            cs[2 * k + 1] = sinf(theta);
        }
        rmsnorm(f->x + t * E, f->lv[0].attn_norm, E, hp->norm_eps, f->xn + t * E);
    }
    ctn_pool_barrier(f->pool);

    for (int64_t l = 0; l < hp->n_layer; l++) {
        const layer_mats *lm = &f->lm[l];
        const layer_vecs *lv = &f->lv[l];

        /* Q, K, V: the normalised input is converted once when the three share a format. */
        const matrix *qkv[3] = {&lm->wq, &lm->wk, &lm->wv};
        matmul(f, &as, &lm->wq, f->xn, T, f->q, ith, nth, qkv, 3);
        matmul(f, &as, &lm->wk, f->xn, T, f->kx, ith, nth, NULL, 0);
        matmul(f, &as, &lm->wv, f->xn, T, f->vx, ith, nth, NULL, 0);
        ctn_pool_barrier(f->pool);

        /* Biases, Q/K norms, RoPE, and the keys and values into the cache. */
        for (int64_t t = t0; t < t1; t++) {
            float *q = f->q + t * q_dim, *k = f->kx + t * kv_dim, *v = f->vx + t * kv_dim;
            if (lv->bq != NULL)
                for (int64_t i = 0; i < q_dim; i++)
                    q[i] += lv->bq[i];
            if (lv->bk != NULL)
                for (int64_t i = 0; i < kv_dim; i++)
                    k[i] += lv->bk[i], v[i] += lv->bv[i];
            if (lv->q_norm != NULL) {
                for (int64_t h = 0; h < hp->n_head; h++)
                    rmsnorm(q + h * D, lv->q_norm, D, hp->norm_eps, q + h * D);
                for (int64_t h = 0; h < hp->n_head_kv; h++)
                    rmsnorm(k + h * D, lv->k_norm, D, hp->norm_eps, k + h * D);
            }
            const float *cs = f->rope_cs + t * half * 2;
            rope_apply(f, q, hp->n_head, cs);
            rope_apply(f, k, hp->n_head_kv, cs);
            const ctn_kv_seq *seq = f->segs[f->toks[t].seg].seq;
            void *kd = ctn_kv_k(f->kv, l, seq, f->toks[t].pos);
            void *vd = ctn_kv_v(f->kv, l, seq, f->toks[t].pos);
            if (f->kv->type == CTN_TYPE_F16) {
                f->vec->to_f16(kv_dim, kd, k);
                f->vec->to_f16(kv_dim, vd, v);
            } else {
                memcpy(kd, k, (size_t)kv_dim * sizeof(float));
                memcpy(vd, v, (size_t)kv_dim * sizeof(float));
            }
        }
        ctn_pool_barrier(f->pool);

        /* Attention: work items (token, KV head), dealt round-robin for balance. */
        const int64_t n_items = T * hp->n_head_kv;
        for (int64_t it = ith; it < n_items; it += nth)
            attend(f, l, it / hp->n_head_kv, it % hp->n_head_kv, ith);
        ctn_pool_barrier(f->pool);

        /* Output projection; each thread adds its own rows into the residual. */
        const matrix *o_set[1] = {&lm->wo};
        matmul(f, &as, &lm->wo, f->att, T, f->proj, ith, nth, o_set, 1);
        span(E, ith, nth, 16, &r0, &r1);
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = r0; i < r1; i++)
                f->x[t * E + i] += f->proj[t * E + i];
        ctn_pool_barrier(f->pool);
        for (int64_t t = t0; t < t1; t++)
            rmsnorm(f->x + t * E, lv->ffn_norm, E, hp->norm_eps, f->xn + t * E);

        /* Feed-forward: gate and up share the input; SiLU(gate) * up on this thread's rows. */
        const matrix *gate_up[2] = {&lm->gate, &lm->up};
        matmul(f, &as, &lm->gate, f->xn, T, f->gate, ith, nth, gate_up, 2);
        convert(f, &as, &lm->up, f->xn, T, ith, nth, NULL, 0);
        gemm_rows(f, &lm->up, T, f->up, F, ith, nth, &r0, &r1);
        /* gate and up rows split alike (same row count), so these rows are this thread's. */
        for (int64_t t = 0; t < T; t++)
            f->vec->silu_mul(r1 - r0, f->gate + t * F + r0, f->up + t * F + r0);
        ctn_pool_barrier(f->pool);
        const matrix *down_set[1] = {&lm->down};
        matmul(f, &as, &lm->down, f->gate, T, f->proj, ith, nth, down_set, 1);
        span(E, ith, nth, 16, &r0, &r1);
        for (int64_t t = 0; t < T; t++)
            for (int64_t i = r0; i < r1; i++)
                f->x[t * E + i] += f->proj[t * E + i];
        ctn_pool_barrier(f->pool);
        const float *next_norm = l + 1 < hp->n_layer ? f->lv[l + 1].attn_norm : NULL;
        if (next_norm != NULL)
            for (int64_t t = t0; t < t1; t++)
                rmsnorm(f->x + t * E, next_norm, E, hp->norm_eps, f->xn + t * E);
        /* The next matmul's convert starts with a barrier. */
        as.src = NULL;
    }

    /* Hidden states for embeddings: each segment's on one thread, token by token in order
     * (a sum over chunks of a prompt is the same whatever the chunks). */
    if (f->any_embd) {
        float *tmp = f->embd_tmp + (size_t)ith * (size_t)E;
        for (int64_t t = 0; t < T; t++) {
            const int32_t sg = f->toks[t].seg;
            const ctn_fwd_seg *s = &f->segs[sg];
            if (s->embd == NULL || s->embd_mode == CTN_EMBD_NONE || sg % nth != ith) continue;
            const bool first = t == 0 || f->toks[t - 1].seg != sg;
            const bool last = t + 1 == T || f->toks[t + 1].seg != sg;
            if (s->embd_mode == CTN_EMBD_SUM) {
                rmsnorm(f->x + t * E, f->out_norm, E, hp->norm_eps, tmp);
                for (int64_t i = 0; i < E; i++)
                    s->embd[i] += tmp[i];
            } else if ((s->embd_mode == CTN_EMBD_FIRST && first) ||
                       (s->embd_mode == CTN_EMBD_LAST && last)) {
                rmsnorm(f->x + t * E, f->out_norm, E, hp->norm_eps, s->embd);
            }
        }
    }

    /* Logits of the rows that ask for them. */
    if (f->n_out == 0) return;
    int64_t o0, o1;
    span(f->n_out, ith, nth, 1, &o0, &o1);
    for (int64_t o = o0; o < o1; o++)
        rmsnorm(f->x + f->out_tok[o] * E, f->out_norm, E, hp->norm_eps, f->out_rows + o * E);
    as.src = NULL;
    matmul(f, &as, &f->output, f->out_rows, f->n_out, f->logits, ith, nth, NULL, 0);
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
    if (any_lora && (rank > f->lora_cap || f->lora_u == NULL)) {
        /* Once per larger rank, not per step. */
        const size_t nb = (size_t)f->p.n_batch;
        float *u = ctn__malloc((size_t)CTN_LORA_N * nb * (size_t)rank * sizeof *u);
        float *sc = ctn__malloc(nb * sizeof *sc);
        int32_t *tok = ctn__malloc(nb * sizeof *tok);
        lora_group *grp = ctn__malloc(nb * sizeof *grp);
        if (u == NULL || sc == NULL || tok == NULL || grp == NULL) {
            free(u), free(sc), free(tok), free(grp);
            ctn__errf(f->errmsg, sizeof f->errmsg, "out of memory for the adapters' scratch");
            return CTN_ENOMEM;
        }
        free(f->lora_u), free(f->lora_sc), free(f->lora_tok), free(f->lora_grp);
        f->lora_u = u, f->lora_sc = sc, f->lora_tok = tok, f->lora_grp = grp;
        f->lora_cap = rank;
        f->lora_kern = ctn_lora_kern_get();
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
    for (int i = 0; i < n_segs; i++) {
        const ctn_fwd_seg *s = &segs[i];
        for (int64_t j = 0; j < s->n_tokens; j++, t++) {
            f->toks[t].id = s->tokens[j];
            f->toks[t].seg = i;
            f->toks[t].pos = s->seq->n_pos + j;
        }
        for (int64_t j = seg_rows(s); j > 0; j--)
            f->out_tok[n_out++] = t - j;
    }
    f->segs = segs;
    f->n_segs = n_segs;
    /* The adapter groups: each segment's tokens join the group of its adapter. */
    f->n_lora_grp = 0;
    if (any_lora) {
        int32_t n_grp = 0, n_in = 0;
        for (int i = 0; i < n_segs; i++) {
            const ctn_fwd_seg *s = &segs[i];
            if (s->lora == NULL || s->lora_scale == 0 || s->n_tokens == 0) continue;
            int32_t g = 0;
            while (g < n_grp && f->lora_grp[g].lora != s->lora)
                g++;
            if (g == n_grp) f->lora_grp[n_grp++] = (lora_group){s->lora, 0, 0};
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
            while (f->lora_grp[g].lora != s->lora)
                g++;
            f->lora_tok[f->lora_grp[g].start + f->lora_grp[g].n++] = (int32_t)tk;
            f->lora_sc[tk] = s->lora_scale;
        }
        f->n_lora_grp = n_grp;
    }
    f->any_embd = false;
    for (int i = 0; i < n_segs; i++)
        f->any_embd |= segs[i].embd_mode != CTN_EMBD_NONE;
    f->n_tok = n_tok;
    f->n_out = n_out;
    f->logits = logits;
    ctn_pool_run(f->pool, fwd_work, f);
    for (int i = 0; i < n_segs; i++)
        segs[i].seq->n_pos += segs[i].n_tokens;
    f->segs = NULL;

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
