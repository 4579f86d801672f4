/*
 * The backend interface: how the forward pass (engine/forward.c) asks for compute, in the
 * style of ggml's backends. A backend owns its memory (buffers), prepares weights once
 * (weight_new), sizes its scratch once (reserve), and runs a recorded list of operations
 * (compute) over buffers it handed out. The forward pass records ops and never calls a
 * kernel itself, so the CUDA backend plugs in beside the CPU one without touching it.
 *
 *     char err[160];
 *     ctn_backend *be;
 *     if (ctn_backend_cpu_new(&be, 2, err, sizeof err) < 0) return;  // 0: one thread per CPU
 *     const ctn_be_sizes sz = {.n_batch = 1, .n_ctx = 1, .n_embd = 4, .n_head = 1,
 *                              .n_head_kv = 1, .head_dim = 32, .max_ops = 1,
 *                              .kv_type = CTN_TYPE_F32};
 *     float *x = NULL;
 *     if (be->vt->reserve(be, &sz, err, sizeof err) == 0 &&
 *         be->vt->buf_new(be, 4 * sizeof(float), (void **)&x) == 0) {  // activation memory
 *         static const float w[4] = {1, 1, 1, 1};
 *         for (int i = 0; i < 4; i++) x[i] = (float)i;
 *         const ctn_be_rows r = {.p = x, .ld = 4, .buf = 1};
 *         const ctn_be_op op = {.kind = CTN_OP_RMS_NORM,
 *                               .rms = {.src = r, .dst = r, .n_rows = 1, .n_grp = 1,
 *                                       .width = 4, .w = w, .eps = 1e-5f}};
 *         be->vt->compute(be, &(ctn_be_graph){.ops = &op, .n_ops = 1});
 *         be->vt->sync(be);  // x is now normalised in place
 *         be->vt->buf_free(be, x);
 *     }
 *     ctn_backend_free(be);
 *
 * Ordering. Ops run in the order given, as if one after the other. A backend may overlap
 * them where no op reads or writes what an earlier one writes (or writes what it reads):
 * each operand names its buffer (a small integer, ctn_be_rows.buf) for that. The CPU backend
 * runs the whole list in one call of its thread pool and puts a barrier only between ops whose
 * threads share data (cpu/backend_cpu.c).
 *
 * Addresses. Pointers in ops are the backend's: host pointers on the CPU; a device backend
 * returns device addresses from buf_new and reads weights and host inputs (token ids, the
 * batch's block tables) at compute time.
 */
#ifndef CTN_BACKEND_H
#define CTN_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "quant.h"

/* Buffers an op can name (ctn_be_rows.buf): 0 .. CTN_BE_USER_BUFS - 1, the KV cache being
 * CTN_BE_BUF_KV; the backend keeps the ids above for its own scratch. */
#define CTN_BE_USER_BUFS 24
#define CTN_BE_BUF_KV    0

/* Rows of floats: row r at p + r * ld, in buffer buf. */
typedef struct {
    float *p;
    int64_t ld;
    int buf;
} ctn_be_rows;

/* A weight matrix of n_out rows of n_in values of type (kernels/types.h), row-major at data
 * (row_bytes apart). When fd >= 0, get_rows may read rows from that file at file_off instead
 * of touching the mapping (cold embedding tables). */
typedef struct {
    const char *name; /* for messages (NUL-terminated; not kept) */
    int type;
    int64_t n_in, n_out;
    const void *data;
    size_t row_bytes;
    int fd;
    uint64_t file_off;
    /* Multiply with the activations in F32, the weight's blocks dequantized (the exact
     * product of the stored weights), instead of converting the activations to the type's
     * dot-product format (Q8_0, Q8_K, F16, ...) as llama.cpp does. Slower; more exact. */
    bool f32_act;
} ctn_be_weight_desc;

typedef struct ctn_be_weight ctn_be_weight; /* a weight prepared by a backend */

/* The paged KV cache as the kernels see it: layer l, block b holds K then V, each
 * block_size positions of kv_dim elements of type (F16 or F32) (engine/kvcache.h). */
