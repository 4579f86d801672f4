/*
 * Loading a tokenizer vocabulary from GGUF metadata, the lookups every tokenizer needs,
 * and decoding (token_to_piece, detokenize, the streaming decoder).
 *
 * Loading follows llama.cpp's llama_vocab::impl::load step by step, because many results
 * depend on its fix-ups rather than on the file alone: default special ids per model type,
 * control bits forced on tokens whose text looks like end-of-turn or FIM markers, lstrip /
 * rstrip set by model name, the longest-first order of special tokens. Where llama.cpp only
 * warns about broken metadata that would later crash or mis-tokenize, we refuse the file
 * with CTN_EFORMAT and a message naming the key and index.
 */
#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode.h"
#include "vocab-impl.h"
#include "str.h"

#define MAX_TOKENS (1u << 24) /* far above any real vocabulary; bounds the allocations */

/* ---- hashing ------------------------------------------------------------------------- */

static inline uint64_t mix64(uint64_t x) {
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    x *= 0xd6e8feb86659fd93ull;
    x ^= x >> 32;
    return x;
}

static uint64_t hash_bytes(const char *p, size_t n) {
    uint64_t h = 0x9E3779B97F4A7C15ull ^ (n * 0xff51afd7ed558ccdull);
    while (n >= 8) {
        uint64_t w;
        memcpy(&w, p, 8);
        h = (h ^ mix64(w)) * 0x100000001b3ull;
        p += 8;
        n -= 8;
    }
    uint64_t w = 0;
    memcpy(&w, p, n);
    h = (h ^ mix64(w ^ 0xabcdef)) * 0x100000001b3ull;
    return mix64(h);
}

int32_t ctn__vocab_find(const ctn_vocab *v, const char *text, size_t len) {
    uint64_t h = hash_bytes(text, len);
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = (size_t)h & v->map_mask;; i = (i + 1) & v->map_mask) {
        uint32_t s = v->map_slots[i];
        if (s == 0) {
            return CTN_TOKEN_NULL;
        }
        if (v->map_hash[i] == tag) {
            uint32_t id = s - 1;
            uint32_t o = v->text_off[id];
            if (v->text_off[id + 1] - o - 1 == len && memcmp(v->text_blob + o, text, len) == 0) {
                return (int32_t)id;
            }
        }
    }
}

/* Inserts id under its text; a later id with the same text replaces the earlier one. */
static void map_insert(ctn_vocab *v, uint32_t id) {
    const char *t = v->text_blob + v->text_off[id];
    size_t len = v->text_off[id + 1] - v->text_off[id] - 1;
    uint64_t h = hash_bytes(t, len);
    uint32_t tag = (uint32_t)(h >> 32);
    for (size_t i = (size_t)h & v->map_mask;; i = (i + 1) & v->map_mask) {
        uint32_t s = v->map_slots[i];
        if (s == 0) {
            v->map_slots[i] = id + 1;
            v->map_hash[i] = tag;
            return;
        }
        if (v->map_hash[i] == tag) {
            uint32_t o = v->text_off[s - 1];
            if (v->text_off[s] - o - 1 == len && memcmp(v->text_blob + o, t, len) == 0) {
                v->map_slots[i] = id + 1;
                return;
            }
        }
    }
}

static inline uint64_t merge_hash(uint64_t key) {
    return mix64(key * 0x9E3779B97F4A7C15ull);
}

/* ---- small helpers -------------------------------------------------------------------- */

static const char *tok_text(const ctn_vocab *v, int32_t id, size_t *len) {
    uint32_t o = v->text_off[id];
    *len = v->text_off[id + 1] - o - 1;
    return v->text_blob + o;
}

static bool text_is(const ctn_vocab *v, int32_t id, const char *s) {
    size_t n;
    const char *t = tok_text(v, id, &n);
    return n == strlen(s) && memcmp(t, s, n) == 0;
}


static bool get_bool(const ctn_gguf *g, const char *key, bool *out) {
    bool b;
    if (ctn_gguf_get_bool(g, key, &b) == 0) {
        *out = b;
        return true;
    }
    return false;
}

/* Copies a string value into buf (lowercased when lower); "" when missing. */
static void get_str_buf(const ctn_gguf *g, const char *key, char *buf, size_t cap, bool lower) {
    const char *p;
    size_t n;
    buf[0] = 0;
    if (ctn_gguf_get_str(g, key, &p, &n) == 0) {
        if (n >= cap) n = cap - 1;
        for (size_t i = 0; i < n; i++) {
            buf[i] = lower ? (char)tolower((unsigned char)p[i]) : p[i];
        }
        buf[n] = 0;
    }
}

/* ---- loading ----------------------------------------------------------------------- */

