/*
 * Synthetic vocabulary variants for the differential tokenizer test (see vocab_variants.h).
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif

#include "vocab_variants.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"

/*
 * The tokenizer.ggml.pre names of the if/else chain in llama.cpp's
 * llama_vocab::impl::load (src/llama-vocab.cpp), in its order. Kept here so that the test
 * covers them when the llama.cpp source is not checked out.
 */
static const char *const builtin_pre[] = {
    "default", "minicpm5", "llama3", "llama-v3", "llama-bpe", "falcon3", "falcon-h1", "pixtral",
    "midm-2.0", "lfm2", "jina-v5-nano", "deepseek-llm", "deepseek-coder", "deepseek-v3",
    "spark2_5", "youtu", "falcon", "mpt", "starcoder", "gpt-2", "phi-2", "jina-es", "jina-de",
    "gigachat", "jina-v2-es", "jina-v2-de", "a.x-4.0", "mellum", "modern-bert", "jais-2",
    "gemma4", "granite-embed-multi-311m", "sarvam-moe", "jina-v1-en", "jina-v2-code",
    "roberta-bpe", "whitespace", "refact", "command-r", "qwen2", "deepseek-r1-qwen", "kormo",
    "f2llmv2", "qwen35", "stablelm2", "olmo", "dbrx", "smaug-bpe", "poro-chat", "glm4",
    "chatglm-bpe", "viking", "jais", "tekken", "smollm", "codeshell", "bloom", "gpt3-finnish",
    "exaone", "exaone4", "exaone-moe", "chameleon", "minerva-7b", "megrez", "gpt-4o", "llama4",
    "kanana2", "talkie", "granite-embed-multi-97m", "tiny_aya", "cohere2moe", "superbpe",
    "trillion", "granite-docling", "bailingmoe", "bailingmoe2", "llada-moe", "seed-coder",
    "hunyuan", "hunyuan-dense", "hy_v4", "joyai-llm", "kimi-k2", "ufakzeka", "grok-2", "afmoe",
    "laguna", "minimax-m2", "solar-open", "mellum2",
};

static bool names_have(char **v, size_t n, const char *s, size_t len)
{
    for (size_t i = 0; i < n; i++)
        if (strlen(v[i]) == len && memcmp(v[i], s, len) == 0) return true;
    return false;
}

static void names_add(char ***v, size_t *n, const char *s, size_t len)
{
    if (names_have(*v, *n, s, len)) return;
    char **nv = realloc(*v, (*n + 1) * sizeof **v);
    char *c = malloc(len + 1);
    if (!nv || !c) {
        fputs("tokdiff: out of memory\n", stderr);
        exit(1);
    }
    memcpy(c, s, len);
    c[len] = '\0';
    nv[(*n)++] = c;
    *v = nv;
}

void tv_pre_names(const char *src, char ***names, size_t *n, size_t *n_from_src)
{
    *names = NULL;
    *n = *n_from_src = 0;
    for (size_t i = 0; i < sizeof builtin_pre / sizeof *builtin_pre; i++)
        names_add(names, n, builtin_pre[i], strlen(builtin_pre[i]));
    FILE *f = src ? fopen(src, "rb") : NULL;
    if (!f) return;
    size_t cap = 1 << 20, len = 0;
    char *b = malloc(cap);
    while (b) {
        len += fread(b + len, 1, cap - len, f);
        if (len < cap) break;
        char *nb = realloc(b, cap *= 2);
        if (!nb) free(b);
        b = nb;
    }
    fclose(f);
    if (!b) return;
    /* every `tokenizer_pre == "NAME"` comparison is one arm of the chain */
    static const char pat[] = "tokenizer_pre == \"";
    const char *p = b, *end = b + len;
    while ((p = memmem(p, (size_t)(end - p), pat, sizeof pat - 1)) != NULL) {
        p += sizeof pat - 1;
        const char *q = memchr(p, '"', (size_t)(end - p));
        if (!q) break;
        size_t before = *n;
        names_add(names, n, p, (size_t)(q - p));
        *n_from_src += *n - before;
        p = q + 1;
    }
    free(b);
}

void tv_names_free(char **names, size_t n)
{
    for (size_t i = 0; i < n; i++) free(names[i]);
    free(names);
}

/* ---- writing a variant ------------------------------------------------------------------ */

static int fail(char *err, size_t errlen, const char *what, const char *detail)
{
    snprintf(err, errlen, "%s: %s", what, detail);
    return -1;
}

static int64_t find_token(const ctn_gguf_value *toks, const char *text)
{
    size_t len = strlen(text);
    for (uint64_t i = 0; i < toks->v.arr.n; i++) {
        ctn_gguf_str s = ctn_gguf_arr_str(toks, i);
        if (s.len == len && memcmp(s.ptr, text, len) == 0) return (int64_t)i;
    }
    return -1;
}

static bool is_key(ctn_gguf_str k, const char *name)
{
    return k.len == strlen(name) && memcmp(k.ptr, name, k.len) == 0;
}

/* Sets or removes (val 2) a bool key; -1 leaves what was copied. */
static int set_flag(ctn_gguf_writer *w, const char *key, int val, bool *skip)
{
    if (val < 0) return 0;
    if (val == 2) {
        *skip = true;
        return 0;
    }
    return ctn_gguf_writer_set_bool(w, key, val == 1);
}

