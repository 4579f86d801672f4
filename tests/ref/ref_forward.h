/*
 * The scalar reference forward pass of a `llama`, `qwen2` or `qwen3` model: one token of one
 * sequence at a time.
 *
 *     ctn_ref_state s;
 *     if (ctn_ref_state_init(&s, model, 512) < 0) return CTN_ENOMEM;
 *     for (int64_t pos = 0; pos < n; pos++)
 *         if (ctn_ref_forward(model, &s, ids[pos], pos, logits) < 0)
 *             puts(ctn_ref_state_errmsg(&s));
 *     ctn_ref_state_close(&s);
 *
 * This is the plain, obviously correct path that the fast kernels are checked against, not
 * the engine: each weight row is dequantized into a scratch row and dotted with the input
 * (never a whole matrix at once), attention runs over a contiguous F32 KV cache, and the
 * steps follow llama.cpp's llm_build_llama one for one: embedding row, then per layer
 * RMSNorm, Q/K/V projections (plus their biases for qwen2; then an RMSNorm of each Q and K
 * head for qwen3), RoPE (llama's adjacent-pair rotation, NeoX's split-half rotation for
 * qwen2/qwen3), grouped-query attention with a causal softmax, output projection, residual,
 * RMSNorm, SwiGLU feed-forward, residual; then the final RMSNorm and the output projection
 * to logits.
 *
 * Precision: dot products accumulate in float, as llama2.c and ggml's CPU kernels do for
 * F32 weights; the RMSNorm sum of squares and the softmax denominator accumulate in double,
 * as ggml does (ggml_float). Nothing more is needed to reproduce llama.cpp's greedy output
 * on the test models, and keeping the reference at the precision of the kernels it judges
 * keeps the comparison honest. (For quantized weights llama.cpp also quantizes the
 * activations to Q8 before the dot product; this reference does not, so it is the more
 * exact of the two.)
 *
 * All memory (KV cache, activations, scratch row) is allocated by init; the forward pass
 * allocates nothing. A state lives in caller memory (init/close pair), borrows the model,
 * and is used by one thread at a time.
 */
#ifndef CTN_REF_FORWARD_H
#define CTN_REF_FORWARD_H

#include <stdint.h>

#include "model.h"

typedef struct {
    const ctn_model *model; /* borrowed */
    int64_t n_ctx;          /* positions the KV cache holds */
    float *k_cache;         /* (n_layer, n_ctx, n_head_kv * head_dim) */
    float *v_cache;         /* (n_layer, n_ctx, n_head_kv * head_dim) */
    float *x;               /* (n_embd) residual stream */
    float *xn;              /* (n_embd) normalised input of a block */
    float *q;               /* (n_head * head_dim) queries */
    float *att_out;         /* (n_head * head_dim) attention output, heads concatenated */
    float *proj;            /* (n_embd) output of a projection back to the residual */
    float *gate;            /* (n_ff) */
    float *up;              /* (n_ff) */
    float *scores;          /* (n_ctx) attention weights of one head */
    float *row;             /* (widest matrix row) one dequantized weight row */
    char errmsg[160];       /* why the last call failed */
} ctn_ref_state;

/*
 * Allocates the KV cache for n_ctx positions (1 .. 2^24) and the activations. Returns 0,
 * CTN_EINVAL for a bad n_ctx or CTN_ENOMEM (the state then holds nothing to close, but
 * closing it is harmless).
 */
int ctn_ref_state_init(ctn_ref_state *s, const ctn_model *m, int64_t n_ctx);
void ctn_ref_state_close(ctn_ref_state *s);
const char *ctn_ref_state_errmsg(const ctn_ref_state *s);

/*
 * Runs token `token` of model `m` (the model the state was made for) at position `pos`, writing its
 * K and V into the cache at `pos` and attending over positions 0..pos (which earlier calls must
 * have filled), and writes n_vocab logits (caller memory). Returns 0, CTN_ERANGE when pos is
 * outside 0..n_ctx-1, or CTN_EINVAL for a token outside 0..n_vocab-1 or another model than the
 * state's; the reason is in ctn_ref_state_errmsg.
 */
int ctn_ref_forward(const ctn_model *m, ctn_ref_state *s, int32_t token, int64_t pos,
                    float *logits);

#endif