static int load_tokens(ctn_vocab *v, const ctn_gguf *g, char *err, size_t errlen) {
    const ctn_gguf_value *arr = ctn_gguf_get(g, "tokenizer.ggml.tokens");
    if (!arr) {
        ctn__errf(err, errlen, "tokenizer.ggml.tokens: missing (no vocabulary in the file)");
        return CTN_EFORMAT;
    }
    if (arr->type != CTN_GGUF_ARRAY || arr->v.arr.type != CTN_GGUF_STRING) {
        ctn__errf(err, errlen, "tokenizer.ggml.tokens: expected an array of strings");
        return CTN_EFORMAT;
    }
    uint64_t n = arr->v.arr.n;
    if (n == 0) {
        ctn__errf(err, errlen, "tokenizer.ggml.tokens: empty vocabulary");
        return CTN_EFORMAT;
    }
    if (n > MAX_TOKENS) {
        ctn__errf(err, errlen, "tokenizer.ggml.tokens: %llu tokens, more than the %u allowed",
                  (unsigned long long)n, MAX_TOKENS);
        return CTN_EFORMAT;
    }
    v->n_tokens = (int32_t)n;

    const ctn_gguf_value *sc = ctn_gguf_get(g, "tokenizer.ggml.scores");
    if (sc) {
        if (sc->type != CTN_GGUF_ARRAY ||
            (sc->v.arr.type != CTN_GGUF_FLOAT32 && sc->v.arr.type != CTN_GGUF_INT32)) {
            ctn__errf(err, errlen, "tokenizer.ggml.scores: expected an array of float32 or int32");
            return CTN_EFORMAT;
        }
        if (sc->v.arr.n < n) {
            ctn__errf(err, errlen, "tokenizer.ggml.scores: %llu entries for %llu tokens",
                      (unsigned long long)sc->v.arr.n, (unsigned long long)n);
            return CTN_EFORMAT;
        }
    }
    const ctn_gguf_value *ty = ctn_gguf_get(g, "tokenizer.ggml.token_type");
    if (ty) {
        if (ty->type != CTN_GGUF_ARRAY || ty->v.arr.type != CTN_GGUF_INT32) {
            ctn__errf(err, errlen, "tokenizer.ggml.token_type: expected an array of int32");
            return CTN_EFORMAT;
        }
        if (ty->v.arr.n < n) {
            ctn__errf(err, errlen, "tokenizer.ggml.token_type: %llu entries for %llu tokens",
                      (unsigned long long)ty->v.arr.n, (unsigned long long)n);
            return CTN_EFORMAT;
        }
    }

    size_t total = 0;
    char empty[32];
    for (uint64_t i = 0; i < n; i++) {
        ctn_gguf_str s = ctn_gguf_arr_str(arr, i);
        total +=
            (s.len ? s.len
                   : (size_t)snprintf(empty, sizeof empty, "[EMPTY_%llu]", (unsigned long long)i)) +
            1;
        if (total > UINT32_MAX - 64) {
            ctn__errf(err, errlen, "tokenizer.ggml.tokens: token texts exceed 4 GiB at index %llu",
                      (unsigned long long)i);
            return CTN_EFORMAT;
        }
    }
    v->text_blob = ctn__malloc(total);
    v->text_off = ctn__malloc((n + 1) * sizeof *v->text_off);
    v->scores = ctn__calloc(n, sizeof *v->scores);
    v->types = ctn__calloc(n, 1);
    v->attrs = ctn__calloc(n, sizeof *v->attrs);
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    v->map_slots = ctn__calloc(cap, sizeof *v->map_slots);
    v->map_hash = ctn__calloc(cap, sizeof *v->map_hash);
    v->map_mask = cap - 1;
    if (!v->text_blob || !v->text_off || !v->scores || !v->types || !v->attrs || !v->map_slots ||
        !v->map_hash) {
        return CTN_ENOMEM;
    }
    size_t o = 0;
    for (uint64_t i = 0; i < n; i++) {
        ctn_gguf_str s = ctn_gguf_arr_str(arr, i);
        v->text_off[i] = (uint32_t)o;
        if (s.len) {
            memcpy(v->text_blob + o, s.ptr, s.len);
            o += s.len;
        } else {
            /* llama.cpp names empty tokens so that every token has a distinct text */
            o += (size_t)snprintf(v->text_blob + o, 32, "[EMPTY_%llu]", (unsigned long long)i);
        }
        v->text_blob[o++] = 0;
        if (sc) {
            v->scores[i] =
                (float)(sc->v.arr.type == CTN_GGUF_INT32 ? (double)ctn_gguf_arr_int(sc, i)
                                                         : ctn_gguf_arr_float(sc, i));
        }
        int64_t t = ty ? ctn_gguf_arr_int(ty, i) : CTN_TOKEN_NORMAL;
        v->types[i] = (uint8_t)(t >= 0 && t <= 6 ? t : 0);
        uint16_t a;
        switch (t) {
        case CTN_TOKEN_UNKNOWN: a = CTN__ATTR_UNKNOWN; break;
        case CTN_TOKEN_UNUSED: a = CTN__ATTR_UNUSED; break;
        case CTN_TOKEN_NORMAL: a = CTN__ATTR_NORMAL; break;
        case CTN_TOKEN_CONTROL: a = CTN__ATTR_CONTROL; break;
        case CTN_TOKEN_USER_DEFINED: a = CTN__ATTR_USER_DEFINED; break;
        case CTN_TOKEN_BYTE: a = CTN__ATTR_BYTE; break;
        default: a = 0; break;
        }
        v->attrs[i] = a;
    }
    v->text_off[n] = (uint32_t)o;
    for (uint64_t i = 0; i < n; i++) {
        map_insert(v, (uint32_t)i);
    }
    return 0;
}

static int load_merges(ctn_vocab *v, const ctn_gguf *g, char *err, size_t errlen) {
    const ctn_gguf_value *arr = ctn_gguf_get(g, "tokenizer.ggml.merges");
    if (!arr && !v->pretok.merges_optional) {
        ctn__errf(err, errlen, "tokenizer.ggml.merges: missing (needed by a BPE vocabulary)");
        return CTN_EFORMAT;
    }
    if (arr && (arr->type != CTN_GGUF_ARRAY || arr->v.arr.type != CTN_GGUF_STRING)) {
        ctn__errf(err, errlen, "tokenizer.ggml.merges: expected an array of strings");
        return CTN_EFORMAT;
    }
    /* without merges (Kimi-K2 may have none) the table is empty and every word is its
     * characters, as in llama.cpp */
    uint64_t n = arr ? arr->v.arr.n : 0;
    if (n > 4 * (uint64_t)MAX_TOKENS) {
        ctn__errf(err, errlen, "tokenizer.ggml.merges: %llu merges, too many",
                  (unsigned long long)n);
        return CTN_EFORMAT;
    }
    size_t cap = 16;
    while (cap < 2 * n)
        cap *= 2;
    v->merges = ctn__malloc(cap * sizeof *v->merges);
    if (!v->merges) {
        return CTN_ENOMEM;
    }
    for (size_t i = 0; i < cap; i++) {
        v->merges[i].rank = -1;
    }
    v->merge_mask = cap - 1;
    char *buf = NULL;
    size_t bufcap = 0;
    for (uint64_t i = 0; i < n; i++) {
        ctn_gguf_str s = ctn_gguf_arr_str(arr, i);
        /* the separator is the first space after the first byte ("  x" merges " " + "x") */
        const char *sp = s.len > 1 ? memchr(s.ptr + 1, ' ', s.len - 1) : NULL;
        if (!sp) {
            ctn__errf(err, errlen, "tokenizer.ggml.merges[%llu]: no space between the two parts",
                      (unsigned long long)i);
            free(buf);
            return CTN_EFORMAT;
        }
        size_t l1 = (size_t)(sp - s.ptr), l2 = s.len - l1 - 1;
        int32_t a = ctn__vocab_find(v, s.ptr, l1);
        int32_t b = ctn__vocab_find(v, sp + 1, l2);
        if (a < 0 || b < 0) {
            ctn__errf(err, errlen, "tokenizer.ggml.merges[%llu]: '%.*s' is not a token",
                      (unsigned long long)i,
                      (int)(a < 0 ? (l1 > 60 ? 60 : l1) : (l2 > 60 ? 60 : l2)),
                      a < 0 ? s.ptr : sp + 1);
            free(buf);
            return CTN_EFORMAT;
        }
        if (l1 + l2 > bufcap) {
            bufcap = 2 * (l1 + l2);
            char *nb = ctn__realloc(buf, bufcap);
            if (!nb) {
                free(buf);
                return CTN_ENOMEM;
            }
            buf = nb;
        }
        memcpy(buf, s.ptr, l1);
        memcpy(buf + l1, sp + 1, l2);
        uint64_t key = ((uint64_t)(uint32_t)a << 32) | (uint32_t)b;
        for (size_t k = merge_hash(key) & v->merge_mask;; k = (k + 1) & v->merge_mask) {
            if (v->merges[k].rank < 0) {
                v->merges[k].key = key;
                v->merges[k].rank = (int32_t)i;
                v->merges[k].result = ctn__vocab_find(v, buf, l1 + l2);
                v->n_merges++;
                break;
            }
            if (v->merges[k].key == key) {
                break; /* the first (lowest) rank of a duplicate pair stays */
            }
        }
    }
    free(buf);
    return 0;
}

