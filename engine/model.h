/*
 * A model's hyperparameters and weight tensors, read from a GGUF file (arch `llama`, `qwen2`
 * or `qwen3`).
 *
 *     char err[512];
 *     ctn_model *m;
 *     if (ctn_model_load(&m, g, err, sizeof err) < 0) { puts(err); return; }
 *     printf("%lld layers\n", (long long)m->hp.n_layer);
 *     ctn_model_free(m);
 *
 * The model BORROWS the weights: every tensor pointer points into the ctn_gguf (its mmapped
 * data), so the ctn_gguf must outlive the model. Loading checks everything the forward pass
 * relies on, so that the forward pass need not check again: every hyperparameter is
 * present, positive and consistent (heads divide the width, KV heads divide the heads),
 * every tensor is present with exactly the shape the hyperparameters give and a type that
 * ctn_dequantize_row reads (the GGUF reader has checked that rows are whole blocks), and no
 * tensor is left over (a leftover tensor, such as a bias or an expert router, means a
 * variant this path does not compute, as llama.cpp's "wrong number of tensors" check
 * says); llama's optional rope_freqs.weight (per-pair frequency divisors) is read when
 * present. Errors name the key or tensor, what it holds and what was expected: CTN_EFORMAT
 * for a malformed model, CTN_ENOTSUP for a valid one outside what is supported (another
 * architecture, a type without a dequantizer, heads wider than n_embd / n_head where the
 * architecture does not allow it, RoPE scaling other than none).
 *
 * The architectures differ only in what ctn_model_arch lists: the key prefix of the
 * hyperparameters (`llama.`, `qwen2.`, `qwen3.`), the RoPE pairing, whether Q/K/V have
 * biases (qwen2; required here, as every released qwen2 has them), whether Q and K get a
 * per-head RMSNorm (qwen3), whether attention.key_length may set a head width other than
 * n_embd / n_head (qwen3), and whether rope_freqs.weight is read (llama).
 *
 * Shapes below are in ggml order (fastest-varying dimension first), as in the file: a
 * matrix {n_in, n_out} has n_out rows of n_in weights, and y = W x takes one dot product
 * per row.
 */
#ifndef CTN_MODEL_H
#define CTN_MODEL_H

#include <stdbool.h>
#include <stdint.h>

#include "gguf.h"

/* How RoPE pairs the dimensions of a head (ggml's rope modes 0 and 2). */
typedef enum {
    CTN_ROPE_NORM, /* adjacent pairs (2i, 2i + 1): llama */
    CTN_ROPE_NEOX, /* pairs (i, i + n_rot / 2): qwen2, qwen3 */
} ctn_rope_style;

/* What sets one supported architecture apart from llama's layout (static tables in model.c). */
typedef struct {
    const char *name;        /* general.architecture, also the prefix of its keys */
    ctn_rope_style rope;     /* pairing of the rotated dimensions */
    bool qkv_bias;           /* blk.N.attn_{q,k,v}.bias are present */
    bool qk_norm;            /* blk.N.attn_{q,k}_norm.weight: RMSNorm of each head before RoPE */
    bool head_dim_from_keys; /* attention.key_length sets head_dim (else n_embd / n_head) */
    bool rope_freqs;         /* rope_freqs.weight may be present */
} ctn_model_arch;

typedef struct {
    int64_t n_vocab;     /* tokens */
    int64_t n_ctx_train; /* context length the model was trained with (<arch>.context_length) */
    int64_t n_embd;      /* width of the residual stream */
    int64_t n_ff;        /* hidden width of the feed-forward block */
    int64_t n_layer;
    int64_t n_head;    /* query heads */
    int64_t n_head_kv; /* key/value heads (grouped-query attention when < n_head) */
    int64_t head_dim;  /* n_embd / n_head, or attention.key_length where the arch allows */
    int64_t n_rot;     /* leading dimensions of each head that RoPE rotates (even) */
    float norm_eps;    /* RMSNorm epsilon */
    float rope_base;   /* RoPE frequency base */
} ctn_model_hparams;

typedef struct {
    const ctn_gguf_tensor *attn_norm; /* {n_embd} */
    const ctn_gguf_tensor *wq;        /* {n_embd, n_head * head_dim} */
    const ctn_gguf_tensor *wk;        /* {n_embd, n_head_kv * head_dim} */
    const ctn_gguf_tensor *wv;        /* {n_embd, n_head_kv * head_dim} */
    const ctn_gguf_tensor *bq;        /* {n_head * head_dim}, or NULL (no qkv_bias) */
    const ctn_gguf_tensor *bk;        /* {n_head_kv * head_dim}, or NULL */
    const ctn_gguf_tensor *bv;        /* {n_head_kv * head_dim}, or NULL */
    const ctn_gguf_tensor *q_norm;    /* {head_dim}, or NULL (no qk_norm) */
    const ctn_gguf_tensor *k_norm;    /* {head_dim}, or NULL */
    const ctn_gguf_tensor *wo;        /* {n_head * head_dim, n_embd} */
    const ctn_gguf_tensor *ffn_norm;  /* {n_embd} */
    const ctn_gguf_tensor *ffn_gate;  /* {n_embd, n_ff} */
    const ctn_gguf_tensor *ffn_down;  /* {n_ff, n_embd} */
    const ctn_gguf_tensor *ffn_up;    /* {n_embd, n_ff} */
} ctn_model_layer;

typedef struct {
    const ctn_gguf *gguf;       /* borrowed */
    const ctn_model_arch *arch; /* static */
    ctn_model_hparams hp;
    const ctn_gguf_tensor *tok_embd;    /* {n_embd, n_vocab} */
    const ctn_gguf_tensor *output_norm; /* {n_embd} */
    const ctn_gguf_tensor *output;      /* {n_embd, n_vocab}; == tok_embd when tied */
    const ctn_gguf_tensor *rope_freqs;  /* {n_rot / 2} frequency divisors, or NULL */
    ctn_model_layer *layers;            /* (n_layer), owned */
} ctn_model;

/*
 * Reads the hyperparameters and maps the tensors of `g` (borrowed; must outlive the model).
 * On failure *out is NULL, err holds the reason and the code is CTN_EFORMAT, CTN_ENOTSUP
 * or CTN_ENOMEM. The model is freed with ctn_model_free.
 */
int ctn_model_load(ctn_model **out, const ctn_gguf *g, char *err, size_t errlen);
void ctn_model_free(ctn_model *m);

#endif
