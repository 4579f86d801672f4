/*
 * Synthetic vocabulary variants for tests/compat/tokdiff.c: copies of a real GGUF
 * vocabulary with a few metadata fields changed (tokenizer.ggml.pre, add_bos/add_eos,
 * add_space_prefix, general.name, token types, extra tokens), written with catena's GGUF
 * writer to a temporary file that both llama.cpp and catena then load. This reaches the
 * pre-tokenizer names and loader flags that the few real vocabularies at hand do not use.
 *
 *     tv_variant v = {.base = "ggml-vocab-gpt-2.gguf", .pre = "falcon", .add_bos = -1, ...};
 *     if (tv_write(&v, "/tmp/x.gguf", err, sizeof err) < 0) puts(err);
 *
 * tv_pre_names lists every tokenizer.ggml.pre value llama.cpp's loader accepts: a copy of
 * the list taken from llama-vocab.cpp, plus any further names found in that source file
 * when it is present, so a newer llama.cpp checkout is covered without editing this list.
 */
#ifndef CTN_TESTS_VOCAB_VARIANTS_H
#define CTN_TESTS_VOCAB_VARIANTS_H

#include <stdbool.h>
#include <stddef.h>

enum { TV_MAX_EDITS = 8 };

/* A token whose type is changed, or a token appended to the vocabulary. */
typedef struct {
    const char *text; /* raw vocabulary text ("▁the", "Ġthe", "<|x|>"); NULL ends the list */
    int type;         /* tokenizer.ggml.token_type value (CTN_TOKEN_*) */
} tv_token;

typedef struct {
    const char *name;     /* shown in reports, e.g. "gpt-2[pre=falcon]" */
    const char *base;     /* path of the real vocabulary (borrowed) */
    const char *pre;      /* new tokenizer.ggml.pre, or NULL to keep it */
    bool drop_pre;        /* remove tokenizer.ggml.pre */
    const char *gen_name; /* new general.name, or NULL to keep it */
    /* -1 keeps the key as it is (present or not), 0/1 sets it to false/true, 2 removes it */
    int add_bos, add_eos, add_space_prefix;
    tv_token retype[TV_MAX_EDITS]; /* existing tokens given a new type (missing: error) */
    /* new tokens added after the last id (score 0); a text already in the vocabulary is
     * retyped instead */
    tv_token append[TV_MAX_EDITS];
} tv_variant;

/*
 * Writes the variant to `path`. Returns 0, or -1 with the reason in err (base unreadable,
 * a retyped token missing, a write error).
 */
int tv_write(const tv_variant *v, const char *path, char *err, size_t errlen);

/*
 * The accepted tokenizer.ggml.pre names, in llama.cpp's order: the built-in list, then
 * names from `llama_vocab_cpp` (a path to llama.cpp's src/llama-vocab.cpp; NULL or a
 * missing file adds nothing). *names is malloc'd, each name too; free with tv_names_free.
 * *n_from_src counts the names found only in the source file.
 */
void tv_pre_names(const char *llama_vocab_cpp, char ***names, size_t *n, size_t *n_from_src);
void tv_names_free(char **names, size_t n);

#endif