/* Reads an id key: negative means none; past the vocabulary is an error for BOS/EOS and
 * ignored for the others (llama.cpp keeps the default there). */
static int load_id(ctn_vocab *v, const ctn_gguf *g, const char *key, int32_t *id, bool strict,
                   char *err, size_t errlen) {
    int64_t x;
    int rc = ctn_gguf_get_int(g, key, &x);
    if (rc == CTN_ENOENT) {
        return 0;
    }
    if (rc < 0) {
        ctn__errf(err, errlen, "%s: expected an integer", key);
        return CTN_EFORMAT;
    }
    if (x < 0) {
        *id = CTN_TOKEN_NULL;
    } else if (x >= v->n_tokens) {
        if (strict) {
            ctn__errf(err, errlen, "%s: token id %lld out of range (vocabulary of %d)", key,
                      (long long)x, v->n_tokens);
            return CTN_EFORMAT;
        }
    } else {
        *id = (int32_t)x;
    }
    return 0;
}

static int push_eog(ctn_vocab *v, int32_t id) {
    if (id < 0) return 0;
    for (size_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == id) return 0;
    }
    int32_t *n = ctn__realloc(v->eog, (v->n_eog + 1) * sizeof *n);
    if (!n) return CTN_ENOMEM;
    v->eog = n;
    v->eog[v->n_eog++] = id;
    return 0;
}

static void drop_eog(ctn_vocab *v, int32_t id) {
    for (size_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == id) {
            v->eog[i] = v->eog[--v->n_eog];
            return;
        }
    }
}

static bool in_list(const ctn_vocab *v, int32_t id, const char *const *names) {
    for (; *names; names++) {
        if (text_is(v, id, *names)) return true;
    }
    return false;
}

static const char *const eot_names[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "<|end_of_text|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "<\xef\xbd\x9c"
                                        "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                        "<end_of_utterance>",
                                        NULL};
static const char *const eom_names[] = {"<|eom_id|>", NULL};
static const char *const fim_pre_names[] = {"<|fim_prefix|>",
                                            "<fim-prefix>",
                                            "<fim_prefix>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81"
                                            "begin\xef\xbd\x9c>",
                                            "<PRE>",
                                            "\xe2\x96\x81<PRE>",
                                            "<|code_prefix|>",
                                            "<|prefix|>",
                                            NULL};
static const char *const fim_suf_names[] = {"<|fim_suffix|>",
                                            "<fim-suffix>",
                                            "<fim_suffix>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81hole\xef\xbd\x9c>",
                                            "<SUF>",
                                            "\xe2\x96\x81<SUF>",
                                            "<|code_suffix|>",
                                            "<|suffix|>",
                                            NULL};
static const char *const fim_mid_names[] = {"<|fim_middle|>",
                                            "<fim-middle>",
                                            "<fim_middle>",
                                            "<\xef\xbd\x9c"
                                            "fim\xe2\x96\x81"
                                            "end\xef\xbd\x9c>",
                                            "<MID>",
                                            "\xe2\x96\x81<MID>",
                                            "<|code_middle|>",
                                            "<|middle|>",
                                            NULL};
static const char *const fim_pad_names[] = {"<|fim_pad|>", "<fim-pad>", "<fim_pad>",
                                            "<PAD>",       "[PAD]",     NULL};
static const char *const fim_rep_names[] = {"<|fim_repo|>", "<|repo_name|>", "<fim-repo>",
                                            "<REPO>",       "<reponame>",    NULL};
static const char *const fim_sep_names[] = {"<|file_sep|>", NULL};
static const char *const eog_names[] = {"<|eot_id|>",
                                        "<|im_end|>",
                                        "<|end|>",
                                        "<|return|>",
                                        "<|call|>",
                                        "<|flush|>",
                                        "<|calls|>",
                                        "<end_of_turn>",
                                        "<|endoftext|>",
                                        "</s>",
                                        "<|eom_id|>",
                                        "<EOT>",
                                        "_<EOT>",
                                        "[EOT]",
                                        "[EOS]",
                                        "<|end_of_text|>",
                                        "<end_of_utterance>",
                                        "<eos>",
                                        "<turn|>",
                                        "<|tool_response>",
                                        "<\xef\xbd\x9c"
                                        "end\xe2\x96\x81of\xe2\x96\x81sentence\xef\xbd\x9c>",
                                        "[e~[",
                                        NULL};

/*
 * llama.cpp finds EOT/EOM/FIM tokens by their text when the metadata does not name them and
 * forces the control bit on them. It walks a hash map, so which of several candidates wins
 * is unspecified there; we take the lowest id.
 */
static void detect_by_name(ctn_vocab *v, int32_t *slot, const char *const *names) {
    if (*slot != CTN_TOKEN_NULL) return;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t n;
        const char *t = tok_text(v, id, &n);
        if (in_list(v, id, names) && ctn__vocab_find(v, t, n) == id) {
            *slot = id;
            v->attrs[id] |= CTN__ATTR_CONTROL;
            return;
        }
    }
}

