/*
 * LoRA adapters: a low-rank update per target matrix, W' = W + scale * B A, with A (rank x
 * n_in) and B (n_out x rank), loaded from a Hugging Face PEFT folder (adapter_config.json
 * and adapter_model.safetensors) or from a llama.cpp GGUF LoRA file (general.type =
 * adapter), checked against the base model they are for.
 *
 *     ctn_lora *a;
 *     if (ctn_lora_load(model, "adapters/support-v2", 64, &a, err, sizeof err) < 0) ...
 *     // a->mats[layer * CTN_LORA_N + CTN_LORA_Q]: rank 0 when the adapter leaves it alone
 *     ctn_lora_free(a);
 *
 * Layout: every matrix is kept in the GGUF orientation of the base model's tensor it
 * updates, so that for an activation row x (n_in values) the update of output row o is
 * scale * sum_r B[o][r] * (sum_i A[r][i] x[i]); A row by row, B transposed. Precision: a
 * 16-bit (F16, BF16) file is held as it is; an F32 file (or a quantized one, widened) is held
 * in F32 beside an F32 base matrix, in BF16 beside a BF16 one and in F16 beside F16 and
 * quantized ones (as vLLM holds adapters in the model's dtype: the base's own rounding is
 * coarser, and each step then reads half the bytes; a matrix with a value beyond F16's
 * range stays F32). Sums and activations are F32 throughout. For Llama-architecture models the rows
 * of q_proj / k_proj updates are permuted the way GGUF conversion permutes the rows of Q and K (the
 * RoPE layout), so a PEFT adapter trained on the Hugging Face model lines up.
 *
 * Scale: lora_alpha / r, or lora_alpha / sqrt(r) with use_rslora (PEFT); for GGUF files
 * adapter.lora.alpha / r (r the rank of each matrix pair). A request's scale multiplies it
 * (0: the base model).
 */
#ifndef CTN_LORA_H
#define CTN_LORA_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "gguf.h"
#include "model.h"
#include "quant.h"

/* The matrices an adapter may update, per layer. */
typedef enum {
    CTN_LORA_Q,    /* attn_q  (HF q_proj) */
    CTN_LORA_K,    /* attn_k  (k_proj) */
    CTN_LORA_V,    /* attn_v  (v_proj) */
    CTN_LORA_O,    /* attn_output (o_proj) */
    CTN_LORA_GATE, /* ffn_gate (gate_proj) */
    CTN_LORA_UP,   /* ffn_up (up_proj) */
    CTN_LORA_DOWN, /* ffn_down (down_proj) */
    CTN_LORA_N
} ctn_lora_target;

/* ctn_lora_mat, one adapter matrix pair, is in kernels/quant.h (the backends read it). */

/* ctn_lora_bt_index and ctn_lora_bt_len, the layout of bt, are in kernels/quant.h (the LoRA
 * products in kernels/ read it). */

/* Element (r, i) of A and (o, r) of B, as floats. */
float ctn_lora_a_at(const ctn_lora_mat *m, int64_t r, int64_t i);
float ctn_lora_b_at(const ctn_lora_mat *m, int64_t o, int64_t r);
/* Bytes of one value of a matrix of this type (4 or 2). */
size_t ctn_lora_type_size(int type);

typedef struct {
    char *path; /* what it was loaded from */
    int32_t n_layer;
    int32_t max_rank;   /* the largest rank among its matrices */
    ctn_lora_mat *mats; /* (n_layer * CTN_LORA_N) */
    size_t bytes;       /* memory held by A and B */
} ctn_lora;

/* The one table of targets (lora.c). Human-readable name of a target ("q_proj" ...), its
 * Hugging Face module path in a decoder layer ("self_attn.q_proj" ...), its GGUF tensor suffix
 * ("attn_q" ...), and the base weight it updates in layer l of m. */
const char *ctn_lora_target_hf(ctn_lora_target t);
const char *ctn_lora_target_hf_module(ctn_lora_target t);
const char *ctn_lora_target_gguf(ctn_lora_target t);
const ctn_gguf_tensor *ctn_lora_target_weight(const ctn_model *m, int64_t l, ctn_lora_target t);

/*
 * Loads the adapter at path (a PEFT folder, or a GGUF LoRA file) for base model m. Errors
 * name the adapter and the tensor or key at fault: a shape that does not match the base
 * tensor, a target module with no GGUF counterpart (PEFT modules_to_save, embeddings,
 * lm_head, or a name that maps to nothing), a rank above max_rank (0: no limit), a missing
 * A or B of a pair, a dtype other than F32/F16/BF16, fan_in_fan_out adapters (Conv1D layers:
 * not for these architectures), an adapter for another architecture. 0, or CTN_EFORMAT /
 * CTN_ENOTSUP / CTN_ERANGE / CTN_ENOENT / CTN_EIO / CTN_ENOMEM with the reason in err.
 */
int ctn_lora_load(const ctn_model *m, const char *path, int32_t max_rank, ctn_lora **out, char *err,
                  size_t errcap);

/*
 * The same loaders on files already in memory (for the fuzzers, and for adapters that do not
 * come from a file): a GGUF LoRA file image, or a PEFT folder's adapter_config.json and
 * adapter_model.safetensors. Both are borrowed for the call only (the adapter copies what it
 * keeps); name stands for the path in messages and in a->path (a PEFT folder's files are
 * named name/adapter_config.json and name/adapter_model.safetensors). The config is read as
 * the file loader reads it, as text up to its first NUL byte, at most 1 MiB. Checks, errors
 * and results are ctn_lora_load's, which goes through the same code.
 */
int ctn_lora_load_gguf_memory(const ctn_model *m, const void *data, size_t size, const char *name,
                              int32_t max_rank, ctn_lora **out, char *err, size_t errcap);
int ctn_lora_load_peft_memory(const ctn_model *m, const char *config, size_t config_len,
                              const void *st, size_t st_len, const char *name, int32_t max_rank,
                              ctn_lora **out, char *err, size_t errcap);
void ctn_lora_free(ctn_lora *a);

/*
 * Writes to out_path the model of g / m (m loaded from g) with a merged in at scale:
 * W' = W + scale * s * B A for every matrix a updates, in each tensor's own type (quantized
 * types are dequantized, updated and quantized again, so they differ from running with the
 * adapter by the quantization error), every other tensor and all metadata copied.
 * (engine/lora_merge.c)
 */
int ctn_lora_merge(const ctn_gguf *g, const ctn_model *m, const ctn_lora *a, float scale,
                   const char *out_path, char *err, size_t errcap);

#endif
