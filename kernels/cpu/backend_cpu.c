/*
 * The CPU backend (kernels/backend.h): the reference. A compute call plans the op list on the
 * calling thread (where barriers go, which matrix products must convert their input, where
 * the adapters' first products run) and then runs it in one call of the thread pool: every
 * thread walks the whole list, does its share of each op (rows, tokens or attention items),
 * and waits at the planned barriers only.
 *
 * Barriers. Each op touches its buffers with a split: by token (thread ith owns the rows
 * span(n) gives it), by output row of a matrix (span(n_out, 16) of every row), or any. Two
 * touches of one buffer since the last barrier need no barrier between them when they have
 * the same split (each thread touches only its own part) or are both reads; otherwise the
 * planner puts one before the later op.
 */
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "alloc.h"
#include "attn.h"
#include "backend.h"
#include "base.h"
#include "kern.h"
#include "lora_kern.h"
#include "pool.h"
#include "quant.h"
#include "types.h"

/* Tokens per gemm call in a prefill: the activation rows stay in L2 while the weights pass. */
#define COL_BLOCK 64
/* Tokens and ranks per unit of the adapters' first product (lora_down). */
#define LORA_UNIT_TOKENS 32
#define LORA_UNIT_RANKS  8
/* The adapters' first products of up to this many matrices that share an input run together. */
#define U_PLANES 4

/* The backend's own buffers, after the callers' ids. */
enum { BUF_ACT = CTN_BE_USER_BUFS, BUF_U0, N_BUFS = BUF_U0 + U_PLANES };

struct ctn_be_weight {
    ctn_be_weight_desc d;
    const ctn_kern *k;
    uint8_t *rowbuf; /* (n_threads, row_bytes) rows read with pread, or NULL */
};

/* What the threads do for one op, decided by plan(). */
typedef struct {
    uint8_t barrier;     /* before the op */
    uint8_t convert;     /* a product: its input is converted to the kernel's format first */
    uint8_t mid_barrier; /* a product: between the conversion (or first products) and the gemm */
    int8_t n_down;       /* a product: the adapters' first products of this and the next
                            n_down - 1 products run with its conversion */
    int8_t plane;        /* a product: the u plane of its adapters' first product */
} step;

typedef struct {
    ctn_backend base;
    ctn_pool *pool;
    int n_threads;
    const ctn_vec *vec;
    const ctn_attn *attn;
    const ctn_lora_kern *lora_kern;
    const ctn_kern *kv_kern; /* query-key products over the KV cache's rows */

    ctn_be_sizes sz;  /* what reserve sized for */
    size_t act_need;  /* the widest activation row of the weights made so far */
    size_t act_cap;   /* bytes of one activation row slot */
    void *act;        /* (n_batch, act_cap) converted activations */
    float *scores;    /* (n_threads, group, n_ctx) */
    void *qconv;      /* (n_threads, group, head_dim) queries in kv_kern's format */
    size_t qrow;      /* bytes of one converted query head */
    float *tmp;       /* (n_threads, n_embd) */
    float *lora_u;    /* (U_PLANES, n_batch, lora_cap) */
    int32_t lora_cap; /* the rank lora_u is made for */
    step *plan;       /* (max_ops) */
    int max_ops;

    const ctn_be_graph *g; /* the graph of the current run */
} cpu_be;

/* ---- the kernels of one op, one thread's share ---------------------------------------- */