static int fixup_specials(ctn_vocab *v) {
    detect_by_name(v, &v->eot, eot_names);
    detect_by_name(v, &v->eom, eom_names);
    detect_by_name(v, &v->fim_pre, fim_pre_names);
    detect_by_name(v, &v->fim_suf, fim_suf_names);
    detect_by_name(v, &v->fim_mid, fim_mid_names);
    detect_by_name(v, &v->fim_pad, fim_pad_names);
    detect_by_name(v, &v->fim_rep, fim_rep_names);
    detect_by_name(v, &v->fim_sep, fim_sep_names);

    for (int32_t id = 0; id < v->n_tokens; id++) {
        /* control tokens with "unused" in the text count as unused */
        if ((v->attrs[id] & CTN__ATTR_CONTROL) &&
            strstr(v->text_blob + v->text_off[id], "unused")) {
            v->attrs[id] |= CTN__ATTR_UNUSED;
        }
    }
    int rc = 0;
    rc |= push_eog(v, v->fim_pad);
    rc |= push_eog(v, v->fim_rep);
    rc |= push_eog(v, v->fim_sep);
    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t n;
        const char *t = tok_text(v, id, &n);
        if (ctn__vocab_find(v, t, n) != id) continue; /* shadowed duplicate text */
        if (in_list(v, id, eog_names)) {
            rc |= push_eog(v, id);
            v->attrs[id] |= CTN__ATTR_CONTROL;
        }
    }
    for (int32_t id = 0; id < v->n_tokens; id++) {
        /* gpt-oss: these always render, so they are made user-defined */
        static const char *const oss[] = {"<|channel|>", "<|message|>", "<|start|>",
                                          "<|constrain|>", NULL};
        if (in_list(v, id, oss)) v->attrs[id] = CTN__ATTR_USER_DEFINED;
    }
    rc |= push_eog(v, v->eos);
    rc |= push_eog(v, v->eot);
    rc |= push_eog(v, v->eom);
    if (rc) return CTN_ENOMEM;

    /* harmony / solar-open: <|end|> is not end-of-generation there */
    bool has_return = false, has_call = false, has_flush = false, has_tool = false;
    int32_t end_id = CTN_TOKEN_NULL, s_id = CTN_TOKEN_NULL;
    for (size_t i = 0; i < v->n_eog; i++) {
        int32_t id = v->eog[i];
        if (text_is(v, id, "<|return|>"))
            has_return = true;
        else if (text_is(v, id, "<|call|>") || text_is(v, id, "<|calls|>"))
            has_call = true;
        else if (text_is(v, id, "<|flush|>"))
            has_flush = true;
        else if (text_is(v, id, "<|end|>"))
            end_id = id;
        if (text_is(v, id, "<|tool_response>"))
            has_tool = true;
        else if (text_is(v, id, "</s>"))
            s_id = id;
    }
    if (end_id >= 0 && ((has_return && has_call) || (has_call && has_flush))) {
        drop_eog(v, end_id);
        v->attrs[end_id] = CTN__ATTR_USER_DEFINED;
    }
    if (has_tool && s_id >= 0) {
        drop_eog(v, s_id);
        v->attrs[s_id] = CTN__ATTR_NORMAL;
    }
    return 0;
}

/*
 * Decoded pieces may be longer than the token texts only through llama.cpp's spelling of a
 * character outside the GPT-2 alphabet, "[UNK_BYTE_0x<hex><whole token text>]" per such
 * character: quadratic in the token length, so a 60 KB hostile token would ask for gigabytes.
 * Real vocabularies have at most a few such tokens; the excess over the texts is capped.
 */
#define MAX_PIECE_EXCESS ((size_t)64 << 20)

/* Appends n bytes at out + o, or only counts them when out is NULL (measuring). */
static size_t put(char *out, size_t o, const void *src, size_t n) {
    if (out) memcpy(out + o, src, n);
    return o + n;
}

/*
 * The bytes a token decodes to (llama.cpp's cached token_to_piece with special=true), or
 * with out NULL just their count. Measuring stops once the piece exceeds the token text by
 * more than MAX_PIECE_EXCESS, so the count cannot overflow.
 */
static size_t make_piece(const ctn_vocab *v, int32_t id, char *out) {
    size_t n;
    const char *t = tok_text(v, id, &n);
    uint16_t a = v->attrs[id];
    if (a & (CTN__ATTR_UNKNOWN | CTN__ATTR_CONTROL | CTN__ATTR_USER_DEFINED)) {
        return put(out, 0, t, n);
    }
    if (a & CTN__ATTR_NORMAL) {
        if (v->kind == CTN_VOCAB_SPM || v->escape_ws) {
            size_t o = 0;
            for (size_t i = 0; i < n; i++) {
                if (i + 2 < n && memcmp(t + i, "\xe2\x96\x81", 3) == 0) {
                    o = put(out, o, " ", 1);
                    i += 2;
                } else {
                    o = put(out, o, t + i, 1);
                }
            }
            return o;
        }
        /* GPT-2 alphabet back to bytes; a code point outside it is spelled out as llama.cpp
         * does: [UNK_BYTE_0x<hex of its UTF-8><token text>] */
        size_t o = 0;
        for (size_t i = 0; i < n && o <= n + MAX_PIECE_EXCESS;) {
            uint32_t c;
            i += ctn__utf8_decode((const unsigned char *)t + i, n - i, &c);
            int b = ctn__gpt2_cpt_to_byte(c);
            if (b >= 0) {
                char ch = (char)b;
                o = put(out, o, &ch, 1);
            } else {
                char u[4], hex[9];
                size_t k = ctn__utf8_encode(c, u);
                for (size_t j = 0; j < k; j++) {
                    snprintf(hex + 2 * j, 3, "%02x", (unsigned char)u[j]);
                }
                o = put(out, o, "[UNK_BYTE_0x", 12);
                o = put(out, o, hex, 2 * k);
                o = put(out, o, t, n);
                o = put(out, o, "]", 1);
            }
        }
        return o;
    }
    if (a & CTN__ATTR_BYTE) {
        /* "<0xNN>": llama.cpp reads the two characters after "<0x" as hex */
        unsigned val = 0;
        for (size_t i = 3; i < 5 && i < n; i++) {
            char c = t[i];
            int d = c >= '0' && c <= '9'   ? c - '0'
                    : c >= 'a' && c <= 'f' ? c - 'a' + 10
                    : c >= 'A' && c <= 'F' ? c - 'A' + 10
                                           : -1;
            if (d < 0) break;
            val = val * 16 + (unsigned)d;
        }
        char ch = (char)val;
        return put(out, 0, &ch, 1);
    }
    return 0;
}