typedef struct {
    uint8_t *data;
    int type;
    size_t elem;
    int32_t block_size;
    int32_t n_blocks;
    size_t block_bytes;
    int64_t kv_dim;
} ctn_be_kv;

/* One token of a batch: its id, position and its sequence's block table. */
typedef struct {
    int32_t id;
    int32_t seg;
    int64_t pos;
    const int32_t *table;
} ctn_be_tok;

/* The tokens of a batch that run with one adapter: tok[start .. start + n) of the batch's
 * LoRA token list, with mats (n_layer * CTN_LORA_N matrices, kernels/quant.h). */
typedef struct {
    const ctn_lora_mat *mats;
    int32_t start, n;
} ctn_be_lora_group;

typedef enum {
    CTN_OP_GET_ROWS,   /* dst row t = weight row toks[t].id, as floats */
    CTN_OP_ROPE_CACHE, /* cos and sin of every token's angles */
    CTN_OP_RMS_NORM,   /* dst = src / rms(src) * w, per group of each row */
    CTN_OP_ROPE,       /* rotates the heads of each row by its token's angles */
    CTN_OP_KV_STORE,   /* K and V rows into the cache at each token's position */
    CTN_OP_ATTENTION,  /* causal attention of each token over its sequence's cache */
    CTN_OP_MATMUL,     /* dst = W src (+ the adapters' updates), then an epilogue */
    CTN_OP_POOL_ROWS,  /* normalised hidden states of a segment into its embedding */
} ctn_be_op_kind;

typedef enum {
    CTN_EPI_NONE,
    CTN_EPI_BIAS,     /* dst[t][o] += bias[o] */
    CTN_EPI_ADD,      /* aux[t][o] += dst[t][o] (a residual) */
    CTN_EPI_SILU_MUL, /* aux[t][o] = silu(aux[t][o]) * dst[t][o] */
} ctn_be_epilogue;

/* How a segment's hidden states become its embedding (CTN_OP_POOL_ROWS). */
typedef enum { CTN_BE_POOL_SUM = 1, CTN_BE_POOL_FIRST, CTN_BE_POOL_LAST } ctn_be_pool_mode;

typedef struct {
    float *out;  /* (width) */
    int mode;    /* ctn_be_pool_mode, or 0: none */
    int64_t t0, n; /* its tokens in the batch */
} ctn_be_pool_seg;

typedef struct {
    ctn_be_op_kind kind;
    union {
        struct {
            const ctn_be_weight *w;
            ctn_be_rows dst;
        } get_rows;
        struct {
            const float *inv_freq; /* (n_rot / 2) */
            const float *div;      /* (n_rot / 2) divisors (rope_freqs), or NULL */
            int64_t half;          /* n_rot / 2 */
            ctn_be_rows dst;       /* (n_tok, half, 2): cos, sin */
        } rope_cache;
        struct {
            ctn_be_rows src, dst;
            const int64_t *rows; /* dst row i normalises src row rows[i]; NULL: row i */
            int64_t n_rows;
            int64_t n_grp, width; /* each row: n_grp groups of width floats */
            const float *w;       /* (width) */
            float eps;
        } rms;
        struct {
            ctn_be_rows x;  /* (n_tok, n_heads * head_dim), rotated in place */
            ctn_be_rows cs; /* from CTN_OP_ROPE_CACHE */
            int64_t n_heads, head_dim, half;
            bool neox; /* pairs (k, k + half), else (2k, 2k + 1) */
        } rope;
        struct {
            int64_t layer;
            ctn_be_rows k, v; /* (n_tok, kv_dim) */
        } kv_store;
        struct {
            int64_t layer;
            ctn_be_rows q, out; /* (n_tok, n_head * head_dim) */
            int64_t n_head, n_head_kv, head_dim;
        } attn;
        struct {
            const ctn_be_weight *w;
            ctn_be_rows src, dst; /* (n_rows, n_in) -> (n_rows, n_out) */
            int64_t n_rows;
            int lora_slot;   /* index in each group's mats, or -1: no adapters */
            bool lora_rows;  /* rows are the batch's tokens (the adapters apply) */
            ctn_be_epilogue epi;
            const float *bias; /* CTN_EPI_BIAS: (n_out) */
            ctn_be_rows aux;   /* CTN_EPI_ADD, CTN_EPI_SILU_MUL */
        } mm;
        struct {
            ctn_be_rows src;
            const float *w; /* the output norm */
            int64_t width;
            float eps;
            const ctn_be_pool_seg *segs;
            int n_segs;
            int out_buf; /* the buffer id the embeddings count as */
        } pool;
    };
} ctn_be_op;