static void span(int64_t n, int ith, int nth, int64_t align, int64_t *lo, int64_t *hi) {
    int64_t chunk = (n + nth - 1) / nth;
    chunk = (chunk + align - 1) / align * align;
    *lo = chunk * ith < n ? chunk * ith : n;
    *hi = *lo + chunk < n ? *lo + chunk : n;
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

static void op_get_rows(cpu_be *be, const ctn_be_op *op, int ith, int nth) {
    const ctn_be_weight *w = op->get_rows.w;
    const ctn_be_rows *dst = &op->get_rows.dst;
    const size_t rb = w->d.row_bytes;
    int64_t t0, t1;
    span(be->g->n_tok, ith, nth, 1, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        const int32_t id = be->g->toks[t].id;
        const uint8_t *row = (const uint8_t *)w->d.data + (size_t)id * rb;
        if (w->rowbuf != NULL) {
            uint8_t *buf = w->rowbuf + (size_t)ith * rb;
            const off_t at = (off_t)(w->d.file_off + (uint64_t)id * rb);
            if (pread(w->d.fd, buf, rb, at) == (ssize_t)rb) row = buf;
        }
        ctn_dequantize_row(w->d.type, row, dst->p + t * dst->ld, w->d.n_in);
    }
}

/* The angles as the reference computes them (theta = pos * inv_freq, over rope_freqs). */
static void op_rope_cache(cpu_be *be, const ctn_be_op *op, int ith, int nth) {
    int64_t t0, t1;
    span(be->g->n_tok, ith, nth, 1, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        float *cs = op->rope_cache.dst.p + t * op->rope_cache.dst.ld;
        for (int64_t k = 0; k < op->rope_cache.half; k++) {
            float theta = (float)be->g->toks[t].pos * op->rope_cache.inv_freq[k];
            if (op->rope_cache.div != NULL) theta /= op->rope_cache.div[k];
            cs[2 * k] = cosf(theta);
            cs[2 * k + 1] = sinf(theta);
        }
    }
}

static void op_rms(const ctn_be_op *op, int ith, int nth) {
    int64_t i0, i1;
    span(op->rms.n_rows, ith, nth, 1, &i0, &i1);
    for (int64_t i = i0; i < i1; i++) {
        const int64_t s = op->rms.rows != NULL ? op->rms.rows[i] : i;
        for (int64_t gi = 0; gi < op->rms.n_grp; gi++)
            rmsnorm(op->rms.src.p + s * op->rms.src.ld + gi * op->rms.width, op->rms.w,
                    op->rms.width, op->rms.eps,
                    op->rms.dst.p + i * op->rms.dst.ld + gi * op->rms.width);
    }
}

static void op_rope(cpu_be *be, const ctn_be_op *op, int ith, int nth) {
    const int64_t half = op->rope.half, D = op->rope.head_dim;
    const bool neox = op->rope.neox;
    int64_t t0, t1;
    span(be->g->n_tok, ith, nth, 1, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        const float *cs = op->rope.cs.p + t * op->rope.cs.ld;
        for (int64_t h = 0; h < op->rope.n_heads; h++) {
            float *p = op->rope.x.p + t * op->rope.x.ld + h * D;
            for (int64_t k = 0; k < half; k++) {
                const float c = cs[2 * k], sn = cs[2 * k + 1];
                const int64_t i0 = neox ? k : 2 * k, i1 = neox ? k + half : 2 * k + 1;
                const float x0 = p[i0], x1 = p[i1];
                p[i0] = x0 * c - x1 * sn;
                p[i1] = x0 * sn + x1 * c;
            }
        }
    }
}

/* K (V: + block_bytes) of position pos of a sequence with this block table, in layer l. */
static uint8_t *kv_at(const ctn_be_kv *kv, int64_t l, const int32_t *table, int64_t pos) {
    const int32_t b = table[pos / kv->block_size];
    const int64_t slot = pos % kv->block_size;
    return kv->data + ((size_t)l * (size_t)kv->n_blocks + (size_t)b) * 2 * kv->block_bytes +
           (size_t)slot * (size_t)kv->kv_dim * kv->elem;
}

static void op_kv_store(cpu_be *be, const ctn_be_op *op, int ith, int nth) {
    const ctn_be_kv *kv = be->g->kv;
    int64_t t0, t1;
    span(be->g->n_tok, ith, nth, 1, &t0, &t1);
    for (int64_t t = t0; t < t1; t++) {
        const ctn_be_tok *tk = &be->g->toks[t];
        uint8_t *kd = kv_at(kv, op->kv_store.layer, tk->table, tk->pos);
        uint8_t *vd = kd + kv->block_bytes;
        const float *k = op->kv_store.k.p + t * op->kv_store.k.ld;
        const float *v = op->kv_store.v.p + t * op->kv_store.v.ld;
        if (kv->type == CTN_TYPE_F16) {
            be->vec->to_f16(kv->kv_dim, (uint16_t *)kd, k);
            be->vec->to_f16(kv->kv_dim, (uint16_t *)vd, v);
        } else {
            memcpy(kd, k, (size_t)kv->kv_dim * sizeof(float));
            memcpy(vd, v, (size_t)kv->kv_dim * sizeof(float));
        }
    }
}

/*
 * Attention of token t for the query heads of KV head kvh: scores over positions 0..pos
 * through the block table, a softmax with the maximum subtracted and the sum in double,
 * then the weighted sum of values.
 */
static void attend(cpu_be *be, const ctn_be_op *op, int64_t t, int64_t kvh, int ith) {
    const ctn_be_kv *kv = be->g->kv;
    const int64_t D = op->attn.head_dim, group = op->attn.n_head / op->attn.n_head_kv;
    const ctn_be_tok *tk = &be->g->toks[t];
    const int64_t n_pos = tk->pos + 1, bs = kv->block_size, n_ctx = be->sz.n_ctx;
    const float kq_scale = 1.0f / sqrtf((float)D);
    float *sc = be->scores + (size_t)ith * (size_t)group * (size_t)n_ctx;
    uint8_t *qc = (uint8_t *)be->qconv + (size_t)ith * (size_t)group * be->qrow;
    const float *qh = op->attn.q.p + t * op->attn.q.ld + kvh * group * D;
    for (int64_t g = 0; g < group; g++)
        be->kv_kern->from_float(qh + g * D, qc + (size_t)g * be->qrow, D);

    /* Scores, one block of positions at a time: its keys are rows kv_dim apart. */
    const size_t krow = (size_t)kv->kv_dim * kv->elem, koff = (size_t)(kvh * D) * kv->elem;
    for (int64_t p0 = 0; p0 < n_pos; p0 += bs) {
        const int64_t np = n_pos - p0 < bs ? n_pos - p0 : bs;
        const uint8_t *kb = kv_at(kv, op->attn.layer, tk->table, p0) + koff;
        be->kv_kern->gemm(D, kb, krow, np, qc, be->qrow, group, sc + p0, (size_t)n_ctx);
    }
    for (int64_t g = 0; g < group; g++)
        be->vec->softmax(n_pos, sc + g * n_ctx, kq_scale);

    /* Values: each block's rows for this KV head, weighted for every head of the group. */
    float *out = op->attn.out.p + t * op->attn.out.ld + kvh * group * D;
    memset(out, 0, (size_t)(group * D) * sizeof *out);
    const ctn_attn_acc_fn acc = kv->type == CTN_TYPE_F16 ? be->attn->acc_f16 : be->attn->acc_f32;
    for (int64_t p0 = 0; p0 < n_pos; p0 += bs) {
        const int64_t np = n_pos - p0 < bs ? n_pos - p0 : bs;
        const uint8_t *vb = kv_at(kv, op->attn.layer, tk->table, p0) + kv->block_bytes + koff;
        acc(D, np, group, vb, (size_t)kv->kv_dim, sc + p0, (size_t)n_ctx, out, (size_t)D);
    }
}

/* Work items (token, KV head), dealt round-robin for balance. */
static void op_attention(cpu_be *be, const ctn_be_op *op, int ith, int nth) {
    const int64_t n_items = be->g->n_tok * op->attn.n_head_kv;
    for (int64_t it = ith; it < n_items; it += nth)
        attend(be, op, it / op->attn.n_head_kv, it % op->attn.n_head_kv, ith);
}

static float *u_plane(cpu_be *be, int plane) {
    return be->lora_u + (size_t)plane * (size_t)be->sz.n_batch * (size_t)be->lora_cap;
}

/*
 * The adapters' first products, u_t = A x_t, for every group's tokens and each of the n
 * products from op on (they read op's input), dealt to the threads in units of (matrix,
 * group, 32 tokens, 8 ranks), into the products' u planes.
 */
static void lora_down(cpu_be *be, const ctn_be_op *op, const step *st, int ith, int nth) {
    const ctn_be_graph *g = be->g;
    int unit = 0;
    for (int k = 0; k < st->n_down; k++) {
        const ctn_be_op *o = op + k;
        float *u = u_plane(be, st[k].plane);
        for (int gi = 0; gi < g->n_lora; gi++) {
            const ctn_be_lora_group *gr = &g->lora[gi];
            const ctn_lora_mat *m = &gr->mats[o->mm.lora_slot];
            for (int32_t t0 = 0; m->rank > 0 && t0 < gr->n; t0 += LORA_UNIT_TOKENS) {
                const int nt = gr->n - t0 < LORA_UNIT_TOKENS ? gr->n - t0 : LORA_UNIT_TOKENS;
                for (int32_t r0 = 0; r0 < m->rank; r0 += LORA_UNIT_RANKS, unit++) {
                    if (unit % nth != ith) continue;
                    const int32_t r1 =
                        m->rank - r0 < LORA_UNIT_RANKS ? m->rank : r0 + LORA_UNIT_RANKS;
                    be->lora_kern->down(m->type, m->a, m->n_in, r0, r1, o->mm.src.p,
                                        o->mm.src.ld, g->lora_tok + gr->start + t0, nt, u,
                                        be->lora_cap);
                }
            }
        }
    }
}

/* The second products, y[t][o] += scale * (B u_t)[o], for this thread's rows r0..r1. */
static void lora_up(cpu_be *be, const ctn_be_op *op, const step *st, int64_t r0, int64_t r1) {
    const ctn_be_graph *g = be->g;
    const float *u = u_plane(be, st->plane);
    for (int gi = 0; gi < g->n_lora; gi++) {
        const ctn_be_lora_group *gr = &g->lora[gi];
        const ctn_lora_mat *m = &gr->mats[op->mm.lora_slot];
        if (m->rank == 0) continue;
        be->lora_kern->up(m->type, m->bt, m->n_out, m->rank, r0, r1, u, be->lora_cap, m->scale,
                          g->lora_sc, g->lora_tok + gr->start, gr->n, op->mm.dst.p,
                          op->mm.dst.ld);
    }
}

static bool has_lora(const cpu_be *be, const ctn_be_op *op) {
    return op->mm.lora_slot >= 0 && op->mm.lora_rows && be->g->n_lora > 0;
}

/* The first phase of a product: its input in the kernel's format, the adapters' first products. */
static void mm_prepare(cpu_be *be, const ctn_be_op *op, const step *st, int ith, int nth) {
    if (st->convert) {
        const ctn_kern *k = op->mm.w->k;
        int64_t lo, hi;
        span(op->mm.n_rows, ith, nth, 1, &lo, &hi);
        for (int64_t r = lo; r < hi; r++)
            k->from_float(op->mm.src.p + r * op->mm.src.ld,
                          (uint8_t *)be->act + (size_t)r * be->act_cap, op->mm.w->d.n_in);
    }
    if (st->n_down > 0) lora_down(be, op, st, ith, nth);
}

/* This thread's output rows of y = W x, the adapters' updates and the epilogue. */
static void mm_rows(cpu_be *be, const ctn_be_op *op, const step *st, int ith, int nth) {
    const ctn_be_weight *w = op->mm.w;
    const int64_t nr = w->d.n_out, n = w->d.n_in, rows = op->mm.n_rows;
    const ctn_be_rows *y = &op->mm.dst;
    int64_t r0, r1;
    span(nr, ith, nth, 16, &r0, &r1);
    if (r0 >= r1) return;
    const uint8_t *wp = (const uint8_t *)w->d.data + (size_t)r0 * w->d.row_bytes;
    for (int64_t c0 = 0; c0 < rows; c0 += COL_BLOCK) {
        const int64_t nc = rows - c0 < COL_BLOCK ? rows - c0 : COL_BLOCK;
        w->k->gemm(n, wp, w->d.row_bytes, r1 - r0, (const uint8_t *)be->act + (size_t)c0 * be->act_cap,
                   be->act_cap, nc, y->p + c0 * y->ld + r0, (size_t)y->ld);
    }
    if (has_lora(be, op)) lora_up(be, op, st, r0, r1);
    const ctn_be_rows *a = &op->mm.aux;
    switch (op->mm.epi) {
    case CTN_EPI_NONE: break;
    case CTN_EPI_BIAS:
        for (int64_t t = 0; t < rows; t++)
            for (int64_t i = r0; i < r1; i++)
                y->p[t * y->ld + i] += op->mm.bias[i];
        break;
    case CTN_EPI_ADD:
        for (int64_t t = 0; t < rows; t++)
            for (int64_t i = r0; i < r1; i++)
                a->p[t * a->ld + i] += y->p[t * y->ld + i];
        break;
    case CTN_EPI_SILU_MUL:
        for (int64_t t = 0; t < rows; t++)
            be->vec->silu_mul(r1 - r0, a->p + t * a->ld + r0, y->p + t * y->ld + r0);
        break;
    }
}

/* Each segment's on one thread, token by token in order (a sum over chunks of a prompt is the
 * same whatever the chunks). */
static void op_pool(cpu_be *be, const ctn_be_op *op, int ith, int nth) {
    float *tmp = be->tmp + (size_t)ith * (size_t)op->pool.width;
    const int64_t E = op->pool.width;
    for (int sg = ith; sg < op->pool.n_segs; sg += nth) {
        const ctn_be_pool_seg *s = &op->pool.segs[sg];
        if (s->mode == 0 || s->out == NULL) continue;
        for (int64_t t = s->t0; t < s->t0 + s->n; t++) {
            const float *x = op->pool.src.p + t * op->pool.src.ld;
            if (s->mode == CTN_BE_POOL_SUM) {
                rmsnorm(x, op->pool.w, E, op->pool.eps, tmp);
                for (int64_t i = 0; i < E; i++)
                    s->out[i] += tmp[i];
            } else if ((s->mode == CTN_BE_POOL_FIRST && t == s->t0) ||
                       (s->mode == CTN_BE_POOL_LAST && t == s->t0 + s->n - 1)) {
                rmsnorm(x, op->pool.w, E, op->pool.eps, s->out);
            }
        }
    }
}

static void work(void *ctx, int ith, int nth) {
    cpu_be *be = ctx;
    const ctn_be_graph *g = be->g;
    for (int i = 0; i < g->n_ops; i++) {
        const ctn_be_op *op = &g->ops[i];
        const step *st = &be->plan[i];
        if (st->barrier) ctn_pool_barrier(be->pool);
        switch (op->kind) {
        case CTN_OP_GET_ROWS: op_get_rows(be, op, ith, nth); break;
        case CTN_OP_ROPE_CACHE: op_rope_cache(be, op, ith, nth); break;
        case CTN_OP_RMS_NORM: op_rms(op, ith, nth); break;
        case CTN_OP_ROPE: op_rope(be, op, ith, nth); break;
        case CTN_OP_KV_STORE: op_kv_store(be, op, ith, nth); break;
        case CTN_OP_ATTENTION: op_attention(be, op, ith, nth); break;
        case CTN_OP_MATMUL:
            mm_prepare(be, op, st, ith, nth);
            if (st->mid_barrier) ctn_pool_barrier(be->pool);
            mm_rows(be, op, st, ith, nth);
            break;
        case CTN_OP_POOL_ROWS: op_pool(be, op, ith, nth); break;
        }
    }
}

/* ---- planning --------------------------------------------------------------------------- */

/* A split: how threads divide a buffer an op touches. */
#define SPLIT_ANY UINT64_MAX
static uint64_t split_tok(int64_t n) {
    return (1ull << 40) | (uint64_t)n;
}
static uint64_t split_outrow(int64_t n) {
    return (2ull << 40) | (uint64_t)n;
}

typedef struct {
    uint64_t w[N_BUFS], r[N_BUFS]; /* splits of the writes and reads since the last barrier */
    /* A phase's touches, checked together and then recorded. */
    int n;
    struct {
        int buf;
        uint64_t split;
        bool write;
    } t[12];
    uint64_t op_writes; /* bit b: the op being planned writes buffer b */
} hazards;

static void touch(hazards *h, int buf, uint64_t split, bool write) {
    h->t[h->n].buf = buf, h->t[h->n].split = split, h->t[h->n].write = write;
    h->n++;
}

static uint64_t merge(uint64_t have, uint64_t s) {
    return have == 0 || have == s ? s : SPLIT_ANY;
}

/* Ends a phase: true when it needs a barrier before it (the state is then reset). */
static bool phase(hazards *h) {
    bool bar = false;
    for (int i = 0; i < h->n && !bar; i++) {
        const int b = h->t[i].buf;
        const uint64_t s = h->t[i].split;
        if (h->w[b] != 0 && (h->w[b] != s || s == SPLIT_ANY)) bar = true;
        if (h->t[i].write && h->r[b] != 0 && (h->r[b] != s || s == SPLIT_ANY)) bar = true;
    }
    if (bar) memset(h->w, 0, sizeof h->w), memset(h->r, 0, sizeof h->r);
    for (int i = 0; i < h->n; i++) {
        const int b = h->t[i].buf;
        if (h->t[i].write) h->op_writes |= 1ull << b;
        if (h->t[i].write) h->w[b] = merge(h->w[b], h->t[i].split);
        else h->r[b] = merge(h->r[b], h->t[i].split);
    }
    h->n = 0;
    return bar;
}

static bool same_src(const ctn_be_op *a, const ctn_be_op *b) {
    return a->mm.src.p == b->mm.src.p && a->mm.src.ld == b->mm.src.ld &&
           a->mm.n_rows == b->mm.n_rows;
}

static void plan(cpu_be *be) {
    const ctn_be_graph *g = be->g;
    const int64_t T = g->n_tok;
    const uint64_t tok = split_tok(T);
    hazards h = {0};
    /* What the activation buffer holds: rows of src (none when act_src is NULL). */
    const float *act_src = NULL;
    int act_buf = -1, act_atype = -1;
    int64_t act_ld = 0, act_width = 0, act_rows = 0;
    int down_left = 0; /* products whose first adapter product an earlier one ran */
    for (int i = 0; i < g->n_ops; i++) {
        const ctn_be_op *op = &g->ops[i];
        step *st = &be->plan[i];
        const int8_t plane = down_left > 0 ? st->plane : 0; /* set by the set's first product */
        memset(st, 0, sizeof *st);
        st->plane = plane;
        h.op_writes = 0;
        switch (op->kind) {
        case CTN_OP_GET_ROWS: touch(&h, op->get_rows.dst.buf, tok, true); break;
        case CTN_OP_ROPE_CACHE: touch(&h, op->rope_cache.dst.buf, tok, true); break;
        case CTN_OP_RMS_NORM: {
            const uint64_t s = split_tok(op->rms.n_rows);
            touch(&h, op->rms.src.buf, op->rms.rows != NULL ? SPLIT_ANY : s, false);
            touch(&h, op->rms.dst.buf, s, true);
            break;
        }
        case CTN_OP_ROPE:
            touch(&h, op->rope.cs.buf, tok, false);
            touch(&h, op->rope.x.buf, tok, false);
            touch(&h, op->rope.x.buf, tok, true);
            break;
        case CTN_OP_KV_STORE:
            touch(&h, op->kv_store.k.buf, tok, false);
            touch(&h, op->kv_store.v.buf, tok, false);
            touch(&h, CTN_BE_BUF_KV, tok, true); /* the cache */
            break;
        case CTN_OP_ATTENTION:
            touch(&h, op->attn.q.buf, SPLIT_ANY, false);
            touch(&h, CTN_BE_BUF_KV, SPLIT_ANY, false);
            touch(&h, op->attn.out.buf, SPLIT_ANY, true);
            break;
        case CTN_OP_POOL_ROWS:
            touch(&h, op->pool.src.buf, SPLIT_ANY, false);
            touch(&h, op->pool.out_buf, SPLIT_ANY, true);
            break;
        case CTN_OP_MATMUL: {
            const ctn_be_weight *w = op->mm.w;
            const bool cached = act_src == op->mm.src.p && act_ld == op->mm.src.ld &&
                                act_atype == w->k->atype && act_width == w->d.n_in &&
                                act_rows == op->mm.n_rows;
            st->convert = !cached;
            if (has_lora(be, op) && down_left == 0) {
                /* This product and the next ones on the same input: first products here. */
                int n = 1;
                while (n < U_PLANES && i + n < g->n_ops) {
                    const ctn_be_op *nx = &g->ops[i + n];
                    if (nx->kind != CTN_OP_MATMUL || !same_src(nx, op) || !has_lora(be, nx)) break;
                    n++;
                }
                st->n_down = (int8_t)n;
                for (int k = 0; k < n; k++)
                    be->plan[i + k].plane = (int8_t)k;
                down_left = n;
            }
            const uint64_t rs = split_tok(op->mm.n_rows);
            bool phase_a = false;
            if (st->convert) {
                touch(&h, op->mm.src.buf, rs, false);
                touch(&h, BUF_ACT, rs, true);
                phase_a = true;
            }
            if (st->n_down > 0) {
                touch(&h, op->mm.src.buf, SPLIT_ANY, false);
                for (int k = 0; k < st->n_down; k++)
                    touch(&h, BUF_U0 + k, SPLIT_ANY, true);
                phase_a = true;
            }
            if (phase_a) st->barrier = phase(&h);
            const uint64_t os = split_outrow(w->d.n_out);
            touch(&h, BUF_ACT, SPLIT_ANY, false);
            if (has_lora(be, op)) touch(&h, BUF_U0 + st->plane, SPLIT_ANY, false);
            touch(&h, op->mm.dst.buf, os, true);
            if (op->mm.epi == CTN_EPI_ADD || op->mm.epi == CTN_EPI_SILU_MUL) {
                touch(&h, op->mm.dst.buf, os, false);
                touch(&h, op->mm.aux.buf, os, false);
                touch(&h, op->mm.aux.buf, os, true);
            }
            if (phase_a) st->mid_barrier = phase(&h);
            else st->barrier = phase(&h);
            if (down_left > 0) down_left--;
            act_src = op->mm.src.p, act_ld = op->mm.src.ld, act_buf = op->mm.src.buf;
            act_atype = w->k->atype, act_width = w->d.n_in, act_rows = op->mm.n_rows;
            goto next; /* its phases are done */
        }
        }
        st->barrier = phase(&h);
    next:
        /* A write to the buffer the activations came from makes them stale. */
        if (act_src != NULL && (h.op_writes >> act_buf & 1)) act_src = NULL;
    }
}

/* ---- the interface ------------------------------------------------------------------------ */

static int cpu_buf_new(ctn_backend *b, size_t bytes, void **out) {
    (void)b;
    *out = ctn__malloc(bytes);
    return *out != NULL ? 0 : CTN_ENOMEM;
}

static void cpu_buf_free(ctn_backend *b, void *p) {
    (void)b;
    free(p);
}

static int cpu_weight_new(ctn_backend *b, const ctn_be_weight_desc *d, ctn_be_weight **out,
                          char *err, size_t errlen) {
    cpu_be *be = (cpu_be *)b;
    *out = NULL;
    const ctn_kern *k = d->f32_act ? ctn_kern_get_f32act(d->type) : ctn_kern_get(d->type);
    if (k == NULL) {
        snprintf(err, errlen, "tensor '%s' has type %s, which the engine has no kernel for",
                 d->name, ctn_type_name(d->type));
        return CTN_ENOTSUP;
    }
    if (d->n_in % k->block != 0) {
        snprintf(err, errlen, "tensor '%s' (%s) has rows of %lld values, not a multiple of %lld",
                 d->name, ctn_type_name(d->type), (long long)d->n_in, (long long)k->block);
        return CTN_ENOTSUP;
    }
    ctn_be_weight *w = ctn__calloc(1, sizeof *w);
    if (w == NULL) goto nomem;
    w->d = *d;
    w->d.name = NULL; /* borrowed, only for messages here */
    w->k = k;
    /*
     * A table read with pread is read a few rows at a time, not through the mapping, whose
     * page faults map whole page-cache folios (tens of KiB) per row and would grow the
     * resident set by megabytes per prompt for no gain.
     */
    if (d->fd >= 0) {
        w->rowbuf = ctn__malloc((size_t)be->n_threads * d->row_bytes);
        if (w->rowbuf == NULL) goto nomem;
    }
    const size_t ab = ctn_kern_act_bytes(k->atype, d->n_in);
    if (ab > be->act_need) be->act_need = ab;
    *out = w;
    return 0;
nomem:
    if (w != NULL) free(w);
    snprintf(err, errlen, "out of memory preparing tensor '%s'", d->name);
    return CTN_ENOMEM;
}

static void cpu_weight_free(ctn_backend *b, ctn_be_weight *w) {
    (void)b;
    if (w == NULL) return;
    free(w->rowbuf);
    free(w);
}

static void free_scratch(cpu_be *be) {
    free(be->act), free(be->scores), free(be->qconv), free(be->tmp), free(be->lora_u);
    free(be->plan);
    be->act = be->scores = be->qconv = be->tmp = be->lora_u = NULL;
    be->plan = NULL;
}

static int cpu_reserve(ctn_backend *b, const ctn_be_sizes *s, char *err, size_t errlen) {
    cpu_be *be = (cpu_be *)b;
    const ctn_kern *kk = s->f32_act ? ctn_kern_get_f32act(s->kv_type) : ctn_kern_get(s->kv_type);
    if (kk == NULL || s->n_head_kv < 1 || s->n_head % s->n_head_kv != 0) {
        snprintf(err, errlen, "no attention kernel for a %s KV cache with %lld heads over %lld",
                 ctn_type_name(s->kv_type), (long long)s->n_head, (long long)s->n_head_kv);
        return CTN_ENOTSUP;
    }
    if (s->head_dim % kk->block != 0) {
        snprintf(err, errlen, "head width %lld is not a multiple of %lld", (long long)s->head_dim,
                 (long long)kk->block);
        return CTN_ENOTSUP;
    }
    const bool same = be->plan != NULL && s->n_batch <= be->sz.n_batch &&
                      s->n_ctx <= be->sz.n_ctx && s->n_head == be->sz.n_head &&
                      s->n_head_kv == be->sz.n_head_kv && s->head_dim == be->sz.head_dim &&
                      s->kv_type == be->sz.kv_type && s->max_ops <= be->max_ops &&
                      s->n_embd <= be->sz.n_embd &&
                      (size_t)((be->act_need + 63) & ~(size_t)63) <= be->act_cap;
    if (same) {
        /* Only the adapters' scratch may grow (once per larger rank, not per step). */
        if (s->lora_rank <= be->lora_cap) return 0;
        float *u = ctn__malloc((size_t)U_PLANES * (size_t)be->sz.n_batch * (size_t)s->lora_rank *
                               sizeof *u);
        if (u == NULL) goto nomem;
        free(be->lora_u);
        be->lora_u = u;
        be->lora_cap = s->lora_rank;
        be->sz.lora_rank = s->lora_rank;
        return 0;
    }
    const size_t T = (size_t)s->n_batch, nt = (size_t)be->n_threads;
    const size_t group = (size_t)(s->n_head / s->n_head_kv);
    const size_t act_cap = (be->act_need + 63) & ~(size_t)63;
    const size_t qrow = ctn_kern_act_bytes(kk->atype, s->head_dim);
    const int32_t rank = s->lora_rank > be->lora_cap ? s->lora_rank : be->lora_cap;
    void *act = ctn__malloc(T * (act_cap > 0 ? act_cap : 64));
    float *scores = ctn__malloc(nt * group * (size_t)s->n_ctx * sizeof(float));
    void *qconv = ctn__malloc(nt * group * qrow);
    float *tmp = ctn__malloc(nt * (size_t)(s->n_embd > 0 ? s->n_embd : 1) * sizeof(float));
    float *u = rank > 0 ? ctn__malloc((size_t)U_PLANES * T * (size_t)rank * sizeof(float)) : NULL;
    step *pl = ctn__malloc((size_t)(s->max_ops > 0 ? s->max_ops : 1) * sizeof *pl);
    if (act == NULL || scores == NULL || qconv == NULL || tmp == NULL || (rank > 0 && u == NULL) ||
        pl == NULL) {
        free(act), free(scores), free(qconv), free(tmp), free(u), free(pl);
        goto nomem;
    }
    free_scratch(be);
    be->act = act, be->scores = scores, be->qconv = qconv, be->tmp = tmp, be->lora_u = u;
    be->plan = pl;
    be->act_cap = act_cap;
    be->qrow = qrow;
    be->kv_kern = kk;
    be->lora_cap = rank;
    be->max_ops = s->max_ops;
    be->sz = *s;
    be->sz.lora_rank = rank;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory for the CPU backend's scratch (batch of %lld tokens)",
             (long long)s->n_batch);
    return CTN_ENOMEM;
}