/* Measures every piece, then fills a blob of the exact size. */
static int build_pieces(ctn_vocab *v, char *err, size_t errlen) {
    v->piece_off = ctn__malloc(((size_t)v->n_tokens + 1) * sizeof *v->piece_off);
    if (!v->piece_off) return CTN_ENOMEM;
    size_t used = 0, excess = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        size_t n = v->text_off[id + 1] - v->text_off[id] - 1;
        size_t k = make_piece(v, id, NULL);
        v->piece_off[id] = (uint32_t)used;
        used += k;
        excess += k > n ? k - n : 0;
        if (k > v->max_piece) v->max_piece = k;
        if (excess > MAX_PIECE_EXCESS || used > UINT32_MAX - 1) {
            ctn__errf(err, errlen,
                      "tokenizer.ggml.tokens[%d]: decoded pieces too large (%zu bytes so far, "
                      "%zu more than the texts)",
                      id, used, excess);
            return CTN_EFORMAT;
        }
    }
    v->piece_off[v->n_tokens] = (uint32_t)used;
    v->piece_blob = ctn__malloc(used + 1);
    if (!v->piece_blob) return CTN_ENOMEM;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        make_piece(v, id, v->piece_blob + v->piece_off[id]);
    }
    return 0;
}

typedef struct {
    uint32_t len;
    int32_t id;
} len_id;

static int cmp_len_id(const void *pa, const void *pb) {
    const len_id *a = pa, *b = pb;
    if (a->len != b->len) return a->len > b->len ? -1 : 1;
    return a->id < b->id ? -1 : a->id > b->id;
}

static int build_specials(ctn_vocab *v) {
    size_t n = 0;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        if (v->attrs[id] & (CTN__ATTR_CONTROL | CTN__ATTR_USER_DEFINED | CTN__ATTR_UNKNOWN)) n++;
    }
    v->special = ctn__malloc((n ? n : 1) * sizeof *v->special);
    if (!v->special) return CTN_ENOMEM;
    for (int32_t id = 0; id < v->n_tokens; id++) {
        if (v->attrs[id] & (CTN__ATTR_CONTROL | CTN__ATTR_USER_DEFINED | CTN__ATTR_UNKNOWN)) {
            v->special[v->n_special++] = id;
        }
    }
    /* longest first like llama.cpp; equal lengths by id (llama.cpp's order is unspecified) */
    len_id *tmp = ctn__malloc((n ? n : 1) * sizeof *tmp);
    if (!tmp) return CTN_ENOMEM;
    for (size_t i = 0; i < n; i++) {
        int32_t id = v->special[i];
        tmp[i] = (len_id){v->text_off[id + 1] - v->text_off[id], id};
    }
    qsort(tmp, n, sizeof *tmp, cmp_len_id);
    for (size_t i = 0; i < n; i++)
        v->special[i] = tmp[i].id;
    free(tmp);

    /* trie over the special texts, so tokenizing scans the input once for all of them */
    size_t nodes = 1;
    for (size_t i = 0; i < v->n_special; i++) {
        nodes += v->text_off[v->special[i] + 1] - v->text_off[v->special[i]] - 1;
    }
    v->trie = ctn__calloc(nodes, sizeof *v->trie);
    if (!v->trie) return CTN_ENOMEM;
    v->n_trie = 1;
    v->trie[0].token = -1;
    for (size_t i = 0; i < v->n_special; i++) {
        size_t len;
        const char *t = tok_text(v, v->special[i], &len);
        uint32_t node = 0;
        for (size_t k = 0; k < len; k++) {
            unsigned char c = (unsigned char)t[k];
            uint32_t ch = v->trie[node].first_child, prev = 0;
            while (ch && v->trie[ch].byte != c) {
                prev = ch;
                ch = v->trie[ch].next_sibling;
            }
            if (!ch) {
                ch = (uint32_t)v->n_trie++;
                v->trie[ch].byte = c;
                v->trie[ch].token = -1;
                if (prev)
                    v->trie[prev].next_sibling = ch;
                else
                    v->trie[node].first_child = ch;
            }
            node = ch;
        }
        if (v->trie[node].token < 0) v->trie[node].token = (int32_t)i;
    }
    for (uint32_t ch = v->trie[0].first_child; ch; ch = v->trie[ch].next_sibling) {
        v->trie_root[v->trie[ch].byte] = ch;
    }
    return 0;
}

static void set_attr_by_text(ctn_vocab *v, const char *text, uint16_t bit, bool on) {
    int32_t id = ctn__vocab_find(v, text, strlen(text));
    if (id < 0) return;
    if (on)
        v->attrs[id] |= bit;
    else
        v->attrs[id] &= (uint16_t)~bit;
}

