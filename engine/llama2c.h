/*
 * Conversion of a llama2.c checkpoint and its tokenizer to GGUF, writing what llama.cpp's
 * examples/convert-llama2c-to-ggml writes for the same pair.
 *
 *     char err[512];
 *     if (ctn_llama2c_convert("stories260K.bin", "tok512.bin", "out.gguf", err, sizeof err) < 0)
 *         fprintf(stderr, "%s\n", err);
 *
 * Both inputs are llama2.c's native formats (host byte order, little-endian in practice):
 *
 *   checkpoint: 7 int32 (dim, hidden_dim, n_layers, n_heads, n_kv_heads, vocab_size,
 *               seq_len; a negative vocab_size means the classifier is not shared with the
 *               token embedding), then float32 token_embedding (vocab, dim), rms_att
 *               (layer, dim), wq (layer, dim, dim), wk and wv (layer, kv_dim, dim), wo
 *               (layer, dim, dim), rms_ffn (layer, dim), w1 (layer, hidden, dim), w2
 *               (layer, dim, hidden), w3 (layer, hidden, dim), rms_final (dim),
 *               freq_cis_real and freq_cis_imag (seq_len * head_size / 2 each, skipped),
 *               and wcls (vocab, dim) when unshared. The file must be exactly that long.
 *   tokenizer:  int32 max_token_length, then vocab_size times: float32 score, int32 len,
 *               len bytes. Each len must be in 0..max_token_length; nothing may follow.
 *
 * Every field is validated; a malformed input gives CTN_EFORMAT and a message naming the
 * file, the field and its byte offset. Weights are copied verbatim (llama2.c stores Q and K
 * in the interleaved-pair RoPE layout that llama.cpp's "llama" architecture expects, so no
 * row permutation is applied, and llama.cpp's converter applies none either).
 */
#ifndef CTN_LLAMA2C_H
#define CTN_LLAMA2C_H

#include <stddef.h>

#include "gguf.h"

/*
 * Parses a checkpoint image and a tokenizer image already in memory and adds the model's
 * metadata and tensors to `w`. The names are used in messages in place of file names.
 * Metadata is copied into the writer; tensor data is BORROWED from `model`, which must stay
 * valid until the writer has written. On failure the writer may hold part of the model and
 * should be freed. Returns 0, CTN_EFORMAT, CTN_ENOMEM or CTN_EINVAL.
 */
int ctn_llama2c_to_gguf(ctn_gguf_writer *w, const void *model, size_t model_size,
                        const char *model_name, const void *tok, size_t tok_size,
                        const char *tok_name, char *err, size_t errlen);

/* Reads the two files (mapped read-only) and writes the GGUF file `out_path`. */
int ctn_llama2c_convert(const char *model_path, const char *tok_path, const char *out_path,
                        char *err, size_t errlen);

#endif