static int cpu_compute(ctn_backend *b, const ctn_be_graph *g) {
    cpu_be *be = (cpu_be *)b;
    if (be->plan == NULL || g->n_ops > be->max_ops || g->n_tok > be->sz.n_batch) return CTN_EINVAL;
    for (int i = 0; i < g->n_ops; i++)
        if (g->ops[i].kind == CTN_OP_MATMUL && g->ops[i].mm.lora_rows && g->n_lora > 0 &&
            g->ops[i].mm.lora_slot >= 0)
            for (int k = 0; k < g->n_lora; k++)
                if (g->lora[k].mats[g->ops[i].mm.lora_slot].rank > be->lora_cap) return CTN_EINVAL;
    be->g = g;
    plan(be);
    ctn_pool_run(be->pool, work, be);
    be->g = NULL;
    return 0;
}

static void cpu_sync(ctn_backend *b) {
    (void)b; /* compute returns when the pool is done */
}

static int cpu_threads(const ctn_backend *b) {
    return ((const cpu_be *)b)->n_threads;
}

static void cpu_describe(const ctn_backend *b, char *buf, size_t cap) {
    const cpu_be *be = (const cpu_be *)b;
    snprintf(buf, cap, "cpu, %s kernels, %d thread%s", ctn_isa_name(ctn_kern_isa()),
             be->n_threads, be->n_threads == 1 ? "" : "s");
}