int ctn_vocab_load(ctn_vocab **out, const ctn_gguf *g, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    *out = NULL;
    if (!g) return CTN_EINVAL;
    ctn__ucat_init();
    ctn_vocab *v = ctn__calloc(1, sizeof *v);
    if (!v) return CTN_ENOMEM;
    int rc;
    const char *mp, *pp;
    size_t mn, pn;
    if (ctn_gguf_get_str(g, "tokenizer.ggml.model", &mp, &mn) < 0) {
        ctn__errf(err, errlen, "tokenizer.ggml.model: missing or not a string");
        rc = CTN_EFORMAT;
        goto fail;
    }
    v->model = ctn__strndup(mp, mn);
    /* an empty name is a missing one: llama.cpp falls back to "default" for both */
    bool has_pre = ctn_gguf_get_str(g, "tokenizer.ggml.pre", &pp, &pn) == 0 && pn > 0;
    v->pre = has_pre ? ctn__strndup(pp, pn) : ctn__strndup("default", 7);
    if (!v->model || !v->pre) {
        rc = CTN_ENOMEM;
        goto fail;
    }
    if (has_pre && strlen(v->pre) != pn) {
        ctn__errf(err, errlen, "tokenizer.ggml.pre: contains a NUL byte");
        rc = CTN_EFORMAT;
        goto fail;
    }
    v->bos = v->eos = v->eot = v->eom = v->unk = v->sep = v->pad = v->mask = CTN_TOKEN_NULL;
    v->fim_pre = v->fim_suf = v->fim_mid = v->fim_pad = v->fim_rep = v->fim_sep = CTN_TOKEN_NULL;
    if (strcmp(v->model, "llama") == 0) {
        v->kind = CTN_VOCAB_SPM;
        v->bos = 1, v->eos = 2, v->unk = 0;
        v->add_space_prefix = true;
        v->add_bos = true;
        free(v->pre);
        v->pre = ctn__strndup("default", 7);
        if (!v->pre) {
            rc = CTN_ENOMEM;
            goto fail;
        }
    } else if (strcmp(v->model, "gpt2") == 0 || strcmp(v->model, "gemma4") == 0) {
        v->kind = CTN_VOCAB_BPE;
        v->gemma4 = strcmp(v->model, "gemma4") == 0;
        if (v->gemma4) {
            free(v->pre);
            v->pre = ctn__strndup("gemma4", 6);
            if (!v->pre) {
                rc = CTN_ENOMEM;
                goto fail;
            }
        } else {
            v->bos = 11, v->eos = 11;
        }
        rc = ctn__pretok_init(&v->pretok, v->pre, err, errlen);
        if (rc < 0) goto fail;
        v->clean_spaces = v->pretok.clean_spaces;
        v->ignore_merges = v->pretok.ignore_merges;
        v->escape_ws = v->pretok.escape_ws;
        v->add_bos = v->pretok.add_bos;
        if (v->pretok.no_bos) v->bos = CTN_TOKEN_NULL;
        /* the Gemma 4 rules follow the pre-tokenizer type, also under tokenizer.ggml.model
         * gpt2 (granite-embed-multi-311m) */
        v->gemma4 = v->gemma4 || v->pretok.gemma4;
    } else {
        ctn__errf(err, errlen,
                  "tokenizer.ggml.model: tokenizer '%s' is not supported (only llama "
                  "and gpt2)",
                  v->model);
        rc = CTN_ENOTSUP;
        goto fail;
    }
    get_bool(g, "tokenizer.ggml.add_space_prefix", &v->add_space_prefix);

    rc = load_tokens(v, g, err, errlen);
    if (rc < 0) goto fail;
    if (v->kind == CTN_VOCAB_BPE) {
        rc = load_merges(v, g, err, errlen);
        if (rc < 0) goto fail;
    }

    /* default ids that do not exist in this vocabulary are dropped (as llama.cpp does) */
    int32_t *ids[] = {&v->bos, &v->eos, &v->unk};
    for (size_t i = 0; i < 3; i++) {
        if (*ids[i] >= v->n_tokens) *ids[i] = CTN_TOKEN_NULL;
    }
    static const struct {
        const char *key;
        size_t off;
        bool strict;
    } id_keys[] = {
        {"tokenizer.ggml.bos_token_id", offsetof(ctn_vocab, bos), true},
        {"tokenizer.ggml.eos_token_id", offsetof(ctn_vocab, eos), true},
        {"tokenizer.ggml.eot_token_id", offsetof(ctn_vocab, eot), false},
        {"tokenizer.ggml.eom_token_id", offsetof(ctn_vocab, eom), false},
        {"tokenizer.ggml.unknown_token_id", offsetof(ctn_vocab, unk), false},
        {"tokenizer.ggml.seperator_token_id", offsetof(ctn_vocab, sep), false},
        {"tokenizer.ggml.padding_token_id", offsetof(ctn_vocab, pad), false},
        {"tokenizer.ggml.mask_token_id", offsetof(ctn_vocab, mask), false},
        {"tokenizer.ggml.fim_pre_token_id", offsetof(ctn_vocab, fim_pre), false},
        {"tokenizer.ggml.fim_suf_token_id", offsetof(ctn_vocab, fim_suf), false},
        {"tokenizer.ggml.fim_mid_token_id", offsetof(ctn_vocab, fim_mid), false},
        {"tokenizer.ggml.fim_pad_token_id", offsetof(ctn_vocab, fim_pad), false},
        {"tokenizer.ggml.fim_rep_token_id", offsetof(ctn_vocab, fim_rep), false},
        {"tokenizer.ggml.fim_sep_token_id", offsetof(ctn_vocab, fim_sep), false},
        {"tokenizer.ggml.prefix_token_id", offsetof(ctn_vocab, fim_pre), false},
        {"tokenizer.ggml.suffix_token_id", offsetof(ctn_vocab, fim_suf), false},
        {"tokenizer.ggml.middle_token_id", offsetof(ctn_vocab, fim_mid), false},
    };
    for (size_t i = 0; i < sizeof id_keys / sizeof id_keys[0]; i++) {
        rc = load_id(v, g, id_keys[i].key, (int32_t *)((char *)v + id_keys[i].off),
                     id_keys[i].strict, err, errlen);
        if (rc < 0) goto fail;
    }
    get_bool(g, "tokenizer.ggml.add_bos_token", &v->add_bos);
    get_bool(g, "tokenizer.ggml.add_eos_token", &v->add_eos);
    if (v->gemma4) v->add_bos = true;

    rc = fixup_specials(v);
    if (rc < 0) goto fail;
    rc = build_pieces(v, err, errlen);
    if (rc < 0) goto fail;
    rc = build_specials(v);
    if (rc < 0) goto fail;

    /* lstrip/rstrip by model name, after the special list is built (llama.cpp's order) */
    {
        char name[256], pre[128], arch[128];
        get_str_buf(g, "general.name", name, sizeof name, true);
        get_str_buf(g, "tokenizer.ggml.pre", pre, sizeof pre, false);
        get_str_buf(g, "general.architecture", arch, sizeof arch, false);
        if (strstr(pre, "jina-v2-de") || strstr(pre, "jina-v2-es") || strstr(pre, "jina-v2-code") ||
            strstr(arch, "nomic-bert-moe") || strstr(arch, "jina-bert-v3")) {
            set_attr_by_text(v, "<mask>", CTN__ATTR_LSTRIP, true);
        } else if (strstr(name, "phi-3") || strstr(name, "phi3")) {
            for (size_t i = 0; i < v->n_special; i++) {
                v->attrs[v->special[i]] |= CTN__ATTR_RSTRIP;
            }
            set_attr_by_text(v, "</s>", CTN__ATTR_RSTRIP, true);
            set_attr_by_text(v, "<unk>", CTN__ATTR_RSTRIP, false);
            set_attr_by_text(v, "<s>", CTN__ATTR_RSTRIP, false);
            set_attr_by_text(v, "<|endoftext|>", CTN__ATTR_RSTRIP, false);
        } else if (strstr(name, "modern-bert")) {
            set_attr_by_text(v, "[MASK]", CTN__ATTR_LSTRIP, true);
        }
    }

    /* SPM merges can only join pieces whose concatenation is a token; when no token has a
     * U+2581 after some other character, no merge crosses the start of a word, so the
     * best-first merging can run word by word with the same result and small queues */
    if (v->kind == CTN_VOCAB_SPM) {
        v->spm_word_split = true;
        for (int32_t id = 0; id < v->n_tokens && v->spm_word_split; id++) {
            size_t n;
            const char *t = tok_text(v, id, &n);
            size_t lead = 0;
            while (lead + 3 <= n && memcmp(t + lead, "\xe2\x96\x81", 3) == 0)
                lead += 3;
            for (size_t k = lead + 1; k + 3 <= n; k++) {
                if (memcmp(t + k, "\xe2\x96\x81", 3) == 0) {
                    v->spm_word_split = false;
                    break;
                }
            }
        }
    }

    /* byte fallback tokens */
    for (int b = 0; b < 256; b++) {
        char buf[8];
        snprintf(buf, sizeof buf, "<0x%02X>", b);
        int32_t id = ctn__vocab_find(v, buf, 6);
        if (id < 0 && v->kind == CTN_VOCAB_SPM) {
            char c = (char)b;
            id = ctn__vocab_find(v, &c, 1);
        }
        v->byte_tok[b] = id;
        char u[4];
        size_t k = ctn__utf8_encode(ctn__gpt2_byte_to_cpt((unsigned char)b), u);
        v->gpt2_char_tok[b] = ctn__vocab_find(v, u, k);
        v->gpt2_byte_fb[b][0] = ctn__vocab_find(v, u, 1);
        v->gpt2_byte_fb[b][1] = k > 1 ? ctn__vocab_find(v, u + 1, 1) : CTN_TOKEN_NULL;
    }
    *out = v;
    return 0;
fail:
    ctn_vocab_free(v);
    return rc;
}

