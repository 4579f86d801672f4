/*
 * llama.cpp's tokenizer, loaded at run time with dlopen() so that catena builds and tests
 * without it. Used by bench/llamacpp_tok.c and tests/compat/tokdiff.c as the reference, and
 * (whole models) by tests/compat/fwddiff.c and the speed harness bench/llamacpp_gen.c.
 *
 *     char err[512];
 *     if (lcpp_lib_open(NULL, err, sizeof err) < 0) { puts(err); return 77; }
 *     lcpp_vocab *v;
 *     if (lcpp_vocab_open(&v, "ggml-vocab-qwen2.gguf", err, sizeof err) < 0) ...
 *     int32_t *ids; size_t n;
 *     lcpp_tokenize(v, text, len, false, false, &ids, &n);  // ids borrowed from v
 *     lcpp_vocab_free(v);
 *
 * Only the few llama.h functions needed here are declared, with our own prototypes that
 * match the ABI of llama.cpp as shipped by node-llama-cpp 3.22.1 (libllama.v0.5.0.so).
 * The library directory holds libggml-base.so, libggml*.so and libllama*.so; they are
 * opened by full path in dependency order, so LD_LIBRARY_PATH is not needed. A vocab-only
 * model needs no ggml backend, so the CPU backend libraries are never loaded.
 */
#ifndef CTN_BENCH_LLAMACPP_DL_H
#define CTN_BENCH_LLAMACPP_DL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Where scripts/setup-peers.sh installs the libraries, relative to the repository root. */
#define LCPP_DEFAULT_LIBDIR "bench/node_modules/@node-llama-cpp/linux-x64/bins/linux-x64"
/* Environment variable that overrides the default directory. */
#define LCPP_LIBDIR_ENV "CATENA_LLAMA_LIBDIR"

/* llama_vocab_type values. */
enum { LCPP_VOCAB_NONE = 0, LCPP_VOCAB_SPM = 1, LCPP_VOCAB_BPE = 2 };

typedef struct lcpp_vocab lcpp_vocab;

/*
 * Loads the libraries once per process. dir NULL means $CATENA_LLAMA_LIBDIR, else
 * LCPP_DEFAULT_LIBDIR. Returns 0, or -1 with the reason in err (the caller treats that as
 * "peer unavailable"). Calling it again after success does nothing.
 */
int lcpp_lib_open(const char *dir, char *err, size_t errlen);

/* Loads a vocabulary-only model. Returns 0 or -1 with the reason in err. */
int lcpp_vocab_open(lcpp_vocab **out, const char *path, char *err, size_t errlen);
void lcpp_vocab_free(lcpp_vocab *v);
int lcpp_vocab_type(const lcpp_vocab *v);
int32_t lcpp_vocab_n_tokens(const lcpp_vocab *v);

/*
 * llama_tokenize into a buffer owned by v (valid until the next call on v; grown as
 * needed, never shrunk). Returns 0, or -1 if llama.cpp fails or memory runs out.
 */
int lcpp_tokenize(lcpp_vocab *v, const char *text, size_t len, bool add_special,
                  bool parse_special, const int32_t **ids, size_t *n_ids);

/* llama_detokenize into a buffer owned by v, NUL-terminated. Returns 0 or -1. */
int lcpp_detokenize(lcpp_vocab *v, const int32_t *ids, size_t n, bool remove_special,
                    bool unparse_special, const char **text, size_t *len);

/* llama_token_to_piece: the full piece length (may exceed cap), or negative on error. */
int lcpp_token_to_piece(const lcpp_vocab *v, int32_t id, char *buf, size_t cap, int lstrip,
                        bool special);

/*
 * A whole model with one inference context on the CPU backend, for comparing logits
 * (tests/compat/fwddiff.c):
 *
 *     lcpp_model *m;
 *     if (lcpp_model_open(&m, "model.gguf", 64, err, sizeof err) < 0) ...
 *     const float *logits;
 *     for (int32_t pos = 0; pos < n; pos++) lcpp_model_decode(m, ids[pos], pos, &logits);
 *     lcpp_model_free(m);
 *
 * The first call loads ggml's CPU backends (libggml-cpu-*.so) from the library directory.
 * The context runs one thread, keeps its KV cache in F32 and has flash attention off, so
 * that llama.cpp's own rounding is as small as its CPU kernels allow.
 */
typedef struct lcpp_model lcpp_model;

