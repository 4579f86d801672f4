/*
 * libFuzzer target for the tokenizers. The four vocabularies of the shared folder
 * (CTN_SHARED or ../shared) are loaded once; the first input byte picks the vocabulary and
 * the flags, the rest is the text. Every call tokenizes with parse_special off and on,
 * checks each id is in range, decodes, and checks the round trip where llama.cpp has one.
 *
 *   clang -g -O1 -fsanitize=fuzzer,address,undefined -Iengine tests/fuzz/fuzz_tokenize.c \
 *       engine/[all .c files] -lpcre2-8 -o /tmp/fuzz_tok && /tmp/fuzz_tok -max_total_time=120
 */
#ifndef _GNU_SOURCE
#define _GNU_SOURCE /* memmem */
#endif
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "gguf.h"
#include "vocab.h"

int ctn__utf8_valid(const char *s, size_t n);

static ctn_vocab *vocabs[4];
static int n_vocabs = -1;

static void load_all(void) {
    static const char *names[] = {"llama-spm", "llama-bpe", "qwen2", "gpt-2"};
    const char *dir = getenv("CTN_SHARED");
    if (!dir || !*dir) dir = "../shared";
    n_vocabs = 0;
    for (int i = 0; i < 4; i++) {
        char path[1024], err[512];
        snprintf(path, sizeof path, "%s/vocab/ggml-vocab-%s.gguf", dir, names[i]);
        ctn_gguf *g;
        if (ctn_gguf_open(&g, path, err, sizeof err) < 0) continue;
        ctn_vocab *v;
        if (ctn_vocab_load(&v, g, err, sizeof err) == 0) vocabs[n_vocabs++] = v;
        ctn_gguf_free(g);
    }
    if (n_vocabs == 0) fprintf(stderr, "fuzz_tokenize: no vocabularies under %s/vocab\n", dir);
}

/* True when the text holds the text of a token matched as a whole (control, user-defined,
 * unknown): those tokens decode differently or not at all, so no round trip is expected. */
static int has_special_text(const ctn_vocab *v, const char *t, size_t n) {
    for (int32_t id = 0; id < ctn_vocab_n_tokens(v); id++) {
        ctn_token_type ty = ctn_vocab_token_type(v, id);
        if (ty != CTN_TOKEN_CONTROL && ty != CTN_TOKEN_USER_DEFINED && ty != CTN_TOKEN_UNKNOWN) {
            continue;
        }
        size_t len;
        const char *s = ctn_vocab_text(v, id, &len);
        if (len <= n && memmem(t, n, s, len)) return 1;
    }
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (n_vocabs < 0) load_all();
    if (n_vocabs == 0 || size == 0) return 0;
    const ctn_vocab *v = vocabs[data[0] % n_vocabs];
    bool add_special = data[0] & 0x10;
    const char *text = (const char *)data + 1;
    size_t len = size - 1;
    for (int ps = 0; ps < 2; ps++) {
        int32_t *ids;
        size_t n;
        if (ctn_tokenize(v, text, len, add_special, ps, &ids, &n) != 0) abort();
        for (size_t i = 0; i < n; i++) {
            if (ids[i] < 0 || ids[i] >= ctn_vocab_n_tokens(v)) abort();
        }
        char *out;
        size_t olen;
        if (ctn_detokenize(v, ids, n, add_special, ps, &out, &olen) != 0) abort();
        /*
         * Round trip without special tokens: tokenize(add_special=false) then detokenize
         * gives the text back for valid UTF-8, except where llama.cpp itself changes it:
         * SPM and escaped-space BPE decode U+2581 as a space; vocabularies with
         * clean_up_tokenization_spaces (gpt-2, llama-bpe) drop the space before . , ! ? and
         * around apostrophes; text containing a special token's spelling is cut there.
         */
        if (!add_special && ps == 0 && ctn__utf8_valid(text, len) &&
            !has_special_text(v, text, len)) {
            bool spm = ctn_vocab_type(v) == CTN_VOCAB_SPM;
            bool skip = spm && memmem(text, len, "\xe2\x96\x81", 3);
            const char *pre = ctn_vocab_pre(v);
            bool clean = strcmp(pre, "llama-bpe") == 0 || strcmp(pre, "gpt-2") == 0;
            for (size_t i = 0; clean && i + 1 < len; i++) {
                if (text[i] == ' ' && strchr("?!.,'", text[i + 1])) skip = true;
            }
            if (!skip && (olen != len || memcmp(out, text, len) != 0)) {
                fprintf(stderr, "round trip differs: %zu -> %zu bytes\n", len, olen);
                abort();
            }
        }
        /* the streaming decoder gives the same text as detokenize */
        if (!add_special) {
            ctn_detok_stream s;
            ctn_detok_stream_init(&s, v, ps);
            char *acc = malloc(olen + 64), buf[4096];
            size_t al = 0;
            int bad = 0;
            for (size_t i = 0; i < n; i++) {
                int k = ctn_detok_stream_push(&s, ids[i], buf, sizeof buf);
                if (k < 0) abort();
                if (al + (size_t)k > olen + 64)
                    bad = 1;
                else
                    memcpy(acc + al, buf, (size_t)k), al += (size_t)k;
            }
            int k = ctn_detok_stream_flush(&s, buf, sizeof buf);
            if (k < 0) abort();
            if (al + (size_t)k > olen + 64)
                bad = 1;
            else
                memcpy(acc + al, buf, (size_t)k), al += (size_t)k;
            ctn_detok_stream_close(&s);
            /* exact for valid UTF-8 output, unless a run of spaces and apostrophes exceeded
             * the stream's look-behind (its hold buffer) */
            if (!bad && ctn__utf8_valid(out, olen) && (al != olen || memcmp(acc, out, olen) != 0)) {
                fprintf(stderr, "stream differs: %zu vs %zu bytes\n", al, olen);
                abort();
            }
            free(acc);
        }
        free(out);
        free(ids);
    }
    return 0;
}