void ctn_vocab_free(ctn_vocab *v) {
    if (!v) return;
    ctn__pretok_free(&v->pretok);
    free(v->model);
    free(v->pre);
    free(v->text_blob);
    free(v->text_off);
    free(v->scores);
    free(v->types);
    free(v->attrs);
    free(v->piece_blob);
    free(v->piece_off);
    free(v->map_slots);
    free(v->map_hash);
    free(v->merges);
    free(v->special);
    free(v->trie);
    free(v->eog);
    free(v);
}

/* ---- accessors ------------------------------------------------------------------------ */

ctn_vocab_kind ctn_vocab_type(const ctn_vocab *v) {
    return v->kind;
}
const char *ctn_vocab_pre(const ctn_vocab *v) {
    return v->pre;
}
int32_t ctn_vocab_n_tokens(const ctn_vocab *v) {
    return v->n_tokens;
}
int32_t ctn_vocab_bos(const ctn_vocab *v) {
    return v->bos;
}
int32_t ctn_vocab_eos(const ctn_vocab *v) {
    return v->eos;
}
int32_t ctn_vocab_eot(const ctn_vocab *v) {
    return v->eot;
}
int32_t ctn_vocab_unk(const ctn_vocab *v) {
    return v->unk;
}
int32_t ctn_vocab_pad(const ctn_vocab *v) {
    return v->pad;
}
bool ctn_vocab_add_bos(const ctn_vocab *v) {
    return v->add_bos;
}
bool ctn_vocab_add_eos(const ctn_vocab *v) {
    return v->add_eos;
}

bool ctn_vocab_is_eog(const ctn_vocab *v, int32_t id) {
    for (size_t i = 0; i < v->n_eog; i++) {
        if (v->eog[i] == id) return true;
    }
    return false;
}

ctn_token_type ctn_vocab_token_type(const ctn_vocab *v, int32_t id) {
    if (id < 0 || id >= v->n_tokens) return CTN_TOKEN_UNDEFINED;
    return (ctn_token_type)v->types[id];
}

const char *ctn_vocab_text(const ctn_vocab *v, int32_t id, size_t *len) {
    if (id < 0 || id >= v->n_tokens) return NULL;
    size_t n;
    const char *t = tok_text(v, id, &n);
    if (len) *len = n;
    return t;
}

float ctn_vocab_score(const ctn_vocab *v, int32_t id) {
    return id < 0 || id >= v->n_tokens ? 0.0f : v->scores[id];
}

int32_t ctn_vocab_lookup(const ctn_vocab *v, const char *text, size_t len) {
    return ctn__vocab_find(v, text, len);
}

/* ---- decoding ------------------------------------------------------------------------- */

int ctn_token_to_piece(const ctn_vocab *v, int32_t id, char *buf, size_t cap, int lstrip,
                       bool special) {
    if (id < 0 || id >= v->n_tokens) return CTN_EINVAL;
    if (!special && (v->attrs[id] & (CTN__ATTR_UNKNOWN | CTN__ATTR_CONTROL))) return 0;
    const char *p = v->piece_blob + v->piece_off[id];
    size_t n = v->piece_off[id + 1] - v->piece_off[id];
    for (int i = 0; i < lstrip && n && *p == ' '; i++) {
        p++;
        n--;
    }
    if (n > INT32_MAX) return CTN_ERANGE;
    if (n <= cap && n) memcpy(buf, p, n);
    return (int)n;
}

/* llama.cpp's clean_up_tokenization_spaces, three passes over the decoded text in place. */
static size_t clean_spaces(char *t, size_t total) {
    size_t n = total ? 1 : 0;
    for (size_t i = 1; i < total; i++) {
        char x = t[i];
        if (t[i - 1] == ' ' && (x == '?' || x == '!' || x == '.' || x == ',')) n--;
        t[n++] = x;
    }
    size_t total2 = n;
    n = total2 ? 1 : 0;
    for (size_t i = 1; i < total2; i++) {
        char x = t[i];
        if (x == '\'' && i + 1 < total2 && t[i - 1] == ' ' && t[i + 1] == ' ') {
            n--;
            t[++i] = 0;
        }
        t[n++] = x;
    }
    size_t total3 = n;
    n = total3 ? 1 : 0;
    for (size_t i = 1; i < total3; i++) {
        char x = t[i];
        if (t[i - 1] == ' ' && x == '\'' && i + 1 < total3) {
            char x1 = t[i + 1];
            if (x1 == 's' || x1 == 'm') {
                n--;
            } else if (i + 2 < total3) {
                char x2 = t[i + 2];
                if ((x1 == 'r' && x2 == 'e') || (x1 == 'v' && x2 == 'e')) n--;
            }
        }
        t[n++] = x;
    }
    return n;
}

