/*
 * The engine's forward pass: a `llama`, `qwen2` or `qwen3` model over the paged KV cache,
 * on a pool of threads, for a batch of token runs from one or more sequences.
 *
 *     ctn_fwd_params p = {0};                          // defaults: see the fields
 *     ctn_fwd *f;
 *     if (ctn_fwd_new(&f, model, &p, err, sizeof err) < 0) ...
 *     ctn_kv_seq seq;
 *     ctn_fwd_seq_init(f, &seq);
 *     ctn_fwd_seg seg = {.seq = &seq, .tokens = prompt, .n_tokens = n_prompt, .logits = true};
 *     ctn_fwd_run(f, &seg, 1, logits);                 // prefill: logits of the last token
 *     seg = (ctn_fwd_seg){.seq = &seq, .tokens = &next, .n_tokens = 1, .logits = true};
 *     ctn_fwd_run(f, &seg, 1, logits);                 // one decode step
 *     ctn_fwd_seq_close(f, &seq);
 *     ctn_fwd_free(f);
 *
 * One call is one pass over the weights: every token of every segment goes through each
 * matrix together (matrix-matrix for a prompt or a batch, matrix-vector for one token), and
 * attention runs per segment through its sequence's block table. The math is the reference
 * forward pass's (ref_forward.h) with the kernels of kern.h: activations are converted to the
 * weight type's dot-product format first, as llama.cpp does, and with an F16 KV cache the
 * query is rounded to F16 for the scores as llama.cpp does. The result for a token does not
 * depend on the other segments in the batch (see kern.h on batch invariance).
 *
 * Memory: the KV pool, activations for n_batch tokens and the threads are made by
 * ctn_fwd_new; ctn_fwd_run allocates nothing.
 */
#ifndef CTN_FORWARD_H
#define CTN_FORWARD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "kvcache.h"
#include "lora.h"
#include "model.h"

typedef struct {
    int n_threads;    /* 0: the CPUs this process may use */
    int64_t n_ctx;    /* positions per sequence; 0: the model's, at most 4096 */
    int64_t n_batch;  /* tokens per ctn_fwd_run; 0: 512 */
    bool kv_f32;      /* keep the KV cache in F32 instead of F16 */
    size_t kv_memory; /* bytes for the KV pool; 0: one sequence of n_ctx positions */
    int32_t kv_block; /* positions per KV block; 0: 16 */
    /* Matrix products and attention scores with F32 activations against the dequantized
     * weight blocks (and F16 keys): the exact product of the quantized model, without the
     * activations' Q8_0 / Q8_K / F16 rounding that llama.cpp's kernels (and catena's
     * default ones) add. Slower (F32 arithmetic); for judging a quantization. */
    bool f32_act;
} ctn_fwd_params;

typedef struct ctn_fwd ctn_fwd;

/* What a segment's final hidden states (after the output norm) go into, for embeddings. */
typedef enum {
    CTN_EMBD_NONE,  /* nothing */
    CTN_EMBD_SUM,   /* embd += every token's state, in token order (mean pooling) */
    CTN_EMBD_FIRST, /* embd = the first token's state (CLS pooling) */
    CTN_EMBD_LAST,  /* embd = the last token's state (last-token pooling) */
} ctn_embd_mode;

/* A run of tokens appended to a sequence at its next positions. */
typedef struct {
    ctn_kv_seq *seq;
    const int32_t *tokens; /* (n_tokens) borrowed for the call */
    int64_t n_tokens;
    bool logits; /* write the logits of the segment's last token */
    /* Logits of more than the last token, for scoring a text (perplexity): n > 0 writes the
     * rows of the segment's last n tokens (1..n_tokens), in token order, whatever `logits`
     * says; 0 leaves it to `logits`. */
    int64_t n_logits;
    int embd_mode; /* ctn_embd_mode */
    float *embd;   /* (n_embd) caller memory, for embd_mode other than NONE */
    /* A LoRA adapter for these tokens (borrowed for the call; NULL: the base model) and the
     * request's scale on it (0: the base model). Its update is added to each target matrix's
     * output row by row (x A^T, then B, in F32), so a token's result does not depend on
     * which other adapters share the batch. */
    const ctn_lora *lora;
    float lora_scale;
} ctn_fwd_seg;

/*
 * Prepares a forward pass of model m (borrowed; must outlive it). 0, or CTN_EINVAL (bad
 * parameters), CTN_ENOTSUP (a weight type without a kernel, named with its tensor) or
 * CTN_ENOMEM, with the reason in err.
 */
int ctn_fwd_new(ctn_fwd **out, const ctn_model *m, const ctn_fwd_params *p, char *err,
                size_t errlen);
void ctn_fwd_free(ctn_fwd *f);
/* Why the last ctn_fwd_run failed. */
const char *ctn_fwd_errmsg(const ctn_fwd *f);

const ctn_model *ctn_fwd_model(const ctn_fwd *f);
ctn_kv_pool *ctn_fwd_kv(ctn_fwd *f);
int64_t ctn_fwd_n_ctx(const ctn_fwd *f);
int64_t ctn_fwd_n_batch(const ctn_fwd *f);
int ctn_fwd_threads(const ctn_fwd *f);

/* A sequence of n_ctx positions in f's KV pool (init/close). 0, CTN_ENOMEM. */
int ctn_fwd_seq_init(ctn_fwd *f, ctn_kv_seq *s);
void ctn_fwd_seq_close(ctn_fwd *f, ctn_kv_seq *s);

/*
 * Runs the segments (each sequence at most once), appending their tokens to their
 * sequences, and writes the logits rows the segments ask for (n_vocab floats each: one for
 * `logits`, n_logits for n_logits > 0), in segment order and within a segment in token
 * order, to `logits` (caller memory for that many rows; NULL when none asks). A row is the
 * same bits whether it comes alone or among n_logits rows. Returns 0 or:
 *   CTN_EINVAL  no tokens, more than n_batch tokens, a token outside the vocabulary, a
 *               sequence twice, or n_logits outside 0..n_tokens;
 *   CTN_ERANGE  a sequence would pass its context length; or the logits hold NaN or
 *               infinity (the weights or inputs overflowed);
 *   CTN_ENOMEM  the KV pool has too few free blocks.
 * On an error other than the last kind nothing has changed; ctn_fwd_errmsg says which
 * segment and token. After a NaN error the segments' positions are consumed.
 */
int ctn_fwd_run(ctn_fwd *f, const ctn_fwd_seg *segs, int n_segs, float *logits);

#endif