/* Loads path with its weights and makes a context of n_ctx positions. 0 or -1 (err). */
int lcpp_model_open(lcpp_model **out, const char *path, uint32_t n_ctx, char *err,
                    size_t errlen);
void lcpp_model_free(lcpp_model *m);
int32_t lcpp_model_n_vocab(const lcpp_model *m);

/*
 * Decodes one token of sequence 0 at position pos (positions must follow on from the last
 * call, or start again at 0 after lcpp_model_clear) and points *logits at its n_vocab
 * logits, owned by llama.cpp and valid until the next call. Returns 0 or -1.
 */
int lcpp_model_decode(lcpp_model *m, int32_t token, int32_t pos, const float **logits);

/* Empties the KV cache: every sequence's cells. */
void lcpp_model_clear(lcpp_model *m);

/*
 * The same, set up for timing (bench/llamacpp_gen.c): a context of n_ctx positions whose
 * batches take up to n_batch tokens in one graph (n_batch and n_ubatch are both set to it,
 * so a prompt of up to n_batch tokens is one llama_decode and one ubatch), computed with
 * n_threads threads (llama_context_params n_threads and n_threads_batch). Everything else
 * is llama.cpp's default, as a user of llama.cpp gets it: in this version (node-llama-cpp
 * 3.22.1, llama_context_default_params) the KV cache is F16 (type_k = type_v = GGML_TYPE_F16)
 * and flash_attn_type is LLAMA_FLASH_ATTN_TYPE_AUTO, which llama.cpp resolves when it makes
 * the context: enabled when the backend runs the flash-attention op on the layer's device,
 * which the CPU backend does, so flash attention is on. The token buffers of a batch are
 * allocated here, once, so decoding allocates nothing of ours.
 */
int lcpp_model_open_bench(lcpp_model **out, const char *path, uint32_t n_ctx, uint32_t n_batch,
                          int32_t n_threads, char *err, size_t errlen);

/*
 * Decodes n tokens (1 <= n <= the n_batch the model was opened with) of sequence 0 at
 * positions pos0 .. pos0 + n - 1 as one llama_decode, asking for the logits of the last
 * token only, and points *logits at them (n_vocab floats owned by llama.cpp, valid until
 * the next call). Only for a model opened with lcpp_model_open_bench. Returns 0 or -1.
 */
int lcpp_model_decode_batch(lcpp_model *m, const int32_t *tokens, int32_t n, int32_t pos0,
                            const float **logits);

/*
 * The same as lcpp_model_open_bench for several sequences decoded together
 * (llamacpp_gen --parallel): the context holds n_seq_max sequences (llama_context_params
 * n_seq_max) in n_ctx positions in all. kv_unified is llama_context_params.kv_unified: true
 * makes one KV buffer that every sequence's tokens index (each sequence may use any of the
 * n_ctx cells, and attention runs over the cells of all sequences, masked); false, llama.cpp's
 * default, gives each sequence its own stream of n_ctx / n_seq_max cells (rounded up to a
 * multiple of 256 by llama.cpp), so attention reads only that sequence's cells. A batch may
 * hold up to n_batch tokens (n_batch >= the number of sequences decoded in one step).
 */
int lcpp_model_open_par(lcpp_model **out, const char *path, uint32_t n_ctx, uint32_t n_batch,
                        uint32_t n_seq_max, bool kv_unified, int32_t n_threads, char *err,
                        size_t errlen);

/*
 * Decodes n tokens (1 <= n <= n_batch) as one llama_decode: token i belongs to sequence
 * seq_ids[i] (< the model's n_seq_max) at position pos[i]. Logits are computed for every token
 * when all_logits, else for the last one only; read them with lcpp_model_logits. The arrays
 * are copied (borrowed for the call only). Only for a model opened with lcpp_model_open_bench
 * or lcpp_model_open_par. Returns 0 or -1.
 */
int lcpp_model_decode_multi(lcpp_model *m, const int32_t *tokens, const int32_t *pos,
                            const int32_t *seq_ids, int32_t n, bool all_logits);

/*
 * The n_vocab logits of token i of the last batch decoded (llama_get_logits_ith: i < 0 counts
 * from the end), owned by llama.cpp and valid until the next decode; NULL when that token's
 * logits were not asked for.
 */
const float *lcpp_model_logits(lcpp_model *m, int32_t i);

/*
 * The token llama-perplexity puts first in each window instead of the text's: the
 * vocabulary's BOS (llama_vocab_bos) when it adds one (llama_vocab_get_add_bos), else -1.
 * -1 also when the library lacks either function.
 */