int ctn_detokenize(const ctn_vocab *v, const int32_t *ids, size_t n, bool remove_special,
                   bool unparse_special, char **text, size_t *len) {
    *text = NULL;
    if (len) *len = 0;
    for (size_t i = 0; i < n; i++) {
        if (ids[i] < 0 || ids[i] >= v->n_tokens) return CTN_EINVAL;
    }
    bool remove_space = v->add_space_prefix;
    if (remove_special && v->add_bos && n > 0 && ids[0] == v->bos) {
        remove_space = false;
        ids++;
        n--;
    }
    if (remove_special && v->add_eos && n > 0 && ids[n - 1] == v->eos) {
        n--;
    }
    size_t total = 0;
    for (size_t i = 0; i < n; i++) {
        total += v->piece_off[ids[i] + 1] - v->piece_off[ids[i]];
    }
    char *out = ctn__malloc(total + 1);
    if (!out) return CTN_ENOMEM;
    size_t o = 0;
    for (size_t i = 0; i < n; i++) {
        int k = ctn_token_to_piece(v, ids[i], out + o, total - o, remove_space, unparse_special);
        remove_space = false;
        if (k > 0) o += (size_t)k;
    }
    if (v->clean_spaces) o = clean_spaces(out, o);
    out[o] = 0;
    *text = out;
    if (len) *len = o;
    return 0;
}

/* ---- streaming decoder ---------------------------------------------------------------- */

void ctn_detok_stream_init(ctn_detok_stream *s, const ctn_vocab *v, bool special) {
    memset(s, 0, sizeof *s);
    s->vocab = v;
    s->special = special;
    s->first = true;
}

/* Length of the complete-or-hopeless prefix of b[0..n): the bytes that can be emitted now.
 * A trailing sequence that is a valid start of a longer character is kept back. */
static size_t utf8_ready(const unsigned char *b, size_t n) {
    size_t i = n;
    /* look back at most 3 bytes for an unfinished lead byte */
    for (size_t back = 1; back <= 3 && back <= n; back++) {
        unsigned char c = b[n - back];
        if ((c & 0xC0) == 0x80) continue; /* continuation: keep looking */
        size_t need = c >= 0xF0 && c <= 0xF4   ? 4
                      : c >= 0xE0 && c <= 0xEF ? 3
                      : c >= 0xC2 && c <= 0xDF ? 2
                                               : 1;
        if (need > back) {
            /* still incomplete: hold it if the bytes so far can begin a valid character */
            bool ok = true;
            if (back >= 2) {
                unsigned char c1 = b[n - back + 1];
                if ((c == 0xE0 && c1 < 0xA0) || (c == 0xED && c1 > 0x9F) ||
                    (c == 0xF0 && c1 < 0x90) || (c == 0xF4 && c1 > 0x8F)) {
                    ok = false;
                }
            }
            if (ok) i = n - back;
        }
        break;
    }
    return i;
}

/*
 * Where the decoded text may be cut for output when spaces are cleaned up. The clean-up only
 * deletes spaces: one before . , ! ? or before an apostrophe pattern (" ' ", " 's", ...),
 * decided from at most three characters after it. Such a space is followed by one of .,!?'
 * or by a space and an apostrophe (the apostrophe pass can delete the middle space first).
 * A position with no such space among the three bytes before it cannot be affected by what
 * follows, so the text before it comes out exactly as ctn_detokenize gives it.
 */
static bool active_space(const char *b, size_t p, size_t n) {
    if (p + 1 >= n || strchr("?!.,'", b[p + 1])) return true;
    /* a space two before an apostrophe: the apostrophe pass can delete the space between
     * them and the contraction pass then this one */
    return b[p + 1] == ' ' && (p + 2 >= n || b[p + 2] == '\'');
}

static size_t clean_cut(const char *b, size_t n) {
    size_t c = n;
    for (;;) {
        size_t lo = c >= 3 ? c - 3 : 0, q = c;
        for (size_t p = lo; p < c; p++) {
            if (b[p] == ' ' && active_space(b, p, n)) {
                q = p;
                break;
            }
        }
        if (q == c) return c;
        c = q;
    }
}

int ctn_detok_stream_push(ctn_detok_stream *s, int32_t id, char *buf, size_t cap) {
    const ctn_vocab *v = s->vocab;
    if (id < 0 || id >= v->n_tokens) return CTN_EINVAL;
    /* the leading space that add_space_prefix put in goes, as in ctn_detokenize (which
     * strips it from the first token only; a leading BOS is for the caller to skip) */
    int lstrip = s->first && v->add_space_prefix ? 1 : 0;
    size_t plen = v->piece_off[id + 1] - v->piece_off[id];
    if (s->n_hold + plen > cap) return CTN_ERANGE;
    memcpy(buf, s->hold, s->n_hold);
    int k = ctn_token_to_piece(v, id, buf + s->n_hold, cap - s->n_hold, lstrip, s->special);
    if (k < 0) return k;
    s->first = false;
    size_t n = s->n_hold + (size_t)k;
    const size_t maxhold = sizeof s->hold - 4;
    const bool clean = v->clean_spaces && !s->raw;
    size_t c = clean ? clean_cut(buf, n) : n;
    if (n - c > maxhold) {
        c = n - maxhold; /* pathological run of spaces/apostrophes: give up exactness */
    }
    size_t m = clean ? clean_spaces(buf, c) : c;
    size_t ready = utf8_ready((const unsigned char *)buf, m);
    size_t tail = m - ready;
    memcpy(s->hold, buf + ready, tail);
    memcpy(s->hold + tail, buf + c, n - c);
    s->n_hold = tail + (n - c);
    return (int)ready;
}

int ctn_detok_stream_flush(ctn_detok_stream *s, char *buf, size_t cap) {
    if (s->n_hold > cap) return CTN_ERANGE;
    memcpy(buf, s->hold, s->n_hold);
    size_t n = s->n_hold;
    if (s->vocab && s->vocab->clean_spaces && !s->raw) n = clean_spaces(buf, n);
    s->n_hold = 0;
    return (int)n;
}

void ctn_detok_stream_close(ctn_detok_stream *s) {
    s->n_hold = 0;
    s->vocab = NULL;
}
