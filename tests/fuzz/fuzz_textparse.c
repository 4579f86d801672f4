/*
 * libFuzzer target for the list parser (stdlib/textparse.h). Byte 0 seeds the chunk sizes;
 * the rest is the text. The stream under random chunking must report items that are always
 * a prefix of the one-shot parse's array, with counts that add up, and finish with exactly
 * that array; every item is a non-empty string with no whitespace at either end.
 *
 *   cmake --build build --target fuzz_textparse && build/fuzz_textparse tests/fuzz/corpus_textparse
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "error.h"
#include "textparse.h"
#include "value.h"

#define CHECK(cond)                                                                                \
    do {                                                                                           \
        if (!(cond)) {                                                                             \
            fprintf(stderr, "fuzz_textparse: %s failed at line %d\n", #cond, __LINE__);            \
            abort();                                                                               \
        }                                                                                          \
    } while (0)

static int ws(char c) {
    return c == ' ' || c == '\t' || c == '\r' || c == '\n' || c == '\f' || c == '\v';
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1) return 0;
    uint32_t seed = data[0] | 1u;
    const char *t = (const char *)data + 1;
    size_t n = size - 1;

    ctn_val *want = NULL;
    CHECK(ctn_list_parse(t, n, &want) == 0);
    CHECK(want != NULL && want->kind == CTN_VARR);
    for (size_t i = 0; i < ctn_val_len(want); i++) {
        const ctn_val *it = ctn_val_at(want, i);
        CHECK(it->kind == CTN_VSTR && it->u.str.len > 0);
        CHECK(!ws(it->u.str.p[0]) && !ws(it->u.str.p[it->u.str.len - 1]));
    }

    ctn_list_stream *s = ctn_list_stream_new();
    CHECK(s != NULL);
    size_t at = 0, seen = 0;
    while (at < n) {
        seed = seed * 1103515245u + 12345u;
        size_t len = (seed >> 16) % 6;
        if ((seed >> 8) % 11 == 0) len = 16 + (seed >> 20) % 100;
        if (len > n - at) len = n - at;
        size_t nnew = 0;
        CHECK(ctn_list_stream_feed(s, t + at, len, &nnew) == 0);
        at += len;
        const ctn_val *items = ctn_list_stream_items(s);
        CHECK(ctn_val_len(items) == seen + nnew);
        for (size_t i = seen; i < seen + nnew; i++)
            CHECK(ctn_val_equal(ctn_val_at(items, i), ctn_val_at(want, i)));
        seen += nnew;
    }
    ctn_val *out = NULL;
    size_t nnew = 0;
    CHECK(ctn_list_stream_finish(s, &out, &nnew) == 0);
    CHECK(seen + nnew == ctn_val_len(out));
    CHECK(ctn_val_equal(out, want));
    ctn_val_unref(out);
    ctn_list_stream_free(s);
    ctn_val_unref(want);
    return 0;
}
