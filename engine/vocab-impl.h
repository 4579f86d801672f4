/*
 * Internals shared by vocab.c (loading, decoding), vocab_tok.c (tokenizing) and pretok.c
 * (pre-tokenizer regexes). Not a public header.
 */
#ifndef CTN_VOCAB_IMPL_H
#define CTN_VOCAB_IMPL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "alloc.h" /* all allocations go through ctn__malloc & co. (failure injection) */
#include "vocab.h"

/* Token attributes, as llama.cpp's llama_token_attr bits (types map onto them at load and
 * llama.cpp's name-based fixes then add or clear bits). */
enum {
    CTN__ATTR_UNKNOWN = 1 << 0,
    CTN__ATTR_UNUSED = 1 << 1,
    CTN__ATTR_NORMAL = 1 << 2,
    CTN__ATTR_CONTROL = 1 << 3,
    CTN__ATTR_USER_DEFINED = 1 << 4,
    CTN__ATTR_BYTE = 1 << 5,
    CTN__ATTR_LSTRIP = 1 << 7,
    CTN__ATTR_RSTRIP = 1 << 8,
};

/* ---- growable scratch vectors (one set per tokenize call) --------------------------- */

typedef struct {
    uint32_t *v;
    size_t n, cap;
} ctn__u32vec;

int ctn__u32vec_push(ctn__u32vec *a, uint32_t x);
int ctn__u32vec_reserve(ctn__u32vec *a, size_t cap);

/* ---- pre-tokenizer ------------------------------------------------------------------ */

#define CTN__PRETOK_MAX_STEPS 8

typedef struct ctn__pretok_step ctn__pretok_step;

typedef struct {
    int n_steps;
    ctn__pretok_step *steps; /* n_steps */
    bool byte_encode;        /* GPT-2 byte alphabet (false: raw UTF-8, <0xNN> fallback) */
    bool escape_ws;          /* spaces become U+2581 before BPE (Gemma 4 style) */
    bool clean_spaces;       /* llama.cpp's clean_up_tokenization_spaces on decode */
    bool ignore_merges;      /* a word that is a token is taken whole */
    bool add_bos;            /* default of add_bos_token for this pre-tokenizer */
    bool no_bos;             /* the pre-tokenizer clears the default BOS id (chatglm) */
    bool gemma4;             /* llama.cpp's PRE_TYPE_GEMMA4: BOS always added, \n runs whole */
    bool merges_optional;    /* tokenizer.ggml.merges may be missing (Kimi-K2) */
    void *gctx;              /* pcre2_general_context routing PCRE2's memory through alloc.h */
} ctn__pretok;

/* Sets up the pre-tokenizer named `name` (llama.cpp's tokenizer.ggml.pre values).
 * CTN_EFORMAT for an unknown name (every name llama.cpp accepts is known). */
int ctn__pretok_init(ctn__pretok *p, const char *name, char *err, size_t errlen);
void ctn__pretok_free(ctn__pretok *p);

/* Per-call working memory of the pre-tokenizer. */
typedef struct {
    ctn__u32vec tmp; /* next list of piece lengths */
    char *sub;       /* subject string for the PCRE2 steps */
    size_t sub_len, sub_cap;
    uint32_t *b2c; /* byte offset in sub -> code point index */
    size_t b2c_cap;
    void *md; /* pcre2_match_data */
} ctn__pretok_scratch;

void ctn__pretok_scratch_free(ctn__pretok_scratch *s);

/*
 * Splits n code points (cpts, with their category flags) into pieces, running the steps in
 * sequence as llama.cpp's unicode_regex_split does. `lens` receives piece lengths in code
 * points (zero-length pieces can occur, as in llama.cpp).
 */
int ctn__pretok_split(const ctn__pretok *p, ctn__pretok_scratch *s, const uint32_t *cpts,
                      const uint16_t *flags, size_t n, ctn__u32vec *lens);

/* ---- the vocabulary ------------------------------------------------------------------- */

typedef struct {
    uint64_t key;   /* (left id << 32) | right id */
    int32_t rank;   /* merge rank, -1 = empty slot */
    int32_t result; /* id of the merged text, or -1 when it is not a token */
} ctn__merge_slot;

struct ctn_vocab {
    ctn_vocab_kind kind;
    char *model; /* tokenizer.ggml.model */
    char *pre;   /* pre-tokenizer name */
    int32_t n_tokens;

    char *text_blob;     /* token texts, each NUL-terminated */
    uint32_t *text_off;  /* n_tokens + 1 offsets into text_blob */
    float *scores;       /* n_tokens */
    uint8_t *types;      /* n_tokens, tokenizer.ggml.token_type */
    uint16_t *attrs;     /* n_tokens, CTN__ATTR_* */
    char *piece_blob;    /* decoded pieces (token_to_piece with special=true) */
    uint32_t *piece_off; /* n_tokens + 1 */
    size_t max_piece;

    /* text -> id (last one wins for duplicates, as llama.cpp's unordered_map assignment) */
    uint32_t *map_slots; /* id + 1, 0 = empty */
    uint32_t *map_hash;
    size_t map_mask;

    ctn__merge_slot *merges;
    size_t merge_mask;
    size_t n_merges;

    int32_t byte_tok[256];        /* SPM/no-byte-encode: <0xNN> or the 1-byte text; BPE: alphabet */
    int32_t gpt2_char_tok[256];   /* BPE: id of the 1-char alphabet token of each byte, or -1 */
    int32_t gpt2_byte_fb[256][2]; /* BPE fallback: ids of the single bytes of that char's UTF-8 */
    uint32_t trie_root[256];      /* first-level trie node per byte, 0 = none */

    /* special tokens, longest text first (llama.cpp's cache_special_tokens) */
    int32_t *special;
    size_t n_special;
    /* byte trie over special texts for a single scan of the input */
    struct ctn__trie_node *trie;
    size_t n_trie;

    int32_t bos, eos, eot, eom, unk, sep, pad, mask, nl;
    int32_t fim_pre, fim_suf, fim_mid, fim_pad, fim_rep, fim_sep;
    int32_t *eog;
    size_t n_eog;

    bool add_bos, add_eos, add_space_prefix, clean_spaces, ignore_merges, escape_ws;
    bool gemma4;
    bool spm_word_split; /* no token spans "x▁" (x not ▁): SPM may merge word by word */
    ctn__pretok pretok;
};

struct ctn__trie_node {
    uint32_t first_child; /* index of first child, 0 = none */
    uint32_t next_sibling;
    int32_t token; /* special token ending here (index into ->special order), -1 */
    unsigned char byte;
};

int32_t ctn__vocab_find(const ctn_vocab *v, const char *text, size_t len);

#endif