int32_t lcpp_model_window_bos(const lcpp_model *m);

/*
 * Sets the LoRA adapter of m's context (llama_adapter_lora_init, loaded once per path and
 * kept until lcpp_model_free; llama_set_adapters_lora): path NULL clears it. llama.cpp
 * applies one set of adapters to every sequence of a batch. Returns 0 or -1 (err).
 */
int lcpp_model_set_lora(lcpp_model *m, const char *path, float scale, char *err, size_t errlen);

/*
 * The name of the ggml CPU backend variant that ggml loaded, e.g. "icelake" for
 * libggml-cpu-icelake.so (ggml scores every libggml-cpu-*.so against the host's CPU
 * features and loads the best). Written into buf; "" when none is loaded yet.
 */
void lcpp_cpu_variant(char *buf, size_t cap);

/*
 * Embeddings (bench/llamacpp_embed.c), set up as llama.cpp's own embedding example does:
 * llama_context_params embeddings = true and pooling_type MEAN (the final hidden states after
 * the output norm, averaged over each sequence's tokens), one context of n_ctx positions
 * that is also the largest batch (n_batch = n_ubatch = n_ctx, so a batch is one llama_decode
 * and one graph), up to n_seq_max sequences in it, kv_unified as in lcpp_model_open_par (the
 * example sets it when the number of prompts is not known in advance). Other settings are
 * llama.cpp's defaults (F16 KV cache, flash attention AUTO). 0 or -1 (err).
 */
int lcpp_model_open_embed(lcpp_model **out, const char *path, uint32_t n_ctx, uint32_t n_seq_max,
                          bool kv_unified, int32_t n_threads, char *err, size_t errlen);
/* llama_model_n_embd: the width of the embeddings, or -1. */
int32_t lcpp_model_n_embd(const lcpp_model *m);
/*
 * Embeds n_seq sequences (sequence s: lens[s] tokens at seqs[s], all fed, positions from 0)
 * as one llama_decode after emptying the cache, and copies each pooled vector as llama.cpp
 * returns it (llama_get_embeddings_seq, not normalised: the example normalises after) to
 * out[s * n_embd ...] (n_seq x n_embd floats).
 * The tokens of all sequences together must fit the n_ctx the model was opened with and
 * n_seq must not pass its n_seq_max. Only for a model opened with lcpp_model_open_embed.
 * Returns 0 or -1.
 */
int lcpp_model_embed_batch(lcpp_model *m, const int32_t *const *seqs, const int32_t *lens,
                           int32_t n_seq, float *out);

/*
 * A sampler chain as llama.cpp's examples build it (llama_sampler_chain_init): with gbnf,
 * llama_sampler_init_grammar(vocab, gbnf, "root") then llama_sampler_init_greedy; without,
 * greedy alone (tests/compat/grammardiff.c, bench/grammar_bench.c):
 *
 *     lcpp_sampler *s;
 *     if (lcpp_sampler_new(&s, m, "root ::= [a-z]+", err, sizeof err) < 0) ...
 *     lcpp_model_decode(m, tok, pos, &logits);
 *     tok = lcpp_sampler_sample(s, m);      // masks, takes the argmax, advances the grammar
 *     lcpp_sampler_free(s);
 *
 * m is borrowed and must outlive s. lcpp_sampler_new returns 0, or -1 with the reason in err
 * (llama.cpp refused the grammar: it prints why on stderr; or the library lacks a symbol).
 */
typedef struct lcpp_sampler lcpp_sampler;
int lcpp_sampler_new(lcpp_sampler **out, const lcpp_model *m, const char *gbnf, char *err,
                     size_t errlen);
void lcpp_sampler_free(lcpp_sampler *s);
/* llama_sampler_sample(chain, ctx, -1): the token sampled from the last decoded logits, which
 * the chain (and its grammar) then accepts. */
int32_t lcpp_sampler_sample(lcpp_sampler *s, lcpp_model *m);
/*
 * The grammar's mask alone, without accepting anything: out[i] (n floats) gets logits[i] for
 * every token the grammar allows next and -inf for the others (llama_sampler_apply of the
 * chain's grammar sampler on all n tokens; a sampler without a grammar copies). 0 or -1.
 */
int lcpp_sampler_mask(lcpp_sampler *s, const float *logits, int32_t n, float *out);
/* llama_vocab_is_eog of m's vocabulary. */
bool lcpp_model_is_eog(const lcpp_model *m, int32_t tok);

#endif
