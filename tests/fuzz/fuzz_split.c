/*
 * libFuzzer target for the text splitters (stdlib/split.h). The first bytes choose the
 * settings (chunk size and overlap, how separators are kept, trimming, one of four separator
 * lists, one of them taken from the input), the rest is the text, valid UTF-8 or not. The
 * recursive splitter must give chunks that are each the text at their start (when they have
 * one), starts that never go back, and a chunk without a start only when separators are
 * dropped; the page, token and markdown kinds must succeed on the text as a document and
 * give offsets within it. Never crash, leak or hit undefined behaviour.
 *
 *     build/fuzz_split -max_total_time=600 build/fuzz-corpus/split
 *
 * (Separators taken from the input that are not UTF-8 must be refused.) The seed corpus
 * (tests/fuzz/corpus_split/) holds a few texts from the differential test's hand-written cases
 * (tests/compat/split_langchain.mjs) behind settings bytes.
 */
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "split.h"
#include "value.h"

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* A token is a byte that is not a UTF-8 continuation byte, with the ones that follow it. */
static int char_tokens(void *ud, const char *s, size_t n, size_t **ends, size_t *count, char *err,
                       size_t errcap) {
    (void)ud, (void)err, (void)errcap;
    size_t *e = malloc((n ? n : 1) * sizeof *e), c = 0;
    if (e == NULL) return CTN_ENOMEM;
    for (size_t i = 0; i < n;) {
        i++;
        while (i < n && ((unsigned char)s[i] & 0xC0) == 0x80)
            i++;
        e[c++] = i;
    }
    *ends = e;
    *count = c;
    return 0;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 4 || size > (1u << 16)) return 0;
    ctn_split_opts o = ctn_split_defaults();
    o.chunk_size = 1 + data[0] % 64;
    o.chunk_overlap = data[1] % o.chunk_size;
    o.keep_separator = (ctn_keep_sep)(data[2] % 3);
    o.strip_whitespace = (data[2] & 0x80) == 0;
    if (data[2] & 0x40) o.tokens = char_tokens;
    const char *text = (const char *)data + 4;
    size_t len = size - 4;
    /* Separators: the default, two fixed lists, or up to three taken from the text. */
    static const char *const fixed1[] = {"\n", " "};
    static const char *const fixed2[] = {"ab", "a", ""};
    char own[3][4];
    const char *ownp[3];
    switch (data[3] % 4) {
    case 1: o.separators = fixed1, o.n_separators = 2; break;
    case 2: o.separators = fixed2, o.n_separators = 3; break;
    case 3:
        for (size_t i = 0; i < 3; i++) {
            size_t k = len > i * 3 ? (len - i * 3 < 3 ? len - i * 3 : 3) : 0;
            memcpy(own[i], text + i * 3, k);
            own[i][k] = '\0';
            ownp[i] = own[i];
        }
        o.separators = ownp, o.n_separators = 3;
        break;
    default: break;
    }
    char **c = NULL, err[256];
    size_t *st = NULL, n = 0;
    int rc = ctn_split_text(&o, text, len, &c, &st, &n, err, sizeof err);
    if (rc == CTN_EINVAL && o.separators == ownp) return 0; /* not UTF-8 */
    if (rc != 0) __builtin_trap();
    size_t prev = 0;
    for (size_t i = 0; i < n; i++) {
        size_t cl = strlen(c[i]);
        if (st[i] == SIZE_MAX) {
            if (o.keep_separator != CTN_KEEP_NONE) __builtin_trap();
        } else {
            if (st[i] < prev || st[i] + cl > len || memcmp(text + st[i], c[i], cl) != 0)
                __builtin_trap();
            prev = st[i];
        }
        free(c[i]);
    }
    free(c);
    free(st);
    /* The other kinds, on the text as a document. */
    ctn_val *docs = ctn_val_arr(), *out = ctn_val_arr();
    if (docs == NULL || out == NULL) __builtin_trap();
    ctn_val_push(docs, ctn_val_str(text, len));
    o.tokens = char_tokens;
    static const ctn_split_kind kinds[] = {CTN_SPLIT_RECURSIVE, CTN_SPLIT_PAGE, CTN_SPLIT_TOKEN,
                                           CTN_SPLIT_MARKDOWN};
    for (size_t k = 0; k < 4; k++) {
        size_t before = ctn_val_len(out);
        rc = ctn_split_docs(kinds[k], &o, docs, out, err, sizeof err);
        /* The Markdown loader refuses invalid UTF-8; nothing else may fail. */
        if (rc != 0 && !(kinds[k] == CTN_SPLIT_MARKDOWN && rc == CTN_EFORMAT)) __builtin_trap();
        for (size_t i = before; i < ctn_val_len(out); i++) {
            const ctn_val *d = ctn_val_at(out, i);
            const ctn_val *a = ctn_val_get(d, "start_index"), *b = ctn_val_get(d, "end_index");
            if (a == NULL || b == NULL || a->u.i > b->u.i || b->u.i < 0) __builtin_trap();
            if (kinds[k] != CTN_SPLIT_MARKDOWN && (size_t)b->u.i > len) __builtin_trap();
        }
    }
    ctn_val_unref(docs);
    ctn_val_unref(out);
    return 0;
}