int tv_write(const tv_variant *v, const char *path, char *err, size_t errlen)
{
    ctn_gguf *g;
    if (ctn_gguf_open(&g, v->base, err, errlen) < 0) return -1;
    const ctn_gguf_value *toks = ctn_gguf_get(g, "tokenizer.ggml.tokens");
    if (!toks || toks->type != CTN_GGUF_ARRAY || toks->v.arr.type != CTN_GGUF_STRING) {
        ctn_gguf_free(g);
        return fail(err, errlen, v->base, "no tokenizer.ggml.tokens string array");
    }
    uint64_t n_old = toks->v.arr.n, n_add = 0;
    tv_token retype[2 * TV_MAX_EDITS], append[TV_MAX_EDITS];
    size_t n_retype = 0;
    for (size_t i = 0; i < TV_MAX_EDITS && v->retype[i].text; i++) retype[n_retype++] = v->retype[i];
    for (size_t i = 0; i < TV_MAX_EDITS && v->append[i].text; i++) {
        if (find_token(toks, v->append[i].text) >= 0) retype[n_retype++] = v->append[i];
        else append[n_add++] = v->append[i];
    }
    uint64_t n_new = n_old + n_add;

    int rc = 0;
    ctn_gguf_writer *w = ctn_gguf_writer_new();
    ctn_gguf_str *tok_tab = malloc(n_new * sizeof *tok_tab);
    int32_t *types = malloc(n_new * sizeof *types);
    float *scores = malloc(n_new * sizeof *scores);
    if (!w || !tok_tab || !types || !scores) {
        rc = fail(err, errlen, v->name, "out of memory");
        goto done;
    }

    /* the token list, types and scores, extended by the appended tokens */
    for (uint64_t i = 0; i < n_old; i++) tok_tab[i] = ctn_gguf_arr_str(toks, i);
    for (uint64_t i = 0; i < n_add; i++)
        tok_tab[n_old + i] = (ctn_gguf_str){append[i].text, strlen(append[i].text)};
    const ctn_gguf_value *ty = ctn_gguf_get(g, "tokenizer.ggml.token_type");
    const ctn_gguf_value *sc = ctn_gguf_get(g, "tokenizer.ggml.scores");
    for (uint64_t i = 0; i < n_old; i++) {
        types[i] = ty ? (int32_t)ctn_gguf_arr_int(ty, i) : 1;
        scores[i] = sc ? (float)ctn_gguf_arr_float(sc, i) : 0.0f;
    }
    for (uint64_t i = 0; i < n_add; i++) {
        types[n_old + i] = append[i].type;
        scores[n_old + i] = 0.0f;
    }
    for (size_t i = 0; i < n_retype; i++) {
        int64_t id = find_token(toks, retype[i].text);
        if (id < 0) {
            rc = fail(err, errlen, v->name, "a token to retype is not in the vocabulary");
            goto done;
        }
        types[id] = retype[i].type;
    }

    /* copy every key, replacing the ones the variant changes */
    bool drop_bos = false, drop_eos = false, drop_asp = false;
    if (set_flag(w, "tokenizer.ggml.add_bos_token", v->add_bos, &drop_bos) < 0 ||
        set_flag(w, "tokenizer.ggml.add_eos_token", v->add_eos, &drop_eos) < 0 ||
        set_flag(w, "tokenizer.ggml.add_space_prefix", v->add_space_prefix, &drop_asp) < 0)
        goto werr;
    for (int64_t i = 0; i < ctn_gguf_n_kv(g); i++) {
        ctn_gguf_str k = ctn_gguf_key(g, i);
        if ((v->add_bos >= 0 && is_key(k, "tokenizer.ggml.add_bos_token")) ||
            (v->add_eos >= 0 && is_key(k, "tokenizer.ggml.add_eos_token")) ||
            (v->add_space_prefix >= 0 && is_key(k, "tokenizer.ggml.add_space_prefix")) ||
            ((v->pre || v->drop_pre) && is_key(k, "tokenizer.ggml.pre")) ||
            (v->gen_name && is_key(k, "general.name")) || is_key(k, "general.alignment") ||
            is_key(k, "tokenizer.ggml.tokens") || is_key(k, "tokenizer.ggml.token_type") ||
            is_key(k, "tokenizer.ggml.scores"))
            continue;
        char key[256];
        if (k.len >= sizeof key) continue;
        memcpy(key, k.ptr, k.len);
        key[k.len] = '\0';
        if (ctn_gguf_writer_set_value(w, key, ctn_gguf_value_at(g, i)) < 0) goto werr;
    }
    ctn_gguf_value tv = {.type = CTN_GGUF_ARRAY};
    tv.v.arr.type = CTN_GGUF_STRING;
    tv.v.arr.n = n_new;
    tv.v.arr.data = tok_tab;
    if (ctn_gguf_writer_set_value(w, "tokenizer.ggml.tokens", &tv) < 0) goto werr;
    if ((ty || n_add || n_retype) &&
        ctn_gguf_writer_set_arr(w, "tokenizer.ggml.token_type", CTN_GGUF_INT32, types, n_new) < 0)
        goto werr;
    if (sc && ctn_gguf_writer_set_arr(w, "tokenizer.ggml.scores", CTN_GGUF_FLOAT32, scores,
                                      n_new) < 0)
        goto werr;
    if (v->pre && ctn_gguf_writer_set_str(w, "tokenizer.ggml.pre", v->pre) < 0) goto werr;
    if (v->gen_name && ctn_gguf_writer_set_str(w, "general.name", v->gen_name) < 0) goto werr;
    if (ctn_gguf_n_tensors(g) > 0) {
        rc = fail(err, errlen, v->base, "has tensors; only vocabulary files are copied");
        goto done;
    }
    if (ctn_gguf_writer_write(w, path, err, errlen) < 0) rc = -1;
    goto done;
werr:
    rc = fail(err, errlen, v->name, ctn_gguf_writer_errmsg(w));
done:
    ctn_gguf_writer_free(w);
    free(tok_tab);
    free(types);
    free(scores);
    ctn_gguf_free(g);
    return rc;
}