/* A batch and the ops to run on it. */
typedef struct {
    const ctn_be_op *ops;
    int n_ops;
    const ctn_be_tok *toks; /* (n_tok) */
    int64_t n_tok;
    const ctn_be_kv *kv;
    const ctn_be_lora_group *lora; /* (n_lora) groups, tokens in lora_tok, scales per token */
    int n_lora;
    const int32_t *lora_tok;
    const float *lora_sc;
} ctn_be_graph;

/* What reserve sizes the scratch for: the largest batch and context. */
typedef struct {
    int64_t n_batch, n_ctx;
    int64_t n_embd; /* the widest row CTN_OP_POOL_ROWS pools */
    int64_t n_head, n_head_kv, head_dim;
    int max_ops; /* the longest op list compute is given */
    int kv_type;
    int32_t lora_rank; /* the largest adapter rank a batch may carry (0: none yet) */
    bool f32_act;      /* attention's queries stay F32 against an F16 cache (as f32_act above) */
} ctn_be_sizes;

typedef struct ctn_backend ctn_backend;

typedef struct {
    const char *name;
    void (*free)(ctn_backend *be);
    /* Memory for activations, 64-byte aligned. 0 or CTN_ENOMEM. */
    int (*buf_new)(ctn_backend *be, size_t bytes, void **out);
    void (*buf_free)(ctn_backend *be, void *p);
    /* Prepares a weight (a kernel for its type, or CTN_ENOTSUP with a message naming it). */
    int (*weight_new)(ctn_backend *be, const ctn_be_weight_desc *d, ctn_be_weight **out,
                      char *err, size_t errlen);
    void (*weight_free)(ctn_backend *be, ctn_be_weight *w);
    /* Sizes the scratch; called again with larger sizes it grows (and on failure keeps what it
     * had). 0, CTN_ENOMEM or CTN_ENOTSUP, with a message. */
    int (*reserve)(ctn_backend *be, const ctn_be_sizes *s, char *err, size_t errlen);
    /* Runs the ops (after reserve). 0, or a CTN_E* code. */
    int (*compute)(ctn_backend *be, const ctn_be_graph *g);
    /* Returns when every op given to compute has finished. */
    void (*sync)(ctn_backend *be);
    /* Threads (CPU) or streams the backend computes with. */
    int (*threads)(const ctn_backend *be);
    /* One line about what it runs on ("cpu, avx2 kernels, 2 threads"). */
    void (*describe)(const ctn_backend *be, char *buf, size_t cap);
} ctn_backend_vt;

struct ctn_backend {
    const ctn_backend_vt *vt;
};

/* The CPU backend (cpu/backend_cpu.c): the reference. n_threads 0 = one per CPU this
 * process may use, else 1..512. 0, CTN_EINVAL or CTN_ENOMEM with a message. */
int ctn_backend_cpu_new(ctn_backend **out, int n_threads, char *err, size_t errlen);
void ctn_backend_free(ctn_backend *be);

/* The name of the CPU kernels in use ("avx2", "avx512", ...; kernels/cpu/kern.h). */
const char *ctn_backend_cpu_isa(void);

/* What this build has: CUDA compiled in, and CUDA devices usable now (0 without). */
bool ctn_backend_cuda_built(void);
int ctn_backend_cuda_devices(void);
/* One human-readable line, e.g. "CPU: on; CUDA: off (this build has no CUDA backend)". */
void ctn_backend_describe(char *buf, size_t cap);

#endif