static void cpu_free(ctn_backend *b) {
    cpu_be *be = (cpu_be *)b;
    ctn_pool_free(be->pool);
    free_scratch(be);
    free(be);
}

static const ctn_backend_vt cpu_vt = {
    .name = "cpu",
    .free = cpu_free,
    .buf_new = cpu_buf_new,
    .buf_free = cpu_buf_free,
    .weight_new = cpu_weight_new,
    .weight_free = cpu_weight_free,
    .reserve = cpu_reserve,
    .compute = cpu_compute,
    .sync = cpu_sync,
    .threads = cpu_threads,
    .describe = cpu_describe,
};

int ctn_backend_cpu_new(ctn_backend **out, int n_threads, char *err, size_t errlen) {
    *out = NULL;
    if (n_threads < 0 || n_threads > 512) {
        snprintf(err, errlen, "threads %d is outside 1..512", n_threads);
        return CTN_EINVAL;
    }
    cpu_be *be = ctn__calloc(1, sizeof *be);
    if (be == NULL) goto nomem;
    be->base.vt = &cpu_vt;
    be->n_threads = n_threads > 0 ? n_threads : ctn_pool_default_threads();
    be->vec = ctn_vec_get();
    be->attn = ctn_attn_get();
    be->lora_kern = ctn_lora_kern_get();
    int rc = ctn_pool_new(&be->pool, be->n_threads);
    if (rc < 0) {
        free(be);
        snprintf(err, errlen, "could not start the CPU backend's %d threads: %s", n_threads,
                 rc == CTN_ENOMEM ? "out of memory" : "the system refused a thread");
        return rc;
    }
    *out = &be->base;
    return 0;
nomem:
    snprintf(err, errlen, "out of memory for the CPU backend");
    return CTN_ENOMEM;
}

const char *ctn_backend_cpu_isa(void) {
    return ctn_isa_name(ctn_kern_isa());
}
